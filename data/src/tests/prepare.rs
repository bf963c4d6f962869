use std::path::{Path, PathBuf};

use rlp_model::Tokenizer;
use tempfile::TempDir;

use super::fixture::{encode_u32, jsonl, random_docs, tokenizer, write};
use crate::prepare::{is_heldout, prepare_chunked};
use crate::{prepare, Dataset, Meta, PrepareOptions, Split};

struct Setup {
    tmp: TempDir,
    tok: Tokenizer,
}

fn setup() -> Setup {
    let tmp = TempDir::new().unwrap();
    let tok = tokenizer(&tmp.path().join("tok"));
    Setup { tmp, tok }
}

impl Setup {
    fn dir(&self) -> &Path {
        self.tmp.path()
    }

    fn opts(&self, inputs: Vec<PathBuf>, out: &str) -> PrepareOptions {
        PrepareOptions::new(inputs, self.dir().join(out))
    }

    fn err(&self, opts: &PrepareOptions) -> String {
        match prepare(&self.tok, opts) {
            Ok(s) => panic!("expected an error, got {s:?}"),
            Err(e) => format!("{e:#}"),
        }
    }
}

fn all_docs(ds: &Dataset) -> Vec<Vec<u32>> {
    (0..ds.num_docs()).map(|i| ds.doc(i).to_vec()).collect()
}

/// Every file of a dataset directory, by name, for byte comparisons.
fn files(dir: &Path) -> Vec<(String, Vec<u8>)> {
    let mut v: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| {
            let e = e.unwrap();
            (e.file_name().to_string_lossy().into_owned(), std::fs::read(e.path()).unwrap())
        })
        .collect();
    v.sort();
    v
}

/// No `.partial`/`.old` staging directories left next to the outputs.
fn assert_no_staging_left(dir: &Path) {
    for e in std::fs::read_dir(dir).unwrap() {
        let name = e.unwrap().file_name().to_string_lossy().into_owned();
        assert!(!name.starts_with('.'), "staging directory {name} left behind");
    }
}

/// A .txt (split on blank lines) and a .jsonl with one empty and one too-short document each.
fn mixed_corpus(s: &Setup) -> (Vec<PathBuf>, Vec<String>) {
    let txt_docs = ["the cat sat on the mat .", "  \t ", "hello", "a dog ran far away ."];
    let txt = write(s.dir(), "a.txt", txt_docs.join("\n\n") + "\n");
    let json = write(
        s.dir(),
        "b.jsonl",
        concat!(
            "{\"text\": \"hello world , big red dog\", \"id\": 1}\n",
            "\n",
            "{\"text\": \"\"}\n",
            "{\"id\": 3, \"text\": \"one two three four\"}\r\n",
            "{\"text\": \"seven\"}\n",
        ),
    );
    let kept = vec![
        "the cat sat on the mat .".to_string(),
        "a dog ran far away .\n".to_string(),
        "hello world , big red dog".to_string(),
        "one two three four".to_string(),
    ];
    (vec![txt, json], kept)
}

#[test]
fn summary_counts_and_read_back_match_encode() {
    let s = setup();
    let (inputs, kept) = mixed_corpus(&s);
    let mut opts = s.opts(inputs, "out");
    opts.doc_separator = Some("\n\n".into());
    opts.min_tokens = 3; // "hello" and "seven" are 2 tokens with BOS
    let sum = prepare(&s.tok, &opts).unwrap();

    let expected: Vec<Vec<u32>> = kept.iter().map(|t| encode_u32(&s.tok, t)).collect();
    let total: u64 = expected.iter().map(|d| d.len() as u64).sum();
    assert_eq!(sum.documents, 4);
    assert_eq!(sum.tokens, total);
    assert_eq!((sum.heldout_documents, sum.heldout_tokens), (0, 0));
    assert_eq!(sum.skipped_empty, 2);
    assert_eq!(sum.skipped_short, 2);
    assert_eq!(sum.files, 2);
    let max = expected.iter().flatten().max().copied().unwrap();
    assert_eq!(sum.vocab_bound, u64::from(max) + 1);

    let ds = Dataset::open(&opts.output, Split::Train).unwrap();
    assert_eq!(ds.num_docs(), 4);
    assert_eq!(ds.num_tokens(), total);
    assert_eq!(all_docs(&ds), expected);
    for (i, t) in kept.iter().enumerate() {
        assert_eq!(ds.doc_i64(i), s.tok.encode(t).unwrap());
        assert_eq!(ds.doc(i)[0], super::fixture::BOS, "encode's BOS is kept, nothing else added");
    }
    let held = Dataset::open(&opts.output, Split::Heldout).unwrap();
    assert_eq!((held.num_docs(), held.num_tokens()), (0, 0));
    assert_eq!(held.get(0), None);

    let meta = Meta::read(&opts.output).unwrap();
    assert_eq!(meta.format, "rlp-tokens-v1");
    assert_eq!(meta.summary.documents, 4);
    assert_eq!(meta.summary.skipped_short, 2);
    assert_eq!(meta.min_tokens, 3);
    assert_eq!(meta.inputs, opts.inputs.iter().map(|p| p.display().to_string()).collect::<Vec<_>>());
    assert_eq!(meta.summary.vocab_bound, sum.vocab_bound);

    // The raw layout, independently of `Dataset`.
    let offsets = std::fs::read(opts.output.join("train.offsets")).unwrap();
    let offsets: Vec<u64> = offsets.chunks_exact(8).map(|c| u64::from_le_bytes(c.try_into().unwrap())).collect();
    let mut want = vec![0u64];
    for d in &expected {
        want.push(want.last().unwrap() + d.len() as u64);
    }
    assert_eq!(offsets, want);
    let tokens = std::fs::read(opts.output.join("train.tokens")).unwrap();
    let tokens: Vec<u32> = tokens.chunks_exact(4).map(|c| u32::from_le_bytes(c.try_into().unwrap())).collect();
    assert_eq!(tokens, expected.concat());
    assert_no_staging_left(s.dir());
}

#[test]
fn whole_file_is_one_document_without_separator() {
    let s = setup();
    let txt = write(s.dir(), "a.txt", "the cat\n\nsat on\nthe mat");
    let opts = s.opts(vec![txt], "out");
    let sum = prepare(&s.tok, &opts).unwrap();
    assert_eq!(sum.documents, 1);
    let ds = Dataset::open(&opts.output, Split::Train).unwrap();
    assert_eq!(ds.doc(0), encode_u32(&s.tok, "the cat\n\nsat on\nthe mat").as_slice());
}

#[test]
fn custom_text_field() {
    let s = setup();
    let docs = vec!["the big dog".to_string(), "a small cat".to_string()];
    let f = jsonl(s.dir(), "c.jsonl", "content", &docs);
    let mut opts = s.opts(vec![f], "out");
    opts.text_field = "content".into();
    prepare(&s.tok, &opts).unwrap();
    let ds = Dataset::open(&opts.output, Split::Train).unwrap();
    assert_eq!(all_docs(&ds), docs.iter().map(|d| encode_u32(&s.tok, d)).collect::<Vec<_>>());
}

fn pool(threads: usize) -> rayon::ThreadPool {
    rayon::ThreadPoolBuilder::new().num_threads(threads).build().unwrap()
}

#[test]
fn output_bytes_identical_across_thread_counts_and_chunk_sizes() {
    let s = setup();
    let docs = random_docs(400, 7);
    let f = jsonl(s.dir(), "r.jsonl", "text", &docs);
    let run = |out: &str, threads: usize, chunk: usize| {
        let mut opts = s.opts(vec![f.clone()], out);
        opts.heldout_fraction = 0.25;
        opts.min_tokens = 3;
        opts.seed = 11;
        let sum = pool(threads).install(|| prepare_chunked(&s.tok, &opts, chunk)).unwrap();
        (sum, files(&opts.output))
    };
    let (sum1, one) = run("t1", 1, 1 << 20);
    let (sum2, two) = run("t2", 2, 1 << 20);
    // Tiny chunks: many parallel batches, each doc on its own.
    let (sum3, tiny) = run("t3", 2, 1);
    // Small chunks split across threads in the middle of the corpus.
    let (sum4, small) = run("t4", 2, 97);
    assert!(sum1.heldout_documents > 0 && sum1.skipped_short > 0, "{sum1:?}");
    assert_eq!(one.len(), 7, "train/heldout tokens+offsets+marks and meta.json");
    for (sum, other) in [(sum2, two), (sum3, tiny), (sum4, small)] {
        assert_eq!(sum, sum1);
        assert_eq!(one.len(), other.len());
        for ((n1, b1), (n2, b2)) in one.iter().zip(&other) {
            assert_eq!(n1, n2);
            assert!(b1 == b2, "{n1} differs between runs");
        }
    }
}

#[test]
fn heldout_membership_is_a_seeded_function_of_document_position() {
    let s = setup();
    let docs = random_docs(300, 3);
    let f = jsonl(s.dir(), "r.jsonl", "text", &docs);
    let run = |out: &str, seed: u64, min_tokens: usize| {
        let mut opts = s.opts(vec![f.clone()], out);
        opts.heldout_fraction = 0.3;
        opts.seed = seed;
        opts.min_tokens = min_tokens;
        prepare(&s.tok, &opts).unwrap();
        let train = all_docs(&Dataset::open(&opts.output, Split::Train).unwrap());
        let held = all_docs(&Dataset::open(&opts.output, Split::Heldout).unwrap());
        (train, held)
    };
    let expect = |seed: u64, min_tokens: usize| {
        let (mut train, mut held) = (Vec::new(), Vec::new());
        for (i, d) in docs.iter().enumerate() {
            let ids = encode_u32(&s.tok, d);
            if ids.len() < min_tokens {
                continue;
            }
            if is_heldout(seed, i as u64, 0.3) {
                held.push(ids);
            } else {
                train.push(ids);
            }
        }
        (train, held)
    };
    let a = run("a", 5, 2);
    assert_eq!(a, expect(5, 2));
    assert_eq!(run("b", 5, 2), a, "same seed, same split");
    let n = a.0.len() + a.1.len();
    assert!(a.1.len() > n / 10 && a.1.len() < n / 2, "held out {} of {n}", a.1.len());
    let c = run("c", 6, 2);
    assert_eq!(c, expect(6, 2));
    assert_ne!(c.1, a.1, "another seed holds out other documents");
    // Skipping more documents does not move the others between splits.
    assert_eq!(run("d", 5, 5), expect(5, 5));
}

#[test]
fn invalid_utf8_names_file_and_line() {
    let s = setup();
    let txt = write(s.dir(), "bad.txt", b"the cat\nsat on\nthe \xff mat\n");
    let e = s.err(&s.opts(vec![txt], "out"));
    assert!(e.contains("bad.txt:3") && e.contains("UTF-8") && e.contains("byte 5"), "{e}");

    let js = write(s.dir(), "bad.jsonl", b"{\"text\": \"the cat\"}\n{\"text\": \"a \xc3\x28 dog\"}\n");
    let e = s.err(&s.opts(vec![js], "out"));
    assert!(e.contains("bad.jsonl:2") && e.contains("UTF-8"), "{e}");
    assert!(!s.dir().join("out").exists(), "failed run left an output directory");
    assert_no_staging_left(s.dir());
}

#[test]
fn bad_json_names_file_and_line() {
    let s = setup();
    let f = write(s.dir(), "x.jsonl", "{\"text\": \"the cat\"}\n\n{\"text\": \"the\" oops}\n");
    let e = s.err(&s.opts(vec![f], "out"));
    assert!(e.contains("x.jsonl:3") && e.contains("invalid JSON") && !e.contains("line 1"), "{e}");

    let f = write(s.dir(), "arr.jsonl", "[1, 2]\n");
    let e = s.err(&s.opts(vec![f], "out"));
    assert!(e.contains("arr.jsonl:1") && e.contains("expected a JSON object"), "{e}");
}

#[test]
fn missing_or_non_string_text_field_names_file_and_line() {
    let s = setup();
    let f = write(s.dir(), "m.jsonl", "{\"text\": \"the cat\"}\n{\"body\": \"the cat\"}\n");
    let e = s.err(&s.opts(vec![f], "out"));
    assert!(e.contains("m.jsonl:2") && e.contains("no `text` field"), "{e}");

    let f = write(s.dir(), "n.jsonl", "{\"text\": 5}\n");
    let e = s.err(&s.opts(vec![f], "out"));
    assert!(e.contains("n.jsonl:1") && e.contains("`text` is a number"), "{e}");

    let f = write(s.dir(), "z.jsonl", "{\"text\": null}\n");
    let e = s.err(&s.opts(vec![f], "out"));
    assert!(e.contains("z.jsonl:1") && e.contains("null"), "{e}");
}

#[test]
fn missing_input_is_named() {
    let s = setup();
    let ok = write(s.dir(), "ok.txt", "the cat sat");
    let e = s.err(&s.opts(vec![ok, s.dir().join("nope.jsonl")], "out"));
    assert!(e.contains("nope.jsonl") && e.contains("does not exist"), "{e}");
    let e = s.err(&s.opts(vec![], "out"));
    assert!(e.contains("no input files"), "{e}");
}

#[test]
fn empty_corpus_is_an_error_naming_the_inputs() {
    let s = setup();
    let a = write(s.dir(), "blank.txt", " \n\n \t\n");
    let b = write(s.dir(), "short.jsonl", "{\"text\": \"hello\"}\n\n{\"text\": \"  \"}\n");
    let mut opts = s.opts(vec![a, b], "out");
    opts.doc_separator = Some("\n\n".into());
    opts.min_tokens = 3;
    let e = s.err(&opts);
    assert!(e.contains("empty corpus") && e.contains("blank.txt") && e.contains("short.jsonl"), "{e}");
    assert!(e.contains("1 shorter"), "{e}");
    assert!(!opts.output.exists());
    assert_no_staging_left(s.dir());
}

#[test]
fn bad_options_are_rejected() {
    let s = setup();
    let f = write(s.dir(), "a.txt", "the cat sat");
    let mut opts = s.opts(vec![f.clone()], "out");
    opts.heldout_fraction = 1.0;
    assert!(s.err(&opts).contains("heldout_fraction"));
    opts.heldout_fraction = f64::NAN;
    assert!(s.err(&opts).contains("heldout_fraction"));
    let mut opts = s.opts(vec![f], "out");
    opts.doc_separator = Some(String::new());
    assert!(s.err(&opts).contains("doc_separator"));
}

#[test]
fn existing_output_needs_overwrite_and_other_directories_are_never_replaced() {
    let s = setup();
    let f = write(s.dir(), "a.txt", "the cat sat");
    let g = write(s.dir(), "b.txt", "a big red dog ran");
    let opts = s.opts(vec![f], "out");
    prepare(&s.tok, &opts).unwrap();
    let e = s.err(&opts);
    assert!(e.contains("already holds a prepared dataset"), "{e}");

    let mut again = s.opts(vec![g], "out");
    again.overwrite = true;
    prepare(&s.tok, &again).unwrap();
    let ds = Dataset::open(&again.output, Split::Train).unwrap();
    assert_eq!(ds.doc(0), encode_u32(&s.tok, "a big red dog ran").as_slice());
    assert_no_staging_left(s.dir());

    // An empty directory is fine; a directory of other files is refused even with overwrite.
    std::fs::create_dir(s.dir().join("empty")).unwrap();
    prepare(&s.tok, &s.opts(again.inputs.clone(), "empty")).unwrap();
    let other = s.dir().join("other");
    std::fs::create_dir(&other).unwrap();
    std::fs::write(other.join("precious.txt"), "keep me").unwrap();
    let mut o = s.opts(again.inputs.clone(), "other");
    o.overwrite = true;
    let e = s.err(&o);
    assert!(e.contains("not a prepared dataset"), "{e}");
    assert!(other.join("precious.txt").is_file());
}

#[test]
fn answer_spans_mark_the_overlapping_tokens() {
    let s = setup();
    // "the answer is 42 ." with the span of "42" marked; a second line without spans.
    let text = "the cat sat on the mat";
    let line1 = serde_json::json!({"text": text, "answer_spans": [[8, 11]]}).to_string(); // "sat"
    let line2 = serde_json::json!({"text": "the mat"}).to_string();
    let f = s.dir().join("marked.jsonl");
    std::fs::write(&f, format!("{line1}\n{line2}\n")).unwrap();
    let opts = s.opts(vec![f.clone()], "marked");
    prepare(&s.tok, &opts).unwrap();
    let ds = Dataset::open(&opts.output, Split::Train).unwrap();
    let (ids, offsets) = s.tok.encode_with_offsets(text).unwrap();
    let want: Vec<u8> = offsets.iter().map(|&(a, b)| u8::from(a < b && a < 11 && 8 < b)).collect();
    assert_eq!(ds.doc_i64(0), ids);
    assert_eq!(ds.marks(0).unwrap(), &want[..]);
    assert_eq!(want.iter().filter(|&&m| m == 1).count(), 1, "exactly the token `sat`");
    assert!(ds.marks(1).unwrap().iter().all(|&m| m == 0));
    assert!(ds.has_marks());
    let bad = s.dir().join("bad-spans.jsonl");
    std::fs::write(&bad, "{\"text\": \"a b\", \"answer_spans\": [[3, 1]]}\n").unwrap();
    let err = prepare(&s.tok, &s.opts(vec![bad], "bad-spans")).unwrap_err();
    assert!(format!("{err:#}").contains("bad-spans.jsonl:1"), "{err:#}");
}

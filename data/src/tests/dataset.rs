use std::path::Path;

use tempfile::TempDir;

use super::fixture::{tokenizer, write};
use crate::{prepare, Dataset, PrepareOptions, Split};

/// A prepared dataset of three documents in `tmp/out`.
fn prepared(tmp: &TempDir) -> std::path::PathBuf {
    let tok = tokenizer(&tmp.path().join("tok"));
    let f = write(tmp.path(), "a.txt", "the cat sat\n\na big dog\n\none two three four");
    let mut opts = PrepareOptions::new(vec![f], tmp.path().join("out"));
    opts.doc_separator = Some("\n\n".into());
    prepare(&tok, &opts).unwrap();
    opts.output
}

fn open_err(dir: &Path, split: Split) -> String {
    match Dataset::open(dir, split) {
        Ok(_) => panic!("expected {} to be rejected", dir.display()),
        Err(e) => format!("{e:#}"),
    }
}

fn u64s(v: &[u64]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

#[test]
fn opens_and_reads_documents() {
    let tmp = TempDir::new().unwrap();
    let out = prepared(&tmp);
    let ds = Dataset::open(&out, Split::Train).unwrap();
    assert_eq!(ds.num_docs(), 3);
    assert_eq!(ds.doc_len(0), 4);
    assert_eq!(ds.doc(2).len(), 5);
    assert_eq!(ds.get(3), None);
    assert_eq!(ds.num_tokens(), 4 + 4 + 5);
    assert_eq!(ds.split(), Split::Train);
    assert_eq!(ds.vocab_bound(), ds.meta().summary.vocab_bound);
}

#[test]
fn rejects_a_directory_without_meta_or_with_another_format() {
    let tmp = TempDir::new().unwrap();
    let e = open_err(tmp.path(), Split::Train);
    assert!(e.contains("no meta.json"), "{e}");

    let out = prepared(&tmp);
    let meta_path = out.join("meta.json");
    let text = std::fs::read_to_string(&meta_path).unwrap();
    std::fs::write(&meta_path, text.replace("rlp-tokens-v1", "rlp-tokens-v9")).unwrap();
    let e = open_err(&out, Split::Train);
    assert!(e.contains("meta.json") && e.contains("rlp-tokens-v9"), "{e}");
}

#[test]
fn rejects_a_tokens_file_of_partial_ids() {
    let tmp = TempDir::new().unwrap();
    let out = prepared(&tmp);
    let path = out.join("train.tokens");
    let mut bytes = std::fs::read(&path).unwrap();
    bytes.push(0);
    std::fs::write(&path, bytes).unwrap();
    let e = open_err(&out, Split::Train);
    assert!(e.contains("train.tokens") && e.contains("whole number"), "{e}");
}

#[test]
fn rejects_inconsistent_offsets() {
    let tmp = TempDir::new().unwrap();
    let out = prepared(&tmp);
    let path = out.join("train.offsets");
    std::fs::write(&path, u64s(&[0, 4, 2, 13])).unwrap();
    let e = open_err(&out, Split::Train);
    assert!(e.contains("train.offsets") && e.contains("decrease at document 1"), "{e}");

    std::fs::write(&path, u64s(&[0, 4, 8, 12])).unwrap();
    let e = open_err(&out, Split::Train);
    assert!(e.contains("train.offsets") && e.contains("last offset is 12") && e.contains("13 tokens"), "{e}");

    std::fs::write(&path, u64s(&[1, 4, 8, 13])).unwrap();
    let e = open_err(&out, Split::Train);
    assert!(e.contains("first offset"), "{e}");

    std::fs::write(&path, [0u8; 12]).unwrap();
    let e = open_err(&out, Split::Train);
    assert!(e.contains("train.offsets") && e.contains("multiple of 8"), "{e}");

    // Consistent files that disagree with meta.json (e.g. copied from another run).
    std::fs::write(&path, u64s(&[0, 13])).unwrap();
    let e = open_err(&out, Split::Train);
    assert!(e.contains("meta.json says 3"), "{e}");

    std::fs::remove_file(&path).unwrap();
    let e = open_err(&out, Split::Train);
    assert!(e.contains("train.offsets"), "{e}");
}

#[test]
fn split_names_parse() {
    assert_eq!("train".parse::<Split>().unwrap(), Split::Train);
    assert_eq!("heldout".parse::<Split>().unwrap(), Split::Heldout);
    assert!("test".parse::<Split>().is_err());
    assert_eq!(Split::Heldout.tokens_file(), "heldout.tokens");
}

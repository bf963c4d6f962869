//! `rlp data synth`: a small procedural world where a thought genuinely helps predict what comes
//! next, written as text documents for `prepare`.
//!
//! Three task families over small numbers, each solved step by step:
//! - chains of additions `3 + 4 + 2 =` (working: `3 + 4 = 7 , 7 + 2 = 9`),
//! - chains of subtractions that stay non-negative `9 - 3 - 2 =` (working: `9 - 3 = 6 , 6 - 2 = 4`),
//! - the maximum of a list `max 3 8 1 =` (working: `max 3 8 = 8 , max 8 1 = 8`).
//!
//! A *worked example* writes the working between the thought delimiters before the answer; a
//! *plain statement* gives only the answer (`3 + 4 + 2 = 9 .`). Answering a plain statement
//! directly needs the whole chain in one step, while each working step is a one-operation fact
//! the model sees over and over; so a model that learned to write the working can use a thought
//! to answer. Problems are split by a hash of their operands: held-out problems never occur in
//! training, so answering them takes composition, not recall.
//!
//! The teacher who wrote the worked examples can be careless (`careless`): in an addition step
//! whose sum reaches 10 it drops the ten with that probability (writes the sum less ten: a
//! forgotten carry for two digits, `8 + 5 = 3`, a dropped ten for `13 + 4 = 7`) and carries on
//! from its wrong result to a wrong answer, while the plain statements always state the truth.
//! At `careless` > ½ the dropped ten is the likelier working, so a pretrained model's *greedy*
//! thought on such a problem is usually wrong while a *sampled* one is right often enough to be
//! found: a world where the next-token truth of plain text can teach
//! the thinking something the worked examples got wrong, which is what RLP claims to do.
//!
//! Every statement ends with a space-separated `.`; every word is one token of the word-level
//! tokenizer written beside the corpus. The answer's character span is recorded
//! (`answer_spans`), so `prepare` can mark answer tokens.
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde_json::json;

pub const THINK_OPEN: &str = "<think>";
pub const THINK_CLOSE: &str = "</think>";
const UNK: &str = "<unk>";
const EOS: &str = "<eos>";

#[derive(Debug, Clone)]
pub struct SynthOptions {
    pub output: PathBuf,
    /// Documents in each training file.
    pub documents: usize,
    /// Statements per document.
    pub statements: usize,
    /// Largest operand.
    pub max_operand: u32,
    /// Operands per problem range over 2 ..= 2 + difficulty.
    pub difficulty: usize,
    /// Fraction of problems (by operand hash) reserved for the held-out files.
    pub heldout_fraction: f64,
    /// Problems in `eval.jsonl`.
    pub eval_problems: usize,
    /// Probability that a worked example's addition step whose sum reaches 10 drops the ten.
    pub careless: f64,
    pub seed: u64,
}

impl SynthOptions {
    pub fn new(output: PathBuf) -> SynthOptions {
        SynthOptions { output, documents: 2000, statements: 8, max_operand: 9, difficulty: 1, heldout_fraction: 0.2, eval_problems: 200, careless: 0.0, seed: 0 }
    }

    fn validate(&self) -> Result<()> {
        anyhow::ensure!(self.documents > 0 && self.statements > 0, "documents and statements must be at least 1");
        anyhow::ensure!((1..=50).contains(&self.max_operand), "max_operand must be in 1..=50");
        anyhow::ensure!((0..=4).contains(&self.difficulty), "difficulty must be in 0..=4 (2 to 6 operands)");
        anyhow::ensure!(self.heldout_fraction > 0.0 && self.heldout_fraction < 1.0, "heldout_fraction must be in (0, 1)");
        anyhow::ensure!((0.0..=1.0).contains(&self.careless), "careless must be in [0, 1], got {}", self.careless);
        Ok(())
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Family {
    Add,
    Sub,
    Max,
}

/// One problem of the world.
#[derive(Debug, Clone)]
struct Problem {
    family: Family,
    operands: Vec<u32>,
}

impl Problem {
    fn random(rng: &mut ChaCha8Rng, o: &SynthOptions) -> Problem {
        let family = [Family::Add, Family::Sub, Family::Max][rng.random_range(0..3)];
        let n = 2 + rng.random_range(0..=o.difficulty);
        let mut operands: Vec<u32> = (0..n).map(|_| rng.random_range(0..=o.max_operand)).collect();
        if family == Family::Sub {
            // Start high enough that every partial difference stays non-negative.
            operands[0] = operands[1..].iter().sum::<u32>() + rng.random_range(0..=o.max_operand);
        }
        Problem { family, operands }
    }

    /// The question, up to and including `=`.
    fn question(&self) -> String {
        let nums: Vec<String> = self.operands.iter().map(u32::to_string).collect();
        match self.family {
            Family::Add => format!("{} =", nums.join(" + ")),
            Family::Sub => format!("{} =", nums.join(" - ")),
            Family::Max => format!("max {} =", nums.join(" ")),
        }
    }

    /// The true working, one binary step at a time, and the true answer.
    fn solve(&self) -> (String, u32) {
        self.work(&mut || false)
    }

    /// The working and answer as a teacher writes them who drops the ten of an addition whenever
    /// `forget()` says so (asked once per step whose sum reaches 10), carrying on from what it wrote.
    fn work(&self, forget: &mut dyn FnMut() -> bool) -> (String, u32) {
        let mut acc = self.operands[0];
        let mut steps = Vec::new();
        for &x in &self.operands[1..] {
            let (next, step) = match self.family {
                Family::Add => {
                    let sum = if acc + x >= 10 && forget() { acc + x - 10 } else { acc + x };
                    (sum, format!("{acc} + {x} = {sum}"))
                }
                Family::Sub => (acc - x, format!("{acc} - {x} = {}", acc - x)),
                Family::Max => (acc.max(x), format!("max {acc} {x} = {}", acc.max(x))),
            };
            steps.push(step);
            acc = next;
        }
        (steps.join(" , "), acc)
    }

    /// Held-out problems are a fixed, seeded subset of the problem space.
    fn is_heldout(&self, seed: u64, fraction: f64) -> bool {
        let mut h = seed ^ 0x5eed_0f_5e7 ^ (self.family as u64) << 56;
        for &x in &self.operands {
            h = (h ^ x as u64).wrapping_mul(0x100_0000_01b3).rotate_left(17);
        }
        h ^= h >> 29;
        h = h.wrapping_mul(0xbf58_476d_1ce4_e5b9);
        h ^= h >> 32;
        ((h >> 11) as f64) / ((1u64 << 53) as f64) < fraction
    }
}

/// A document's text and the character spans of its answers.
struct Doc {
    text: String,
    spans: Vec<(usize, usize)>,
}

fn document(rng: &mut ChaCha8Rng, o: &SynthOptions, worked_fraction: f64, heldout: bool) -> Doc {
    let mut text = String::new();
    let mut spans = Vec::new();
    let mut made = 0;
    while made < o.statements {
        let p = Problem::random(rng, o);
        if p.is_heldout(o.seed, o.heldout_fraction) != heldout {
            continue;
        }
        if !text.is_empty() {
            text.push(' ');
        }
        text += &p.question();
        text.push(' ');
        let answer = if rng.random_bool(worked_fraction) {
            // No draw at `careless` = 0, so the careful world is the one it always was.
            let (working, answer) = p.work(&mut || o.careless > 0.0 && rng.random_bool(o.careless));
            text += &format!("{THINK_OPEN} {working} {THINK_CLOSE} ");
            answer
        } else {
            p.solve().1
        };
        let start = text.chars().count();
        text += &answer.to_string();
        spans.push((start, text.chars().count()));
        text += " .";
        made += 1;
    }
    Doc { text, spans }
}

pub struct SynthSummary {
    pub files: Vec<PathBuf>,
    pub vocab: usize,
}

fn write_docs(path: &Path, docs: &[Doc], kind: &str) -> Result<()> {
    let mut out = String::new();
    for d in docs {
        out += &json!({"text": d.text, "kind": kind, "answer_spans": d.spans}).to_string();
        out.push('\n');
    }
    std::fs::write(path, out).with_context(|| format!("cannot write {}", path.display()))
}

/// Writes the corpus files and a word-level tokenizer into `o.output`:
/// - `pretrain.jsonl`: half worked examples, half plain statements (for pretraining),
/// - `plain.jsonl`: plain statements only (for continuing with RLP or next-token training),
/// - `heldout.jsonl`: plain statements of held-out problems (evaluation),
/// - `eval.jsonl`: held-out problems as `{"question", "answer"}` for `rlp eval`,
/// - `tokenizer/`: `tokenizer.json` (one token per word, thought delimiters included).
pub fn synth(o: &SynthOptions) -> Result<SynthSummary> {
    o.validate()?;
    std::fs::create_dir_all(&o.output).with_context(|| format!("cannot create {}", o.output.display()))?;
    let mut rng = ChaCha8Rng::seed_from_u64(o.seed);
    let pretrain: Vec<Doc> = (0..o.documents).map(|_| document(&mut rng, o, 0.5, false)).collect();
    let plain: Vec<Doc> = (0..o.documents).map(|_| document(&mut rng, o, 0.0, false)).collect();
    let heldout: Vec<Doc> = (0..(o.documents / 10).max(1)).map(|_| document(&mut rng, o, 0.0, true)).collect();
    let mut eval = String::new();
    let mut n = 0;
    while n < o.eval_problems {
        let p = Problem::random(&mut rng, o);
        if p.is_heldout(o.seed, o.heldout_fraction) {
            eval += &json!({"question": p.question(), "answer": p.solve().1.to_string()}).to_string();
            eval.push('\n');
            n += 1;
        }
    }
    let files = ["pretrain.jsonl", "plain.jsonl", "heldout.jsonl", "eval.jsonl"].map(|f| o.output.join(f));
    write_docs(&files[0], &pretrain, "mixed")?;
    write_docs(&files[1], &plain, "plain")?;
    write_docs(&files[2], &heldout, "plain")?;
    std::fs::write(&files[3], eval).with_context(|| format!("cannot write {}", files[3].display()))?;
    let vocab = write_tokenizer(&o.output.join("tokenizer"), o)?;
    Ok(SynthSummary { files: files.to_vec(), vocab })
}

/// Every word the world can produce, for the tokenizer's vocabulary.
fn words(o: &SynthOptions) -> BTreeSet<String> {
    let largest = o.max_operand * (2 + o.difficulty as u32) * 2;
    let mut w: BTreeSet<String> = (0..=largest).map(|n| n.to_string()).collect();
    for s in ["+", "-", "=", ",", ".", "max"] {
        w.insert(s.to_string());
    }
    w
}

/// A word-level `tokenizer.json` (whitespace split, one id per word) plus the config files that
/// make `transformers` load it as a fast tokenizer. Returns the vocabulary size.
fn write_tokenizer(dir: &Path, o: &SynthOptions) -> Result<usize> {
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let specials = [UNK, EOS, THINK_OPEN, THINK_CLOSE];
    let mut vocab = serde_json::Map::new();
    let mut added = Vec::new();
    for (i, s) in specials.iter().enumerate() {
        vocab.insert(s.to_string(), json!(i));
        added.push(json!({"id": i, "content": s, "single_word": false, "lstrip": false, "rstrip": false, "normalized": false, "special": true}));
    }
    for w in words(o) {
        let id = vocab.len();
        vocab.insert(w, json!(id));
    }
    let n = vocab.len();
    if n > u32::MAX as usize {
        bail!("vocabulary too large");
    }
    let tokenizer = json!({
        "version": "1.0",
        "truncation": null,
        "padding": null,
        "added_tokens": added,
        "normalizer": null,
        "pre_tokenizer": {"type": "WhitespaceSplit"},
        "post_processor": null,
        "decoder": null,
        "model": {"type": "WordLevel", "vocab": vocab, "unk_token": UNK},
    });
    let config = json!({"tokenizer_class": "PreTrainedTokenizerFast", "unk_token": UNK, "eos_token": EOS, "model_max_length": 4096});
    for (name, v) in [("tokenizer.json", tokenizer), ("tokenizer_config.json", config)] {
        let p = dir.join(name);
        std::fs::write(&p, serde_json::to_string_pretty(&v)?).with_context(|| format!("cannot write {}", p.display()))?;
    }
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn add(operands: &[u32]) -> Problem {
        Problem { family: Family::Add, operands: operands.to_vec() }
    }

    #[test]
    fn a_careless_teacher_forgets_carries_and_carries_on() {
        // 8 + 5 needs a carry (written 3), then 3 + 4 = 7 has none.
        let (working, answer) = add(&[8, 5, 4]).work(&mut || true);
        assert_eq!((working.as_str(), answer), ("8 + 5 = 3 , 3 + 4 = 7", 7));
        assert_eq!(add(&[8, 5, 4]).solve(), ("8 + 5 = 13 , 13 + 4 = 17".to_string(), 17));
        // Subtraction and maxima are never wrong.
        let sub = Problem { family: Family::Sub, operands: vec![13, 8] };
        assert_eq!(sub.work(&mut || true), sub.solve());
    }

    #[test]
    fn worked_answers_follow_the_working_and_plain_statements_stay_true() {
        let o = SynthOptions { careless: 1.0, statements: 200, ..SynthOptions::new(PathBuf::new()) };
        let mut rng = ChaCha8Rng::seed_from_u64(0);
        let doc = document(&mut rng, &o, 1.0, false);
        // Every written addition step is below 10: each carry was forgotten.
        let workings: Vec<&str> = doc.text.split(THINK_OPEN).skip(1).map(|w| w.split(THINK_CLOSE).next().unwrap()).collect();
        let steps: Vec<&str> = workings.iter().flat_map(|w| w.split(',')).filter(|s| s.contains(" + ")).collect();
        assert!(steps.len() > 50, "too few addition steps: {}", steps.len());
        for step in steps {
            let sum: u32 = step.trim().rsplit(' ').next().unwrap().parse().unwrap();
            assert!(sum < 10, "a carry was kept: `{step}`");
        }
        // The answer after `</think>` is the working's last result.
        for (w, after) in workings.iter().zip(doc.text.split(THINK_CLOSE).skip(1)) {
            assert_eq!(w.trim().rsplit(' ').next(), after.split_whitespace().next(), "`{w}` then `{after}`");
        }
        let plain = document(&mut rng, &o, 0.0, false);
        for st in plain.text.split(" .").map(str::trim).filter(|s| !s.is_empty()) {
            let (q, a) = st.rsplit_once(" = ").unwrap();
            let nums: Vec<u32> = q.split(' ').filter_map(|w| w.parse().ok()).collect();
            let truth = if q.starts_with("max") { *nums.iter().max().unwrap() } else if q.contains('-') { nums[0] - nums[1..].iter().sum::<u32>() } else { nums.iter().sum() };
            assert_eq!(a.parse::<u32>().unwrap(), truth, "plain statement `{st}` is not true");
        }
    }
}

//! The evaluation loop: prompts in batches → (thought →) answer, k samples per problem → extract
//! → exact match → pass@1.
//!
//! Without a thought, each batch of prompts is prefilled once and its cache shared by the k
//! samples of each problem (`prefill` + `Decoder::repeat_rows(k)`). With a thought,
//! `sample_thoughts` does the same for `prompt ⊕ <think>`, and the answers then continue each
//! `prompt ⊕ <think> c </think>` row.
use std::fmt;

use anyhow::{bail, ensure, Context, Result};
use rlp_model::{CausalLm, Tokenizer};
use rlp_rollout::{derive_seed, generate, prefill, sample_thoughts, Delimiters, Finish, Generation, SamplingParams, Thought};
use serde_json::{json, Value};

use crate::extract::{cut_at_stop, extract};
use crate::problems::Problem;
use crate::score::{answers_match, mean, pass_at_1};
use crate::template::Template;

/// Sampling with a thought before the answer.
#[derive(Debug, Clone, Copy)]
pub struct ThinkOptions {
    pub delims: Delimiters,
    /// Sampled thought tokens, the closing delimiter included; a thought still open at the limit
    /// is closed by appending the delimiter.
    pub max_thought_tokens: usize,
}

#[derive(Debug, Clone)]
pub struct EvalOptions {
    /// Samples per problem.
    pub k: usize,
    /// 0 = greedy.
    pub temperature: f64,
    /// 1 = off.
    pub top_p: f64,
    /// 0 = off.
    pub top_k: i64,
    /// Answer tokens per sample (the stop token included).
    pub max_new_tokens: usize,
    pub seed: u64,
    /// Problems per batch (each with its k samples, so `batch_size · k` rows decode together).
    pub batch_size: usize,
    pub think: Option<ThinkOptions>,
}

impl Default for EvalOptions {
    fn default() -> Self {
        EvalOptions { k: 1, temperature: 0.0, top_p: 1.0, top_k: 0, max_new_tokens: 64, seed: 0, batch_size: 8, think: None }
    }
}

impl EvalOptions {
    pub fn validate(&self) -> Result<()> {
        ensure!(self.k >= 1, "k must be at least 1");
        ensure!(self.batch_size >= 1, "batch size must be at least 1");
        ensure!(self.max_new_tokens >= 1, "max new tokens must be at least 1");
        if let Some(t) = &self.think {
            ensure!(t.max_thought_tokens >= 1, "max thought tokens must be at least 1");
            ensure!(t.delims.open != t.delims.close, "the thought delimiters must be different tokens");
        }
        self.sampling(0).validate()
    }

    fn sampling(&self, seed: u64) -> SamplingParams {
        SamplingParams { temperature: self.temperature, top_k: self.top_k, top_p: self.top_p, max_new_tokens: self.max_new_tokens, stop_ids: Vec::new(), seed, first_row: 0 }
    }
}

/// Makes sure the thought delimiters are single tokens of the model: tokens the tokenizer lacks
/// are added as special tokens, growing the embedding (mean-initialised rows, as the trainer does).
/// Returns the options and the delimiters that had to be added (an untrained model will rarely
/// close a thought with a token it has never seen).
pub fn prepare_thoughts(lm: &mut CausalLm, tok: &mut Tokenizer, open: &str, close: &str, max_thought_tokens: usize) -> Result<(ThinkOptions, Vec<String>)> {
    ensure!(!open.is_empty() && !close.is_empty(), "the thought delimiters must not be empty");
    ensure!(open != close, "the opening and closing thought delimiters are both `{open}`");
    let added: Vec<String> = [open, close].iter().filter(|t| tok.token_id(t).is_none()).map(|t| t.to_string()).collect();
    let ids = lm.add_special_tokens(tok, &[open, close]).with_context(|| format!("cannot add thought delimiters `{open}`, `{close}`"))?;
    let delims = Delimiters { open: ids[0], close: ids[1] };
    Ok((ThinkOptions { delims, max_thought_tokens }, added))
}

/// The seed of one phase of one batch. Each batch is seeded on its own, so a problem's samples
/// do not depend on how many batches ran before it in the same process, and a rerun with the same
/// seed and batch size is identical. Hashed rather than `seed + batch` so that the thought and
/// answer phases, and neighbouring seeds, never share a stream.
pub fn batch_seed(seed: u64, batch: usize, phase: u64) -> u64 {
    derive_seed(&[seed, batch as u64, phase])
}

const PHASE_THOUGHT: u64 = 0;
const PHASE_ANSWER: u64 = 1;

/// One of a problem's k samples.
#[derive(Debug, Clone, PartialEq)]
pub struct SampleResult {
    /// The thought between the delimiters (`None` without `--think`).
    pub thought: Option<String>,
    pub thought_tokens: usize,
    /// The model closed the thought itself (rather than being closed at the limit).
    pub thought_closed: bool,
    /// The answer text, cut at the template's first stop string, without a final EOS.
    pub answer_text: String,
    /// Sampled answer tokens (before the cut, the stop token included).
    pub answer_tokens: usize,
    pub extracted: Option<String>,
    pub correct: bool,
}

impl SampleResult {
    pub fn to_json(&self) -> Value {
        let mut v = json!({
            "thought": self.thought,
            "answer_text": self.answer_text,
            "extracted": self.extracted,
            "correct": self.correct,
            "answer_tokens": self.answer_tokens,
        });
        if self.thought.is_some() {
            v["thought_tokens"] = json!(self.thought_tokens);
            v["thought_closed"] = json!(self.thought_closed);
        }
        v
    }
}

/// One problem's result: its k samples and pass@1.
#[derive(Debug, Clone, PartialEq)]
pub struct ItemResult {
    pub index: usize,
    pub question: String,
    pub reference: String,
    pub samples: Vec<SampleResult>,
    /// Fraction of the k samples that are correct.
    pub pass1: f64,
}

impl ItemResult {
    /// The output line: `{"index", "question", "reference", "samples": [...], "pass1"}`.
    pub fn to_json(&self) -> Value {
        json!({
            "index": self.index,
            "question": self.question,
            "reference": self.reference,
            "samples": self.samples.iter().map(SampleResult::to_json).collect::<Vec<_>>(),
            "pass1": self.pass1,
        })
    }
}

/// Totals over a whole evaluation.
#[derive(Debug, Clone, PartialEq)]
pub struct Summary {
    pub problems: usize,
    pub k: usize,
    /// Mean over problems of each problem's pass@1.
    pub pass1: f64,
    /// Fraction of samples with an extractable answer.
    pub extracted: f64,
    pub mean_answer_tokens: f64,
    /// With thoughts: mean thought tokens (delimiters excluded) and the fraction the model closed.
    pub mean_thought_tokens: Option<f64>,
    pub closed: Option<f64>,
}

impl fmt::Display for Summary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "problems {}, k {}, pass@1 {:.4}, answers extracted {:.1}%, mean answer tokens {:.1}",
            self.problems,
            self.k,
            self.pass1,
            100.0 * self.extracted,
            self.mean_answer_tokens
        )?;
        if let (Some(t), Some(c)) = (self.mean_thought_tokens, self.closed) {
            write!(f, ", mean thought tokens {t:.1} (closed by the model {:.1}%)", 100.0 * c)?;
        }
        Ok(())
    }
}

/// Runs the evaluation. `sink` receives each batch's results as soon as they are ready (to write
/// them out and show progress); the summary comes back at the end.
pub fn evaluate(
    lm: &CausalLm,
    tok: &Tokenizer,
    problems: &[Problem],
    template: &Template,
    opts: &EvalOptions,
    mut sink: impl FnMut(&[ItemResult]) -> Result<()>,
) -> Result<Summary> {
    opts.validate()?;
    template.validate()?;
    // Every prompt is checked before any compute is spent.
    let prompts = encode_prompts(lm, tok, problems, template, opts.think.is_some())?;
    let eos = lm.config.eos_token_ids();
    let mut stop_ids = eos.clone();
    for id in stop_token_ids(lm, tok, &template.stop)? {
        if !stop_ids.contains(&id) {
            stop_ids.push(id);
        }
    }
    let answer_params = SamplingParams { stop_ids, ..opts.sampling(0) };

    let (mut pass1s, mut answer_lens, mut thought_lens) = (Vec::new(), Vec::new(), Vec::new());
    let (mut extracted, mut closed, mut samples) = (0usize, 0usize, 0usize);
    for (b, (chunk, chunk_prompts)) in problems.chunks(opts.batch_size).zip(prompts.chunks(opts.batch_size)).enumerate() {
        let what = || format!("batch {b} (problems {} to {})", chunk[0].index, chunk[chunk.len() - 1].index);
        let rows = sample_batch(lm, chunk_prompts, opts, &answer_params, b).with_context(what)?;
        let mut items = Vec::with_capacity(chunk.len());
        for (problem, group) in chunk.iter().zip(rows.chunks(opts.k)) {
            let results = group
                .iter()
                .map(|(thought, gen)| score_sample(tok, template, &eos, &problem.reference, thought.as_ref(), gen))
                .collect::<Result<Vec<_>>>()
                .with_context(|| problem.location.clone())?;
            for r in &results {
                samples += 1;
                extracted += r.extracted.is_some() as usize;
                answer_lens.push(r.answer_tokens as f64);
                if r.thought.is_some() {
                    thought_lens.push(r.thought_tokens as f64);
                    closed += r.thought_closed as usize;
                }
            }
            let correct: Vec<bool> = results.iter().map(|r| r.correct).collect();
            let pass1 = pass_at_1(&correct);
            pass1s.push(pass1);
            items.push(ItemResult { index: problem.index, question: problem.question.clone(), reference: problem.reference.clone(), samples: results, pass1 });
        }
        sink(&items)?;
    }
    let thinking = opts.think.is_some();
    Ok(Summary {
        problems: problems.len(),
        k: opts.k,
        pass1: mean(&pass1s),
        extracted: if samples == 0 { 0.0 } else { extracted as f64 / samples as f64 },
        mean_answer_tokens: mean(&answer_lens),
        mean_thought_tokens: thinking.then(|| mean(&thought_lens)),
        closed: thinking.then(|| if samples == 0 { 0.0 } else { closed as f64 / samples as f64 }),
    })
}

/// Renders and tokenizes every prompt, checking that each leaves room for an answer.
fn encode_prompts(lm: &CausalLm, tok: &Tokenizer, problems: &[Problem], template: &Template, think: bool) -> Result<Vec<Vec<i64>>> {
    let max_pos = lm.max_positions();
    problems
        .iter()
        .map(|p| {
            let ids = tok.encode(&template.render(&p.question)).with_context(|| p.location.clone())?;
            if ids.is_empty() {
                bail!("{}: the prompt has no tokens", p.location);
            }
            lm.check_ids(&ids).with_context(|| p.location.clone())?;
            // The opening delimiter takes one more position.
            let needed = ids.len() + think as usize;
            if needed as i64 >= max_pos {
                bail!(
                    "{}: the prompt has {needed} tokens (template and shots included), leaving no room for an answer within the model's {max_pos} positions",
                    p.location
                );
            }
            Ok(ids)
        })
        .collect()
}

/// Tokens whose text contains a stop string. Emitting one puts the stop string in the answer, so
/// everything after it would be cut anyway: stopping there saves the rest of the decoding and
/// changes no result. A stop string split across tokens is still cut afterwards, just not early.
fn stop_token_ids(lm: &CausalLm, tok: &Tokenizer, stops: &[String]) -> Result<Vec<i64>> {
    if stops.is_empty() {
        return Ok(Vec::new());
    }
    let mut ids = Vec::new();
    for id in 0..lm.vocab_size() {
        let text = tok.decode(&[id])?;
        if stops.iter().any(|s| text.contains(s.as_str())) {
            ids.push(id);
        }
    }
    Ok(ids)
}

/// The k samples of each prompt of one batch, problem-major: `(thought, answer)`.
fn sample_batch(lm: &CausalLm, prompts: &[Vec<i64>], opts: &EvalOptions, answer_params: &SamplingParams, batch: usize) -> Result<Vec<(Option<Thought>, Generation)>> {
    let answer_params = SamplingParams { seed: batch_seed(opts.seed, batch, PHASE_ANSWER), ..answer_params.clone() };
    let Some(think) = &opts.think else {
        let mut decoder = prefill(lm, prompts, answer_params.max_new_tokens)?;
        decoder.repeat_rows(opts.k);
        return Ok(decoder.run(&answer_params)?.into_iter().map(|g| (None, g)).collect());
    };
    // sample_thoughts stops at the closing delimiter; the answer's stop tokens do not apply.
    let thought_params = SamplingParams { max_new_tokens: think.max_thought_tokens, seed: batch_seed(opts.seed, batch, PHASE_THOUGHT), ..answer_params.clone() };
    let thoughts = sample_thoughts(lm, prompts, think.delims, opts.k, &thought_params).context("sampling thoughts")?;
    let rows: Vec<Vec<i64>> =
        prompts.iter().zip(&thoughts).flat_map(|(p, group)| group.iter().map(move |t| p.iter().chain(&t.ids).copied().collect())).collect();
    let answers = generate_within_positions(lm, &rows, &answer_params).context("sampling answers")?;
    Ok(thoughts.into_iter().flatten().map(Some).zip(answers).collect())
}

/// [`generate`] for rows that may not fit: a thought force-closed at the model's position limit
/// leaves its row one token too long, and that row gets an empty answer instead of failing the run.
fn generate_within_positions(lm: &CausalLm, rows: &[Vec<i64>], p: &SamplingParams) -> Result<Vec<Generation>> {
    let max_pos = lm.max_positions() as usize;
    let fitting: Vec<Vec<i64>> = rows.iter().filter(|r| r.len() <= max_pos).cloned().collect();
    let mut generated = if fitting.is_empty() { Vec::new() } else { generate(lm, &fitting, p)? }.into_iter();
    rows.iter()
        .map(|r| {
            if r.len() <= max_pos {
                generated.next().context("internal: fewer generations than rows")
            } else {
                Ok(Generation { tokens: Vec::new(), logprobs: Vec::new(), finish: Finish::Length })
            }
        })
        .collect()
}

fn score_sample(tok: &Tokenizer, template: &Template, eos: &[i64], reference: &str, thought: Option<&Thought>, gen: &Generation) -> Result<SampleResult> {
    // A final EOS is the model ending its answer, not part of the text.
    let mut tokens = &gen.tokens[..];
    if gen.finish == Finish::Stop {
        if let Some((last, rest)) = tokens.split_last() {
            if eos.contains(last) {
                tokens = rest;
            }
        }
    }
    let text = tok.decode(tokens)?;
    let answer_text = cut_at_stop(&text, &template.stop).to_string();
    let extracted = extract(&answer_text, template.extraction);
    let correct = extracted.as_deref().is_some_and(|e| answers_match(e, reference));
    let (thought_text, thought_tokens, thought_closed) = match thought {
        Some(t) => (Some(tok.decode(t.inner())?), t.inner().len(), t.closed),
        None => (None, 0, false),
    };
    Ok(SampleResult { thought: thought_text, thought_tokens, thought_closed, answer_text, answer_tokens: gen.tokens.len(), extracted, correct })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batch_seeds_differ_by_batch_phase_and_seed() {
        let mut seen = std::collections::HashSet::new();
        for seed in 0..4 {
            for batch in 0..8 {
                for phase in [PHASE_THOUGHT, PHASE_ANSWER] {
                    assert!(seen.insert(batch_seed(seed, batch, phase)), "collision at seed {seed} batch {batch} phase {phase}");
                }
            }
        }
        assert_eq!(batch_seed(3, 5, PHASE_ANSWER), batch_seed(3, 5, PHASE_ANSWER));
    }

    #[test]
    fn summary_line_names_every_quantity() {
        let s = Summary { problems: 3, k: 2, pass1: 0.5, extracted: 0.75, mean_answer_tokens: 10.0, mean_thought_tokens: Some(20.0), closed: Some(0.5) };
        let line = s.to_string();
        for part in ["problems 3", "k 2", "pass@1 0.5000", "answers extracted 75.0%", "mean answer tokens 10.0", "mean thought tokens 20.0", "50.0%"] {
            assert!(line.contains(part), "{line}");
        }
        let plain = Summary { mean_thought_tokens: None, closed: None, ..s };
        assert!(!plain.to_string().contains("thought"));
    }

    #[test]
    fn output_lines_have_the_documented_keys() {
        let sample = SampleResult {
            thought: None,
            thought_tokens: 0,
            thought_closed: false,
            answer_text: " 42".into(),
            answer_tokens: 3,
            extracted: Some("42".into()),
            correct: true,
        };
        let item = ItemResult { index: 0, question: "q".into(), reference: "42".into(), samples: vec![sample.clone()], pass1: 1.0 };
        let v = item.to_json();
        for key in ["index", "question", "reference", "samples", "pass1"] {
            assert!(v.get(key).is_some(), "{v}");
        }
        let s = &v["samples"][0];
        assert!(s["thought"].is_null() && s["extracted"] == "42" && s["correct"] == true && s.get("thought_closed").is_none());
        let thinking = SampleResult { thought: Some("hm".into()), thought_tokens: 1, thought_closed: true, ..sample };
        assert_eq!(thinking.to_json()["thought_closed"], true);
    }
}

//! `rlp eval`: benchmark evaluation (GSM8K / MATH500 layout) with pass@1 over k samples.
//! The logic lives in `rlp-eval`; this file parses flags, writes JSONL and prints the summary.
use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use clap::Args;
use rlp_eval::{evaluate, load_problems, prepare_thoughts, EvalOptions, Template};

use super::{progress, ModelArgs};

#[derive(Args, Debug)]
pub struct EvalArgs {
    #[command(flatten)]
    pub model: ModelArgs,
    /// JSONL problems, one {"question": "...", "answer": "..."} per line (GSM8K's "… #### 42"
    /// answers are compared by the part after the last "####").
    #[arg(long)]
    pub problems: PathBuf,
    /// Prompt template (TOML: prompt, shot, shots, extraction, stop); built-in zero-shot
    /// "Question: …\nAnswer:" with last-number extraction when absent. See configs/eval/.
    #[arg(long)]
    pub template: Option<PathBuf>,
    /// Samples per problem; pass@1 is the fraction correct, averaged over problems.
    #[arg(long, default_value_t = 1)]
    pub k: usize,
    /// 0 = greedy.
    #[arg(long, default_value_t = 0.0)]
    pub temperature: f64,
    #[arg(long, default_value_t = 1.0)]
    pub top_p: f64,
    /// 0 = off.
    #[arg(long, default_value_t = 0)]
    pub top_k: i64,
    /// Answer tokens per sample.
    #[arg(long, default_value_t = 64)]
    pub max_new_tokens: usize,
    /// Sample a thought `<think> … </think>` before the answer.
    #[arg(long)]
    pub think: bool,
    /// Opening thought delimiter (added to the vocabulary when the tokenizer lacks it).
    #[arg(long, default_value = "<think>", requires = "think")]
    pub think_open: String,
    /// Closing thought delimiter.
    #[arg(long, default_value = "</think>", requires = "think")]
    pub think_close: String,
    /// Thought tokens, the closing delimiter included; a longer thought is closed here.
    #[arg(long, default_value_t = 64)]
    pub max_thought_tokens: usize,
    /// Each batch is seeded from this, so a rerun with the same seed and batch size is identical.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Problems per batch (each decoded with its k samples).
    #[arg(long, default_value_t = 8)]
    pub batch_size: usize,
    /// Evaluate only the first N problems.
    #[arg(long)]
    pub limit: Option<usize>,
    /// Per-problem JSONL results; stdout when absent.
    #[arg(long)]
    pub output: Option<PathBuf>,
}

pub fn run(a: EvalArgs) -> Result<()> {
    if a.k == 0 {
        bail!("--k must be at least 1");
    }
    if a.batch_size == 0 {
        bail!("--batch-size must be at least 1");
    }
    if a.limit == Some(0) {
        bail!("--limit must be at least 1");
    }
    if a.temperature == 0.0 && a.k > 1 {
        eprintln!("warning: --k {} with --temperature 0: greedy samples are identical, so pass@1 is that of --k 1", a.k);
    }
    // Inputs are checked before the model is loaded: a typo should not cost a model load.
    let template = match &a.template {
        Some(path) => Template::load(path)?,
        None => Template::default(),
    };
    let mut problems = load_problems(&a.problems)?;
    if let Some(n) = a.limit {
        problems.truncate(n);
    }
    let mut opts = EvalOptions {
        k: a.k,
        temperature: a.temperature,
        top_p: a.top_p,
        top_k: a.top_k,
        max_new_tokens: a.max_new_tokens,
        seed: a.seed,
        batch_size: a.batch_size,
        think: None,
    };
    opts.validate()?;
    let (mut lm, mut tok) = a.model.load()?;
    if a.think {
        if a.max_thought_tokens == 0 {
            bail!("--max-thought-tokens must be at least 1");
        }
        let (think, added) = prepare_thoughts(&mut lm, &mut tok, &a.think_open, &a.think_close, a.max_thought_tokens)?;
        if !added.is_empty() {
            eprintln!("note: added {} to the vocabulary (new embedding rows are the mean row; an untrained model rarely emits them)", added.join(", "));
        }
        opts.think = Some(think);
        opts.validate()?;
    }

    let mut out: Box<dyn Write> = match &a.output {
        Some(p) => Box::new(BufWriter::new(File::create(p).with_context(|| format!("cannot create output {}", p.display()))?)),
        None => Box::new(std::io::stdout().lock()),
    };
    let out_name = a.output.as_ref().map_or("stdout".to_string(), |p| p.display().to_string());
    let bar = progress(problems.len() as u64, "problems");
    let summary = evaluate(&lm, &tok, &problems, &template, &opts, |items| {
        for item in items {
            writeln!(out, "{}", item.to_json()).with_context(|| format!("cannot write to {out_name}"))?;
        }
        bar.inc(items.len() as u64);
        Ok(())
    })?;
    out.flush().with_context(|| format!("cannot write to {out_name}"))?;
    bar.finish_and_clear();
    eprintln!("{summary}");
    Ok(())
}

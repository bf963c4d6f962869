//! `rlp score`: teacher-forced per-token log-probs, mean NLL and perplexity.
use std::io::Write;
use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use clap::Args;
use rlp_model::token_logprobs;
use serde_json::json;

use super::{input, progress, ModelArgs};

#[derive(Args, Debug)]
pub struct ScoreArgs {
    #[command(flatten)]
    pub model: ModelArgs,
    /// JSONL texts; stdin when absent or `-`.
    pub input: Option<PathBuf>,
    #[arg(long, default_value_t = 8)]
    pub batch_size: usize,
}

pub fn run(a: ScoreArgs) -> Result<()> {
    if a.batch_size == 0 {
        bail!("--batch-size must be at least 1");
    }
    let (lm, tok) = a.model.load()?;
    let records = input::read(a.input.as_deref(), &tok, &lm)?;
    let max_pos = lm.max_positions();
    if let Some(r) = records.iter().find(|r| r.ids.len() as i64 > max_pos) {
        bail!("input line {}: text has {} tokens, more than the model's maximum of {max_pos} positions", r.line, r.ids.len());
    }
    let bar = progress(records.len() as u64, "texts");
    let mut out = std::io::stdout().lock();
    let (mut nll_sum, mut n_tokens) = (0f64, 0usize);
    for chunk in records.chunks(a.batch_size) {
        let rows: Vec<Vec<i64>> = chunk.iter().map(|r| r.ids.clone()).collect();
        let logprobs = token_logprobs(&lm, &rows, usize::MAX)?;
        for (r, lp) in chunk.iter().zip(logprobs) {
            nll_sum -= lp.iter().map(|&x| x as f64).sum::<f64>();
            n_tokens += lp.len();
            writeln!(out, "{}", json!({"input_ids": r.ids, "logprobs": lp})).context("cannot write to stdout")?;
        }
        bar.inc(chunk.len() as u64);
    }
    bar.finish_and_clear();
    if n_tokens == 0 {
        eprintln!("scored 0 tokens (every text has a single token)");
    } else {
        let nll = nll_sum / n_tokens as f64;
        eprintln!("scored {n_tokens} tokens in {} texts: mean NLL {nll:.4}, perplexity {:.3}", records.len(), nll.exp());
    }
    Ok(())
}

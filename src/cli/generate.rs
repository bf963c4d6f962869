//! `rlp generate`: sample continuations; one JSON line out per line in.
use std::io::Write;
use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use clap::Args;
use rlp_rollout::{generate, SamplingParams};
use serde_json::json;

use super::{input, progress, ModelArgs};

#[derive(Args, Debug)]
pub struct GenerateArgs {
    #[command(flatten)]
    pub model: ModelArgs,
    /// JSONL prompts; stdin when absent or `-`.
    pub input: Option<PathBuf>,
    #[arg(long, default_value_t = 64)]
    pub max_new_tokens: usize,
    /// 0 = greedy.
    #[arg(long, default_value_t = 1.0)]
    pub temperature: f64,
    #[arg(long, default_value_t = 1.0)]
    pub top_p: f64,
    /// 0 = off.
    #[arg(long, default_value_t = 0)]
    pub top_k: i64,
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    #[arg(long, default_value_t = 8)]
    pub batch_size: usize,
    /// Extra stop token (repeatable), by text (`--stop '</think>'`) or id (`--stop 42`).
    /// The model's `eos_token_id` always stops.
    #[arg(long)]
    pub stop: Vec<String>,
}

pub fn run(a: GenerateArgs) -> Result<()> {
    if a.batch_size == 0 {
        bail!("--batch-size must be at least 1");
    }
    let (lm, tok) = a.model.load()?;
    let mut stop_ids = lm.config.eos_token_ids();
    for s in &a.stop {
        let id = match s.parse::<i64>() {
            Ok(id) => id,
            Err(_) => tok.token_id(s).with_context(|| format!("--stop `{s}` is not a single token of this tokenizer"))?,
        };
        stop_ids.push(id);
    }
    let params = SamplingParams {
        temperature: a.temperature,
        top_k: a.top_k,
        top_p: a.top_p,
        max_new_tokens: a.max_new_tokens,
        stop_ids,
        seed: a.seed,
        first_row: 0,
    };
    params.validate()?;
    let records = input::read(a.input.as_deref(), &tok, &lm)?;
    let max_pos = lm.max_positions();
    if let Some(r) = records.iter().find(|r| r.ids.len() as i64 > max_pos) {
        bail!("input line {}: prompt has {} tokens, more than the model's maximum of {max_pos} positions", r.line, r.ids.len());
    }
    let bar = progress(records.len() as u64, "prompts");
    let mut out = std::io::stdout().lock();
    for (chunk_index, chunk) in records.chunks(a.batch_size).enumerate() {
        let prompts: Vec<Vec<i64>> = chunk.iter().map(|r| r.ids.clone()).collect();
        // Each line draws from its own stream (seed, line), whatever the batch size.
        let batch_params = SamplingParams { first_row: (chunk_index * a.batch_size) as u64, ..params.clone() };
        let gens = generate(&lm, &prompts, &batch_params)?;
        for g in gens {
            let line = json!({
                "output_ids": g.tokens,
                "text": tok.decode(&g.tokens)?,
                "logprobs": g.logprobs,
                "finish_reason": g.finish.as_str(),
            });
            writeln!(out, "{line}").context("cannot write to stdout")?;
        }
        bar.inc(chunk.len() as u64);
    }
    bar.finish_and_clear();
    Ok(())
}

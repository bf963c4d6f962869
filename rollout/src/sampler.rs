//! Batched autoregressive generation with a KV cache.
//!
//! Prompts are left-padded so every row's next token lands in the same slot; each row keeps its
//! own position ids. One prefill pass fills the cache, then one single-token pass per step.
use anyhow::{bail, Result};
use rlp_model::{CausalLm, PaddedBatch, Padding};
use tch::{Device, Kind, Tensor};

use crate::sample::{sample, SamplingParams};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Finish {
    /// Emitted a stop token.
    Stop,
    /// Reached `max_new_tokens` or the model's maximum positions.
    Length,
}

impl Finish {
    pub fn as_str(self) -> &'static str {
        match self {
            Finish::Stop => "stop",
            Finish::Length => "length",
        }
    }
}

#[derive(Debug, Clone)]
pub struct Generation {
    /// New tokens only, the stop token included when there is one.
    pub tokens: Vec<i64>,
    /// `logprobs[i]` is the log-prob of `tokens[i]` (see [`crate::sample`]).
    pub logprobs: Vec<f32>,
    pub finish: Finish,
}

pub fn generate(lm: &CausalLm, prompts: &[Vec<i64>], p: &SamplingParams) -> Result<Vec<Generation>> {
    p.validate()?;
    let max_pos = lm.max_positions();
    for (i, prompt) in prompts.iter().enumerate() {
        if prompt.is_empty() {
            bail!("prompt {i} is empty");
        }
        if prompt.len() as i64 > max_pos {
            bail!("prompt {i} has {} tokens, more than the model's maximum of {max_pos} positions", prompt.len());
        }
        lm.check_ids(prompt)?;
    }
    let mut out: Vec<Generation> = prompts.iter().map(|_| Generation { tokens: Vec::new(), logprobs: Vec::new(), finish: Finish::Length }).collect();
    // A row may not run past the model's positions even if max_new_tokens allows it.
    let limits: Vec<usize> = prompts.iter().map(|r| p.max_new_tokens.min((max_pos - r.len() as i64) as usize)).collect();
    let mut live: Vec<bool> = limits.iter().map(|&l| l > 0).collect();
    if !live.iter().any(|&l| l) {
        return Ok(out);
    }
    let _guard = tch::no_grad_guard();
    tch::manual_seed(p.seed as i64);
    let device = lm.device();
    let batch = PaddedBatch::new(prompts, 0, Padding::Left, device);
    let max_new = *limits.iter().max().unwrap_or(&0);
    let mut cache = lm.new_cache(batch.width + max_new as i64);
    let mut key_valid = batch.key_valid().map(Tensor::shallow_clone);
    let hidden = lm.forward(&batch.ids, &batch.positions, key_valid.as_ref(), Some(&mut cache));
    let mut logits = lm.logits(&hidden.narrow(1, batch.width - 1, 1)).squeeze_dim(1);
    let mut positions = batch.positions.narrow(1, batch.width - 1, 1);
    let b = prompts.len() as i64;
    for step in 0..max_new {
        let (tokens, logprobs) = sample(&logits, p);
        let tok_host: Vec<i64> = Vec::try_from(tokens.to_device(Device::Cpu))?;
        let lp_host: Vec<f32> = Vec::try_from(logprobs.to_device(Device::Cpu))?;
        for (r, g) in out.iter_mut().enumerate() {
            if !live[r] {
                continue;
            }
            g.tokens.push(tok_host[r]);
            g.logprobs.push(lp_host[r]);
            if p.stop_ids.contains(&tok_host[r]) {
                g.finish = Finish::Stop;
                live[r] = false;
            } else if step + 1 >= limits[r] {
                live[r] = false;
            }
        }
        if !live.iter().any(|&l| l) {
            break;
        }
        // Finished rows keep decoding (their outputs are ignored) so the batch stays rectangular.
        // Clamped: a row stopped by the position limit must not index past the position table.
        positions = (positions + 1).clamp_max(max_pos - 1);
        if let Some(kv) = &key_valid {
            key_valid = Some(Tensor::cat(&[kv, &Tensor::ones([b, 1], (Kind::Bool, device))], 1));
        }
        let hidden = lm.forward(&tokens.unsqueeze(1), &positions, key_valid.as_ref(), Some(&mut cache));
        logits = lm.logits(&hidden).squeeze_dim(1);
    }
    Ok(out)
}

//! Batched autoregressive generation with a KV cache.
//!
//! Prompts are left-padded so every row's next token lands in the same slot; each row keeps its
//! own position ids. [`prefill`] runs the prompts once and returns a [`Decoder`] holding the cache
//! and the next-token logits; [`Decoder::repeat_rows`] shares one prefilled prompt across several
//! continuations; [`Decoder::run`] samples until every row stops.
use anyhow::{bail, Context, Result};
use rlp_model::{CausalLm, KvCache, PaddedBatch, Padding};
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

/// Checks prompts before they reach the model: non-empty, within the positions, ids in the vocabulary.
pub fn check_prompts(lm: &CausalLm, prompts: &[Vec<i64>]) -> Result<()> {
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
    Ok(())
}

/// Decoding state after a prefill: the cache, the mask over its slots, and the next-token logits.
pub struct Decoder<'a> {
    lm: &'a CausalLm,
    cache: KvCache,
    /// `[rows, slots]` real-token mask, `None` while no row is padded.
    key_valid: Option<Tensor>,
    /// `[rows, 1]` position of each row's last token.
    positions: Tensor,
    /// `[rows, V]` logits for each row's next token.
    logits: Tensor,
    /// Prompt length of each row (for the position limit).
    prompt_lens: Vec<i64>,
}

/// Runs the prompts through the model once, filling a cache with room for `max_new` more tokens.
pub fn prefill<'a>(lm: &'a CausalLm, prompts: &[Vec<i64>], max_new: usize) -> Result<Decoder<'a>> {
    check_prompts(lm, prompts)?;
    let _guard = tch::no_grad_guard();
    let batch = PaddedBatch::new(prompts, 0, Padding::Left, lm.device());
    let mut cache = lm.new_cache(batch.width + max_new as i64);
    let key_valid = batch.key_valid().map(Tensor::shallow_clone);
    let hidden = lm.forward(&batch.ids, &batch.positions, key_valid.as_ref(), Some(&mut cache));
    let logits = lm.logits(&hidden.narrow(1, batch.width - 1, 1)).squeeze_dim(1);
    let positions = batch.positions.narrow(1, batch.width - 1, 1);
    Ok(Decoder { lm, cache, key_valid, positions, logits, prompt_lens: batch.lens })
}

impl Decoder<'_> {
    /// Repeats every row `g` times in place (row r becomes rows r·g .. r·g+g−1), sharing its
    /// prefilled prompt among `g` continuations without recomputing it.
    pub fn repeat_rows(&mut self, g: usize) {
        let rows = self.prompt_lens.len() as i64;
        let index = Tensor::arange(rows, (Kind::Int64, self.lm.device())).repeat_interleave_self_int(g as i64, 0, None);
        self.cache.select_rows(&index);
        self.key_valid = self.key_valid.as_ref().map(|k| k.index_select(0, &index));
        self.positions = self.positions.index_select(0, &index);
        self.logits = self.logits.index_select(0, &index);
        self.prompt_lens = self.prompt_lens.iter().flat_map(|&l| std::iter::repeat_n(l, g)).collect();
    }

    /// Samples until every row has stopped; row `r` draws from stream `(p.seed, p.first_row + r)`.
    pub fn run(mut self, p: &SamplingParams) -> Result<Vec<Generation>> {
        p.validate()?;
        let lm = self.lm;
        let max_pos = lm.max_positions();
        let mut out: Vec<Generation> =
            self.prompt_lens.iter().map(|_| Generation { tokens: Vec::new(), logprobs: Vec::new(), finish: Finish::Length }).collect();
        // A row may not run past the model's positions even if max_new_tokens allows it.
        let limits: Vec<usize> = self.prompt_lens.iter().map(|&l| p.max_new_tokens.min((max_pos - l).max(0) as usize)).collect();
        let mut live: Vec<bool> = limits.iter().map(|&l| l > 0).collect();
        let _guard = tch::no_grad_guard();
        let device = lm.device();
        let rows = out.len() as i64;
        let keys = crate::sample::row_keys(p, out.len(), device);
        let max_new = limits.iter().copied().max().unwrap_or(0);
        for step in 0..max_new {
            let (tokens, logprobs) = sample(&self.logits, p, &keys, step).with_context(|| format!("sampling token {step}"))?;
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
            self.positions = (&self.positions + 1).clamp_max(max_pos - 1);
            if let Some(kv) = &self.key_valid {
                self.key_valid = Some(Tensor::cat(&[kv, &Tensor::ones([rows, 1], (Kind::Bool, device))], 1));
            }
            let hidden = lm.forward(&tokens.unsqueeze(1), &self.positions, self.key_valid.as_ref(), Some(&mut self.cache));
            self.logits = lm.logits(&hidden).squeeze_dim(1);
        }
        Ok(out)
    }
}

/// Samples a continuation of every prompt.
pub fn generate(lm: &CausalLm, prompts: &[Vec<i64>], p: &SamplingParams) -> Result<Vec<Generation>> {
    p.validate()?; // before the prefill, so bad parameters cost no forward pass
    prefill(lm, prompts, p.max_new_tokens)?.run(p)
}

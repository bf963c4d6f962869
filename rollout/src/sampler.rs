//! Batched autoregressive generation with a KV cache.
//!
//! Prompts are left-padded so every row's next token lands in the same slot; each row keeps its
//! own position ids. [`prefill`] runs the prompts once and returns a [`Decoder`] holding the cache
//! and the next-token logits; [`Decoder::repeat_rows`] shares one prefilled prompt across several
//! continuations; [`Decoder::run`] samples until every row stops.
use anyhow::{bail, Result};
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
    ///
    /// Tokens stay on the device for [`SYNC_EVERY`] steps; then one host read checks stops,
    /// limits and finiteness, and the rows that finished leave the batch (their cache rows are
    /// dropped), so the batch shrinks as thoughts close instead of decoding padding.
    pub fn run(mut self, p: &SamplingParams) -> Result<Vec<Generation>> {
        p.validate()?;
        let lm = self.lm;
        let max_pos = lm.max_positions();
        let mut out: Vec<Generation> =
            self.prompt_lens.iter().map(|_| Generation { tokens: Vec::new(), logprobs: Vec::new(), finish: Finish::Length }).collect();
        // A row may not run past the model's positions even if max_new_tokens allows it.
        let limits: Vec<usize> = self.prompt_lens.iter().map(|&l| p.max_new_tokens.min((max_pos - l).max(0) as usize)).collect();
        let _guard = tch::no_grad_guard();
        let device = lm.device();
        let mut keys = crate::sample::row_keys(p, out.len(), device);
        // `rows[i]`: the output row of batch row i.
        let mut rows: Vec<usize> = (0..out.len()).collect();
        let mut live: Vec<bool> = limits.iter().map(|&l| l > 0).collect();
        let max_new = limits.iter().copied().max().unwrap_or(0);
        let mut window: Vec<(Tensor, Tensor)> = Vec::new();
        let mut finite = Tensor::from(true).to_device(device);
        let mut step = 0;
        while step < max_new {
            let (mut tokens, logprobs, ok) = sample(&self.logits, p, &keys, step);
            finite = finite.logical_and(&ok);
            window.push((tokens.shallow_clone(), logprobs));
            step += 1;
            if window.len() == SYNC_EVERY || step == max_new {
                let first = step - window.len();
                self.read_window(&mut window, first, &finite, &rows, &mut out, &mut live, &limits, p)?;
                let keep: Vec<i64> = (0..rows.len()).filter(|&i| live[rows[i]]).map(|i| i as i64).collect();
                if keep.is_empty() {
                    break;
                }
                if keep.len() < rows.len() {
                    let index = Tensor::from_slice(&keep).to_device(device);
                    self.cache.select_rows(&index);
                    self.key_valid = self.key_valid.as_ref().map(|k| k.index_select(0, &index));
                    self.positions = self.positions.index_select(0, &index);
                    keys = keys.index_select(0, &index);
                    tokens = tokens.index_select(0, &index);
                    rows = keep.iter().map(|&i| rows[i as usize]).collect();
                }
            }
            if step == max_new {
                break;
            }
            // Rows that finished inside the window keep decoding until its end (their tokens are
            // ignored). Clamped: a row stopped by the position limit must not index past the
            // position table.
            self.positions = (&self.positions + 1).clamp_max(max_pos - 1);
            if let Some(kv) = &self.key_valid {
                self.key_valid = Some(Tensor::cat(&[kv, &Tensor::ones([rows.len() as i64, 1], (Kind::Bool, device))], 1));
            }
            let hidden = lm.forward(&tokens.unsqueeze(1), &self.positions, self.key_valid.as_ref(), Some(&mut self.cache));
            self.logits = lm.logits(&hidden).squeeze_dim(1);
        }
        Ok(out)
    }

    /// One host read of the window's `[rows, w]` tokens and log-probs: appends each live row's
    /// tokens up to its stop or limit.
    #[allow(clippy::too_many_arguments)]
    fn read_window(&self, window: &mut Vec<(Tensor, Tensor)>, first: usize, finite: &Tensor, rows: &[usize], out: &mut [Generation], live: &mut [bool], limits: &[usize], p: &SamplingParams) -> Result<()> {
        if !bool::try_from(finite.to_device(Device::Cpu))? {
            bail!("sampling token {}: the model's next-token logits are not finite (NaN or inf weights?)", first + window.len() - 1);
        }
        let w = window.len();
        let (toks, lps): (Vec<Tensor>, Vec<Tensor>) = window.drain(..).unzip();
        let tok_host: Vec<i64> = Vec::try_from(Tensor::stack(&toks, 1).to_device(Device::Cpu).flatten(0, -1))?;
        let lp_host: Vec<f32> = Vec::try_from(Tensor::stack(&lps, 1).to_device(Device::Cpu).flatten(0, -1))?;
        for (i, &r) in rows.iter().enumerate() {
            for j in 0..w {
                if !live[r] {
                    break;
                }
                let (tok, g) = (tok_host[i * w + j], &mut out[r]);
                g.tokens.push(tok);
                g.logprobs.push(lp_host[i * w + j]);
                if p.stop_ids.contains(&tok) {
                    g.finish = Finish::Stop;
                    live[r] = false;
                } else if first + j + 1 >= limits[r] {
                    live[r] = false;
                }
            }
        }
        Ok(())
    }
}

/// Decode steps between host reads of the sampled tokens.
const SYNC_EVERY: usize = 16;

/// Samples a continuation of every prompt.
pub fn generate(lm: &CausalLm, prompts: &[Vec<i64>], p: &SamplingParams) -> Result<Vec<Generation>> {
    p.validate()?; // before the prefill, so bad parameters cost no forward pass
    prefill(lm, prompts, p.max_new_tokens)?.run(p)
}

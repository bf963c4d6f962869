//! Thought rollouts: for each of B contexts, G thoughts `<think> c </think>` sampled from the
//! policy. Each context is prefilled once and its KV cache shared by its G thoughts.
use anyhow::Result;
use rlp_model::CausalLm;

use crate::sample::SamplingParams;
use crate::sampler::{prefill, Finish};

/// The thought delimiters as token ids.
#[derive(Debug, Clone, Copy)]
pub struct Delimiters {
    pub open: i64,
    pub close: i64,
}

#[derive(Debug, Clone)]
pub struct Thought {
    /// `<think> c… </think>` exactly as fed to the model when scoring.
    pub ids: Vec<i64>,
    /// Indices into `ids` of the sampled tokens (the policy's actions): the thought tokens, the
    /// closing delimiter when the model emitted it, and any answer tokens appended later.
    pub actions: Vec<usize>,
    /// Behaviour log-prob of each action, aligned with `actions`.
    pub logprobs: Vec<f32>,
    /// The model emitted the closing delimiter (otherwise it was appended at the length limit).
    pub closed: bool,
    /// Tokens after the closing delimiter (0 unless an answer was appended).
    pub answer_len: usize,
}

impl Thought {
    pub fn num_sampled(&self) -> usize {
        self.actions.len()
    }

    /// Tokens between the delimiters.
    pub fn inner(&self) -> &[i64] {
        let end = self.ids.len() - 1 - self.answer_len;
        &self.ids[1..end.max(1)]
    }

    /// Appends sampled answer tokens (RPT's response after the thought) as further actions.
    pub fn push_answer(&mut self, tokens: &[i64], logprobs: &[f32]) {
        for (&t, &lp) in tokens.iter().zip(logprobs) {
            self.actions.push(self.ids.len());
            self.ids.push(t);
            self.logprobs.push(lp);
        }
        self.answer_len += tokens.len();
    }

    /// The answer tokens after the closing delimiter.
    pub fn answer(&self) -> &[i64] {
        &self.ids[self.ids.len() - self.answer_len..]
    }
}

/// Samples `group_size` thoughts per context. `params.max_new_tokens` bounds the sampled tokens
/// (the closing delimiter included); `params.stop_ids` is replaced by the closing delimiter.
/// Returns `[B][G]`.
pub fn sample_thoughts(
    lm: &CausalLm,
    contexts: &[Vec<i64>],
    delims: Delimiters,
    group_size: usize,
    params: &SamplingParams,
) -> Result<Vec<Vec<Thought>>> {
    let params = SamplingParams { stop_ids: vec![delims.close], ..params.clone() };
    params.validate()?;
    let prompts: Vec<Vec<i64>> = contexts.iter().map(|c| c.iter().copied().chain([delims.open]).collect()).collect();
    let mut decoder = prefill(lm, &prompts, params.max_new_tokens)?;
    decoder.repeat_rows(group_size);
    let generations = decoder.run(&params)?;
    let mut out: Vec<Vec<Thought>> = Vec::with_capacity(contexts.len());
    for chunk in generations.chunks(group_size) {
        out.push(
            chunk
                .iter()
                .map(|g| {
                    let closed = g.finish == Finish::Stop;
                    let mut ids = Vec::with_capacity(g.tokens.len() + 2);
                    ids.push(delims.open);
                    ids.extend(&g.tokens);
                    if !closed {
                        ids.push(delims.close);
                    }
                    let actions = (1..1 + g.tokens.len()).collect();
                    Thought { ids, actions, logprobs: g.logprobs.clone(), closed, answer_len: 0 }
                })
                .collect(),
        );
    }
    Ok(out)
}

//! Teacher-forced scoring of the step's rows, on top of the one chunked scorer in
//! `rlp_model::{score_rows, learn_rows}`: logits only at the positions asked for, in chunks, and
//! rows in forward passes of at most `memory.micro_batch_tokens` padded tokens.
use rlp_model::{score_rows, CausalLm, LogProbOpts, Positions, Rows};
use rlp_rollout::Thought;
use tch::{Device, Kind, Tensor};

use crate::config::MemorySection;
use crate::positions::Context;

impl MemorySection {
    /// Scorer options at `temperature` with this section's logit chunk.
    pub fn opts(&self, temperature: f64) -> LogProbOpts {
        LogProbOpts::new(temperature).chunked(self.logit_chunk_tokens)
    }
}

/// Rows `context ⊕ thought ⊕ targets` for every (context, thought), row index `b·G + g`.
pub struct ThoughtRows {
    pub rows: Vec<Vec<i64>>,
    /// Thoughts per context (G).
    pub group: usize,
    /// Each context's length: the prefix its G rows share.
    pub shared: Vec<usize>,
    /// Indices of each row's sampled thought tokens (the policy's actions).
    pub action_at: Vec<Vec<usize>>,
    /// Indices of each row's true next tokens.
    pub target_at: Vec<Vec<usize>>,
    /// Behaviour log-probs of the actions, `[N, K]`, padded with 0.
    pub old_logp: Tensor,
}

pub fn thought_rows(contexts: &[Context], thoughts: &[Vec<Thought>]) -> ThoughtRows {
    let mut rows = Vec::new();
    let mut action_at = Vec::new();
    let mut target_at = Vec::new();
    let mut old = Vec::new();
    for (ctx, group) in contexts.iter().zip(thoughts) {
        for th in group {
            let lc = ctx.ids.len();
            let lt = th.ids.len();
            let mut row = Vec::with_capacity(lc + lt + ctx.targets.len());
            row.extend(&ctx.ids);
            row.extend(&th.ids);
            row.extend(&ctx.targets);
            rows.push(row);
            action_at.push(th.actions.iter().map(|&i| lc + i).collect());
            target_at.push((lc + lt..lc + lt + ctx.targets.len()).collect());
            old.push(th.logprobs.clone());
        }
    }
    let k = old.iter().map(Vec::len).max().unwrap_or(0).max(1);
    let flat: Vec<f32> = old.iter().flat_map(|v| v.iter().copied().chain(std::iter::repeat_n(0.0, k - v.len()))).collect();
    let old_logp = Tensor::from_slice(&flat).view([old.len() as i64, k as i64]);
    let group = thoughts.first().map_or(1, Vec::len);
    debug_assert!(thoughts.iter().all(|g| g.len() == group), "every context has G thoughts");
    ThoughtRows { rows, group, shared: contexts.iter().map(|c| c.ids.len()).collect(), action_at, target_at, old_logp }
}

impl ThoughtRows {
    /// The rows for the scorer: each context runs once per forward pass, its G thoughts after it.
    pub fn packed(&self) -> Rows<'_> {
        Rows::grouped(&self.rows, self.group, &self.shared)
    }
}

/// What the no-grad scoring pass over [`ThoughtRows`] gives the step.
pub struct ThoughtScores {
    /// `[N]` S_pred = Σ_s log p_θ(x_{t+s} | x_<t, thought, x_t..x_{t+s−1}).
    pub s_pred: Tensor,
    /// `[N]` 1 where the argmax prediction after the thought is the true next token x_t (the
    /// thought led to the right answer), else 0.
    pub right: Tensor,
    /// `[N, K]` entropy of the policy at each action (at the loss temperature): the top-ρ
    /// entropy mask and the `policy/entropy` diagnostic.
    pub entropy: Tensor,
    /// `[N, K]` 1 on the actions.
    pub mask: Tensor,
}

/// S_pred and the actions' entropies under the θ that sampled the thoughts (RLP's Algorithm 1),
/// one no-grad forward per row chunk serving both.
pub fn score_thoughts(lm: &CausalLm, tr: &ThoughtRows, temperature: f64, mem: &MemorySection) -> ThoughtScores {
    let requests = [
        Positions { at: &tr.target_at, opts: mem.opts(1.0).with_argmax() },
        Positions { at: &tr.action_at, opts: mem.opts(temperature).with_entropy() },
    ];
    let mut scores = score_rows(lm, &tr.packed(), &requests, mem.micro_batch_tokens).into_iter();
    let (targets, actions) = (scores.next(), scores.next());
    let (Some(targets), Some(actions)) = (targets, actions) else { unreachable!("score_rows answers each request") };
    ThoughtScores {
        s_pred: targets.logp.sum_dim_intlist(-1, false, Kind::Float),
        right: targets.hit.narrow(1, 0, 1).squeeze_dim(1),
        entropy: actions.entropy,
        mask: actions.mask,
    }
}

/// `[N, K]` log-probs of the actions under `lm` (the frozen KL reference), no gradient.
pub fn action_logprobs(lm: &CausalLm, tr: &ThoughtRows, temperature: f64, mem: &MemorySection) -> Tensor {
    score_rows(lm, &tr.packed(), &[Positions { at: &tr.action_at, opts: mem.opts(temperature) }], mem.micro_batch_tokens).remove(0).logp
}

/// `[B]` Σ_s log p(x_{t+s} | x_<t, x_t..x_{t+s−1}) with no thought (S_ema under the EMA teacher,
/// or the current model's own no-think score), no gradient.
pub fn no_think_scores(lm: &CausalLm, contexts: &[Context], mem: &MemorySection) -> Tensor {
    let (rows, at) = no_think_rows(contexts);
    score_rows(lm, &Rows::new(&rows), &[Positions { at: &at, opts: mem.opts(1.0) }], mem.micro_batch_tokens).remove(0).logp.sum_dim_intlist(-1, false, Kind::Float)
}

/// Rows `context ⊕ targets` and the indices of the targets.
pub fn no_think_rows(contexts: &[Context]) -> (Vec<Vec<i64>>, Vec<Vec<usize>>) {
    let rows = contexts.iter().map(|c| c.ids.iter().chain(&c.targets).copied().collect()).collect();
    let at = contexts.iter().map(|c| (c.ids.len()..c.ids.len() + c.targets.len()).collect()).collect();
    (rows, at)
}

/// Every position after the first of each row: the next-token loss's targets.
pub fn next_token_positions(rows: &[Vec<i64>]) -> Vec<Vec<usize>> {
    rows.iter().map(|r| (1..r.len()).collect()).collect()
}

pub fn to_host(t: &Tensor) -> anyhow::Result<Vec<f32>> {
    Ok(Vec::<f32>::try_from(t.to_kind(Kind::Float).to_device(Device::Cpu).flatten(0, -1))?)
}

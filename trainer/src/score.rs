//! Teacher-forced scoring: log-probs of chosen tokens of right-padded rows, computing logits
//! only at the positions asked for (a `[rows, length, vocab]` logit tensor would not fit for real
//! vocabularies and thought lengths).
use rlp_model::{CausalLm, PaddedBatch, Padding};
use rlp_rollout::Thought;
use tch::{Device, Kind, Tensor};

use crate::positions::Context;

/// Scores of the tokens at chosen indices of each row (padded to K per row).
pub struct TokenScores {
    /// `[N, K]` log p(row[i] | row[..i]) at the requested temperature.
    pub logp: Tensor,
    /// `[N, K]` float 1 where an index was requested, 0 for padding.
    pub mask: Tensor,
    /// `[N, K]` entropy of the (tempered) predictive distribution, detached; only when asked
    /// for (`with_stats`), since it is another pass over `[N, K, vocab]`.
    pub entropy: Option<Tensor>,
    /// `[N, K]` float 1 where the argmax prediction equals the token; only with `with_stats`.
    pub hit: Option<Tensor>,
}

/// Runs `lm` over `rows` (right-padded) and scores `rows[n][i]` for every `i` in `at[n]`
/// (each `i >= 1`). Differentiable unless called under `no_grad`. `with_stats` also gives each
/// position's entropy and whether the argmax was right.
pub fn score_tokens(lm: &CausalLm, rows: &[Vec<i64>], at: &[Vec<usize>], temperature: f64, with_stats: bool) -> TokenScores {
    let batch = PaddedBatch::new(rows, 0, Padding::Right, lm.device());
    let hidden = lm.forward(&batch.ids, &batch.positions, batch.key_valid(), None);
    scores_from_hidden(lm, &hidden, &batch.ids, at, temperature, with_stats)
}

pub fn scores_from_hidden(lm: &CausalLm, hidden: &Tensor, ids: &Tensor, at: &[Vec<usize>], temperature: f64, with_stats: bool) -> TokenScores {
    let device = lm.device();
    let n = at.len() as i64;
    let k = at.iter().map(Vec::len).max().unwrap_or(0).max(1) as i64;
    let mut pred_pos = vec![0i64; (n * k) as usize];
    let mut tok_pos = vec![0i64; (n * k) as usize];
    let mut mask = vec![0f32; (n * k) as usize];
    for (r, idx) in at.iter().enumerate() {
        for (j, &i) in idx.iter().enumerate() {
            let cell = r * k as usize + j;
            pred_pos[cell] = i as i64 - 1;
            tok_pos[cell] = i as i64;
            mask[cell] = 1.0;
        }
    }
    let pred_pos = Tensor::from_slice(&pred_pos).view([n, k]).to_device(device);
    let tok_pos = Tensor::from_slice(&tok_pos).view([n, k]).to_device(device);
    let mask = Tensor::from_slice(&mask).view([n, k]).to_device(device);
    let h = hidden.size()[2];
    let picked = hidden.gather(1, &pred_pos.unsqueeze(-1).expand([n, k, h], false), false); // [N, K, H]
    let tokens = ids.gather(1, &tok_pos, false); // [N, K]
    let logits = lm.logits(&picked).to_kind(Kind::Float);
    let logits = if temperature == 1.0 { logits } else { logits / temperature };
    let logp_all = logits.log_softmax(-1, Kind::Float);
    let logp = logp_all.gather(-1, &tokens.unsqueeze(-1), false).squeeze_dim(-1) * &mask;
    let (entropy, hit) = if with_stats {
        let detached = logp_all.detach();
        let entropy = -(detached.exp() * &detached).sum_dim_intlist(-1, false, Kind::Float) * &mask;
        let hit = detached.argmax(-1, false).eq_tensor(&tokens).to_kind(Kind::Float) * &mask;
        (Some(entropy), Some(hit))
    } else {
        (None, None)
    };
    TokenScores { logp, mask, entropy, hit }
}

/// Rows `context ⊕ thought ⊕ targets` for every (context, thought), row index `b·G + g`.
pub struct ThoughtRows {
    pub rows: Vec<Vec<i64>>,
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
    ThoughtRows { rows, action_at, target_at, old_logp }
}

/// What one forward over [`ThoughtRows`] gives the update.
pub struct ThoughtScores {
    /// `[N, K]` differentiable log-probs of the actions at the loss temperature.
    pub logp: Tensor,
    pub mask: Tensor,
    /// `[N, K]` entropy of the policy at each action (at the loss temperature), detached: the
    /// top-ρ entropy mask and the `policy/entropy` diagnostic.
    pub entropy: Tensor,
    /// `[N]` S_pred = Σ_s log p_θ(x_{t+s} | x_<t, thought, x_t..x_{t+s−1}), detached.
    pub s_pred: Tensor,
    /// `[N]` 1 where the argmax prediction after the thought is the true next token x_t (the
    /// thought led to the right answer), else 0.
    pub right: Tensor,
}

/// One forward for both the policy's action log-probs (with gradient) and S_pred (without):
/// the same θ that sampled the thoughts scores them, as in RLP's Algorithm 1.
pub fn score_thoughts(lm: &CausalLm, tr: &ThoughtRows, temperature: f64) -> ThoughtScores {
    let batch = PaddedBatch::new(&tr.rows, 0, Padding::Right, lm.device());
    let hidden = lm.forward(&batch.ids, &batch.positions, batch.key_valid(), None);
    let actions = scores_from_hidden(lm, &hidden, &batch.ids, &tr.action_at, temperature, true);
    let targets = scores_from_hidden(lm, &hidden.detach(), &batch.ids, &tr.target_at, 1.0, true);
    let (entropy, hit) = (actions.entropy.unwrap_or_else(|| actions.mask.zeros_like()), targets.hit.unwrap_or_else(|| targets.mask.zeros_like()));
    ThoughtScores {
        logp: actions.logp,
        mask: actions.mask,
        entropy,
        s_pred: targets.logp.detach().sum_dim_intlist(-1, false, Kind::Float),
        right: hit.narrow(1, 0, 1).squeeze_dim(1),
    }
}

/// `[B]` Σ_s log p(x_{t+s} | x_<t, x_t..x_{t+s−1}) with no thought (S_ema under the EMA teacher,
/// or the current model's own no-think score), no gradient.
pub fn no_think_scores(lm: &CausalLm, contexts: &[Context]) -> Tensor {
    let _g = tch::no_grad_guard();
    let (rows, at) = no_think_rows(contexts);
    score_tokens(lm, &rows, &at, 1.0, false).logp.sum_dim_intlist(-1, false, Kind::Float)
}

/// Rows `context ⊕ targets` and the indices of the targets.
pub fn no_think_rows(contexts: &[Context]) -> (Vec<Vec<i64>>, Vec<Vec<usize>>) {
    let rows = contexts.iter().map(|c| c.ids.iter().chain(&c.targets).copied().collect()).collect();
    let at = contexts.iter().map(|c| (c.ids.len()..c.ids.len() + c.targets.len()).collect()).collect();
    (rows, at)
}

/// Summed next-token NLL over every token of `rows` after the first (differentiable), and the
/// number of those tokens: the ordinary continued-pretraining loss before its normalisation.
pub fn next_token_nll_sum(lm: &CausalLm, rows: &[Vec<i64>]) -> (Tensor, usize) {
    let at: Vec<Vec<usize>> = rows.iter().map(|r| (1..r.len()).collect()).collect();
    let count: usize = at.iter().map(Vec::len).sum();
    let s = score_tokens(lm, rows, &at, 1.0, false);
    (-(s.logp.sum(Kind::Float)), count)
}

pub fn to_host(t: &Tensor) -> anyhow::Result<Vec<f32>> {
    Ok(Vec::<f32>::try_from(t.to_kind(Kind::Float).to_device(Device::Cpu).flatten(0, -1))?)
}

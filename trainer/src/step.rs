//! One training step, in the order of RLP's Algorithm 1:
//! contexts → rollouts → S_pred / S_ema → rewards → advantages → loss → backward → clip → AdamW → EMA.
use std::collections::BTreeMap;
use std::time::Instant;

use anyhow::{bail, Result};
use rlp_dist::ReduceOp;
use rlp_model::{learn_rows, Rows};
use rlp_reward::{advantages, aggregate_sum, aggregate_units, aggregate_weights, entropy_keep, entropy_top_mask, gain_reward, info_gain, kl_k3, policy_loss, policy_token_loss, Baseline, RewardKind};
use rlp_rollout::{derive_seed, generate, sample_thoughts, SamplingParams, Thought};
use tch::{Kind, Tensor};

use crate::adamw::{clip_grad_norm, zero_grad};
use crate::positions::Context;
use crate::rewards::answer_rewards;
use crate::schedule::lr_at;
use crate::score::{action_logprobs, next_token_positions, no_think_rows, no_think_scores, score_thoughts, thought_rows};
use crate::trainer::Trainer;

/// What a step produced, for logs, rollout samples and the debug dump.
pub struct StepOutput {
    pub metrics: BTreeMap<String, f64>,
    pub contexts: Vec<Context>,
    /// `[B][G]`; empty for the next-token objective.
    pub thoughts: Vec<Vec<Thought>>,
    /// `[B, G]` (empty tensors for the next-token objective).
    pub s_pred: Tensor,
    pub s_ema: Tensor,
    pub reward: Tensor,
    pub advantage: Tensor,
    pub loss: f64,
}

/// Sampling phases of a step, mixed into its seed.
const PHASE_THOUGHTS: u64 = 0;
const PHASE_ANSWERS: u64 = 1;

/// The seed of one sampling phase of step `step`: distinct per step and phase, and reproducible
/// on resume. Rows within it draw from their own streams by global row index (see
/// `rlp_rollout::sample`), so the same seed serves every rank.
pub fn step_seed(run_seed: u64, step: usize, phase: u64) -> u64 {
    derive_seed(&[run_seed, step as u64, phase])
}

impl Trainer {
    pub fn train_step(&mut self) -> Result<StepOutput> {
        let cfg = self.cfg.clone();
        // B contexts per step over all ranks; this rank takes b = B/W of them.
        let (b, g) = (cfg.contexts_per_rank(self.world)?, cfg.rollout.group_size);
        let start = Instant::now();

        // 1. Contexts x_<t and the true next tokens x_t..x_{t+n_true}: this rank's slice of the
        //    step's global batch.
        let all = self.contexts.next_batch(cfg.rollout.contexts_per_step, self.proxy.as_ref().unwrap_or(&self.policy))?;
        let contexts = all[self.rank * b..(self.rank + 1) * b].to_vec();
        if !cfg.uses_thoughts() {
            return self.next_token_step(contexts, start);
        }

        // 2. Rollouts: G thoughts per context from π_θold, the current θ (the update below is
        //    the first one on this batch).
        let sampling = SamplingParams {
            temperature: cfg.thought.temperature,
            top_p: cfg.thought.top_p,
            top_k: cfg.thought.top_k,
            max_new_tokens: cfg.thought.max_tokens,
            stop_ids: vec![],
            seed: step_seed(cfg.train.seed, self.step, PHASE_THOUGHTS),
            first_row: (self.rank * b * g) as u64,
        };
        //    In chunks of at most memory.rollout_rows rows (whole contexts; their KV caches are
        //    the rollout's memory); each row's draws are keyed by its global index, so chunking
        //    does not change a thought.
        let ids: Vec<Vec<i64>> = contexts.iter().map(|c| c.ids.clone()).collect();
        let per_chunk = match cfg.memory.rollout_rows {
            0 => b,
            rows => (rows / g).max(1),
        };
        let mut thoughts = Vec::with_capacity(b);
        for (i, chunk) in ids.chunks(per_chunk).enumerate() {
            let first_row = sampling.first_row + (i * per_chunk * g) as u64;
            thoughts.extend(sample_thoughts(&self.policy, chunk, self.delims, g, &SamplingParams { first_row, ..sampling.clone() })?);
        }
        if cfg.thought.answer_tokens > 0 {
            self.sample_answers(&contexts, &mut thoughts, &sampling)?;
        }
        let t_rollout = start.elapsed().as_secs_f64();

        // 3. Score, no gradient: S_pred = log p_θ(x_t | x_<t, c) with the θ that sampled (and
        //    the actions' entropies), S_ema = log p_φ(x_t | x_<t) under the EMA teacher (or the
        //    current model), the frozen reference's log-probs for the KL term, RPT's answer
        //    reward.
        let score_start = Instant::now();
        let mem = &cfg.memory;
        let lp_temperature = cfg.loss.logprob_temperature.unwrap_or(cfg.thought.temperature);
        let rows = thought_rows(&contexts, &thoughts);
        let scores = score_thoughts(&self.policy, &rows, lp_temperature, mem);
        let (bi, gi) = (b as i64, g as i64);
        let s_pred = scores.s_pred.view([bi, gi]);
        let s_ema = match cfg.reward.baseline {
            Baseline::Ema => no_think_scores(&self.ema_model()?.model, &contexts, mem),
            Baseline::Current => no_think_scores(&self.policy, &contexts, mem),
            Baseline::None => Tensor::zeros([bi], (Kind::Float, self.policy.device())),
        };
        let ref_logp = match cfg.loss.kl_coef > 0.0 {
            true => Some(action_logprobs(self.reference_model()?, &rows, lp_temperature, mem)),
            false => None,
        };
        let answer_reward = match cfg.reward.kind {
            RewardKind::PrefixMatch | RewardKind::FirstToken | RewardKind::DenseProb => {
                Some(answer_rewards(&self.policy, &self.tokenizer, &cfg, &contexts, &thoughts)?)
            }
            _ => None,
        };
        let t_score = score_start.elapsed().as_secs_f64();

        // 4. Rewards and advantages for the whole step: r = S_pred − S_ema (RLP Eq. 5;
        //    Quiet-STaR's with the current model as baseline) or the answer's reward (RPT), and
        //    the group-relative advantage over each context's G thoughts.
        let reward = match answer_reward {
            Some(r) => r,
            None => gain_reward(&s_pred, Some(&s_ema), &cfg.reward),
        };
        let advantage = advantages(&reward, &cfg.advantage);

        // 5. Learn: the policy loss Σ_u w_u ℓ_u over the actions (+ KL to the reference, + the
        //    next-token loss on the contexts), back-propagated in micro-batches of rows of at
        //    most memory.micro_batch_tokens. Every weight is divided by the step's units on all
        //    ranks, so micro-batches and ranks add up to the full batch's mean.
        let update_start = Instant::now();
        let units = self.dist.reduce_f64(&self.loss_units(&contexts, &thoughts), ReduceOp::Sum, "the step's loss normalisers")?;
        let (policy_units, ntp_units) = (units[0].max(1.0), units[1].max(1.0));
        let l_max = cfg.thought.max_tokens as i64;
        let mask = entropy_top_mask(&scores.entropy, &scores.mask, cfg.loss.entropy_top_ratio, bi);
        let weight = (aggregate_weights(&mask, cfg.loss.aggregation, l_max) / policy_units).flatten(0, -1);
        let old_logp = rows.old_logp.to_device(self.policy.device());
        let adv_cells = advantage.reshape([-1, 1]).expand_as(&old_logp).flatten(0, -1);
        let (old_cells, ref_cells) = (old_logp.flatten(0, -1), ref_logp.as_ref().map(|r| r.flatten(0, -1)));
        let opts = mem.opts(lp_temperature);
        let (ctx_rows, _) = no_think_rows(&contexts);
        let ntp_at = next_token_positions(&ctx_rows);
        let lr = lr_at(&cfg.optim, self.step, cfg.train.max_steps);
        let mut m = BTreeMap::new();
        let (mut grad_norm, mut t_sync, mut total_loss) = (0.0, 0.0, 0.0);
        let mut clip_sum = 0.0;
        for pass in 0..cfg.loss.updates_per_batch {
            zero_grad(self.policy.weights());
            let logp = learn_rows(&self.policy, &rows.packed(), &rows.action_at, &opts, mem.micro_batch_tokens, mem.activation_checkpointing, &mut |cells, lp| {
                let w = weight.index_select(0, cells);
                let (per_token, _) = policy_token_loss(lp, &old_cells.index_select(0, cells), &adv_cells.index_select(0, cells), &cfg.loss);
                let mut loss = (per_token * &w).sum(Kind::Float) * cfg.loss.policy_coef;
                if let Some(r) = &ref_cells {
                    loss = loss + (kl_k3(lp, &r.index_select(0, cells)) * &w).sum(Kind::Float) * cfg.loss.kl_coef;
                }
                loss
            });
            // The values of what was just back-propagated, from the detached log-probs.
            let pl = policy_loss(&logp, &old_logp, &advantage.reshape([-1]), &mask, &cfg.loss, l_max);
            // Each term as logged (KL and next-token loss without their coefficients), and its
            // coefficient in the total.
            let mut terms = vec![("loss/policy", pl.sum / policy_units, 1.0)];
            if let Some(r) = &ref_logp {
                terms.push(("loss/kl", aggregate_sum(&kl_k3(&logp, r), &mask, cfg.loss.aggregation, l_max) / policy_units, cfg.loss.kl_coef));
            }
            if cfg.loss.nll_coef > 0.0 {
                let scale = cfg.loss.nll_coef / ntp_units;
                let lp = learn_rows(&self.policy, &Rows::new(&ctx_rows), &ntp_at, &mem.opts(1.0), mem.micro_batch_tokens, mem.activation_checkpointing, &mut |_, lp| lp.sum(Kind::Float) * -scale);
                terms.push(("loss/ntp", -lp.sum(Kind::Float) / ntp_units, cfg.loss.nll_coef));
            }
            // One host read for the step's loss values.
            let values = Vec::<f64>::try_from(Tensor::stack(&terms.iter().map(|(_, t, _)| t.to_kind(Kind::Double)).collect::<Vec<_>>(), 0).to_device(tch::Device::Cpu))?;
            let value: f64 = terms.iter().zip(&values).map(|((_, _, c), v)| c * v).sum();
            if !value.is_finite() {
                bail!("loss is {value} at step {} (rank {}, update {pass}); stopping before the update", self.step, self.rank);
            }
            for ((k, _, _), v) in terms.iter().zip(&values) {
                *m.entry(k.to_string()).or_insert(0.0) += v / cfg.loss.updates_per_batch as f64;
            }
            if pass == 0 {
                total_loss = value;
            }
            clip_sum += pl.clip_fraction;
            if pass + 1 == cfg.loss.updates_per_batch {
                // Before the last update: KL(π_θ ‖ π_old) and the ratio say how far the
                // teacher-forced policy is from the one that sampled (on the first update: a
                // sampler / scorer mismatch; on later ones, also the updates so far).
                m.insert("policy/kl_old".into(), pl.kl_old);
                m.insert("policy/ratio_mean".into(), pl.ratio_mean);
                m.insert("policy/ratio_max".into(), pl.ratio_max);
            }
            let (norm, sync) = self.optimizer_step(lr)?;
            (grad_norm, t_sync) = (norm, t_sync + sync);
        }
        m.insert("loss/clip_frac".into(), clip_sum / cfg.loss.updates_per_batch as f64);
        let t_update = update_start.elapsed().as_secs_f64();
        let entropy_sum = (&scores.entropy * &scores.mask).sum_dim_intlist(-1, false, Kind::Float).view([bi, gi]);
        let right = scores.right.view([bi, gi]);

        // Metrics, over the whole step on all ranks. The loss terms are this rank's share of the
        // global mean (summed across ranks below).
        let lengths: Vec<f64> = thoughts.iter().flatten().map(|t| t.inner().len() as f64).collect();
        let closed = thoughts.iter().flatten().filter(|t| t.closed).count() as f64 / lengths.len() as f64;
        let length = Tensor::from_slice(&lengths.iter().map(|&l| l as f32).collect::<Vec<_>>()).view([bi, gi]).to_device(s_pred.device());
        let actions: Vec<f32> = thoughts.iter().flatten().map(|t| t.actions.len() as f32).collect();
        let actions = Tensor::from_slice(&actions).view([bi, gi]).to_device(s_pred.device());
        // One gather of [reward | S_pred | advantage | entropy sum | actions | right | length | S_ema]
        // rows from every rank.
        let columns = [&reward, &s_pred, &advantage, &entropy_sum, &actions, &right, &length];
        let mut packed: Vec<Tensor> = columns.iter().map(|t| t.to_kind(Kind::Float)).collect();
        packed.push(s_ema.view([bi, 1]).to_kind(Kind::Float));
        let all = self.dist.all_gather_rows(&Tensor::cat(&packed, 1), "rewards, S_pred, advantages, diagnostics and S_ema")?;
        let col = |i: i64| all.narrow(1, i * gi, gi);
        let (reward_all, s_pred_all, advantage_all) = (col(0), col(1), col(2));
        let s_ema_all = all.narrow(1, 7 * gi, 1).reshape([-1]);
        m.extend(diagnostics(&reward_all, &s_pred_all, &advantage_all, &col(3), &col(4), &col(5), &col(6), &s_ema_all));
        m.insert("reward/mean".into(), reward_all.mean(Kind::Float).double_value(&[]));
        m.insert("reward/std".into(), reward_all.std(true).double_value(&[]));
        m.insert("s_pred/mean".into(), s_pred_all.mean(Kind::Float).double_value(&[]));
        m.insert("s_ema/mean".into(), s_ema_all.mean(Kind::Float).double_value(&[]));
        m.insert("info_gain/mean".into(), info_gain(&s_pred_all, &s_ema_all).mean(Kind::Float).double_value(&[]));
        m.insert("advantage/std".into(), advantage_all.std(true).double_value(&[]));
        m.insert("thought/length".into(), lengths.iter().sum::<f64>() / lengths.len() as f64);
        m.insert("thought/closed_frac".into(), closed);
        m.insert("loss/total".into(), total_loss);
        m.insert("optim/grad_norm".into(), grad_norm);
        m.insert("optim/lr".into(), lr);
        let tokens: usize = contexts.iter().map(|c| c.ids.len() + c.targets.len()).sum::<usize>() * g + lengths.iter().sum::<f64>() as usize;
        let elapsed = start.elapsed().as_secs_f64();
        m.insert("perf/tokens".into(), tokens as f64);
        m.insert("perf/tokens_per_s".into(), tokens as f64 / elapsed);
        m.insert("time/rollout".into(), t_rollout);
        m.insert("time/score".into(), t_score);
        m.insert("time/update".into(), t_update);
        m.insert("time/grad_sync".into(), t_sync);
        let m = self.reduce_metrics(m)?;
        self.step += 1;
        Ok(StepOutput { metrics: m, contexts, thoughts, s_pred, s_ema, reward, advantage, loss: total_loss })
    }

    /// Gradient all-reduce → clip → AdamW → EMA; returns the gradient norm before clipping and
    /// the seconds the all-reduce took.
    fn optimizer_step(&mut self, lr: f64) -> Result<(f64, f64)> {
        // Losses were divided by global counts already, so the gradients are summed, not averaged.
        let sync_start = Instant::now();
        self.buckets.all_reduce_grads(self.policy.weights(), 1.0, &self.dist)?;
        let t_sync = sync_start.elapsed().as_secs_f64();
        let grad_norm = clip_grad_norm(self.policy.weights(), self.cfg.optim.grad_clip);
        if !grad_norm.is_finite() {
            bail!("gradient norm is {grad_norm} at step {}; stopping before the update", self.step);
        }
        self.optim.step(self.policy.weights(), lr)?;
        zero_grad(self.policy.weights());
        if let Some(ema) = self.ema.as_mut() {
            ema.update(&self.policy)?;
        }
        Ok((grad_norm, t_sync))
    }

    /// The compute-matched baseline: the ordinary next-token loss on the same context windows,
    /// a mean over every predicted token of the step on all ranks.
    fn next_token_step(&mut self, contexts: Vec<Context>, start: Instant) -> Result<StepOutput> {
        let lr = lr_at(&self.cfg.optim, self.step, self.cfg.train.max_steps);
        let mem = &self.cfg.memory;
        zero_grad(self.policy.weights());
        let (rows, _) = no_think_rows(&contexts);
        let at = next_token_positions(&rows);
        let tokens: usize = at.iter().map(Vec::len).sum();
        let global_tokens = self.dist.reduce_f64(&[tokens as f64], ReduceOp::Sum, "the step's token count")?[0].max(1.0);
        let logp = learn_rows(&self.policy, &Rows::new(&rows), &at, &mem.opts(1.0), mem.micro_batch_tokens, mem.activation_checkpointing, &mut |_, lp| lp.sum(Kind::Float) / -global_tokens);
        let total = -logp.sum(Kind::Double).double_value(&[]) / global_tokens;
        if !total.is_finite() {
            bail!("next-token loss is {total} at step {} (rank {}); stopping before the update", self.step, self.rank);
        }
        let (grad_norm, t_sync) = self.optimizer_step(lr)?;
        let mut m = BTreeMap::new();
        m.insert("time/grad_sync".into(), t_sync);
        m.insert("loss/ntp".into(), total);
        m.insert("loss/total".into(), total);
        m.insert("optim/grad_norm".into(), grad_norm);
        m.insert("optim/lr".into(), lr);
        m.insert("perf/tokens".into(), tokens as f64);
        m.insert("perf/tokens_per_s".into(), tokens as f64 / start.elapsed().as_secs_f64());
        m.insert("time/update".into(), start.elapsed().as_secs_f64());
        let m = self.reduce_metrics(m)?;
        let total = m["loss/total"];
        self.step += 1;
        let empty = Tensor::zeros([0], (Kind::Float, tch::Device::Cpu));
        Ok(StepOutput {
            metrics: m,
            contexts,
            thoughts: Vec::new(),
            s_pred: empty.shallow_clone(),
            s_ema: empty.shallow_clone(),
            reward: empty.shallow_clone(),
            advantage: empty,
            loss: total,
        })
    }

    /// RPT's response continues after the thought with an answer; its tokens are actions too.
    fn sample_answers(&self, contexts: &[Context], thoughts: &mut [Vec<Thought>], sampling: &SamplingParams) -> Result<()> {
        let prompts: Vec<Vec<i64>> = contexts
            .iter()
            .zip(thoughts.iter())
            .flat_map(|(c, group)| group.iter().map(move |t| c.ids.iter().chain(&t.ids).copied().collect()))
            .collect();
        let params = SamplingParams {
            max_new_tokens: self.cfg.thought.answer_tokens,
            stop_ids: self.policy.config.eos_token_ids(),
            seed: step_seed(self.cfg.train.seed, self.step, PHASE_ANSWERS),
            ..sampling.clone()
        };
        let answers = generate(&self.policy, &prompts, &params)?;
        for (t, a) in thoughts.iter_mut().flatten().zip(answers) {
            t.push_answer(&a.tokens, &a.logprobs);
        }
        Ok(())
    }
}

impl Trainer {
    /// This rank's loss normalisers `[policy, next-token]` before the sum across ranks: the
    /// policy loss's units under `loss.aggregation` (tokens or sequences, per micro-batch after
    /// the top-entropy selection, per group), and the next-token term's predicted tokens.
    fn loss_units(&self, contexts: &[Context], thoughts: &[Vec<Thought>]) -> Vec<f64> {
        let cfg = &self.cfg;
        let mut policy = 0.0;
        for group in thoughts {
            let mut tokens: Vec<usize> = group.iter().map(|t| t.actions.len()).collect();
            if cfg.loss.entropy_top_ratio < 1.0 {
                // The mask keeps a fixed count per group; sequence modes count sequences that
                // have actions at all (which of their tokens survive does not change that).
                let kept = entropy_keep(tokens.iter().sum(), cfg.loss.entropy_top_ratio);
                if cfg.loss.aggregation == rlp_reward::Aggregation::TokenMean {
                    tokens = vec![kept];
                }
            }
            policy += aggregate_units(&tokens, cfg.loss.aggregation);
        }
        let ntp = contexts.iter().map(|c| c.ids.len() + c.targets.len() - 1).sum::<usize>() as f64;
        vec![policy, ntp]
    }

    /// Combines every rank's metrics: loss terms (each rank's share of a global mean) and token
    /// counts are summed, times take the slowest rank, the rest (already global, or per-rank
    /// means over equal shares) are averaged.
    fn reduce_metrics(&self, m: BTreeMap<String, f64>) -> Result<BTreeMap<String, f64>> {
        if self.world == 1 {
            return Ok(m);
        }
        let summed = |k: &str| (k.starts_with("loss/") && k != "loss/clip_frac") || k.starts_with("perf/");
        let (max_keys, sum_keys): (Vec<&String>, Vec<&String>) = m.keys().partition(|k| k.starts_with("time/") || k.ends_with("_max"));
        let mut out = BTreeMap::new();
        // Two collectives: a sum (a mean is a sum divided by the world) and a max.
        for (keys, op) in [(sum_keys, ReduceOp::Sum), (max_keys, ReduceOp::Max)] {
            let values: Vec<f64> = keys.iter().map(|k| m[*k]).collect();
            let reduced = self.dist.reduce_f64(&values, op, "the step's metrics")?;
            for (k, v) in keys.into_iter().zip(reduced) {
                let scale = if op == ReduceOp::Sum && !summed(k) { 1.0 / self.world as f64 } else { 1.0 };
                out.insert(k.clone(), v * scale);
            }
        }
        Ok(out)
    }
}

/// The learning diagnostics of a thought step, over all ranks' `[B, G]` thoughts (README,
/// "Metrics"): what share of thoughts is pushed up, how peaked the policy is, whether reward
/// tracks length, and how the thoughts that lead to the right answer are scored.
#[allow(clippy::too_many_arguments)]
fn diagnostics(reward: &Tensor, s_pred: &Tensor, advantage: &Tensor, entropy_sum: &Tensor, actions: &Tensor, right: &Tensor, length: &Tensor, s_ema: &Tensor) -> BTreeMap<String, f64> {
    let mut m = BTreeMap::new();
    let value = |t: Tensor| t.double_value(&[]);
    m.insert("advantage/pos_frac".into(), value(advantage.gt(0.0).to_kind(Kind::Float).mean(Kind::Float)));
    m.insert("policy/entropy".into(), value(entropy_sum.sum(Kind::Float)) / value(actions.sum(Kind::Float)).max(1.0));
    m.insert("thought/reward_length_corr".into(), pearson(reward, length));
    let n_right = value(right.sum(Kind::Float));
    let n_wrong = right.numel() as f64 - n_right;
    m.insert("thought/right_frac".into(), n_right / right.numel().max(1) as f64);
    // S_ema belongs to the context: weight each context's by its right (or wrong) thoughts.
    let s_ema = s_ema.view([-1, 1]).expand_as(s_pred);
    for (name, weight, n) in [("right", right.shallow_clone(), n_right), ("wrong", 1.0 - right, n_wrong)] {
        if n > 0.0 {
            m.insert(format!("s_pred/{name}"), value((s_pred * &weight).sum(Kind::Float)) / n);
            m.insert(format!("s_ema/{name}"), value((&s_ema * &weight).sum(Kind::Float)) / n);
        }
    }
    m
}

/// Pearson's correlation of two equally shaped tensors; 0 when either is constant.
fn pearson(x: &Tensor, y: &Tensor) -> f64 {
    let (x, y) = (x.to_kind(Kind::Double).flatten(0, -1), y.to_kind(Kind::Double).flatten(0, -1));
    let (dx, dy) = (&x - x.mean(Kind::Double), &y - y.mean(Kind::Double));
    let den = ((&dx * &dx).sum(Kind::Double) * (&dy * &dy).sum(Kind::Double)).sqrt().double_value(&[]);
    if den > 0.0 { (dx * dy).sum(Kind::Double).double_value(&[]) / den } else { 0.0 }
}

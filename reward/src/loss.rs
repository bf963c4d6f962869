//! The policy-gradient loss over thought tokens: PPO-clip (RLP Eq. 8, GRPO) or REINFORCE
//! (Quiet-STaR), verl's loss aggregations, the k3 KL estimator (GRPO), and the high-entropy token
//! mask of "Beyond the 80/20 Rule" (arXiv 2506.01939).
//!
//! Shapes: `N` thought rows (B·G), `L` padded thought length; `mask` is `[N, L]` float 0/1 with 1
//! on the tokens that receive gradient.
use tch::{Kind, Tensor};

use crate::config::{Aggregation, Estimator, LossConfig};

/// One scalar from per-token losses `[N, L]`, following verl's `agg_loss`:
///
/// - `token_mean`: `Σ_i Σ_u m·ℓ / Σ_i Σ_u m`.
/// - `seq_mean_token_mean`: `mean_i (Σ_u m·ℓ / Σ_u m)`.
/// - `seq_mean_token_sum`: `mean_i Σ_u m·ℓ`.
/// - `seq_mean_token_sum_norm`: `Σ_i Σ_u m·ℓ / (N · l_max)` — Dr.GRPO's `(1/G) Σ_i (1/L_max) Σ_t`.
///   Older verl releases divide by the padded width only (no `1/N`); current verl and the Dr.GRPO
///   paper also divide by the number of sequences, which keeps the scale independent of the batch
///   size, so that is the reading used. `N` counts every row, empty or not: the point of this mode
///   is a constant normaliser. `l_max` should be the configured maximum thought length (a constant),
///   not the batch's padded width.
///
/// Rows with no masked token (e.g. all removed by [`entropy_top_mask`]) are left out of the row
/// mean of the two `seq_mean_token_mean`/`seq_mean_token_sum` modes rather than counted as 0, as
/// verl's pad-aware `agg_loss` does; otherwise dropping tokens would shrink the loss of the other
/// rows. When no token is masked in at all, every mode returns 0 (still attached to the graph).
/// Values at masked-out positions are ignored even when they are NaN or infinite.
pub fn aggregate(per_token: &Tensor, mask: &Tensor, mode: Aggregation, l_max: i64) -> Tensor {
    let m = mask.to_kind(Kind::Float);
    let row_count = m.sum_dim_intlist(-1, false, Kind::Float);
    let units = match mode {
        Aggregation::TokenMean => row_count.sum(Kind::Float),
        Aggregation::SeqMeanTokenMean | Aggregation::SeqMeanTokenSum => row_count.gt(0.0).to_kind(Kind::Float).sum(Kind::Float),
        Aggregation::SeqMeanTokenSumNorm => Tensor::from(per_token.size()[0] as f32).to_device(per_token.device()),
    };
    aggregate_sum(per_token, mask, mode, l_max) / units.clamp_min(1.0)
}

/// The numerator of [`aggregate`]: the loss summed over its units (tokens for `token_mean`,
/// sequences otherwise). Dividing the numerators of all micro-batches on all ranks by the units
/// of the whole step ([`aggregate_units`], summed across ranks) gives exactly the full batch's
/// [`aggregate`], whatever the gradient accumulation or the number of ranks.
pub fn aggregate_sum(per_token: &Tensor, mask: &Tensor, mode: Aggregation, l_max: i64) -> Tensor {
    assert_eq!(per_token.size(), mask.size(), "per-token loss and mask shapes differ");
    assert_eq!(per_token.dim(), 2, "per-token loss must be [N, L], got shape {:?}", per_token.size());
    let m = mask.to_kind(Kind::Float);
    let weighted = per_token.to_kind(Kind::Float).masked_fill(&m.le(0.0), 0.0) * &m;
    let row_sum = weighted.sum_dim_intlist(-1, false, Kind::Float);
    match mode {
        Aggregation::TokenMean | Aggregation::SeqMeanTokenSum => row_sum.sum(Kind::Float),
        Aggregation::SeqMeanTokenMean => (row_sum / m.sum_dim_intlist(-1, false, Kind::Float).clamp_min(1.0)).sum(Kind::Float),
        Aggregation::SeqMeanTokenSumNorm => {
            assert!(l_max > 0, "l_max must be > 0 for seq_mean_token_sum_norm, got {l_max}");
            row_sum.sum(Kind::Float) / l_max as f64
        }
    }
}

/// The denominator of [`aggregate`] from each sequence's number of loss tokens: their sum for
/// `token_mean`, the sequences that have any for the two `seq_mean_token_{mean,sum}` modes, every
/// sequence for `seq_mean_token_sum_norm`.
pub fn aggregate_units(tokens_per_row: &[usize], mode: Aggregation) -> f64 {
    match mode {
        Aggregation::TokenMean => tokens_per_row.iter().sum::<usize>() as f64,
        Aggregation::SeqMeanTokenMean | Aggregation::SeqMeanTokenSum => tokens_per_row.iter().filter(|&&n| n > 0).count() as f64,
        Aggregation::SeqMeanTokenSumNorm => tokens_per_row.len() as f64,
    }
}

pub struct PolicyLoss {
    /// Scalar, differentiable in `logp`; already multiplied by `policy_coef`.
    pub loss: Tensor,
    /// [`aggregate_sum`] of the same per-token loss, times `policy_coef`: divide by the step's
    /// global [`aggregate_units`] to combine micro-batches and ranks.
    pub sum: Tensor,
    /// Fraction of masked tokens where the clip binds (the clipped term is the one taken and it
    /// differs from the unclipped one, so the token gets no gradient). 0 for REINFORCE.
    pub clip_fraction: f64,
    /// Estimate of KL(π_θ ‖ π_old) per token from the behaviour samples: the token mean of
    /// `ρ log ρ − (ρ − 1)` (unbiased, since E_old[ρ log ρ] = KL(π‖π_old) and E_old[ρ − 1] = 0;
    /// each term ≥ 0). On the first update of a batch it measures how far the teacher-forced
    /// policy is from the sampler's (0 when they agree); on later updates, how far the updates
    /// have moved.
    pub kl_old: f64,
    /// Token mean and maximum of the importance ratio `ρ = exp(logp − old_logp)`.
    pub ratio_mean: f64,
    pub ratio_max: f64,
}

/// The policy term over thought tokens.
///
/// `logp`: `[N, L]` log-probs of the sampled thought tokens under the current policy (carrying
/// gradient); `old_logp`: the same under the rollout policy (detached here); `advantage`: `[N]`
/// (one per thought, broadcast over its tokens) or `[N, L]`; `mask`: `[N, L]`.
///
/// - `ppo_clip`: `ℓ_u = −min(ρ_u A, clip(ρ_u, 1−ε_low, 1+ε_high) A)`, `ρ_u = exp(logp − old_logp)`.
///   At ρ = 1 (one update per rollout batch) its value is `−A` and its gradient is REINFORCE's.
/// - `reinforce`: `ℓ_u = −A · logp_u`.
///
/// Masked-out positions are zeroed before any arithmetic, so padding with `-inf` log-probs gives
/// neither NaN nor gradient there.
pub fn policy_loss(logp: &Tensor, old_logp: &Tensor, advantage: &Tensor, mask: &Tensor, cfg: &LossConfig, l_max: i64) -> PolicyLoss {
    let m = mask.to_kind(Kind::Float);
    let outside = m.le(0.0);
    let logp = logp.to_kind(Kind::Float).masked_fill(&outside, 0.0);
    let old_logp = old_logp.detach().to_kind(Kind::Float).masked_fill(&outside, 0.0);
    let adv = advantage.detach().to_kind(Kind::Float);
    let adv = if adv.dim() == 1 { adv.unsqueeze(-1) } else { adv };
    let ratio = (&logp - &old_logp).exp();
    let (per_token, binds) = policy_token_loss(&logp, &old_logp, &adv, cfg);
    let loss = aggregate(&per_token, &m, cfg.aggregation, l_max) * cfg.policy_coef;
    let sum = aggregate_sum(&per_token, &m, cfg.aggregation, l_max) * cfg.policy_coef;
    let _guard = tch::no_grad_guard();
    let tokens = m.sum(Kind::Float).double_value(&[]).max(1.0);
    let masked_mean = |t: &Tensor| (t.to_kind(Kind::Float) * &m).sum(Kind::Float).double_value(&[]) / tokens;
    let log_ratio = &logp - &old_logp;
    let ratio_max = if tokens > 0.0 { ratio.masked_fill(&outside, 0.0).max().double_value(&[]) } else { 1.0 };
    PolicyLoss {
        loss,
        sum,
        clip_fraction: masked_mean(&binds),
        kl_old: masked_mean(&(&ratio * &log_ratio - (&ratio - 1.0))),
        ratio_mean: masked_mean(&ratio),
        ratio_max,
    }
}

/// The per-token policy loss `ℓ_u` of [`policy_loss`] (before aggregation and `policy_coef`),
/// elementwise in equally shaped (or broadcastable) `logp`, `old_logp`, `advantage`, and where
/// the clip binds. The trainer sums `w · ℓ_u` ([`aggregate_weights`]) chunk by chunk.
pub fn policy_token_loss(logp: &Tensor, old_logp: &Tensor, advantage: &Tensor, cfg: &LossConfig) -> (Tensor, Tensor) {
    let (old_logp, adv) = (old_logp.detach(), advantage.detach());
    match cfg.estimator {
        Estimator::PpoClip => {
            let ratio = (logp - old_logp).exp();
            let unclipped = -(&ratio * &adv);
            let clipped = -(ratio.clamp(1.0 - cfg.eps_low, 1.0 + cfg.eps_high) * &adv);
            let binds = clipped.gt_tensor(&unclipped);
            (unclipped.maximum(&clipped), binds)
        }
        Estimator::Reinforce => (-(logp * adv), logp.zeros_like().to_kind(Kind::Bool)),
    }
}

/// Per-token weights `w` `[N, L]` with `Σ w · ℓ = aggregate_sum(ℓ, mask, mode, l_max)`: the mask,
/// divided by the row's token count for `seq_mean_token_mean` and by `l_max` for
/// `seq_mean_token_sum_norm`.
pub fn aggregate_weights(mask: &Tensor, mode: Aggregation, l_max: i64) -> Tensor {
    let m = mask.to_kind(Kind::Float);
    match mode {
        Aggregation::TokenMean | Aggregation::SeqMeanTokenSum => m,
        Aggregation::SeqMeanTokenMean => {
            let count = m.sum_dim_intlist(-1, true, Kind::Float).clamp_min(1.0);
            m / count
        }
        Aggregation::SeqMeanTokenSumNorm => m / l_max.max(1) as f64,
    }
}

/// GRPO's KL estimator per token (Schulman's k3): `exp(ref − logp) − (ref − logp) − 1`, ≥ 0, 0
/// where the policies agree; unbiased for KL(π_θ ‖ π_ref) under samples from π_θ. `ref_logp` is
/// detached. Aggregate it with the same mask and mode as the policy term, times `kl_coef`.
pub fn kl_k3(logp: &Tensor, ref_logp: &Tensor) -> Tensor {
    let d = ref_logp.detach().to_kind(Kind::Float) - logp.to_kind(Kind::Float);
    d.exp() - &d - 1.0
}

/// The 80/20 mask: among the masked tokens of each of `groups` equal slices of the rows (the
/// G thoughts of one context), keep the `ceil(ratio · count)` with the highest entropy (the
/// official code's `get_global_entropy_top_mask` selects over the whole batch; per context the
/// selection does not depend on how contexts are split over micro-batches and ranks). Returns
/// `[N, L]` float 0/1; `ratio >= 1` returns `mask` unchanged. Ties at the threshold are broken
/// arbitrarily.
pub fn entropy_top_mask(entropy: &Tensor, mask: &Tensor, ratio: f64, groups: i64) -> Tensor {
    let m = mask.to_kind(Kind::Float);
    if ratio >= 1.0 || m.numel() == 0 {
        return m;
    }
    let _guard = tch::no_grad_guard();
    let m2 = m.reshape([groups, -1]);
    let scores = entropy.detach().to_kind(Kind::Float).reshape([groups, -1]).masked_fill(&m2.le(0.0), f64::NEG_INFINITY);
    // entropy_keep per group, on the device: ceil(ratio · count), at least 1 when count > 0.
    let count = m2.gt(0.0).sum_dim_intlist(-1, true, Kind::Double);
    let keep = (&count * ratio - 1e-9).ceil().clamp_min(1.0).minimum(&count);
    let rank = scores.argsort(-1, true).argsort(-1, false).to_kind(Kind::Double);
    (rank.lt_tensor(&keep).to_kind(Kind::Float) * &m2).view_as(&m)
}

/// How many of `count` tokens [`entropy_top_mask`] keeps at `ratio`.
pub fn entropy_keep(count: usize, ratio: f64) -> usize {
    if ratio >= 1.0 || count == 0 {
        return count;
    }
    // 1e-9 absorbs products like 0.2 · 15 = 3.0000000000000004, which would keep a 4th token.
    ((ratio * count as f64 - 1e-9).ceil() as usize).clamp(1, count)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn split_sums_over_global_units_equal_the_whole_batch() {
        // 5 rows in two micro-batches (3 + 2), one row without loss tokens.
        let per_token = Tensor::from_slice(&[1.0f32, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0, 9.0, 10.0, 11.0, 12.0, 13.0, 14.0, 15.0]).view([5, 3]);
        let mask = Tensor::from_slice(&[1.0f32, 1.0, 0.0, 1.0, 0.0, 0.0, 0.0, 0.0, 0.0, 1.0, 1.0, 1.0, 1.0, 0.0, 0.0]).view([5, 3]);
        let tokens = [2usize, 1, 0, 3, 1];
        for mode in [Aggregation::TokenMean, Aggregation::SeqMeanTokenMean, Aggregation::SeqMeanTokenSum, Aggregation::SeqMeanTokenSumNorm] {
            let whole = aggregate(&per_token, &mask, mode, 4).double_value(&[]);
            let parts: f64 = [(0, 3), (3, 2)].iter().map(|&(s, n)| aggregate_sum(&per_token.narrow(0, s, n), &mask.narrow(0, s, n), mode, 4).double_value(&[])).sum();
            let split = parts / aggregate_units(&tokens, mode);
            assert!((whole - split).abs() < 1e-5, "{mode:?}: {whole} vs {split}");
        }
        // By hand, token_mean: (1+2+4+10+11+12+13)/7.
        assert!((aggregate(&per_token, &mask, Aggregation::TokenMean, 4).double_value(&[]) - 53.0 / 7.0).abs() < 1e-6);
    }
    use crate::test_util::{assert_close, vals};

    fn t2(v: &[f32], rows: i64) -> Tensor {
        Tensor::from_slice(v).view([rows, -1])
    }

    /// Row 0: three tokens 1, 2, 3; row 1: two tokens 4, 5 (then a NaN pad); row 2: no token.
    fn ragged() -> (Tensor, Tensor) {
        let per_token = t2(&[1.0, 2.0, 3.0, 4.0, 5.0, f32::NAN, 7.0, 8.0, f32::INFINITY], 3);
        let mask = t2(&[1.0, 1.0, 1.0, 1.0, 1.0, 0.0, 0.0, 0.0, 0.0], 3);
        (per_token, mask)
    }

    fn scalar(t: &Tensor) -> f64 {
        t.double_value(&[])
    }

    #[test]
    fn aggregation_modes_by_hand() {
        let (x, m) = ragged();
        // 15 / 5 tokens
        assert_close(&[scalar(&aggregate(&x, &m, Aggregation::TokenMean, 4))], &[3.0], 1e-6);
        // row means 2 and 4.5; the empty row is left out
        assert_close(&[scalar(&aggregate(&x, &m, Aggregation::SeqMeanTokenMean, 4))], &[3.25], 1e-6);
        // row sums 6 and 9 over the two rows with tokens
        assert_close(&[scalar(&aggregate(&x, &m, Aggregation::SeqMeanTokenSum, 4))], &[7.5], 1e-6);
        // 15 / (3 rows · l_max 4)
        assert_close(&[scalar(&aggregate(&x, &m, Aggregation::SeqMeanTokenSumNorm, 4))], &[1.25], 1e-6);
    }

    #[test]
    fn aggregation_of_an_empty_mask_is_zero() {
        let (x, m) = ragged();
        let none = m.zeros_like();
        for mode in [Aggregation::TokenMean, Aggregation::SeqMeanTokenMean, Aggregation::SeqMeanTokenSum, Aggregation::SeqMeanTokenSumNorm] {
            assert_eq!(scalar(&aggregate(&x, &none, mode, 4)), 0.0, "{mode:?}");
        }
    }

    fn cfg(estimator: Estimator, aggregation: Aggregation) -> LossConfig {
        LossConfig { estimator, aggregation, ..Default::default() }
    }

    /// Returns (loss value, d loss / d logp, stats).
    fn run(logp: &[f32], old: &[f32], adv: &[f32], mask: &[f32], c: &LossConfig) -> (f64, Vec<f64>, PolicyLoss) {
        let rows = adv.len() as i64;
        let logp = t2(logp, rows).set_requires_grad(true);
        let out = policy_loss(&logp, &t2(old, rows), &Tensor::from_slice(adv), &t2(mask, rows), c, 3);
        out.loss.backward();
        (scalar(&out.loss), vals(&logp.grad()), out)
    }

    #[test]
    fn ppo_at_ratio_one_is_minus_mean_advantage_with_reinforce_gradient() {
        let logp = [-1.0, -2.0, -0.5, -0.3, -1.5, -2.0];
        let mask = [1.0, 1.0, 1.0, 1.0, 1.0, 0.0];
        let adv = [2.0, -1.0];
        let (loss, grad, stats) = run(&logp, &logp, &adv, &mask, &cfg(Estimator::PpoClip, Aggregation::SeqMeanTokenMean));
        assert_close(&[loss], &[-0.5], 1e-6); // −mean(A) = −(2 − 1)/2
        // d/dlogp: −A / |c_i| / N
        let expected = [-1.0 / 3.0, -1.0 / 3.0, -1.0 / 3.0, 0.25, 0.25, 0.0];
        assert_close(&grad, &expected, 1e-6);
        assert_eq!(stats.clip_fraction, 0.0);
        assert_close(&[stats.kl_old, stats.ratio_mean, stats.ratio_max], &[0.0, 1.0, 1.0], 1e-6);
        let (_, grad_reinforce, _) = run(&logp, &logp, &adv, &mask, &cfg(Estimator::Reinforce, Aggregation::SeqMeanTokenMean));
        assert_close(&grad_reinforce, &expected, 1e-6);
    }

    #[test]
    fn ppo_clip_binds_outside_the_trust_region_with_the_sign_of_a() {
        let r = [1.5f32, 0.5, 1.1];
        let logp: Vec<f32> = r.iter().chain(r.iter()).map(|x| x.ln()).collect();
        let (loss, grad, stats) = run(&logp, &[0.0; 6], &[1.0, -1.0], &[1.0; 6], &cfg(Estimator::PpoClip, Aggregation::TokenMean));
        // A = +1: ρ=1.5 → max(−1.5, −1.2) = −1.2 (binds); ρ=0.5 → −0.5; ρ=1.1 → −1.1.
        // A = −1: ρ=1.5 → 1.5; ρ=0.5 → max(0.5, 0.8) = 0.8 (binds); ρ=1.1 → 1.1.
        assert_close(&[loss], &[(-1.2 - 0.5 - 1.1 + 1.5 + 0.8 + 1.1) / 6.0], 1e-6);
        assert_close(&[stats.clip_fraction], &[2.0 / 6.0], 1e-9);
        // d(−ρA)/dlogp = −ρA, zero where the clip binds.
        assert_close(&grad, &[0.0, -0.5 / 6.0, -1.1 / 6.0, 1.5 / 6.0, 0.0, 1.1 / 6.0], 1e-6);
        // Σ ρ log ρ − (ρ − 1) over the three ratios (twice each), by hand.
        let kl: f64 = [1.5f64, 0.5, 1.1].iter().map(|r| r * r.ln() - (r - 1.0)).sum::<f64>() / 3.0;
        assert_close(&[stats.kl_old, stats.ratio_mean, stats.ratio_max], &[kl, 3.1 / 3.0, 1.5], 1e-6);
    }

    #[test]
    fn asymmetric_clip_uses_eps_high_above_one() {
        let c = LossConfig { eps_high: 0.28, aggregation: Aggregation::TokenMean, ..Default::default() };
        let logp = [1.25f32.ln(), 1.35f32.ln(), 0.75f32.ln()];
        let (_, grad, stats) = run(&logp, &[0.0; 3], &[1.0], &[1.0; 3], &c);
        // 1.25 is inside [0.8, 1.28]; 1.35 binds; 0.75 is below 0.8 but A > 0 so the min keeps ρA.
        assert_close(&[stats.clip_fraction], &[1.0 / 3.0], 1e-9);
        assert_close(&grad, &[-1.25 / 3.0, 0.0, -0.75 / 3.0], 1e-6);
    }

    #[test]
    fn masked_tokens_get_no_gradient_even_with_infinite_padding() {
        let logp = [-1.0, f32::NEG_INFINITY, -0.5, f32::NAN];
        let old = [-1.1, f32::NEG_INFINITY, -0.4, 0.0]; // ratios 1.105 and 0.905: inside the clip range
        let mask = [1.0, 0.0, 1.0, 0.0];
        for est in [Estimator::PpoClip, Estimator::Reinforce] {
            let (loss, grad, stats) = run(&logp, &old, &[1.5, -0.5], &mask, &cfg(est, Aggregation::SeqMeanTokenMean));
            assert!(loss.is_finite(), "{est:?}");
            assert!(stats.kl_old.is_finite() && stats.ratio_mean.is_finite() && stats.ratio_max.is_finite());
            assert_eq!((grad[1], grad[3]), (0.0, 0.0), "{est:?}");
            assert!(grad[0] != 0.0 && grad[2] != 0.0, "{est:?}");
        }
    }

    #[test]
    fn policy_coef_scales_the_loss() {
        let c = LossConfig { policy_coef: 1e6, estimator: Estimator::Reinforce, ..Default::default() };
        let (loss, grad, _) = run(&[-1.0, -2.0], &[-1.0, -2.0], &[0.5], &[1.0, 1.0], &c);
        assert_close(&[loss], &[1e6 * 0.5 * (1.0 + 2.0) / 2.0], 1e-3);
        assert_close(&grad, &[-0.25e6, -0.25e6], 1e-3);
    }

    #[test]
    fn per_token_advantages_are_accepted() {
        let logp = t2(&[-1.0, -2.0], 1).set_requires_grad(true);
        let adv = t2(&[1.0, -1.0], 1);
        let out = policy_loss(&logp, &logp.detach(), &adv, &t2(&[1.0, 1.0], 1), &cfg(Estimator::PpoClip, Aggregation::TokenMean), 2);
        out.loss.backward();
        assert_close(&vals(&logp.grad()), &[-0.5, 0.5], 1e-6);
    }

    #[test]
    fn k3_is_nonnegative_and_zero_when_equal() {
        let logp = Tensor::from_slice(&[-1.0f32, -0.1, -5.0, -2.0, -0.7]);
        let reference = Tensor::from_slice(&[-2.0f32, -0.1, -0.01, -3.0, -0.7]);
        let k = vals(&kl_k3(&logp, &reference));
        assert!(k.iter().all(|&x| x >= 0.0), "{k:?}");
        assert_eq!((k[1], k[4]), (0.0, 0.0));
        // ref − logp = −1 → e^−1 + 1 − 1
        assert_close(&k[..1], &[(-1.0f64).exp()], 1e-6);
        // ref − logp = 1 → e − 2
        assert_close(&[vals(&kl_k3(&Tensor::from_slice(&[-2.0f32]), &Tensor::from_slice(&[-1.0f32])))[0]], &[std::f64::consts::E - 2.0], 1e-6);
    }

    #[test]
    fn entropy_mask_keeps_the_top_fraction_of_masked_tokens() {
        let entropy = t2(&[0.1, 0.9, 0.5, 0.3, 0.8, 0.2, 0.7, 5.0], 2);
        let mask = t2(&[1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 0.0], 2); // 7 tokens; 5.0 is padding
        // ceil(0.2 · 7) = 2: 0.9 and 0.8
        assert_eq!(vals(&entropy_top_mask(&entropy, &mask, 0.2, 1)), [0.0, 1.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0]);
        // ceil(0.5 · 7) = 4: 0.9, 0.8, 0.7, 0.5
        assert_eq!(vals(&entropy_top_mask(&entropy, &mask, 0.5, 1)), [0.0, 1.0, 1.0, 0.0, 1.0, 0.0, 1.0, 0.0]);
        assert_eq!(vals(&entropy_top_mask(&entropy, &mask, 1.0, 1)), vals(&mask));
        // 0.2 · 15 must keep 3, not 4.
        let e15 = Tensor::arange(15, (Kind::Float, tch::Device::Cpu)).view([3, 5]);
        let kept = entropy_top_mask(&e15, &e15.ones_like(), 0.2, 1);
        assert_eq!(vals(&kept).iter().sum::<f64>(), 3.0);
        assert_eq!(vals(&kept)[12..], [1.0, 1.0, 1.0]);
        // Nothing masked in: nothing kept.
        assert_eq!(vals(&entropy_top_mask(&entropy, &mask.zeros_like(), 0.2, 1)).iter().sum::<f64>(), 0.0);
        // Every kept token was in the mask.
        assert_eq!(vals(&(entropy_top_mask(&entropy, &mask, 0.99, 1) * (1.0 - &mask))).iter().sum::<f64>(), 0.0);
        // Per group (two groups of one row each): ceil(0.5 · 4) = 2 from row 0 (0.9, 0.5) and
        // ceil(0.5 · 3) = 2 from row 1 (0.8, 0.7), whatever the other row holds.
        assert_eq!(vals(&entropy_top_mask(&entropy, &mask, 0.5, 2)), [0.0, 1.0, 1.0, 0.0, 1.0, 0.0, 1.0, 0.0]);
        let mut other = vals(&entropy);
        other[0] = 9.0; // row 0's low token becomes its highest: row 1's selection must not move
        let other = t2(&other.iter().map(|&x| x as f32).collect::<Vec<_>>(), 2);
        assert_eq!(vals(&entropy_top_mask(&other, &mask, 0.5, 2))[4..], [1.0, 0.0, 1.0, 0.0]);
    }

}

//! Log-likelihood-gain rewards: RLP's information gain (arXiv 2510.01265 Eq. 3–5) and
//! Quiet-STaR's multi-token gain (arXiv 2403.09629, `modeling_mistral.py` L1935-1987).
//!
//! Both are "how much more likely is the true continuation after the thought than without it":
//!
//! - RLP: `r = s_pred − s_ema`, `s_pred = log p_θ(x_t | x_<t, c)`, `s_ema = log p̄_φ(x_t | x_<t)`
//!   with φ an EMA teacher of θ; only the single next token is scored.
//! - Quiet-STaR: `R = Σ_{s<n_true} [log p_talk(x_{t+s} | x_<t, c, x_t..x_{t+s−1}) − log p_base(x_{t+s} | x_<t+s)]`,
//!   i.e. the same quantity summed over `n_true` teacher-forced tokens, with the *current* model
//!   (detached) as the no-think term instead of an EMA teacher.
//!
//! The no-think term depends on the context only, so it is the same for all G thoughts of a
//! group. Under a group-mean advantage `A_i = k·(r_i − mean_j r_j)` it cancels exactly
//! (algorithms.md §2.3): the EMA teacher or the current-model term changes the *logged* reward,
//! never the gradient. It matters only when the pipeline is not invariant to a per-context shift of
//! the rewards; [`baseline_cancels`] says which configurations those are, so the trainer can log it.
//!
//! Everything here is detached: rewards are constants for the policy gradient.
use tch::{Kind, Tensor};

use crate::config::{AdvantageConfig, Center, RewardConfig};

/// RLP's reward: `s_pred [B, G] − s_ema [B]` broadcast over the group → `[B, G]` float32.
pub fn info_gain(s_pred: &Tensor, s_ema: &Tensor) -> Tensor {
    s_pred.detach().to_kind(Kind::Float) - s_ema.detach().to_kind(Kind::Float).unsqueeze(-1)
}

/// Quiet-STaR's reward from per-token scores: `s_pred [B, G, n]` (log-probs of the `n` true
/// tokens after each thought) and `s_base [B, n]` (the same tokens without a thought) → `[B, G]`.
/// With `n = 1` this is [`info_gain`].
pub fn multi_token_gain(s_pred: &Tensor, s_base: &Tensor) -> Tensor {
    let gain = s_pred.detach().to_kind(Kind::Float) - s_base.detach().to_kind(Kind::Float).unsqueeze(1);
    gain.sum_dim_intlist(-1, false, Kind::Float)
}

/// The reward of the gain kinds as configured: `s_pred` is `[B, G]` (one scored token) or
/// `[B, G, n]` (`n_true` tokens, summed); `s_no_think` is the matching `[B]` / `[B, n]` score of
/// the no-think baseline, or `None` for `baseline = "none"` (the reward is then `s_pred` alone).
/// `negative_clamp` keeps only the positive part of the reward.
pub fn gain_reward(s_pred: &Tensor, s_no_think: Option<&Tensor>, cfg: &RewardConfig) -> Tensor {
    let r = match (s_pred.dim(), s_no_think) {
        (3, Some(base)) => multi_token_gain(s_pred, base),
        (3, None) => s_pred.detach().to_kind(Kind::Float).sum_dim_intlist(-1, false, Kind::Float),
        (_, Some(base)) => info_gain(s_pred, base),
        (_, None) => s_pred.detach().to_kind(Kind::Float),
    };
    if cfg.negative_clamp {
        r.clamp_min(0.0)
    } else {
        r
    }
}

/// True when adding any per-context constant to the rewards leaves the advantages unchanged, i.e.
/// when the no-think baseline (EMA teacher or current model) cannot affect the gradient.
///
/// What breaks the invariance: no centring (`center = "none"`: raw rewards), `g = 1` (nothing to
/// centre against, so [`crate::advantages`] uses the raw reward), and clamping the *reward*
/// (`reward.negative_clamp`: `max(0, s_pred − s_ema)` depends on `s_ema`). What does not: the
/// G/(G−1) scale, std normalisation (the std of a shifted group is the same), and clamping or
/// clipping the *advantage* (applied after centring has already removed the shift).
pub fn baseline_cancels(reward: &RewardConfig, adv: &AdvantageConfig, g: usize) -> bool {
    adv.center == Center::GroupMean && g > 1 && !reward.negative_clamp
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::advantage::advantages;
    use crate::config::Baseline;
    use crate::test_util::{assert_close, vals};

    #[test]
    fn info_gain_subtracts_the_context_score_from_every_thought() {
        let s_pred = Tensor::from_slice(&[-1.0f32, -2.0, -0.5, -3.0, -3.0, -1.0]).view([2, 3]);
        let s_ema = Tensor::from_slice(&[-1.5f32, -2.5]);
        assert_close(&vals(&info_gain(&s_pred, &s_ema)), &[0.5, -0.5, 1.0, -0.5, -0.5, 1.5], 1e-6);
    }

    #[test]
    fn multi_token_gain_sums_over_the_true_tokens() {
        // B = 1, G = 2, n = 2.
        let s_pred = Tensor::from_slice(&[-1.0f32, -2.0, -0.5, -0.25]).view([1, 2, 2]);
        let s_base = Tensor::from_slice(&[-1.5f32, -1.0]).view([1, 2]);
        // thought 0: (0.5) + (−1.0) = −0.5; thought 1: (1.0) + (0.75) = 1.75
        assert_close(&vals(&multi_token_gain(&s_pred, &s_base)), &[-0.5, 1.75], 1e-6);
        let one = multi_token_gain(&s_pred.narrow(2, 0, 1), &s_base.narrow(1, 0, 1));
        assert_close(&vals(&one), &vals(&info_gain(&s_pred.select(2, 0), &s_base.select(1, 0))), 1e-6);
    }

    #[test]
    fn gain_reward_handles_baseline_none_and_negative_clamp() {
        let s_pred = Tensor::from_slice(&[-1.0f32, -2.0]).view([1, 2]);
        let s_ema = Tensor::from_slice(&[-1.5f32]);
        let cfg = RewardConfig::default();
        assert_close(&vals(&gain_reward(&s_pred, Some(&s_ema), &cfg)), &[0.5, -0.5], 1e-6);
        let none = RewardConfig { baseline: Baseline::None, ..cfg.clone() };
        assert_close(&vals(&gain_reward(&s_pred, None, &none)), &[-1.0, -2.0], 1e-6);
        let clamped = RewardConfig { negative_clamp: true, ..cfg };
        assert_close(&vals(&gain_reward(&s_pred, Some(&s_ema), &clamped)), &[0.5, 0.0], 1e-6);
        let s3 = Tensor::from_slice(&[-1.0f32, -1.0, -2.0, -2.0]).view([1, 2, 2]);
        assert_close(&vals(&gain_reward(&s3, None, &none)), &[-2.0, -4.0], 1e-6);
    }

    #[test]
    fn baseline_cancels_truth_table() {
        let r = RewardConfig::default();
        let a = AdvantageConfig::default();
        assert!(baseline_cancels(&r, &a, 16));
        assert!(baseline_cancels(&r, &AdvantageConfig { std_normalize: true, ..a.clone() }, 8));
        assert!(baseline_cancels(&r, &AdvantageConfig { loo_scale: false, clamp_negative: true, ..a.clone() }, 2));
        assert!(baseline_cancels(&r, &AdvantageConfig { clip: Some(1.0), ..a.clone() }, 4));
        assert!(!baseline_cancels(&r, &a, 1));
        assert!(!baseline_cancels(&r, &AdvantageConfig { center: Center::None, ..a.clone() }, 16));
        assert!(!baseline_cancels(&RewardConfig { negative_clamp: true, ..r.clone() }, &a, 16));
    }

    /// The claim behind [`baseline_cancels`], checked numerically: for every configuration it
    /// calls invariant, moving the no-think scores leaves the advantages unchanged; for the ones
    /// it does not, some move changes them.
    #[test]
    fn ema_term_cancels_exactly_when_baseline_cancels_says_so() {
        let s_pred = Tensor::from_slice(&[-1.0f32, -2.0, -0.5, -3.0, -0.2, -0.9, -0.4, -0.6]).view([2, 4]);
        let s_ema = Tensor::from_slice(&[-1.5f32, -0.5]);
        let s_ema_moved = Tensor::from_slice(&[-0.25f32, -7.0]);
        let base = AdvantageConfig::default();
        let advs = [
            base.clone(),
            AdvantageConfig { loo_scale: false, ..base.clone() },
            AdvantageConfig { std_normalize: true, ..base.clone() },
            AdvantageConfig { clamp_negative: true, ..base.clone() },
            AdvantageConfig { clip: Some(0.5), ..base.clone() },
            AdvantageConfig { center: Center::None, ..base.clone() },
        ];
        for reward in [RewardConfig::default(), RewardConfig { negative_clamp: true, ..Default::default() }] {
            for adv in &advs {
                let a0 = vals(&advantages(&gain_reward(&s_pred, Some(&s_ema), &reward), adv));
                let a1 = vals(&advantages(&gain_reward(&s_pred, Some(&s_ema_moved), &reward), adv));
                let same = a0.iter().zip(&a1).all(|(x, y)| (x - y).abs() < 1e-5);
                assert_eq!(same, baseline_cancels(&reward, adv, 4), "{reward:?} {adv:?}: {a0:?} vs {a1:?}");
            }
        }
        // G = 1: the raw reward is the advantage, so the baseline shows through.
        let g1 = s_pred.narrow(1, 0, 1);
        let a0 = vals(&advantages(&info_gain(&g1, &s_ema), &base));
        let a1 = vals(&advantages(&info_gain(&g1, &s_ema_moved), &base));
        assert_ne!(a0, a1);
        assert!(!baseline_cancels(&RewardConfig::default(), &base, 1));
    }
}

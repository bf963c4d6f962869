//! Group advantages: one scalar per thought, from the rewards of the G thoughts of its context.
//!
//! - RLP (Eq. 7): `A_i = G/(G−1) · (r_i − mean_j r_j)`, no std — equivalently the leave-one-out
//!   baseline `r_i − mean_{j≠i} r_j`.
//! - GRPO / RPT: `(r_i − mean_j r_j) / (std_j r_j + ε)`.
//! - Quiet-STaR: `max(0, r_i − mean_j r_j)`.
use tch::{Kind, Tensor};

use crate::config::{AdvantageConfig, Center};

/// Added to the group std before dividing, as verl's GRPO estimator does (`std + 1e-6`, not
/// under the square root): a group whose rewards are all equal gets A = 0, not NaN.
pub const STD_EPS: f64 = 1e-6;

/// `rewards`: `[B, G]`, one row per context. Returns `[B, G]` float32, detached.
///
/// Steps, in order, each optional:
/// 1. centre on the row mean — only when G > 1. With G = 1 there is no other thought to compare
///    against (the leave-one-out mean is empty), so the raw reward is the advantage; this is the
///    case where the no-think baseline actually acts as the baseline.
/// 2. × G/(G−1) (`loo_scale`) — only together with centring: it corrects the inclusive mean, and
///    without a mean there is nothing to correct.
/// 3. ÷ (std + 1e-6) (`std_normalize`), with the *unbiased* group std (`torch.std`, as verl's and
///    TRL's GRPO use); skipped for G = 1 where it is undefined.
/// 4. max(0, ·) (`clamp_negative`).
/// 5. clamp to [−c, c] (`clip`).
pub fn advantages(rewards: &Tensor, cfg: &AdvantageConfig) -> Tensor {
    assert_eq!(rewards.dim(), 2, "rewards must be [B, G], got shape {:?}", rewards.size());
    let r = rewards.detach().to_kind(Kind::Float);
    let g = r.size()[1];
    // Out-of-place throughout: `r` may share storage with the caller's tensor.
    let mut a = r.shallow_clone();
    if cfg.center == Center::GroupMean && g > 1 {
        let scale = if cfg.loo_scale { g as f64 / (g - 1) as f64 } else { 1.0 };
        a = (&r - r.mean_dim(-1, true, Kind::Float)) * scale;
    }
    if cfg.std_normalize && g > 1 {
        a = &a / (r.std_dim(-1, true, true) + STD_EPS);
    }
    if cfg.clamp_negative {
        a = a.clamp_min(0.0);
    }
    if let Some(c) = cfg.clip {
        a = a.clamp(-c, c);
    }
    a
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_util::{assert_close, vals};

    /// Row 0: mean 3, centred [−2, −1, 0, 3], unbiased var 14/3.
    /// Row 1: mean 1, centred [−1, −1, −1, 3], unbiased var 12/3 = 4, std 2.
    fn rewards() -> Tensor {
        Tensor::from_slice(&[1.0f32, 2.0, 3.0, 6.0, 0.0, 0.0, 0.0, 4.0]).view([2, 4])
    }

    fn cfg() -> AdvantageConfig {
        AdvantageConfig::default()
    }

    #[test]
    fn rlp_default_is_loo_scaled_centring() {
        let a = vals(&advantages(&rewards(), &cfg()));
        let k = 4.0 / 3.0;
        assert_close(&a, &[-2.0 * k, -k, 0.0, 3.0 * k, -k, -k, -k, 3.0 * k], 1e-5);
        // Leave-one-out form: r_0 − mean(r_1, r_2, r_3) = 1 − 11/3.
        assert_close(&a[..1], &[1.0 - 11.0 / 3.0], 1e-5);
    }

    #[test]
    fn plain_centring_without_loo() {
        let a = vals(&advantages(&rewards(), &AdvantageConfig { loo_scale: false, ..cfg() }));
        assert_close(&a, &[-2.0, -1.0, 0.0, 3.0, -1.0, -1.0, -1.0, 3.0], 1e-5);
    }

    #[test]
    fn std_normalisation_uses_the_unbiased_group_std() {
        let a = vals(&advantages(&rewards(), &AdvantageConfig { loo_scale: false, std_normalize: true, ..cfg() }));
        let s0 = (14.0f64 / 3.0).sqrt() + STD_EPS;
        let s1 = 2.0 + STD_EPS;
        assert_close(&a, &[-2.0 / s0, -1.0 / s0, 0.0, 3.0 / s0, -1.0 / s1, -1.0 / s1, -1.0 / s1, 3.0 / s1], 1e-5);
        // A group with equal rewards gets zero advantages, not NaN.
        let flat = Tensor::from_slice(&[0.5f32, 0.5, 0.5]).view([1, 3]);
        assert_close(&vals(&advantages(&flat, &AdvantageConfig { std_normalize: true, ..cfg() })), &[0.0; 3], 0.0);
    }

    #[test]
    fn clamp_negative_keeps_the_positive_part() {
        let a = vals(&advantages(&rewards(), &AdvantageConfig { clamp_negative: true, ..cfg() }));
        assert_close(&a, &[0.0, 0.0, 0.0, 4.0, 0.0, 0.0, 0.0, 4.0], 1e-5);
        // Quiet-STaR: no LOO scale.
        let a = vals(&advantages(&rewards(), &AdvantageConfig { loo_scale: false, clamp_negative: true, ..cfg() }));
        assert_close(&a, &[0.0, 0.0, 0.0, 3.0, 0.0, 0.0, 0.0, 3.0], 1e-5);
    }

    #[test]
    fn clip_bounds_the_advantage() {
        let a = vals(&advantages(&rewards(), &AdvantageConfig { clip: Some(1.0), ..cfg() }));
        assert_close(&a, &[-1.0, -1.0, 0.0, 1.0, -1.0, -1.0, -1.0, 1.0], 1e-6);
    }

    #[test]
    fn no_centring_passes_rewards_through() {
        // LOO has no effect without centring.
        let a = vals(&advantages(&rewards(), &AdvantageConfig { center: Center::None, ..cfg() }));
        assert_close(&a, &vals(&rewards()), 0.0);
    }

    #[test]
    fn one_thought_per_context_uses_the_raw_reward() {
        let r = Tensor::from_slice(&[2.5f32, -1.0]).view([2, 1]);
        for c in [cfg(), AdvantageConfig { std_normalize: true, ..cfg() }] {
            assert_close(&vals(&advantages(&r, &c)), &[2.5, -1.0], 0.0);
        }
        assert_close(&vals(&advantages(&r, &AdvantageConfig { clamp_negative: true, ..cfg() })), &[2.5, 0.0], 0.0);
    }

    #[test]
    fn adding_a_row_constant_leaves_centred_advantages_unchanged() {
        let shift = Tensor::from_slice(&[10.0f32, -3.0]).view([2, 1]);
        let shifted = rewards() + shift;
        for c in [
            cfg(),
            AdvantageConfig { std_normalize: true, ..cfg() },
            AdvantageConfig { clamp_negative: true, ..cfg() },
            AdvantageConfig { clip: Some(0.7), ..cfg() },
        ] {
            assert_close(&vals(&advantages(&shifted, &c)), &vals(&advantages(&rewards(), &c)), 1e-5);
        }
        let raw = AdvantageConfig { center: Center::None, ..cfg() };
        assert_ne!(vals(&advantages(&shifted, &raw)), vals(&advantages(&rewards(), &raw)));
    }

    #[test]
    fn the_callers_rewards_are_not_modified() {
        let r = rewards();
        for c in [AdvantageConfig { center: Center::None, std_normalize: true, clamp_negative: true, clip: Some(0.5), ..cfg() }, cfg()] {
            let _ = advantages(&r, &c);
            assert_eq!(vals(&r), vals(&rewards()));
        }
    }

    #[test]
    fn advantages_carry_no_gradient() {
        let r = rewards().set_requires_grad(true);
        assert!(!advantages(&r, &cfg()).requires_grad());
    }
}

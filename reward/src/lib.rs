//! Rewards, advantages and policy losses for reinforcement pretraining.
//!
//! Everything here is a pure function of tensors or bytes: the trainer runs the models (policy,
//! EMA teacher, reference) and passes the log-probs in. Where each piece comes from:
//!
//! | module | quantity | source |
//! |---|---|---|
//! | [`info_gain`] | `s_pred − s_ema` | RLP, arXiv 2510.01265 Eq. 3–5 |
//! | [`info_gain`] | gain summed over `n_true` tokens, current model as no-think term | Quiet-STaR, arXiv 2403.09629 (code) |
//! | [`prefix_match`] | byte prefix match on token boundaries; first-token and dense variants | RPT, arXiv 2506.08007 Eq. 3, App. A |
//! | [`advantage`] | group-mean centring, G/(G−1) leave-one-out scale | RLP Eq. 7 |
//! | [`advantage`] | std normalisation | GRPO, arXiv 2402.03300 (used by RPT) |
//! | [`advantage`] | negative advantages clamped to 0 | Quiet-STaR (code) |
//! | [`loss`] | PPO-clip per thought token, seq-mean-token-mean | RLP Eq. 8, GRPO Eq. 3 |
//! | [`loss`] | REINFORCE | Quiet-STaR |
//! | [`loss`] | aggregation modes | verl `agg_loss` (DAPO, Dr.GRPO) |
//! | [`loss`] | k3 KL estimator | GRPO Eq. 4 |
//! | [`loss`] | top-entropy token mask | "Beyond the 80/20 Rule", arXiv 2506.01939 |
//!
//! The equations and their derivations are in `shared/reference/algorithms.md`.
pub mod advantage;
pub mod config;
pub mod info_gain;
pub mod loss;
pub mod prefix_match;

pub use advantage::{advantages, STD_EPS};
pub use config::{AdvantageConfig, Aggregation, Baseline, Center, Estimator, LossConfig, RewardConfig, RewardKind};
pub use info_gain::{baseline_cancels, gain_reward, info_gain, multi_token_gain};
pub use loss::{aggregate, aggregate_sum, aggregate_units, aggregate_weights, policy_token_loss, entropy_keep, entropy_top_mask, kl_k3, policy_loss, PolicyLoss};
pub use prefix_match::{dense_prob_reward, extract_answer, first_token_reward, prefix_match_reward, token_boundaries};

#[cfg(test)]
mod test_util {
    use tch::{Kind, Tensor};

    pub fn vals(t: &Tensor) -> Vec<f64> {
        Vec::<f64>::try_from(&t.detach().to_kind(Kind::Double).flatten(0, -1)).expect("tensor to Vec<f64>")
    }

    pub fn assert_close(got: &[f64], want: &[f64], tol: f64) {
        assert_eq!(got.len(), want.len(), "got {got:?}, want {want:?}");
        for (g, w) in got.iter().zip(want) {
            assert!((g - w).abs() <= tol, "got {got:?}, want {want:?} (tolerance {tol})");
        }
    }
}

//! The `[reward]`, `[advantage]` and `[loss]` TOML sections. Defaults are the RLP paper's
//! (arXiv 2510.01265) unless a field says otherwise; the values of the other recipes are in each
//! field's comment so a config can be written from this file alone.
use anyhow::ensure;
use serde::{Deserialize, Serialize};

/// What a thought is rewarded for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RewardKind {
    /// RLP: `log p_θ(x_t | x_<t, c) − log p̄(x_t | x_<t)` (Eq. 3–5).
    InfoGain,
    /// Quiet-STaR: the same gain summed over `n_true` teacher-forced future tokens, with the
    /// current model as the no-think term.
    QuietStar,
    /// RPT: 1 iff the boxed answer's bytes are a prefix of the true continuation ending on a token
    /// boundary (Eq. 3).
    PrefixMatch,
    /// RPT App. A: 1 iff the first token of the answer is `x_t`.
    FirstToken,
    /// RPT App. A: 1 if the first answer token is `x_t`, else its probability under the model.
    DenseProb,
    /// No reward: plain next-token prediction (the continued-pretraining control).
    Ntp,
}

/// The no-think term subtracted from `s_pred` by the gain rewards.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Baseline {
    /// RLP: an EMA teacher of the policy scores the context without a thought.
    Ema,
    /// Quiet-STaR: the current model itself, detached.
    Current,
    /// No subtraction: the reward is `s_pred` alone.
    None,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RewardConfig {
    pub kind: RewardKind,
    /// `no_think_baseline` of the design note; only read by `info_gain` and `quiet_star`.
    pub baseline: Baseline,
    /// Future tokens scored after the thought (RLP 1, Quiet-STaR 4).
    pub n_true: usize,
    /// Clamp the *reward* (not the advantage) at 0: only thoughts that beat the no-think
    /// prediction earn anything. Unlike `advantage.clamp_negative` this makes the no-think
    /// baseline matter, see [`crate::baseline_cancels`].
    pub negative_clamp: bool,
}

impl Default for RewardConfig {
    fn default() -> Self {
        RewardConfig { kind: RewardKind::InfoGain, baseline: Baseline::Ema, n_true: 1, negative_clamp: false }
    }
}

impl RewardConfig {
    pub fn validate(&self) -> anyhow::Result<()> {
        ensure!(self.n_true >= 1, "reward.n_true must be >= 1, got {}", self.n_true);
        Ok(())
    }
}

/// What is subtracted from each reward before it becomes an advantage.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Center {
    /// Mean over the G thoughts of the same context (RLP, GRPO, Quiet-STaR).
    GroupMean,
    /// Raw rewards.
    None,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AdvantageConfig {
    pub center: Center,
    /// Multiply the centred reward by G/(G−1): the leave-one-out baseline (RLP Eq. 7). Only
    /// applies with `center = "group_mean"`; GRPO/RPT and Quiet-STaR use false.
    pub loo_scale: bool,
    /// Divide by the group's (unbiased) standard deviation + 1e-6 (GRPO, RPT: true).
    pub std_normalize: bool,
    /// max(0, A) after centring (Quiet-STaR: true).
    pub clamp_negative: bool,
    /// Clamp A to [−c, c] last; None = off.
    pub clip: Option<f64>,
}

impl Default for AdvantageConfig {
    fn default() -> Self {
        AdvantageConfig { center: Center::GroupMean, loo_scale: true, std_normalize: false, clamp_negative: false, clip: None }
    }
}

impl AdvantageConfig {
    pub fn validate(&self) -> anyhow::Result<()> {
        if let Some(c) = self.clip {
            ensure!(c > 0.0 && c.is_finite(), "advantage.clip must be a finite number > 0, got {c}");
        }
        Ok(())
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Estimator {
    /// Per-token clipped importance ratio against the rollout policy (RLP Eq. 8, GRPO).
    PpoClip,
    /// `−A · log π(token)`, no ratio (Quiet-STaR).
    Reinforce,
}

/// How per-token losses become one scalar; verl's `loss_agg_mode` (see [`crate::aggregate`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Aggregation {
    /// DAPO; verl's default.
    TokenMean,
    /// GRPO Eq. 3, RLP Eq. 8.
    SeqMeanTokenMean,
    SeqMeanTokenSum,
    /// Dr.GRPO.
    SeqMeanTokenSumNorm,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LossConfig {
    pub estimator: Estimator,
    /// Ratio clip below 1 (RLP: not reported; 0.2 is TRL's and DAPO's).
    pub eps_low: f64,
    /// Ratio clip above 1 (DAPO 0.28).
    pub eps_high: f64,
    pub aggregation: Aggregation,
    /// Weight of the k3 KL to a frozen reference (GRPO 0.04; RLP 0).
    pub kl_coef: f64,
    /// Weight of an ordinary next-token loss (Quiet-STaR 0.5 + 0.5; RLP 0: explicitly none).
    pub nll_coef: f64,
    /// Weight of the policy term (Quiet-STaR 1e6).
    pub policy_coef: f64,
    /// Keep only this fraction of thought tokens, the highest-entropy ones (80/20 paper: 0.2);
    /// 1.0 = all tokens.
    pub entropy_top_ratio: f64,
    /// Optimizer steps per rollout batch (RPT: 1, "exact on-policy").
    pub updates_per_batch: usize,
    /// Temperature of the training log-probs; None = the rollout's (Quiet-STaR: 3.0).
    pub logprob_temperature: Option<f64>,
}

impl Default for LossConfig {
    fn default() -> Self {
        LossConfig {
            estimator: Estimator::PpoClip,
            eps_low: 0.2,
            eps_high: 0.2,
            aggregation: Aggregation::SeqMeanTokenMean,
            kl_coef: 0.0,
            nll_coef: 0.0,
            policy_coef: 1.0,
            entropy_top_ratio: 1.0,
            updates_per_batch: 1,
            logprob_temperature: None,
        }
    }
}

impl LossConfig {
    pub fn validate(&self) -> anyhow::Result<()> {
        ensure!((0.0..1.0).contains(&self.eps_low), "loss.eps_low must be in [0, 1), got {}", self.eps_low);
        ensure!(self.eps_high >= 0.0 && self.eps_high.is_finite(), "loss.eps_high must be a finite number >= 0, got {}", self.eps_high);
        ensure!(self.kl_coef >= 0.0 && self.kl_coef.is_finite(), "loss.kl_coef must be a finite number >= 0, got {}", self.kl_coef);
        ensure!(self.nll_coef >= 0.0 && self.nll_coef.is_finite(), "loss.nll_coef must be a finite number >= 0, got {}", self.nll_coef);
        ensure!(self.policy_coef >= 0.0 && self.policy_coef.is_finite(), "loss.policy_coef must be a finite number >= 0, got {}", self.policy_coef);
        ensure!(
            self.entropy_top_ratio > 0.0 && self.entropy_top_ratio <= 1.0,
            "loss.entropy_top_ratio must be in (0, 1] (1 = off), got {}",
            self.entropy_top_ratio
        );
        ensure!(self.updates_per_batch >= 1, "loss.updates_per_batch must be >= 1, got {}", self.updates_per_batch);
        // After the first step the samples are off-policy, and REINFORCE has no ratio to
        // correct for that.
        ensure!(
            self.updates_per_batch == 1 || self.estimator == Estimator::PpoClip,
            "loss.updates_per_batch = {} needs loss.estimator = \"ppo_clip\" (REINFORCE has no importance ratio)",
            self.updates_per_batch
        );
        if let Some(t) = self.logprob_temperature {
            ensure!(t > 0.0 && t.is_finite(), "loss.logprob_temperature must be a finite number > 0, got {t}");
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(r: anyhow::Result<()>) -> String {
        match r {
            Ok(()) => panic!("expected a validation error"),
            Err(e) => e.to_string(),
        }
    }

    #[test]
    fn defaults_are_rlp_and_valid() {
        let (r, a, l) = (RewardConfig::default(), AdvantageConfig::default(), LossConfig::default());
        assert_eq!((r.kind, r.baseline, r.n_true, r.negative_clamp), (RewardKind::InfoGain, Baseline::Ema, 1, false));
        assert_eq!((a.center, a.loo_scale, a.std_normalize, a.clamp_negative, a.clip), (Center::GroupMean, true, false, false, None));
        assert_eq!((l.estimator, l.aggregation, l.eps_low, l.eps_high), (Estimator::PpoClip, Aggregation::SeqMeanTokenMean, 0.2, 0.2));
        assert_eq!((l.kl_coef, l.nll_coef, l.policy_coef, l.entropy_top_ratio, l.updates_per_batch), (0.0, 0.0, 1.0, 1.0, 1));
        assert_eq!(l.logprob_temperature, None);
        r.validate().unwrap();
        a.validate().unwrap();
        l.validate().unwrap();
    }

    #[test]
    fn json_round_trip_and_snake_case_names() {
        let l = LossConfig { aggregation: Aggregation::SeqMeanTokenSumNorm, estimator: Estimator::Reinforce, ..Default::default() };
        let s = serde_json::to_string(&l).unwrap();
        assert!(s.contains("\"seq_mean_token_sum_norm\"") && s.contains("\"reinforce\""), "{s}");
        assert_eq!(serde_json::from_str::<LossConfig>(&s).unwrap(), l);

        let r = RewardConfig { kind: RewardKind::QuietStar, baseline: Baseline::Current, n_true: 4, negative_clamp: true };
        let s = serde_json::to_string(&r).unwrap();
        assert!(s.contains("\"quiet_star\"") && s.contains("\"current\""), "{s}");
        assert_eq!(serde_json::from_str::<RewardConfig>(&s).unwrap(), r);

        let a = AdvantageConfig { center: Center::None, clip: Some(5.0), ..Default::default() };
        let s = serde_json::to_string(&a).unwrap();
        assert_eq!(serde_json::from_str::<AdvantageConfig>(&s).unwrap(), a);

        for (name, kind) in [("prefix_match", RewardKind::PrefixMatch), ("first_token", RewardKind::FirstToken), ("dense_prob", RewardKind::DenseProb), ("ntp", RewardKind::Ntp), ("info_gain", RewardKind::InfoGain)] {
            assert_eq!(serde_json::from_str::<RewardKind>(&format!("\"{name}\"")).unwrap(), kind);
        }
        assert_eq!(serde_json::from_str::<Center>("\"group_mean\"").unwrap(), Center::GroupMean);
        assert_eq!(serde_json::from_str::<Aggregation>("\"token_mean\"").unwrap(), Aggregation::TokenMean);
    }

    #[test]
    fn partial_sections_take_defaults_and_unknown_keys_are_rejected() {
        let l: LossConfig = serde_json::from_str(r#"{"eps_high": 0.28, "aggregation": "token_mean"}"#).unwrap();
        assert_eq!(l, LossConfig { eps_high: 0.28, aggregation: Aggregation::TokenMean, ..Default::default() });
        let e = serde_json::from_str::<LossConfig>(r#"{"eps_hgih": 0.28}"#).unwrap_err().to_string();
        assert!(e.contains("eps_hgih"), "{e}");
        assert!(serde_json::from_str::<AdvantageConfig>(r#"{"std": true}"#).is_err());
        assert!(serde_json::from_str::<RewardConfig>(r#"{"kind": "info-gain"}"#).is_err());
    }

    #[test]
    fn validation_names_the_key() {
        let e = err(LossConfig { eps_low: 1.5, ..Default::default() }.validate());
        assert_eq!(e, "loss.eps_low must be in [0, 1), got 1.5");
        assert!(err(LossConfig { eps_high: -0.1, ..Default::default() }.validate()).starts_with("loss.eps_high"));
        assert!(err(LossConfig { kl_coef: f64::NAN, ..Default::default() }.validate()).starts_with("loss.kl_coef"));
        assert!(err(LossConfig { nll_coef: -1.0, ..Default::default() }.validate()).starts_with("loss.nll_coef"));
        assert!(err(LossConfig { policy_coef: f64::INFINITY, ..Default::default() }.validate()).starts_with("loss.policy_coef"));
        assert!(err(LossConfig { entropy_top_ratio: 0.0, ..Default::default() }.validate()).starts_with("loss.entropy_top_ratio"));
        assert!(err(LossConfig { entropy_top_ratio: 1.2, ..Default::default() }.validate()).starts_with("loss.entropy_top_ratio"));
        assert!(err(LossConfig { updates_per_batch: 0, ..Default::default() }.validate()).starts_with("loss.updates_per_batch"));
        let e = err(LossConfig { updates_per_batch: 2, estimator: Estimator::Reinforce, ..Default::default() }.validate());
        assert!(e.contains("loss.updates_per_batch") && e.contains("loss.estimator"), "{e}");
        LossConfig { updates_per_batch: 4, ..Default::default() }.validate().unwrap();
        assert!(err(LossConfig { logprob_temperature: Some(0.0), ..Default::default() }.validate()).starts_with("loss.logprob_temperature"));
        LossConfig { logprob_temperature: Some(3.0), entropy_top_ratio: 0.2, ..Default::default() }.validate().unwrap();

        assert!(err(AdvantageConfig { clip: Some(0.0), ..Default::default() }.validate()).starts_with("advantage.clip"));
        assert!(err(AdvantageConfig { clip: Some(f64::NAN), ..Default::default() }.validate()).starts_with("advantage.clip"));
        assert_eq!(err(RewardConfig { n_true: 0, ..Default::default() }.validate()), "reward.n_true must be >= 1, got 0");
    }
}

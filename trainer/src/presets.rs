//! Named presets: each paper's defaults (../shared/reference/algorithms.md), as TOML laid under a
//! config file. A config sets `preset = "rlp"` and overrides what it wants.
use anyhow::{bail, Context, Result};
use toml::Value;

/// RLP (arXiv 2510.01265 §2, §9): info gain against an EMA no-think teacher (τ = 0.999), one scored
/// next token, G = 16, T = 0.7, leave-one-out-scaled group-mean advantage without std, PPO-clip
/// averaged per thought then over thoughts, no KL, no next-token loss, lr 1e-6 constant.
/// Thought length 2048 (shorter budgets scored below the base model in Table S.1).
const RLP: &str = r#"
[thought]
max_tokens = 2048
temperature = 0.7
[rollout]
group_size = 16
[reward]
kind = "info_gain"
baseline = "ema"
n_true = 1
[advantage]
center = "group_mean"
loo_scale = true
std_normalize = false
[loss]
estimator = "ppo_clip"
eps_low = 0.2
eps_high = 0.2
aggregation = "seq_mean_token_mean"
kl_coef = 0.0
nll_coef = 0.0
[optim]
lr = 1e-6
schedule = "constant"
[ema]
decay = 0.999
"#;

/// Quiet-STaR (arXiv 2403.09629, official code): 9 sampled thought tokens at every position,
/// 2 thoughts per position, reward summed over 4 true tokens against the current model, mean
/// baseline with negative advantages dropped, REINFORCE with log-probs at T = 3 weighted 1e6,
/// plus the ordinary next-token loss; AdamW lr 1e-6, warm-up 20, wd 0.001, grad-clip 1.0.
/// (The learned start/end embeddings and the mixing head are not part of this preset.)
const QUIET_STAR: &str = r#"
[positions]
strategy = "every"
stride = 1
[thought]
max_tokens = 9
temperature = 1.0
[rollout]
group_size = 2
[reward]
kind = "quiet_star"
baseline = "current"
n_true = 4
[advantage]
center = "group_mean"
loo_scale = false
std_normalize = false
clamp_negative = true
[loss]
estimator = "reinforce"
aggregation = "token_mean"
policy_coef = 1e6
nll_coef = 0.5
logprob_temperature = 3.0
[optim]
lr = 1e-6
warmup_steps = 20
weight_decay = 0.001
grad_clip = 1.0
"#;

/// RPT (arXiv 2506.08007 §3, App. B): a thought then an answer, reward 1 when the answer's bytes
/// are a prefix of the true continuation ending on a token boundary; G = 8, T = 0.8, GRPO's
/// std-normalised group advantage, one update per batch, Adam β (0.9, 0.999), wd 0.01, lr 1e-6;
/// positions filtered by a proxy model's top-16 entropy (threshold not given by the paper).
const RPT: &str = r#"
[positions]
strategy = "proxy_entropy"
threshold = 1.0
proxy_top_k = 16
[thought]
max_tokens = 8192
temperature = 0.8
answer_tokens = 32
answer_format = "boxed"
[rollout]
group_size = 8
[reward]
kind = "prefix_match"
baseline = "none"
[advantage]
center = "group_mean"
loo_scale = false
std_normalize = true
[loss]
estimator = "ppo_clip"
eps_low = 0.2
eps_high = 0.2
aggregation = "token_mean"
updates_per_batch = 1
[optim]
lr = 1e-6
betas = [0.9, 0.999]
weight_decay = 0.01
"#;

/// Continued pretraining with the ordinary next-token loss on the same documents: the
/// compute-matched baseline the papers compare against.
const NTP: &str = r#"
[reward]
kind = "ntp"
baseline = "none"
[loss]
nll_coef = 1.0
"#;

pub const NAMES: &[&str] = &["rlp", "quiet_star", "rpt", "ntp"];

pub fn preset(name: &str) -> Result<Value> {
    let text = match name {
        "rlp" => RLP,
        "quiet_star" => QUIET_STAR,
        "rpt" => RPT,
        "ntp" => NTP,
        other => bail!("unknown preset `{other}` (known: {})", NAMES.join(", ")),
    };
    Ok(Value::Table(toml::from_str(text).with_context(|| format!("internal: preset `{name}` is not valid TOML"))?))
}

//! The experiment config: one TOML file, optionally on top of a named paper preset, with
//! `--set section.key=value` overrides. Unknown keys and wrong types are errors naming the key.
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use rlp_reward::{AdvantageConfig, LossConfig, RewardConfig, RewardKind};
use serde::{Deserialize, Serialize};
use toml::Value;

use crate::presets;

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrainConfig {
    /// The paper preset this config starts from (`rlp`, `quiet_star`, `rpt`, `ntp`), if any.
    #[serde(default)]
    pub preset: Option<String>,
    #[serde(default)]
    pub model: ModelSection,
    #[serde(default)]
    pub data: DataSection,
    #[serde(default)]
    pub positions: PositionsSection,
    #[serde(default)]
    pub thought: ThoughtSection,
    #[serde(default)]
    pub rollout: RolloutSection,
    #[serde(default)]
    pub reward: RewardConfig,
    #[serde(default)]
    pub advantage: AdvantageConfig,
    #[serde(default)]
    pub loss: LossConfig,
    #[serde(default)]
    pub optim: OptimSection,
    #[serde(default)]
    pub ema: EmaSection,
    #[serde(default)]
    pub train: TrainSection,
    #[serde(default)]
    pub log: LogSection,
    #[serde(default)]
    pub checkpoint: CheckpointSection,
    #[serde(default)]
    pub eval: EvalSection,
    #[serde(default)]
    pub dist: DistSection,
    #[serde(default)]
    pub memory: MemorySection,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ModelSection {
    /// Hugging Face model directory (`--model` overrides).
    pub path: Option<PathBuf>,
    /// Compute dtype; parameters are updated in float32 master copies when this is lower.
    pub dtype: String,
    pub device: String,
}

impl Default for ModelSection {
    fn default() -> Self {
        ModelSection { path: None, dtype: "float32".into(), device: "cpu".into() }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DataSection {
    /// Output of `rlp data prepare` (`--data` overrides).
    pub path: Option<PathBuf>,
    /// Context tokens kept before a position (the rest of the document is cut off on the left).
    pub max_context: usize,
    pub seed: u64,
}

impl Default for DataSection {
    fn default() -> Self {
        DataSection { path: None, max_context: 512, seed: 0 }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PositionStrategy {
    /// `per_doc` random positions per document.
    Random,
    /// Every `stride`-th position (`stride = 1`: all positions, as Quiet-STaR).
    Every,
    /// The top `top_ratio` of a document's positions by the current model's next-token entropy.
    Entropy,
    /// RPT: positions where a proxy model's entropy over its top-k next tokens exceeds `threshold`.
    ProxyEntropy,
    /// Up to `per_doc` of the tokens the data marks as answers (`answer_spans`, e.g. the
    /// built-in corpus of `rlp data synth`).
    Marked,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PositionsSection {
    pub strategy: PositionStrategy,
    pub per_doc: usize,
    pub stride: usize,
    /// Fewest context tokens before a position.
    pub min_context: usize,
    pub top_ratio: f64,
    /// Proxy model directory for `proxy_entropy`; empty = the policy itself.
    pub proxy_model: Option<PathBuf>,
    pub threshold: f64,
    pub proxy_top_k: i64,
}

impl Default for PositionsSection {
    fn default() -> Self {
        PositionsSection {
            strategy: PositionStrategy::Random,
            per_doc: 1,
            stride: 1,
            min_context: 8,
            top_ratio: 0.2,
            proxy_model: None,
            threshold: 1.0,
            proxy_top_k: 16,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AnswerFormat {
    /// The content of the last `\boxed{}` after the closing delimiter (RPT's template).
    Boxed,
    /// The text generated right after the closing delimiter (for base models that never box).
    Raw,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ThoughtSection {
    pub open: String,
    pub close: String,
    /// Sampled tokens per thought, the closing delimiter included; a thought still open at the
    /// limit is closed by appending the delimiter.
    pub max_tokens: usize,
    pub temperature: f64,
    pub top_p: f64,
    pub top_k: i64,
    /// RPT: tokens generated after the thought for the answer (0 = no answer phase).
    pub answer_tokens: usize,
    pub answer_format: AnswerFormat,
}

impl Default for ThoughtSection {
    fn default() -> Self {
        ThoughtSection {
            open: "<think>".into(),
            close: "</think>".into(),
            max_tokens: 32,
            temperature: 0.7,
            top_p: 1.0,
            top_k: 0,
            answer_tokens: 0,
            answer_format: AnswerFormat::Boxed,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RolloutSection {
    /// B: contexts per optimizer step, across all ranks (each of W ranks takes B/W of them), so
    /// the optimisation does not change with the number of GPUs.
    pub contexts_per_step: usize,
    /// G: thoughts per context.
    pub group_size: usize,
}

impl Default for RolloutSection {
    fn default() -> Self {
        RolloutSection { contexts_per_step: 8, group_size: 4 }
    }
}

/// Memory knobs. None of them changes what a step computes (only float rounding of padded
/// batches): the step is scored whole, then learned in pieces of any size.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MemorySection {
    /// Padded tokens (rows × longest row) per forward or forward/backward pass: the
    /// micro-batch of gradient accumulation, in rows of any group.
    pub micro_batch_tokens: usize,
    /// Positions per chunk of `[chunk, vocab]` logits; 0 = automatic (2^26 float32 logits,
    /// 441 positions at V = 151,936).
    pub logit_chunk_tokens: usize,
    /// Recompute each decoder block in backward instead of keeping its activations (one
    /// `[rows, length, hidden]` input kept per block).
    pub activation_checkpointing: bool,
    /// Thought rows decoded at once in a rollout (each holds a KV cache of its context and
    /// thought); 0 = every row of the step at once.
    pub rollout_rows: usize,
}

impl Default for MemorySection {
    fn default() -> Self {
        MemorySection { micro_batch_tokens: 16384, logit_chunk_tokens: 0, activation_checkpointing: false, rollout_rows: 0 }
    }
}

/// Keys that were renamed or replaced: using one is an error naming its successor.
const REPLACED_KEYS: &[(&str, &str, &str)] = &[(
    "rollout",
    "micro_batch",
    "rollout.micro_batch was replaced by memory.micro_batch_tokens (padded tokens per forward/backward pass; \
     the step is scored whole first, so micro-batches no longer need whole groups and never change the result)",
)];

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Schedule {
    Constant,
    Cosine,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct OptimSection {
    pub lr: f64,
    pub betas: [f64; 2],
    pub eps: f64,
    /// Decoupled weight decay, applied to matrices only (not norms, biases or 1-D tensors).
    pub weight_decay: f64,
    /// Global gradient-norm clip; 0 = off.
    pub grad_clip: f64,
    pub schedule: Schedule,
    pub warmup_steps: usize,
    /// Cosine decays to `lr * min_lr_ratio` at `train.max_steps`.
    pub min_lr_ratio: f64,
}

impl Default for OptimSection {
    fn default() -> Self {
        OptimSection {
            lr: 1e-6,
            betas: [0.9, 0.999],
            eps: 1e-8,
            weight_decay: 0.0,
            grad_clip: 1.0,
            schedule: Schedule::Constant,
            warmup_steps: 0,
            min_lr_ratio: 0.1,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct EmaSection {
    /// τ in φ ← τ·φ + (1−τ)·θ after every optimizer step.
    pub decay: f64,
}

impl Default for EmaSection {
    fn default() -> Self {
        EmaSection { decay: 0.999 }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TrainSection {
    pub max_steps: usize,
    /// Every sampling seed derives from (seed, step, rank), so a resumed run replays exactly.
    pub seed: u64,
    /// Run directory (`--run-dir` overrides).
    pub run_dir: Option<PathBuf>,
}

impl Default for TrainSection {
    fn default() -> Self {
        TrainSection { max_steps: 100, seed: 0, run_dir: None }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogSection {
    /// Write metrics every N steps.
    pub every: usize,
    /// Write a sample of rollouts (context tail, thought, true next tokens, reward) every N steps; 0 = never.
    pub rollouts_every: usize,
    /// Rollouts written per sample.
    pub rollouts_count: usize,
}

impl Default for LogSection {
    fn default() -> Self {
        LogSection { every: 1, rollouts_every: 10, rollouts_count: 4 }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CheckpointSection {
    /// Every N steps; 0 = only at the end (and on Ctrl-C).
    pub every: usize,
    pub keep_last: usize,
}

impl Default for CheckpointSection {
    fn default() -> Self {
        CheckpointSection { every: 50, keep_last: 3 }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct EvalSection {
    /// Every N steps; 0 = never.
    pub every: usize,
    /// Held-out positions evaluated (fixed across the run).
    pub positions: usize,
    /// Also evaluate with a greedy thought before each position.
    pub with_thought: bool,
    /// A prepared dataset to evaluate on (its train split); default: the held-out split of
    /// `data.path`, or its train split when nothing is held out. When the data marks answer
    /// tokens, those are the evaluated positions.
    pub data: Option<PathBuf>,
}

impl Default for EvalSection {
    fn default() -> Self {
        EvalSection { every: 0, positions: 32, with_thought: true, data: None }
    }
}

/// Data-parallel training (`rlp-launch`, torchrun or srun); ignored by a lone process.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DistSection {
    /// Seconds one collective may take before the run stops with an error naming it.
    pub timeout_s: f64,
    /// Seconds ranks wait for each other at start-up (`rlp-launch --rdzv-timeout` overrides).
    pub rdzv_timeout_s: f64,
    /// Gradient all-reduce bucket size in MB of float32 (DDP's default is 25).
    pub bucket_mb: f64,
    /// Check every N steps that all replicas hold identical weights (logged as
    /// `dist/replica_divergence`); 0 = only at the end of the run.
    pub check_replicas_every: usize,
}

impl Default for DistSection {
    fn default() -> Self {
        DistSection { timeout_s: 600.0, rdzv_timeout_s: 300.0, bucket_mb: 25.0, check_replicas_every: 0 }
    }
}

fn merge(base: &mut Value, over: Value) {
    match (base, over) {
        (Value::Table(b), Value::Table(o)) => {
            for (k, v) in o {
                match b.get_mut(&k) {
                    Some(existing) if existing.is_table() && v.is_table() => merge(existing, v),
                    _ => {
                        b.insert(k, v);
                    }
                }
            }
        }
        (b, o) => *b = o,
    }
}

/// Applies `section.key=value` (value parsed as TOML, else taken as a string).
fn apply_set(table: &mut Value, assignment: &str) -> Result<()> {
    let (path, raw) = assignment.split_once('=').with_context(|| format!("--set `{assignment}`: expected section.key=value"))?;
    let value = match toml::from_str::<toml::Table>(&format!("v = {raw}")) {
        Ok(mut t) => t.remove("v").unwrap_or(Value::String(raw.to_string())),
        Err(_) => Value::String(raw.to_string()),
    };
    let keys: Vec<&str> = path.trim().split('.').collect();
    if keys.iter().any(|k| k.is_empty()) {
        bail!("--set `{assignment}`: empty key");
    }
    let mut node = table;
    for k in &keys[..keys.len() - 1] {
        let Value::Table(t) = node else { bail!("--set `{assignment}`: `{k}` is not a section") };
        node = t.entry(k.to_string()).or_insert_with(|| Value::Table(Default::default()));
    }
    let Value::Table(t) = node else { bail!("--set `{assignment}`: not a section") };
    t.insert(keys[keys.len() - 1].to_string(), value);
    Ok(())
}

impl TrainConfig {
    /// Reads `path`, lays it over its preset, applies `sets` in order, and validates.
    pub fn load(path: &Path, sets: &[String]) -> Result<TrainConfig> {
        let text = std::fs::read_to_string(path).with_context(|| format!("cannot read config {}", path.display()))?;
        Self::from_toml_str(&text, sets).with_context(|| format!("in config {}", path.display()))
    }

    pub fn from_toml_str(text: &str, sets: &[String]) -> Result<TrainConfig> {
        let file: Value = Value::Table(toml::from_str(text).context("not valid TOML")?);
        let mut table = Value::Table(Default::default());
        // The preset may also be chosen by --set preset=...
        let preset = sets
            .iter()
            .rev()
            .find_map(|s| s.strip_prefix("preset=").map(|p| p.trim_matches('"').to_string()))
            .or_else(|| file.get("preset").and_then(Value::as_str).map(str::to_string));
        if let Some(name) = &preset {
            merge(&mut table, presets::preset(name)?);
        }
        merge(&mut table, file);
        for s in sets {
            apply_set(&mut table, s)?;
        }
        for (section, key, message) in REPLACED_KEYS {
            if table.get(section).and_then(|t| t.get(key)).is_some() {
                bail!("{message}");
            }
        }
        let cfg: TrainConfig = serde_path_to_error::deserialize(table).map_err(|e| {
            let path = e.path().to_string();
            anyhow::anyhow!("{}{}", if path == "." { String::new() } else { format!("key `{path}`: ") }, e.into_inner())
        })?;
        cfg.validate()?;
        Ok(cfg)
    }

    pub fn validate(&self) -> Result<()> {
        let r = &self.rollout;
        anyhow::ensure!(r.contexts_per_step > 0, "rollout.contexts_per_step must be at least 1");
        anyhow::ensure!(r.group_size > 0, "rollout.group_size must be at least 1");
        anyhow::ensure!(self.memory.micro_batch_tokens > 0, "memory.micro_batch_tokens must be at least 1");
        anyhow::ensure!(self.thought.max_tokens > 0, "thought.max_tokens must be at least 1");
        anyhow::ensure!(self.thought.temperature > 0.0, "thought.temperature must be > 0 for training rollouts");
        anyhow::ensure!(self.thought.open != self.thought.close, "thought.open and thought.close must differ");
        anyhow::ensure!(self.data.max_context >= 1, "data.max_context must be at least 1");
        anyhow::ensure!(self.positions.min_context >= 1, "positions.min_context must be at least 1");
        anyhow::ensure!(self.positions.per_doc >= 1, "positions.per_doc must be at least 1");
        anyhow::ensure!(self.positions.stride >= 1, "positions.stride must be at least 1");
        anyhow::ensure!(self.positions.top_ratio > 0.0 && self.positions.top_ratio <= 1.0, "positions.top_ratio must be in (0, 1]");
        anyhow::ensure!(self.optim.lr >= 0.0, "optim.lr must be >= 0");
        anyhow::ensure!((0.0..1.0).contains(&self.optim.betas[0]) && (0.0..1.0).contains(&self.optim.betas[1]), "optim.betas must be in [0, 1)");
        anyhow::ensure!((0.0..=1.0).contains(&self.ema.decay), "ema.decay must be in [0, 1]");
        anyhow::ensure!(self.checkpoint.keep_last >= 1, "checkpoint.keep_last must be at least 1");
        if self.reward.kind == RewardKind::PrefixMatch || self.reward.kind == RewardKind::FirstToken {
            anyhow::ensure!(self.thought.answer_tokens > 0, "reward.kind = {:?} needs thought.answer_tokens > 0", self.reward.kind);
        }
        anyhow::ensure!(self.dist.timeout_s > 0.0 && self.dist.rdzv_timeout_s > 0.0, "dist.timeout_s and dist.rdzv_timeout_s must be > 0");
        anyhow::ensure!(self.dist.bucket_mb > 0.0, "dist.bucket_mb must be > 0");
        self.reward.validate()?;
        self.advantage.validate()?;
        self.loss.validate()?;
        Ok(())
    }

    /// The contexts each of `world` ranks takes per step, B/W; it must divide evenly.
    pub fn contexts_per_rank(&self, world: usize) -> Result<usize> {
        let b = self.rollout.contexts_per_step;
        anyhow::ensure!(b % world == 0, "rollout.contexts_per_step ({b}) must split evenly over the {world} ranks: make it a multiple of {world}");
        Ok(b / world)
    }

    /// True when the step samples thoughts (every objective except plain next-token training).
    pub fn uses_thoughts(&self) -> bool {
        self.reward.kind != RewardKind::Ntp
    }

    pub fn to_toml(&self) -> Result<String> {
        toml::to_string_pretty(self).context("cannot serialise the resolved config")
    }
}

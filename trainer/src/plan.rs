//! `rlp plan`: the per-rank memory of a training config on a model, before the run — "will it
//! fit?". Arithmetic over the config and `config.json` only (no weights are loaded), term by
//! term as the trainer allocates them:
//!
//! - the resident state: weights and gradients in the compute dtype, AdamW's m and v in float32,
//!   float32 master weights when computing in a lower precision, the EMA teacher (float32 φ plus
//!   a compute-dtype copy to run), the frozen KL reference, and float32 gradient buckets in a
//!   world of more than one rank (every rank holds all of it: no sharding yet);
//! - the peak of the phases: the rollout (KV cache of the rows decoded at once, plus their
//!   `[rows, V]` logits and sampling temporaries) or the update (one micro-batch's saved
//!   activations, with or without activation checkpointing, plus one chunk of logits and its
//!   gradient).
//!
//! The per-token activation figure counts the tensors a Llama-family block saves for backward
//! (norm inputs and outputs, q/k/v, attention output, the MLP's gate, up, activation and
//! product); on CPU, attention with a padding mask runs SDPA's math path, which also keeps the
//! `[heads, L, L]` probabilities. Validated against measured peak resident memory on CPU
//! (docs/memory.md).
use std::fmt::Write as _;

use anyhow::Result;
use rlp_model::ModelShape;

use crate::config::TrainConfig;

/// Resident memory of a CPU process that has loaded libtorch and run a step, before any model
/// state (measured: one `rlp train` step of a 1-layer, hidden-16 Qwen3 peaks at 500 MB).
pub const CPU_RUNTIME_BYTES: f64 = 0.50e9;

pub struct Plan {
    /// (term, bytes), in the order printed.
    pub resident: Vec<(String, f64)>,
    pub rollout: Vec<(String, f64)>,
    pub score: Vec<(String, f64)>,
    pub update: Vec<(String, f64)>,
    pub runtime: f64,
}

impl Plan {
    pub fn resident_total(&self) -> f64 {
        self.resident.iter().map(|(_, b)| b).sum()
    }

    fn phase(v: &[(String, f64)]) -> f64 {
        v.iter().map(|(_, b)| b).sum()
    }

    /// Resident state + the larger phase + the runtime.
    pub fn peak(&self) -> f64 {
        let phases = [&self.rollout, &self.score, &self.update].map(|p| Self::phase(p));
        self.resident_total() + phases.into_iter().fold(0.0, f64::max) + self.runtime
    }

    pub fn report(&self, world: usize, budget: Option<f64>) -> String {
        let gb = |b: f64| b / 1e9;
        let mut s = String::new();
        let _ = writeln!(s, "per rank (world size {world}; every rank holds the whole state)");
        let mut section = |title: &str, rows: &[(String, f64)]| {
            let _ = writeln!(s, "  {title:<58} {:>9.2} GB", gb(Self::phase(rows)));
            for (name, b) in rows {
                let _ = writeln!(s, "    {name:<56} {:>9.2} GB", gb(*b));
            }
        };
        section("resident state", &self.resident);
        section("rollout (peak of the decode)", &self.rollout);
        section("score (no-grad pass, peak of one micro-batch)", &self.score);
        section("update (peak of one micro-batch)", &self.update);
        if self.runtime > 0.0 {
            let _ = writeln!(s, "  {:<58} {:>9.2} GB", "runtime (libtorch on CPU)", gb(self.runtime));
        }
        let _ = write!(s, "  {:<58} {:>9.2} GB", "peak", gb(self.peak()));
        if let Some(budget) = budget {
            let verdict = if self.peak() <= budget { "fits" } else { "does NOT fit" };
            let _ = write!(s, "  — {verdict} in {:.0} GB", gb(budget));
        }
        s.push('\n');
        s
    }
}

/// The plan of `cfg` on a model of `shape` over `world` ranks.
pub fn plan(cfg: &TrainConfig, shape: &ModelShape, world: usize) -> Result<Plan> {
    let c = match cfg.model.dtype.as_str() {
        "float32" | "f32" => 4.0,
        _ => 2.0,
    };
    let p = shape.parameters as f64;
    let cpu = cfg.model.device == "cpu";
    let mut resident = vec![
        ("weights".to_string(), p * c),
        ("gradients".to_string(), p * c),
        ("AdamW m and v (float32)".to_string(), 2.0 * p * 4.0),
    ];
    if c < 4.0 {
        resident.push(("float32 master weights".into(), p * 4.0));
    }
    let thoughts = cfg.uses_thoughts();
    if thoughts && cfg.reward.baseline == rlp_reward::Baseline::Ema {
        resident.push(("EMA teacher (float32 φ + compute copy)".into(), p * (4.0 + c)));
    }
    if thoughts && cfg.loss.kl_coef > 0.0 {
        resident.push(("KL reference model".into(), p * c));
    }
    if world > 1 {
        resident.push(("gradient buckets (float32)".into(), p * 4.0));
    }

    let b = cfg.contexts_per_rank(world)? as f64;
    let g = if thoughts { cfg.rollout.group_size as f64 } else { 1.0 };
    let (h, v, layers) = (shape.hidden as f64, shape.vocab as f64, shape.layers as f64);
    let (q_out, kv) = ((shape.heads * shape.head_dim) as f64, (shape.kv_heads * shape.head_dim) as f64);
    let thought = if thoughts { (cfg.thought.max_tokens + cfg.thought.answer_tokens + 1) as f64 } else { 0.0 };
    let row_len = cfg.data.max_context as f64 + thought + cfg.reward.n_true as f64;

    let mut rollout = Vec::new();
    if thoughts {
        let rows = match cfg.memory.rollout_rows {
            0 => b * g,
            r => ((r as f64 / g).floor().max(1.0) * g).min(b * g),
        };
        let slots = cfg.data.max_context as f64 + thought;
        rollout.push((format!("KV cache ({rows} rows × {slots} slots)"), rows * slots * layers * 2.0 * kv * c));
        // Logits, their float32 copy, log-softmax, noise and its intermediates.
        rollout.push((format!("decode logits and sampling ({rows} rows × V)"), rows * v * 24.0));
    }

    let tokens = (cfg.memory.micro_batch_tokens as f64).min(b * g * row_len).max(row_len);
    let rows_per_mb = (tokens / row_len).floor().max(1.0);
    let per_token_layer = c * (4.0 * h + 4.0 * q_out + 5.0 * kv + 4.0 * shape.intermediate as f64);
    let attention = if cpu { rows_per_mb * shape.heads as f64 * row_len * row_len * 4.0 } else { 0.0 };
    let mut update = Vec::new();
    if cfg.memory.activation_checkpointing {
        update.push((format!("block inputs ({tokens} tokens × {layers} layers)"), tokens * layers * h * c));
        update.push(("one block recomputed".to_string(), tokens * per_token_layer + attention));
    } else {
        update.push((format!("activations ({tokens} tokens × {layers} layers)"), tokens * layers * per_token_layer + layers * attention));
    }
    // A chunk holds at most the positions one micro-batch scores: its rows' thought tokens (every
    // token for the next-token objective).
    let positions = if thoughts { rows_per_mb * thought } else { tokens };
    let chunk = (rlp_model::LogProbOpts::new(1.0).chunked(cfg.memory.logit_chunk_tokens).chunk_len(shape.vocab) as f64).min(positions);
    // float32 logits, the softmax backward recomputes, their gradient; below float32 also the
    // compute-dtype logits and gradient.
    let lower = if c < 4.0 { 2.0 * c } else { 0.0 };
    update.push((format!("logit chunk ({chunk} positions × V, with its gradient)"), chunk * v * (12.0 + lower)));
    // The no-grad pass keeps one layer's activations at a time, and its entropies need
    // logits, probabilities and their product.
    let score = vec![
        ("one layer's activations".to_string(), tokens * per_token_layer + attention),
        (format!("logit chunk ({chunk} positions × V, with entropies)"), chunk * v * (16.0 + lower / 2.0)),
    ];
    Ok(Plan { resident, rollout, score, update, runtime: if cpu { CPU_RUNTIME_BYTES } else { 0.0 } })
}

/// "80GB", "80 GB", "80e9", "512MB" → bytes.
pub fn parse_bytes(text: &str) -> Result<f64> {
    let t = text.trim().to_ascii_uppercase().replace(' ', "");
    let (num, scale) = [("TB", 1e12), ("GB", 1e9), ("MB", 1e6), ("GIB", (1u64 << 30) as f64), ("B", 1.0)]
        .iter()
        .find_map(|(suffix, scale)| t.strip_suffix(suffix).map(|n| (n.to_string(), *scale)))
        .unwrap_or((t.clone(), 1.0));
    let value: f64 = num.parse().map_err(|_| anyhow::anyhow!("--gpu-mem `{text}`: expected a size such as 80GB"))?;
    anyhow::ensure!(value.is_finite() && value > 0.0, "--gpu-mem `{text}` must be a positive size");
    Ok(value * scale)
}

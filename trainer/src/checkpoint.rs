//! Checkpoints: `RUN/checkpoints/step-NNNNNNNN/` holding the policy as a Hugging Face directory
//! (`model/`, loadable by transformers), `optimizer.safetensors` (AdamW moments, float32 masters),
//! `ema.safetensors` (φ) and `state.json` (step, data cursor, seed). Written to a temporary
//! sibling and renamed, so a crash leaves only complete checkpoints; the oldest beyond
//! `keep_last` are removed after a new one is in place.
use std::collections::HashMap;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use rlp_data::Cursor;
use serde::{Deserialize, Serialize};
use tch::{Device, Tensor};

use crate::adamw::AdamW;
use crate::ema::Ema;
use crate::trainer::Trainer;

pub const MODEL_DIR: &str = "model";
const STATE_FILE: &str = "state.json";
const OPTIMIZER_FILE: &str = "optimizer.safetensors";
const EMA_FILE: &str = "ema.safetensors";

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct TrainerState {
    /// Completed training steps.
    pub step: usize,
    /// Data stream position after `step` steps (`None` = start of the data).
    pub cursor: Option<Cursor>,
    /// AdamW's own step count (differs from `step` when `loss.updates_per_batch` > 1).
    pub optimizer_steps: i64,
    /// The run seed every per-step seed derives from; a resume under another seed is refused.
    pub seed: u64,
}

fn checkpoints_dir(run_dir: &Path) -> PathBuf {
    run_dir.join("checkpoints")
}

/// The step of a checkpoint directory `step-NNNNNNNN`.
pub fn step_of(path: &Path) -> Option<usize> {
    path.file_name()?.to_str()?.strip_prefix("step-")?.parse().ok()
}

/// Completed checkpoints, oldest first.
pub fn list(run_dir: &Path) -> Result<Vec<PathBuf>> {
    let dir = checkpoints_dir(run_dir);
    if !dir.is_dir() {
        return Ok(Vec::new());
    }
    let mut out: Vec<(usize, PathBuf)> = std::fs::read_dir(&dir)
        .with_context(|| format!("cannot list {}", dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.join(STATE_FILE).is_file())
        .filter_map(|p| step_of(&p).map(|s| (s, p)))
        .collect();
    out.sort();
    Ok(out.into_iter().map(|(_, p)| p).collect())
}

pub fn latest(run_dir: &Path) -> Result<Option<PathBuf>> {
    Ok(list(run_dir)?.pop())
}

fn write_tensors(path: &Path, tensors: Vec<(String, Tensor)>) -> Result<()> {
    let cpu: Vec<(String, Tensor)> = tensors.into_iter().map(|(n, t)| (n, t.to_device(Device::Cpu).contiguous())).collect();
    Tensor::write_safetensors(&cpu, path).with_context(|| format!("cannot write {}", path.display()))
}

fn read_tensors(path: &Path, device: Device) -> Result<HashMap<String, Tensor>> {
    let list = Tensor::read_safetensors(path).with_context(|| format!("cannot read {}", path.display()))?;
    Ok(list.into_iter().map(|(n, t)| (n, t.to_device(device))).collect())
}

impl Trainer {
    /// Writes a checkpoint of the current state and prunes old ones; returns its directory.
    pub fn save_checkpoint(&self) -> Result<PathBuf> {
        let root = checkpoints_dir(&self.run_dir);
        std::fs::create_dir_all(&root).with_context(|| format!("cannot create {}", root.display()))?;
        let name = format!("step-{:08}", self.step);
        let final_dir = root.join(&name);
        let tmp = root.join(format!(".{name}.tmp-{}", std::process::id()));
        if tmp.exists() {
            std::fs::remove_dir_all(&tmp).with_context(|| format!("cannot remove stale {}", tmp.display()))?;
        }
        std::fs::create_dir_all(&tmp).with_context(|| format!("cannot create {}", tmp.display()))?;
        let write = || -> Result<()> {
            // In the compute dtype: float32 runs resume exactly from the model directory alone;
            // lower-precision runs keep their float32 masters in the optimizer state.
            self.policy.save(&tmp.join(MODEL_DIR), &self.tokenizer, Some(self.policy.kind()))?;
            write_tensors(&tmp.join(OPTIMIZER_FILE), self.optim.state())?;
            if let Some(ema) = &self.ema {
                write_tensors(&tmp.join(EMA_FILE), ema.state())?;
            }
            let state = TrainerState {
                step: self.step,
                cursor: Some(self.contexts.cursor()),
                optimizer_steps: self.optim.steps,
                seed: self.cfg.train.seed,
            };
            // state.json last: its presence marks the checkpoint complete.
            std::fs::write(tmp.join(STATE_FILE), serde_json::to_string_pretty(&state)?)?;
            Ok(())
        };
        if let Err(e) = write() {
            let _ = std::fs::remove_dir_all(&tmp);
            return Err(e.context(format!("writing checkpoint {}", final_dir.display())));
        }
        if final_dir.exists() {
            std::fs::remove_dir_all(&final_dir).with_context(|| format!("cannot replace {}", final_dir.display()))?;
        }
        std::fs::rename(&tmp, &final_dir).with_context(|| format!("cannot rename {} into place", tmp.display()))?;
        let all = list(&self.run_dir)?;
        let excess = all.len().saturating_sub(self.cfg.checkpoint.keep_last);
        for old in &all[..excess] {
            std::fs::remove_dir_all(old).with_context(|| format!("cannot remove old checkpoint {}", old.display()))?;
        }
        Ok(final_dir)
    }
}

/// The trainer state (`state.json`) of checkpoint `ckpt`.
pub fn read_state(ckpt: &Path) -> Result<TrainerState> {
    let path = ckpt.join(STATE_FILE);
    let text = std::fs::read_to_string(&path).with_context(|| format!("cannot read {}", path.display()))?;
    serde_json::from_str(&text).with_context(|| format!("{} is not a valid trainer state", path.display()))
}

/// Restores optimizer and EMA state from `ckpt` and returns its trainer state.
/// (The policy itself is loaded from `ckpt/model` by the caller.)
pub fn load_state(ckpt: &Path, optim: &mut AdamW, ema: Option<&mut Ema>) -> Result<TrainerState> {
    let state = read_state(ckpt)?;
    let device = optim.device();
    optim
        .load_state(read_tensors(&ckpt.join(OPTIMIZER_FILE), device)?, state.optimizer_steps)
        .with_context(|| format!("in {}", ckpt.join(OPTIMIZER_FILE).display()))?;
    if let Some(ema) = ema {
        let p = ckpt.join(EMA_FILE);
        if !p.is_file() {
            bail!("{} has no {EMA_FILE}, but this config uses an EMA teacher", ckpt.display());
        }
        ema.load_state(read_tensors(&p, device)?).with_context(|| format!("in {}", p.display()))?;
    }
    Ok(state)
}

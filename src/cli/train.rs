//! `rlp train`: run a TOML-configured training run.
use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::Args;
use rlp_trainer::{RunOptions, Trainer};

use super::ConfigArgs;

#[derive(Args, Debug)]
pub struct TrainArgs {
    #[command(flatten)]
    pub config: ConfigArgs,
    /// Model directory (overrides model.path).
    #[arg(long)]
    pub model: Option<PathBuf>,
    /// Prepared data directory (overrides data.path).
    #[arg(long)]
    pub data: Option<PathBuf>,
    /// Run directory for logs and checkpoints (overrides train.run_dir; default runs/<config name>).
    #[arg(long)]
    pub run_dir: Option<PathBuf>,
    #[arg(long)]
    pub max_steps: Option<usize>,
    /// Continue from the latest checkpoint in the run directory.
    #[arg(long)]
    pub resume: bool,
    /// Write RUN/dumps/step-N.safetensors with step N's contexts, thoughts, scores, rewards, loss.
    #[arg(long)]
    pub dump_step: Option<usize>,
}

fn toml_string(p: &std::path::Path) -> String {
    toml::Value::String(p.display().to_string()).to_string()
}

pub fn run(a: TrainArgs) -> Result<()> {
    let mut sets = Vec::new();
    if let Some(m) = &a.model {
        sets.push(format!("model.path={}", toml_string(m)));
    }
    if let Some(d) = &a.data {
        sets.push(format!("data.path={}", toml_string(d)));
    }
    if let Some(n) = a.max_steps {
        sets.push(format!("train.max_steps={n}"));
    }
    let cfg = a.config.load(&sets)?;
    let run_dir = a.run_dir.clone().or_else(|| cfg.train.run_dir.clone()).unwrap_or_else(|| {
        let name = a.config.config.file_stem().map(|s| s.to_string_lossy().to_string()).unwrap_or_else(|| "run".into());
        PathBuf::from("runs").join(name)
    });
    let mut trainer = Trainer::new(cfg, &run_dir, a.resume).with_context(|| format!("cannot start the run in {}", run_dir.display()))?;
    trainer.run(&RunOptions { dump_step: a.dump_step, handle_ctrl_c: true, progress: true })?;
    if trainer.dist.is_main() {
        eprintln!("done: {} steps; logs and checkpoints in {}", trainer.step, run_dir.display());
    }
    Ok(())
}

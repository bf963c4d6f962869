//! `rlp plan`: will a training config fit? The per-rank memory breakdown of a config on a model
//! (a directory or its `config.json`), without loading weights (`rlp_trainer::plan`).
use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::Args;
use rlp_model::{ModelConfig, ModelShape};
use rlp_trainer::plan::{parse_bytes, plan};

use super::ConfigArgs;

#[derive(Args, Debug)]
pub struct PlanArgs {
    #[command(flatten)]
    pub config: ConfigArgs,
    /// Model directory or its config.json (overrides model.path).
    #[arg(long)]
    pub model: Option<PathBuf>,
    /// Data-parallel ranks (one GPU each).
    #[arg(long, default_value_t = 1)]
    pub gpus: usize,
    /// Memory of one GPU (e.g. 80GB); the plan says whether the peak fits.
    #[arg(long)]
    pub gpu_mem: Option<String>,
}

pub fn run(a: PlanArgs) -> Result<()> {
    anyhow::ensure!(a.gpus >= 1, "--gpus must be at least 1");
    let cfg = a.config.load(&[])?;
    let model = a.model.clone().or_else(|| cfg.model.path.clone()).context("no model: pass --model (a directory or its config.json) or set model.path")?;
    let file = if model.is_dir() { model.join("config.json") } else { model.clone() };
    let shape = ModelShape::of(&ModelConfig::from_file(&file)?)?;
    let budget = a.gpu_mem.as_deref().map(parse_bytes).transpose()?;
    println!(
        "{} on {} ({:.2} B parameters, V = {}, {} layers, hidden {}), {} {}",
        a.config.config.display(),
        file.display(),
        shape.parameters as f64 / 1e9,
        shape.vocab,
        shape.layers,
        shape.hidden,
        cfg.model.dtype,
        cfg.model.device
    );
    print!("{}", plan(&cfg, &shape, a.gpus)?.report(a.gpus, budget));
    Ok(())
}

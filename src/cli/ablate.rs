//! `rlp ablate`: run a grid of training runs (variants × seeds) from an ablation file and write
//! a report comparing them. The logic lives in the `rlp-ablate` crate.
use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use clap::Args;
use rlp_ablate::{report, Ablation, Inputs, Outcome, RunnerOptions};

#[derive(Args, Debug)]
pub struct AblateArgs {
    /// Ablation file (TOML): `base` train config, `seeds`, common `set` overrides, [[variant]]s.
    pub ablation: PathBuf,
    /// Output folder (overrides the file's `out`; default runs/ablations/<file name>).
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Model directory, passed to every `rlp train`.
    #[arg(long)]
    pub model: Option<PathBuf>,
    /// Prepared data directory, passed to every `rlp train`.
    #[arg(long)]
    pub data: Option<PathBuf>,
    /// Print the planned runs and how each variant's config differs from the base, run nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Continue runs that stopped short of train.max_steps from their latest checkpoint.
    #[arg(long)]
    pub resume: bool,
    /// Rebuild OUT/report/ from the finished runs, run nothing.
    #[arg(long, conflicts_with_all = ["dry_run", "resume"])]
    pub report_only: bool,
}

pub fn run(a: AblateArgs) -> Result<()> {
    let ablation = Ablation::load(&a.ablation, a.out.as_deref())?;
    let inputs = Inputs { model: a.model.clone(), data: a.data.clone() };
    // Every run's config resolved and validated before anything starts.
    let runs = ablation.plan(&inputs).with_context(|| format!("in ablation file {}", a.ablation.display()))?;
    let exe = std::env::current_exe().context("cannot find the rlp executable to run `rlp train` with")?;
    let dry = a.dry_run || a.report_only;
    let opts = RunnerOptions { exe, inputs, resume: a.resume, stop: if dry { Default::default() } else { rlp_ablate::ctrl_c_flag() } };
    if a.dry_run {
        print!("{}", rlp_ablate::dry_run_text(&ablation, &runs, &opts)?);
        return Ok(());
    }
    if !a.report_only {
        eprintln!("ablation {}: {} runs into {}", ablation.name, runs.len(), ablation.out.display());
    }
    let outcomes = if a.report_only { Vec::new() } else { rlp_ablate::run_all(&ablation, &runs, &opts)? };
    // The report of what finished is written even when some runs failed.
    let readme = report::write(&ablation, &runs)?;
    eprintln!("report: {}", readme.display());

    let failed: Vec<String> = runs
        .iter()
        .zip(&outcomes)
        .filter_map(|(r, o)| match o {
            Outcome::Failed { reason, log } => Some(format!("{}: {reason} (log: {})", r.label(), log.display())),
            _ => None,
        })
        .collect();
    if !failed.is_empty() {
        for f in &failed {
            eprintln!("not finished: {f}");
        }
        let hint = if opts.stop.load(std::sync::atomic::Ordering::SeqCst) { "; interrupted: rerun with --resume to continue" } else { "" };
        bail!("{} of {} runs did not finish (listed above){hint}", failed.len(), runs.len());
    }
    if !a.report_only {
        let skipped = outcomes.iter().filter(|o| matches!(o, Outcome::Skipped)).count();
        eprintln!("all {} runs finished ({} trained now, {skipped} skipped as finished before)", runs.len(), runs.len() - skipped);
    }
    Ok(())
}

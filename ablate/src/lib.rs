//! `rlp ablate`: a grid of training runs (variants × seeds) from one ablation file, run one
//! after another as `rlp train` subprocesses, and a report comparing them.
//!
//! `spec` parses and validates the file and plans the runs, `runner` runs them and records
//! each one's wall time, `metrics` reads what a run left behind, `report` writes the table and
//! `plot` the PNGs.
pub mod metrics;
pub mod plot;
pub mod report;
pub mod runner;
pub mod spec;

use std::fmt::Write as _;

use anyhow::Result;

pub use runner::{ctrl_c_flag, run_all, Outcome, RunnerOptions, State};
pub use spec::{Ablation, Inputs, Run};

/// What `--dry-run` prints: the runs, their state, and how each variant's resolved config
/// differs from the base config with the common overrides.
pub fn dry_run_text(ablation: &Ablation, runs: &[Run], opts: &RunnerOptions) -> Result<String> {
    let mut t = String::new();
    writeln!(
        t,
        "ablation {}: {} × {} = {} runs of {} into {}",
        ablation.name,
        report::count(ablation.variants.len(), "variant"),
        report::count(ablation.seeds.len(), "seed"),
        runs.len(),
        ablation.base.display(),
        ablation.out.display()
    )?;
    if !ablation.set.is_empty() {
        writeln!(t, "every run: {}", ablation.set.join(" "))?;
    }
    let base = spec::flatten(&ablation.base_config(&opts.inputs)?)?;
    writeln!(t, "\nresolved config of each variant, where it differs from the base (seed {}):", ablation.seeds[0])?;
    for v in &ablation.variants {
        let Some(run) = runs.iter().find(|r| r.variant == v.name) else { continue };
        let changes = spec::diff(&base, &spec::flatten(&run.config)?);
        if changes.is_empty() {
            writeln!(t, "  {}: same as the base", v.name)?;
            continue;
        }
        writeln!(t, "  {}:", v.name)?;
        for (key, before, after) in changes {
            let show = |v: Option<String>| v.unwrap_or_else(|| "(unset)".into());
            writeln!(t, "    {key} = {}   (base: {})", show(after), show(before))?;
        }
    }
    writeln!(t, "\nruns, in order:")?;
    for (i, r) in runs.iter().enumerate() {
        let st = runner::state(r)?;
        let action = match st {
            State::Finished => "skip",
            State::Partial { .. } if opts.resume => "resume",
            State::Partial { .. } => "needs --resume",
            State::New => "train",
        };
        writeln!(t, "  [{}/{}] {} seed {}: {st} -> {action}; {} steps in {}", i + 1, runs.len(), r.variant, r.seed, r.config.train.max_steps, r.dir.display())?;
    }
    if let Some(r) = runs.first() {
        writeln!(t, "\nfirst command: {}", runner::shell_join(&runner::train_command(ablation, r, opts, false)))?;
    }
    writeln!(t, "report: {}", ablation.report_dir().join("README.md").display())?;
    Ok(t)
}

//! Runs the grid one `rlp train` subprocess at a time. A subprocess (rather than a `Trainer` in
//! this process) keeps each run exactly what `rlp train` does by hand, gives it its own log, and
//! frees all its memory (GPU included) before the next one starts.
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Instant;

use anyhow::{Context, Result};

use crate::metrics::{latest_checkpoint_step, RunRecord, LOG_FILE};
use crate::spec::{diff, flatten, flatten_value, Ablation, Inputs, Run};

/// Where a run stands before the ablation touches it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    /// No checkpoint yet.
    New,
    /// A checkpoint short of `train.max_steps`.
    Partial { step: usize },
    Finished,
}

pub fn state(run: &Run) -> Result<State> {
    Ok(match latest_checkpoint_step(&run.dir)? {
        None => State::New,
        Some(s) if s == run.config.train.max_steps => State::Finished,
        Some(step) => State::Partial { step },
    })
}

impl std::fmt::Display for State {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            State::New => write!(f, "no checkpoint"),
            State::Partial { step } => write!(f, "partial (checkpoint at step {step})"),
            State::Finished => write!(f, "finished"),
        }
    }
}

/// What happened to one run in this invocation.
#[derive(Debug, Clone)]
pub enum Outcome {
    /// Already finished before this invocation.
    Skipped,
    Finished { wall_s: f64 },
    /// Failed, not started (a partial run without `--resume`), or interrupted; `reason` says which.
    Failed { reason: String, log: PathBuf },
}

pub struct RunnerOptions {
    /// The `rlp` executable (`std::env::current_exe()` from the CLI).
    pub exe: PathBuf,
    pub inputs: Inputs,
    /// Continue partial runs from their latest checkpoint.
    pub resume: bool,
    /// Set on Ctrl-C: the current run checkpoints and stops (it got the signal too), no new one starts.
    pub stop: Arc<AtomicBool>,
}

/// Installs a Ctrl-C handler that sets the returned flag instead of killing this process, so
/// the report of what finished is still written.
pub fn ctrl_c_flag() -> Arc<AtomicBool> {
    let stop = Arc::new(AtomicBool::new(false));
    let flag = stop.clone();
    if ctrlc::set_handler(move || flag.store(true, Ordering::SeqCst)).is_err() {
        eprintln!("note: could not install the Ctrl-C handler; Ctrl-C will not write the report");
    }
    stop
}

/// The `rlp train` command line of a run (the executable first).
pub fn train_command(ablation: &Ablation, run: &Run, opts: &RunnerOptions, resume: bool) -> Vec<String> {
    let mut cmd = vec![opts.exe.display().to_string(), "train".into(), "--config".into(), ablation.base.display().to_string()];
    cmd.extend(["--run-dir".into(), run.dir.display().to_string()]);
    for s in &run.sets {
        cmd.extend(["--set".into(), s.clone()]);
    }
    if let Some(m) = &opts.inputs.model {
        cmd.extend(["--model".into(), m.display().to_string()]);
    }
    if let Some(d) = &opts.inputs.data {
        cmd.extend(["--data".into(), d.display().to_string()]);
    }
    if resume {
        cmd.push("--resume".into());
    }
    cmd
}

/// `argv` as one line a shell reads back the same (`preset="rlp"` needs quoting).
pub fn shell_join(argv: &[String]) -> String {
    let quote = |a: &String| {
        if !a.is_empty() && a.chars().all(|c| c.is_ascii_alphanumeric() || "_./=:,+-@%".contains(c)) {
            a.clone()
        } else {
            format!("'{}'", a.replace('\'', "'\\''"))
        }
    };
    argv.iter().map(quote).collect::<Vec<_>>().join(" ")
}

/// Runs every run of `runs` that is not finished, in order; one failure does not stop the rest.
pub fn run_all(ablation: &Ablation, runs: &[Run], opts: &RunnerOptions) -> Result<Vec<Outcome>> {
    let n = runs.len();
    let mut outcomes = Vec::with_capacity(n);
    for (i, run) in runs.iter().enumerate() {
        let tag = format!("[{}/{n}] {}", i + 1, run.label());
        let log = run.dir.join(LOG_FILE);
        if opts.stop.load(Ordering::SeqCst) {
            outcomes.push(Outcome::Failed { reason: "not started: interrupted".into(), log });
            continue;
        }
        let outcome = match state(run)? {
            State::Finished => {
                eprintln!("{tag}: finished already (step {}), skipped", run.config.train.max_steps);
                warn_if_config_changed(run);
                Outcome::Skipped
            }
            State::Partial { step } if !opts.resume => {
                let reason = format!(
                    "not started: it stopped at step {step} of {}; rerun with --resume to continue it, or delete {} to start it over",
                    run.config.train.max_steps,
                    run.dir.display()
                );
                eprintln!("{tag}: {reason}");
                Outcome::Failed { reason, log }
            }
            st => {
                let resume = matches!(st, State::Partial { .. });
                eprint!("{tag}: {} ({}) ... ", if resume { "resuming" } else { "training" }, log.display());
                let o = execute(ablation, run, opts, resume)?;
                match &o {
                    Outcome::Finished { wall_s } => eprintln!("done in {}", crate::report::fmt_duration(*wall_s)),
                    Outcome::Failed { reason, .. } => eprintln!("FAILED: {reason}"),
                    Outcome::Skipped => eprintln!(),
                }
                o
            }
        };
        outcomes.push(outcome);
    }
    Ok(outcomes)
}

/// A finished run is kept even when the ablation now resolves a different config for it; say so.
fn warn_if_config_changed(run: &Run) {
    let path = run.dir.join("config.toml");
    let Ok(text) = std::fs::read_to_string(&path) else { return };
    let Ok(table) = toml::from_str::<toml::Table>(&text) else { return };
    let Ok(planned) = flatten(&run.config) else { return };
    let changes = diff(&flatten_value(&toml::Value::Table(table)), &planned);
    if !changes.is_empty() {
        let keys: Vec<&str> = changes.iter().map(|(k, _, _)| k.as_str()).collect();
        eprintln!(
            "note: {} was trained with a config that differs from the ablation's now ({}); delete {} to rerun it",
            run.label(),
            keys.join(", "),
            run.dir.display()
        );
    }
}

fn open_log(path: &Path) -> Result<File> {
    OpenOptions::new().create(true).append(true).open(path).with_context(|| format!("cannot open {}", path.display()))
}

/// The last `error:` line of a log (what `rlp train` printed before exiting), for the summary.
fn last_error_line(log: &Path) -> Option<String> {
    let text = std::fs::read_to_string(log).ok()?;
    text.lines().rev().find(|l| l.starts_with("error:")).map(|l| l.trim().to_string())
}

fn execute(ablation: &Ablation, run: &Run, opts: &RunnerOptions, resume: bool) -> Result<Outcome> {
    if !resume && run.dir.exists() {
        // No checkpoint, so nothing worth keeping; the trainer appends to metrics.jsonl and
        // would mix a crashed attempt's lines with this one's.
        std::fs::remove_dir_all(&run.dir).with_context(|| format!("cannot clear {} (a run without checkpoint)", run.dir.display()))?;
    }
    std::fs::create_dir_all(&run.dir).with_context(|| format!("cannot create {}", run.dir.display()))?;
    let log_path = run.dir.join(LOG_FILE);
    let mut log = open_log(&log_path)?;
    let argv = train_command(ablation, run, opts, resume);
    writeln!(log, "=== rlp ablate: {}", shell_join(&argv)).with_context(|| format!("cannot write {}", log_path.display()))?;
    let previous = if resume { RunRecord::read(&run.dir) } else { None };

    let start = Instant::now();
    let status = Command::new(&argv[0])
        .args(&argv[1..])
        .stdin(Stdio::null())
        .stdout(log.try_clone().with_context(|| format!("cannot open {}", log_path.display()))?)
        .stderr(log)
        .status()
        .with_context(|| format!("cannot start {}", argv[0]))?;
    let wall = start.elapsed().as_secs_f64();

    let max = run.config.train.max_steps;
    // The checkpoint, not the exit code, decides: Ctrl-C makes the trainer checkpoint and exit 0.
    let reached = latest_checkpoint_step(&run.dir)?;
    let (state, reason) = if reached == Some(max) {
        ("finished", None)
    } else if opts.stop.load(Ordering::SeqCst) {
        ("interrupted", Some(format!("interrupted at step {}; rerun with --resume to continue", reached.unwrap_or(0))))
    } else if !status.success() {
        let why = last_error_line(&log_path).unwrap_or_else(|| format!("exit status {status}"));
        ("failed", Some(why))
    } else {
        ("failed", Some(format!("exited without error but its latest checkpoint is at step {} of {max}", reached.unwrap_or(0))))
    };
    let record = RunRecord {
        variant: run.variant.clone(),
        seed: run.seed,
        status: state.into(),
        exit_code: status.code(),
        wall_s: wall + previous.as_ref().map_or(0.0, |p| p.wall_s),
        attempts: 1 + previous.as_ref().map_or(0, |p| p.attempts),
        command: argv,
    };
    record.write(&run.dir)?;
    Ok(match reason {
        None => Outcome::Finished { wall_s: record.wall_s },
        Some(reason) => Outcome::Failed { reason, log: log_path },
    })
}

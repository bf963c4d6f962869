//! `rlp-launch`: a torchrun-style launcher for rlp workers.
//!
//! ```text
//! rlp-launch [--nnodes N] [--node-rank R] [--nproc-per-node P] [--master-addr ADDR]
//!            [--master-port PORT] [--max-restarts K] [--rdzv-timeout SECS] [--run-id ID]
//!            [--term-timeout SECS] -- WORKER_CMD [ARGS]...
//! ```
//!
//! Run it once per node. It starts P local workers; local worker `l` gets global rank
//! `R*P + l` in a world of `N*P`.
//!
//! # The worker contract
//!
//! Each worker inherits the launcher's environment plus torchrun 2.11's variables: `RANK`,
//! `LOCAL_RANK`, `WORLD_SIZE`, `LOCAL_WORLD_SIZE` (P), `GROUP_RANK` (R), `GROUP_WORLD_SIZE`
//! (N), `ROLE_NAME` (`default`), `ROLE_RANK`, `ROLE_WORLD_SIZE`, `MASTER_ADDR`,
//! `MASTER_PORT`, `TORCHELASTIC_RESTART_COUNT`, `TORCHELASTIC_MAX_RESTARTS`,
//! `TORCHELASTIC_RUN_ID` and `TORCHELASTIC_ERROR_FILE`, and our `RLP_RDZV_TIMEOUT` (seconds),
//! the rendezvous timeout. `OMP_NUM_THREADS=1` is added, with a note, when several workers
//! share the node and the launcher's environment does not set it (torchrun's rule).
//!
//! Unlike torchrun there is no agent store: `TORCHELASTIC_USE_AGENT_STORE` is never set (and
//! an inherited one is removed), so the rank-0 worker hosts the store at
//! `MASTER_ADDR:MASTER_PORT` and the others connect to it. `MASTER_ADDR` defaults to
//! 127.0.0.1 on a single node and is required on several.
//!
//! A worker that sees `TORCHELASTIC_RESTART_COUNT > 0` is a restart and resumes from its
//! latest checkpoint. To explain a failure it may write torchrun's error file,
//! `{"message": {"message": "...", "extraInfo": {...}}}` (or `{"message": "..."}`), at
//! `TORCHELASTIC_ERROR_FILE` (a fresh path per attempt and rank, in a temporary directory
//! removed when the launcher exits).
//!
//! # Supervision
//!
//! Workers run in their own process groups with stdin closed. Their stdout and stderr lines
//! (ended by `\n` or `\r`) go to the launcher's stdout and stderr prefixed `[rank{R}]: `.
//! At spawn the launcher prints `rlp-launch: started rank R (pid PID), attempt A`.
//!
//! The first worker to exit non-zero or by a signal fails the attempt: the others get
//! SIGTERM, then SIGKILL after `--term-timeout`. With restarts left the whole local group is
//! started again with the next `TORCHELASTIC_RESTART_COUNT`; otherwise the launcher prints
//! that rank's error-file message (or the tail of its stderr) and exits with its exit code
//! (1 when it has none in 1..=255). With several nodes each launcher restarts only its own
//! workers; the other nodes' workers notice through their collectives or store.
//!
//! SIGINT, SIGTERM and SIGHUP to the launcher are forwarded to every live worker, which gets
//! `--term-timeout` seconds to exit (our workers checkpoint and exit 0) before SIGKILL. No
//! restart follows; the launcher exits 0 if every worker exited 0, else 128 + the signal.
//!
//! Usage errors exit 2, a worker program that cannot be started exits 1.

use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::Parser;
use rlp_launch::cli::{Args, Config};
use rlp_launch::env;
use rlp_launch::group::{Launch, Signals};
use rlp_launch::output::Output;

fn main() -> ExitCode {
    let config = match Args::parse().into_config() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("rlp-launch: error: {e:#}");
            return ExitCode::from(2);
        }
    };
    match launch(&config) {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            eprintln!("rlp-launch: error: {e:#}");
            ExitCode::from(1)
        }
    }
}

/// Runs the launch to the end and returns the launcher's exit code. Everything it set up
/// (error-file directory, output threads) is torn down before it returns, which is why the
/// exit code is returned rather than exited with.
fn launch(cfg: &Config) -> Result<u8> {
    let omp_threads = env::omp_default(
        std::env::var_os("OMP_NUM_THREADS").as_deref(),
        cfg.nproc_per_node,
    );
    if omp_threads.is_some() {
        eprintln!("{}", env::OMP_NOTE);
    }
    let error_root = tempfile::Builder::new()
        .prefix("rlp-launch-")
        .tempdir()
        .context("cannot create a temporary directory for the workers' error files")?;
    // One thread is enough: the launcher only waits on pipes, children, signals and timers.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    let output = Output::start();
    let outcome = runtime.block_on(async {
        let mut signals = Signals::install()?;
        Launch {
            cfg,
            omp_threads,
            error_root: error_root.path(),
            output: &output,
        }
        .run(&mut signals)
        .await
    });
    // Dropping the runtime drops any reader task still holding an output sender, so that
    // the output threads can see the end of their channels.
    drop(runtime);
    output.finish();
    // Removed explicitly so that a failure to remove is not silent.
    let dir = error_root.path().display().to_string();
    if let Err(e) = error_root.close() {
        eprintln!("rlp-launch: warning: cannot remove {dir}: {e}");
    }
    Ok(outcome?.exit_code())
}

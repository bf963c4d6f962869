//! Spawning, supervising, tearing down and restarting the local worker group.

use std::fmt;
use std::io;
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::time::Duration;

use anyhow::{Context, Result};
use tokio::process::Command;
use tokio::signal::unix::{signal, Signal, SignalKind};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::cli::Config;
use crate::env;
use crate::error_file;
use crate::output::{self, Output, Stream, Tail};

/// How long to wait for a worker's pipes to reach end of stream once the worker and its
/// process group are gone. Only a grandchild that left the group (setsid) can hold them
/// open longer, and its output is not worth hanging the launcher for.
const READER_GRACE: Duration = Duration::from_secs(5);

/// How a worker ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Exit {
    Code(i32),
    Signal(i32),
    /// Waiting on the process failed; the launcher cannot tell how it ended.
    Unknown(String),
}

impl Exit {
    fn from_wait(status: io::Result<ExitStatus>) -> Exit {
        use std::os::unix::process::ExitStatusExt;
        match status {
            Ok(s) => match (s.code(), s.signal()) {
                (Some(c), _) => Exit::Code(c),
                (None, Some(sig)) => Exit::Signal(sig),
                (None, None) => Exit::Unknown(format!("unrecognised wait status {s}")),
            },
            Err(e) => Exit::Unknown(format!("waiting on it failed: {e}")),
        }
    }

    pub fn success(&self) -> bool {
        *self == Exit::Code(0)
    }
}

impl fmt::Display for Exit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Exit::Code(c) => write!(f, "exit code {c}"),
            Exit::Signal(s) => match signal_name(*s) {
                Some(name) => write!(f, "killed by signal {s} ({name})"),
                None => write!(f, "killed by signal {s}"),
            },
            Exit::Unknown(why) => f.write_str(why),
        }
    }
}

fn signal_name(signo: i32) -> Option<&'static str> {
    Some(match signo {
        libc::SIGHUP => "SIGHUP",
        libc::SIGINT => "SIGINT",
        libc::SIGQUIT => "SIGQUIT",
        libc::SIGILL => "SIGILL",
        libc::SIGABRT => "SIGABRT",
        libc::SIGBUS => "SIGBUS",
        libc::SIGFPE => "SIGFPE",
        libc::SIGKILL => "SIGKILL",
        libc::SIGSEGV => "SIGSEGV",
        libc::SIGPIPE => "SIGPIPE",
        libc::SIGTERM => "SIGTERM",
        _ => return None,
    })
}

/// How the whole launch ended.
#[derive(Debug)]
pub enum Outcome {
    Succeeded,
    /// Restarts are used up; `rank` is the first worker that failed in the last attempt.
    Failed {
        rank: u32,
        exit: Exit,
        message: String,
    },
    /// The launcher got `signo` and forwarded it; `clean` when every worker then exited 0.
    Interrupted {
        signo: i32,
        clean: bool,
    },
}

impl Outcome {
    pub fn exit_code(&self) -> u8 {
        match self {
            Outcome::Succeeded => 0,
            Outcome::Failed {
                exit: Exit::Code(c),
                ..
            } => u8::try_from(*c).ok().filter(|&c| c != 0).unwrap_or(1),
            Outcome::Failed { .. } => 1,
            // Our workers checkpoint and exit 0 on SIGINT/SIGTERM: a clean stop is a success.
            Outcome::Interrupted { clean: true, .. } => 0,
            Outcome::Interrupted { signo, .. } => u8::try_from(128 + signo).unwrap_or(1),
        }
    }
}

/// SIGINT, SIGTERM and SIGHUP to the launcher, installed once for all attempts so that a
/// signal arriving between attempts is not lost (nor kills the launcher by default action).
pub struct Signals {
    int: Signal,
    term: Signal,
    hup: Signal,
}

impl Signals {
    pub fn install() -> Result<Signals> {
        let on = |kind: SignalKind, name: &str| {
            signal(kind).with_context(|| format!("cannot handle {name}"))
        };
        Ok(Signals {
            int: on(SignalKind::interrupt(), "SIGINT")?,
            term: on(SignalKind::terminate(), "SIGTERM")?,
            hup: on(SignalKind::hangup(), "SIGHUP")?,
        })
    }

    async fn recv(&mut self) -> i32 {
        tokio::select! {
            Some(()) = self.int.recv() => libc::SIGINT,
            Some(()) = self.term.recv() => libc::SIGTERM,
            Some(()) = self.hup.recv() => libc::SIGHUP,
            else => std::future::pending().await,
        }
    }

    /// A signal that already arrived, without waiting for one.
    async fn pending(&mut self) -> Option<i32> {
        tokio::select! {
            biased;
            s = self.recv() => Some(s),
            () = std::future::ready(()) => None,
        }
    }
}

/// Everything an attempt needs that stays the same across attempts.
pub struct Launch<'a> {
    pub cfg: &'a Config,
    /// OMP_NUM_THREADS to add for the workers, see [`env::omp_default`].
    pub omp_threads: Option<&'static str>,
    /// Where the per-attempt, per-rank error files go.
    pub error_root: &'a Path,
    pub output: &'a Output,
}

struct Worker {
    rank: u32,
    pid: i32,
    error_file: PathBuf,
    stderr_tail: Tail,
    readers: Vec<JoinHandle<()>>,
    exit: Option<Exit>,
}

enum AttemptEnd {
    AllOk,
    Failed { idx: usize },
    Interrupted { signo: i32, clean: bool },
}

impl Launch<'_> {
    /// Runs attempts until the group succeeds, restarts are used up, or a signal stops it.
    pub async fn run(&self, signals: &mut Signals) -> Result<Outcome> {
        let max = self.cfg.max_restarts;
        let mut attempt = 0;
        loop {
            let mut workers = Vec::new();
            let end = self.run_attempt(attempt, signals, &mut workers).await?;
            match end {
                AttemptEnd::AllOk => return Ok(Outcome::Succeeded),
                AttemptEnd::Interrupted { signo, clean } => {
                    return Ok(Outcome::Interrupted { signo, clean })
                }
                AttemptEnd::Failed { idx } => {
                    let w = &workers[idx];
                    let exit = w
                        .exit
                        .clone()
                        .unwrap_or_else(|| Exit::Unknown("no exit status".into()));
                    if attempt < max {
                        // A stop requested while the group went down wins over the restart.
                        if let Some(signo) = signals.pending().await {
                            eprintln!(
                                "rlp-launch: got {}, not restarting",
                                signal_name(signo).unwrap_or("a signal")
                            );
                            return Ok(Outcome::Interrupted {
                                signo,
                                clean: false,
                            });
                        }
                        attempt += 1;
                        eprintln!(
                            "rlp-launch: restarting the worker group (restart {attempt} of {max})"
                        );
                        continue;
                    }
                    let message = explain(w, &exit);
                    eprintln!("rlp-launch: rank {} failed: {message}", w.rank);
                    return Ok(Outcome::Failed {
                        rank: w.rank,
                        exit,
                        message,
                    });
                }
            }
        }
    }

    async fn run_attempt(
        &self,
        attempt: u32,
        signals: &mut Signals,
        workers: &mut Vec<Worker>,
    ) -> Result<AttemptEnd> {
        let nproc = self.cfg.nproc_per_node as usize;
        let (exits_tx, mut exits) = mpsc::channel::<(usize, Exit)>(nproc);
        for local_rank in 0..self.cfg.nproc_per_node {
            match self.spawn(local_rank, attempt, workers.len(), exits_tx.clone()) {
                Ok(w) => workers.push(w),
                Err(e) => {
                    // Whatever started cannot form a full group: take it down before erroring.
                    for w in workers.iter() {
                        signal_group(w.pid, libc::SIGKILL);
                    }
                    for _ in 0..workers.len() {
                        let _ = exits.recv().await;
                    }
                    finish_readers(workers).await;
                    return Err(e);
                }
            }
        }

        let term_timeout = self.cfg.term_timeout;
        let mut live = workers.len();
        let mut failed: Option<usize> = None;
        let mut interrupted: Option<i32> = None;
        // Set once the group is being taken down: when to escalate to SIGKILL.
        let mut kill_at: Option<Instant> = None;
        let mut killed = false;
        while live > 0 {
            tokio::select! {
                Some((idx, exit)) = exits.recv() => {
                    live -= 1;
                    let (rank, pid) = (workers[idx].rank, workers[idx].pid);
                    let stopping = failed.is_some() || interrupted.is_some();
                    if !exit.success() {
                        if stopping {
                            eprintln!("rlp-launch: rank {rank} (pid {pid}) stopped: {exit}");
                        } else {
                            eprintln!("rlp-launch: rank {rank} (pid {pid}) failed: {exit}");
                            failed = Some(idx);
                            // The rest of the group cannot make progress without this rank.
                            for other in workers.iter().filter(|o| o.exit.is_none()) {
                                signal_group(other.pid, libc::SIGTERM);
                            }
                            kill_at = Some(Instant::now() + term_timeout);
                        }
                    }
                    workers[idx].exit = Some(exit);
                }
                signo = signals.recv() => {
                    let name = signal_name(signo).unwrap_or("a signal");
                    eprintln!("rlp-launch: got {name}, forwarding it to the workers");
                    for w in workers.iter().filter(|w| w.exit.is_none()) {
                        signal_group(w.pid, signo);
                    }
                    interrupted.get_or_insert(signo);
                    if kill_at.is_none() && !killed {
                        kill_at = Some(Instant::now() + term_timeout);
                    }
                }
                () = sleep_until(kill_at) => {
                    eprintln!(
                        "rlp-launch: workers still running {}s after being asked to stop, sending SIGKILL",
                        term_timeout.as_secs()
                    );
                    for w in workers.iter().filter(|w| w.exit.is_none()) {
                        signal_group(w.pid, libc::SIGKILL);
                    }
                    kill_at = None;
                    killed = true;
                }
            }
        }
        // Leftovers of a worker (children it started in its process group) would hold its
        // GPU and its pipes; the worker is gone, so they go too.
        for w in workers.iter() {
            signal_group(w.pid, libc::SIGKILL);
        }
        finish_readers(workers).await;

        Ok(match (interrupted, failed) {
            (Some(signo), _) => {
                let clean = workers
                    .iter()
                    .all(|w| w.exit.as_ref().is_some_and(Exit::success));
                AttemptEnd::Interrupted { signo, clean }
            }
            (None, Some(idx)) => AttemptEnd::Failed { idx },
            (None, None) => AttemptEnd::AllOk,
        })
    }

    fn spawn(
        &self,
        local_rank: u32,
        attempt: u32,
        idx: usize,
        exits: mpsc::Sender<(usize, Exit)>,
    ) -> Result<Worker> {
        let cfg = self.cfg;
        let rank = cfg.rank_of(local_rank);
        let error_file = error_file::prepare(self.error_root, attempt, rank)?;
        let mut cmd = Command::new(&cfg.program);
        cmd.args(&cfg.program_args)
            .envs(env::worker_env(
                cfg,
                local_rank,
                attempt,
                &error_file,
                self.omp_threads,
            ))
            // Own process group, as torchrun does: a terminal's Ctrl-C reaches only the
            // launcher, which forwards it exactly once, and a signal to the group also
            // reaches whatever the worker started. Off the terminal's foreground group a
            // worker reading stdin would be stopped, so stdin is closed.
            .process_group(0)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        for name in env::REMOVED {
            cmd.env_remove(name);
        }
        let mut child = cmd
            .spawn()
            .with_context(|| format!("cannot start worker program '{}'", cfg.program))?;
        // Freshly spawned and not yet waited on, so the pid is there.
        let pid = child
            .id()
            .and_then(|p| i32::try_from(p).ok())
            .with_context(|| format!("no pid for the worker of rank {rank}"))?;
        eprintln!("rlp-launch: started rank {rank} (pid {pid}), attempt {attempt}");

        let stderr_tail = output::new_tail();
        let mut readers = Vec::with_capacity(2);
        if let Some(out) = child.stdout.take() {
            readers.push(tokio::spawn(output::pump(
                out,
                rank,
                self.output.sender(Stream::Stdout),
                None,
            )));
        }
        if let Some(err) = child.stderr.take() {
            let tail = Some(stderr_tail.clone());
            readers.push(tokio::spawn(output::pump(
                err,
                rank,
                self.output.sender(Stream::Stderr),
                tail,
            )));
        }
        tokio::spawn(async move {
            let exit = Exit::from_wait(child.wait().await);
            let _ = exits.send((idx, exit)).await;
        });
        Ok(Worker {
            rank,
            pid,
            error_file,
            stderr_tail,
            readers,
            exit: None,
        })
    }
}

/// Waits for the workers' output to be forwarded, within [`READER_GRACE`].
async fn finish_readers(workers: &mut [Worker]) {
    let mut readers: Vec<JoinHandle<()>> = workers
        .iter_mut()
        .flat_map(|w| w.readers.drain(..))
        .collect();
    let all = async {
        for r in readers.iter_mut() {
            let _ = r.await;
        }
    };
    if tokio::time::timeout(READER_GRACE, all).await.is_err() {
        for r in &readers {
            r.abort();
        }
    }
}

/// Why `w` failed: its error file's message, else the tail of its stderr.
fn explain(w: &Worker, exit: &Exit) -> String {
    let tail = output::tail_lines(&w.stderr_tail);
    let from_stderr = if tail.is_empty() {
        format!("{exit} (no error file, no stderr output)")
    } else {
        format!("{exit}; last lines of its stderr:\n  {}", tail.join("\n  "))
    };
    match error_file::read_message(&w.error_file) {
        Ok(Some(message)) => message,
        Ok(None) => from_stderr,
        Err(e) => format!("{from_stderr}\n  ({e:#})"),
    }
}

/// Sends `signo` to the process group led by worker `pid`. The group may already be empty
/// (ESRCH), which is fine: there is nothing left to stop.
fn signal_group(pid: i32, signo: i32) {
    if pid > 1 {
        // SAFETY: kill(2) has no memory effects; a negative pid addresses the process group
        // the worker leads (it was started with process_group(0)).
        unsafe {
            libc::kill(-pid, signo);
        }
    }
}

async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d).await,
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exit_codes() {
        let failed = |exit| Outcome::Failed {
            rank: 1,
            exit,
            message: String::new(),
        };
        assert_eq!(Outcome::Succeeded.exit_code(), 0);
        assert_eq!(failed(Exit::Code(3)).exit_code(), 3);
        assert_eq!(failed(Exit::Code(255)).exit_code(), 255);
        assert_eq!(failed(Exit::Code(256)).exit_code(), 1);
        assert_eq!(failed(Exit::Code(-1)).exit_code(), 1);
        assert_eq!(failed(Exit::Signal(9)).exit_code(), 1);
        assert_eq!(failed(Exit::Unknown("x".into())).exit_code(), 1);
        assert_eq!(
            Outcome::Interrupted {
                signo: 15,
                clean: true
            }
            .exit_code(),
            0
        );
        assert_eq!(
            Outcome::Interrupted {
                signo: 15,
                clean: false
            }
            .exit_code(),
            143
        );
        assert_eq!(
            Outcome::Interrupted {
                signo: 2,
                clean: false
            }
            .exit_code(),
            130
        );
    }

    #[test]
    fn exit_descriptions() {
        assert_eq!(Exit::Code(3).to_string(), "exit code 3");
        assert_eq!(Exit::Signal(9).to_string(), "killed by signal 9 (SIGKILL)");
        assert_eq!(Exit::Signal(60).to_string(), "killed by signal 60");
    }
}

//! Data-parallel training on CPU with 2 Gloo ranks: started by `rlp-launch` and by real
//! `torchrun --no-python`; 2 ranks × b against 1 rank × 2b; a killed worker restarted from the
//! last checkpoint; worker errors reported by the launcher.
mod common;

use std::io::{BufRead, BufReader};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use common::*;
use serde_json::Value;

struct Fixture {
    model: PathBuf,
    data: PathBuf,
    dir: PathBuf,
}

/// A random tiny Qwen3 and a small prepared corpus, once per test binary.
fn fixture() -> &'static Fixture {
    static F: OnceLock<Fixture> = OnceLock::new();
    F.get_or_init(|| {
        let dir = scratch("dist");
        let model = dir.join("model");
        run_python("tiny_models.py", &["single", s(&model), "--arch", "qwen3", "--hidden", "64", "--layers", "2"]);
        let corpus: String = (0..120)
            .map(|i| serde_json::json!({"text": format!("{} + {} = {}. The fox jumps over {} dogs and {i} cats.", i % 37, i % 11, i % 37 + i % 11, i % 7)}).to_string() + "\n")
            .collect();
        std::fs::write(dir.join("corpus.jsonl"), corpus).unwrap();
        let data = dir.join("data");
        ok(&["data", "prepare", "--model", s(&model), "--output", s(&data), s(&dir.join("corpus.jsonl"))]);
        Fixture { model, data, dir }
    })
}

fn launcher() -> PathBuf {
    let p = Path::new(env!("CARGO_BIN_EXE_rlp")).with_file_name("rlp-launch");
    assert!(p.exists(), "{} is missing: build the workspace (cargo test --workspace builds it)", p.display());
    p
}

fn free_port() -> String {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port().to_string()
}

/// `rlp train` arguments for a short run of `preset` with a global batch of `batch` contexts.
fn train_args(run: &Path, preset: &str, steps: usize, batch: usize, micro_tokens: usize, extra: &[&str]) -> Vec<String> {
    let f = fixture();
    let mut a: Vec<String> = ["train", "--config", s(&root().join("configs/cpu-small.toml")), "--model", s(&f.model), "--data", s(&f.data), "--run-dir", s(run)]
        .iter()
        .map(|x| x.to_string())
        .collect();
    for set in [
        format!("preset={preset:?}"),
        format!("train.max_steps={steps}"),
        format!("rollout.contexts_per_step={batch}"),
        format!("memory.micro_batch_tokens={micro_tokens}"),
        // Large enough that the runs move visibly in a few steps.
        "optim.lr=3e-3".into(),
        "eval.every=0".into(),
        "log.rollouts_every=0".into(),
        "checkpoint.every=0".into(),
    ] {
        a.push("--set".into());
        a.push(set);
    }
    a.extend(extra.iter().map(|x| x.to_string()));
    a
}

fn run_ok(mut cmd: Command, what: &str) -> Output {
    // One intra-op thread everywhere, as torchrun and rlp-launch give each of 2 workers.
    let out = cmd.env("OMP_NUM_THREADS", "1").output().unwrap_or_else(|e| panic!("cannot start {what}: {e}"));
    assert!(out.status.success(), "{what} failed:\n{}\n{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    out
}

fn single(args: &[String]) -> Output {
    let mut c = Command::new(env!("CARGO_BIN_EXE_rlp"));
    c.args(args);
    run_ok(c, "rlp train")
}

fn launched(nproc: usize, extra: &[&str], args: &[String]) -> Output {
    let mut c = Command::new(launcher());
    c.args(["--nproc-per-node", &nproc.to_string(), "--master-port", &free_port()]).args(extra).arg("--").arg(env!("CARGO_BIN_EXE_rlp")).args(args);
    run_ok(c, "rlp-launch")
}

fn metrics(run: &Path) -> Vec<Value> {
    let text = std::fs::read_to_string(run.join("metrics.jsonl")).unwrap_or_else(|e| panic!("{}: {e}", run.display()));
    text.lines().map(|l| serde_json::from_str(l).unwrap()).collect()
}

fn series(run: &Path, key: &str) -> Vec<f64> {
    metrics(run).iter().filter_map(|m| m[key].as_f64()).collect()
}

fn final_model(run: &Path, step: usize) -> PathBuf {
    run.join(format!("checkpoints/step-{step:08}/model/model.safetensors"))
}

/// Largest absolute difference over all tensors of two checkpoints.
fn weight_diff(a: &Path, b: &Path) -> f64 {
    let (a, b) = (read_tensors(a), read_tensors(b));
    assert_eq!(a.len(), b.len());
    a.iter().map(|(k, t)| max_abs_diff(t, &b[k])).fold(0.0, f64::max)
}

fn max_rel(a: &[f64], b: &[f64]) -> f64 {
    assert_eq!(a.len(), b.len(), "{a:?} vs {b:?}");
    a.iter().zip(b).map(|(x, y)| (x - y).abs() / x.abs().max(1e-3)).fold(0.0, f64::max)
}

/// 2 ranks × b contexts (micro-batches of one row: gradient accumulation on each rank) against
/// one process with 2b contexts (the whole step in one pass); and, as the control that shows the comparison
/// can fail, one process with only b contexts.
fn two_ranks_match_one(preset: &str, key: &str) {
    let dir = fixture().dir.join(format!("match-{preset}"));
    let steps = 4;
    let (one, two, half) = (dir.join("one"), dir.join("two"), dir.join("half"));
    single(&train_args(&one, preset, steps, 4, 1 << 20, &[]));
    launched(2, &[], &train_args(&two, preset, steps, 4, 1, &[]));
    single(&train_args(&half, preset, steps, 2, 1, &[]));

    let (l1, l2, lh) = (series(&one, key), series(&two, key), series(&half, key));
    assert_eq!(l1.len(), steps);
    let same = max_rel(&l1, &l2);
    let other = max_rel(&l1, &lh);
    assert!(same < 1e-4, "{preset}: {key} per step, 1 rank × 4: {l1:?}, 2 ranks × 2: {l2:?}");
    assert!(other > 1e-2, "{preset}: the control (1 rank × 2) should differ: {l1:?} vs {lh:?}");
    let w_same = weight_diff(&final_model(&one, steps), &final_model(&two, steps));
    let w_other = weight_diff(&final_model(&one, steps), &final_model(&half, steps));
    eprintln!("{preset}: {key} max rel diff {same:.2e} (control {other:.2e}); weights max abs diff {w_same:.2e} (control {w_other:.2e})");
    // Adam's normalised steps can amplify float noise only up to ~lr per step on the few
    // weights whose gradient is ~0; real differences are of the order of lr on most weights.
    assert!(w_same < 5e-4, "{preset}: weights after {steps} steps differ by {w_same} (control: {w_other})");
    assert!(w_other > 1e-3, "{preset}: the control's weights should differ, got {w_other}");
    // The replicas themselves are bitwise identical.
    assert_eq!(series(&two, "dist/replica_divergence"), vec![0.0], "{preset}");
}

/// RLP's PPO loss is ≈ 0 by construction (group-centred advantages at ratio 1), so its curve
/// is the mean reward: it depends on every earlier update and on the sampled thoughts.
#[test]
fn two_ranks_match_one_rank_of_twice_the_batch_rlp() {
    two_ranks_match_one("rlp", "reward/mean");
}

#[test]
fn two_ranks_match_one_rank_of_twice_the_batch_ntp() {
    two_ranks_match_one("ntp", "loss/ntp");
}

#[test]
fn launcher_restarts_a_killed_worker_from_the_last_checkpoint() {
    let dir = fixture().dir.join("restart");
    let steps = 24;
    let every = ["--set".to_string(), "checkpoint.every=2".to_string(), "--set".to_string(), "checkpoint.keep_last=20".to_string()];
    let extra: Vec<&str> = every.iter().map(String::as_str).collect();
    let (clean, killed) = (dir.join("clean"), dir.join("killed"));
    launched(2, &[], &train_args(&clean, "rlp", steps, 4, 64, &extra));

    let mut child = Command::new(launcher())
        .args(["--nproc-per-node", "2", "--max-restarts", "1", "--master-port", &free_port(), "--"])
        .arg(env!("CARGO_BIN_EXE_rlp"))
        .args(train_args(&killed, "rlp", steps, 4, 64, &extra))
        .env("OMP_NUM_THREADS", "1")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel::<String>();
    let reader = std::thread::spawn(move || {
        let mut all = String::new();
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            let _ = tx.send(line.clone());
            all += &line;
            all.push('\n');
        }
        all
    });
    // Rank 1's pid from the launcher's start line, then a SIGKILL once the first checkpoint exists.
    let pid = loop {
        let line = rx.recv_timeout(Duration::from_secs(120)).expect("no start line from rlp-launch");
        if let Some(rest) = line.strip_prefix("rlp-launch: started rank 1 (pid ") {
            break rest.split(')').next().unwrap().to_string();
        }
    };
    let start = Instant::now();
    while !killed.join("checkpoints/step-00000002/state.json").exists() {
        assert!(start.elapsed() < Duration::from_secs(120), "no checkpoint appeared");
        std::thread::sleep(Duration::from_millis(10));
    }
    let status = Command::new("kill").args(["-KILL", &pid]).status().unwrap();
    assert!(status.success());
    let code = child.wait().unwrap();
    let log = reader.join().unwrap();
    assert!(code.success(), "rlp-launch failed after the restart:\n{log}");
    assert!(log.contains("rlp-launch: rank 1") && log.contains("killed by signal 9"), "{log}");
    assert!(log.contains("restarting the worker group (restart 1 of 1)"), "{log}");
    assert!(log.contains("resuming from"), "the restarted group should resume:\n{log}");
    // Resume is exact: the interrupted run ends bit-identical to the clean one.
    assert_eq!(weight_diff(&final_model(&clean, steps), &final_model(&killed, steps)), 0.0);
    let steps_logged: Vec<u64> = metrics(&killed).iter().filter_map(|m| m["step"].as_u64()).collect();
    assert_eq!(steps_logged.last(), Some(&(steps as u64)));
}

#[test]
fn runs_under_torchrun() {
    let torchrun = python().with_file_name("torchrun");
    let run = fixture().dir.join("torchrun");
    let mut c = Command::new(&torchrun);
    c.args(["--no-python", "--nproc-per-node", "2", "--master-port", &free_port(), env!("CARGO_BIN_EXE_rlp")]).args(train_args(&run, "rlp", 3, 4, 64, &[]));
    let out = run_ok(c, "torchrun");
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(series(&run, "loss/total").len(), 3, "{err}");
    assert_eq!(series(&run, "dist/replica_divergence"), vec![0.0]);
    assert!(final_model(&run, 3).exists());
}

#[test]
fn launcher_reports_the_failing_ranks_error() {
    let run = fixture().dir.join("bad");
    let mut c = Command::new(launcher());
    c.args(["--nproc-per-node", "2", "--master-port", &free_port(), "--"]).arg(env!("CARGO_BIN_EXE_rlp")).args(train_args(&run, "rlp", 2, 5, 64, &[]));
    let out = c.env("OMP_NUM_THREADS", "1").output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(err.contains("failed: ") && err.contains("rollout.contexts_per_step (5) must split evenly over the 2 ranks"), "{err}");
}

#[test]
fn a_worker_whose_master_never_answers_fails_within_the_timeout() {
    let f = fixture();
    let run = f.dir.join("orphan");
    let start = Instant::now();
    let out = Command::new(env!("CARGO_BIN_EXE_rlp"))
        .args(train_args(&run, "rlp", 2, 4, 2, &["--set", "dist.rdzv_timeout_s=2"]))
        .envs([("RANK", "1"), ("WORLD_SIZE", "2"), ("MASTER_ADDR", "127.0.0.1"), ("MASTER_PORT", &free_port())])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(err.contains("error: ") && err.contains("rank 1 of 2: could not join the rendezvous store at 127.0.0.1:"), "{err}");
    assert!(start.elapsed() < Duration::from_secs(20), "took {:?}", start.elapsed());
    assert!(!err.contains("panicked"), "{err}");
}

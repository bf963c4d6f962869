//! `rlp ablate` end to end on CPU: a tiny random Qwen3 and a small corpus, a 2 variants × 2 seeds
//! × 3 steps grid, its report, a rerun that skips everything, and the failures that must stop
//! the grid before it starts (bad keys) or must not stop it (one run failing).
mod common;

use std::path::{Path, PathBuf};
use std::process::Output;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use common::*;
use serde_json::Value;



fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).to_string()
}


fn base_config() -> String {
    root().join("configs/cpu-small.toml").to_str().unwrap().to_string()
}

/// Tiny settings for every run: 3 steps, small batches, evals at steps 0 and 3, a checkpoint
/// only at the end.
const COMMON: &str = r#"set = ["train.max_steps=3", "eval.every=3", "eval.positions=4", "rollout.contexts_per_step=4", "thought.max_tokens=4", "checkpoint.every=0", "log.rollouts_every=0"]"#;

/// Writes an ablation file `name` into `dir` (its `out` relative to `dir`).
fn write_ablation(dir: &Path, name: &str, body: &str) -> PathBuf {
    std::fs::create_dir_all(dir).unwrap();
    let path = dir.join(name);
    std::fs::write(&path, format!("base = {:?}\n{body}", base_config())).unwrap();
    path
}

struct Inputs {
    dir: PathBuf,
    model: PathBuf,
    data: PathBuf,
}

/// A random tiny Qwen3 and prepared data, made once per test binary.
fn inputs() -> &'static Inputs {
    static I: OnceLock<Inputs> = OnceLock::new();
    I.get_or_init(|| {
        let dir = scratch("ablate");
        let model = dir.join("model");
        run_python("tiny_models.py", &["single", s(&model), "--arch", "qwen3", "--hidden", "64", "--layers", "2"]);
        let mut lines = String::new();
        for i in 0..120u64 {
            let (a, b) = (10 + (i * 37) % 90, 10 + (i * 53) % 90);
            lines += &serde_json::json!({"text": format!("{a} + {b} = {}. The fox jumps over {a} dogs.", a + b)}).to_string();
            lines.push('\n');
        }
        std::fs::write(dir.join("corpus.jsonl"), lines).unwrap();
        let data = dir.join("data");
        ok(&["data", "prepare", "--model", s(&model), "--output", s(&data), "--heldout-fraction", "0.1", s(&dir.join("corpus.jsonl"))]);
        Inputs { dir, model, data }
    })
}

/// The main grid, run twice: the second invocation must find every run finished.
struct Grid {
    out: PathBuf,
    first: Output,
    second: Output,
    second_took: Duration,
    logs_before_second: Vec<Vec<u8>>,
    logs_after_second: Vec<Vec<u8>>,
}

const VARIANTS: [&str; 2] = ["rlp", "ntp"];
const SEEDS: [u64; 2] = [0, 1];

fn run_dirs(out: &Path) -> Vec<PathBuf> {
    VARIANTS.iter().flat_map(|v| SEEDS.iter().map(move |s| out.join("runs").join(v).join(format!("seed-{s}")))).collect()
}

fn read_logs(out: &Path) -> Vec<Vec<u8>> {
    run_dirs(out).iter().map(|d| std::fs::read(d.join("train.log")).unwrap_or_default()).collect()
}

fn grid() -> &'static Grid {
    static G: OnceLock<Grid> = OnceLock::new();
    G.get_or_init(|| {
        let i = inputs();
        let abl_dir = i.dir.join("ablations");
        // `out` is relative to the ablation file's folder.
        let body = format!(
            "out = \"grid-out\"\nseeds = [0, 1]\n{COMMON}\n\n[[variant]]\nname = \"rlp\"\nset = ['preset=\"rlp\"', \"rollout.group_size=2\"]\n\n\
             [[variant]]\nname = \"ntp\"\nset = ['preset=\"ntp\"']\n"
        );
        let file = write_ablation(&abl_dir, "grid.toml", &body);
        let args = ["ablate", s(&file), "--model", s(&i.model), "--data", s(&i.data)];
        let first = rlp(&args);
        let out = abl_dir.join("grid-out");
        let logs_before_second = read_logs(&out);
        let start = Instant::now();
        let second = rlp(&args);
        let second_took = start.elapsed();
        Grid { logs_after_second: read_logs(&out), out, first, second, second_took, logs_before_second }
    })
}

fn grid_ok() -> &'static Grid {
    let g = grid();
    assert!(g.first.status.success(), "first rlp ablate failed:\n{}", stderr(&g.first));
    g
}

#[test]
fn every_run_reaches_its_final_checkpoint() {
    let g = grid_ok();
    let err = stderr(&g.first);
    for dir in run_dirs(&g.out) {
        let state = dir.join("checkpoints/step-00000003/state.json");
        let v: Value = serde_json::from_str(&std::fs::read_to_string(&state).unwrap_or_else(|e| panic!("{}: {e}\n{err}", state.display()))).unwrap();
        assert_eq!(v["step"], 3, "{}", state.display());
        let record: Value = serde_json::from_str(&std::fs::read_to_string(dir.join("ablate.json")).unwrap()).unwrap();
        assert_eq!(record["status"], "finished");
        assert!(record["wall_s"].as_f64().unwrap() > 0.0);
        // The log holds the command and then what `rlp train` printed.
        let log = std::fs::read_to_string(dir.join("train.log")).unwrap();
        assert!(log.starts_with("=== rlp ablate: ") && log.contains("--set train.seed=") && log.lines().count() > 1, "{}:\n{log}", dir.display());
        // The seed reached the run: the resolved config records it.
        let seed: u64 = dir.file_name().unwrap().to_str().unwrap().strip_prefix("seed-").unwrap().parse().unwrap();
        let cfg: toml::Table = toml::from_str(&std::fs::read_to_string(dir.join("config.toml")).unwrap()).unwrap();
        assert_eq!(cfg["train"]["seed"].as_integer(), Some(seed as i64));
        assert_eq!(cfg["data"]["seed"].as_integer(), Some(seed as i64));
    }
    // One progress line per run, seed-major.
    let lines: Vec<&str> = err.lines().filter(|l| l.starts_with('[')).collect();
    assert_eq!(lines.len(), 4, "{err}");
    assert!(lines[0].starts_with("[1/4] rlp seed 0") && lines[1].starts_with("[2/4] ntp seed 0"), "{err}");
    assert!(lines.iter().all(|l| l.contains("done in")), "{err}");
    // Different seeds train differently.
    let reward_at_1 = |seed: u64| {
        let text = std::fs::read_to_string(g.out.join(format!("runs/rlp/seed-{seed}/metrics.jsonl"))).unwrap();
        text.lines().map(|l| serde_json::from_str::<Value>(l).unwrap()).find(|l| l["step"] == 1 && l.get("reward/mean").is_some()).unwrap()["reward/mean"].clone()
    };
    assert_ne!(reward_at_1(0), reward_at_1(1));
}

#[test]
fn report_has_one_row_per_variant_with_mean_and_std() {
    let g = grid_ok();
    let readme = std::fs::read_to_string(g.out.join("report/README.md")).unwrap();
    let header = readme.lines().find(|l| l.starts_with("| variant |")).unwrap_or_else(|| panic!("no table:\n{readme}"));
    for col in ["eval/nll_no_think", "eval/acc_no_think", "eval/nll_think", "eval/acc_think", "reward/mean", "tokens", "wall time"] {
        assert!(header.contains(col), "no `{col}` column: {header}");
    }
    let ncols = header.matches('|').count();
    for v in VARIANTS {
        let rows: Vec<&str> = readme.lines().filter(|l| l.starts_with(&format!("| {v} |"))).collect();
        assert_eq!(rows.len(), 1, "{v}:\n{readme}");
        let row = rows[0];
        assert_eq!(row.matches('|').count(), ncols, "{row}");
        assert!(row.contains("| 2/2 |") && row.contains("±"), "{row}");
    }
    // ntp samples no thoughts: no reward and no with-thought eval, shown as dashes.
    let ntp = readme.lines().find(|l| l.starts_with("| ntp |")).unwrap();
    assert!(ntp.contains("—"), "{ntp}");
    for png in ["reward.png", "nll.png", "thought_length.png", "accuracy.png"] {
        assert!(readme.contains(&format!("]({png})")), "{png} not embedded:\n{readme}");
    }
    // The same numbers for scripts: the mean of the two seeds' last evals.
    let summary: Value = serde_json::from_str(&std::fs::read_to_string(g.out.join("report/summary.json")).unwrap()).unwrap();
    let rlp = &summary["variants"][0];
    assert_eq!(rlp["name"], "rlp");
    let last_nll = |seed: u64| {
        let text = std::fs::read_to_string(g.out.join(format!("runs/rlp/seed-{seed}/metrics.jsonl"))).unwrap();
        text.lines().rev().find_map(|l| serde_json::from_str::<Value>(l).unwrap()["eval/nll_no_think"].as_f64()).unwrap()
    };
    let expect = (last_nll(0) + last_nll(1)) / 2.0;
    let got = rlp["metrics"]["eval/nll_no_think"]["mean"].as_f64().unwrap();
    assert!((got - expect).abs() < 1e-9, "{got} vs {expect}");
}

#[test]
fn report_plots_are_valid_pngs() {
    let g = grid_ok();
    for png in ["reward.png", "nll.png", "thought_length.png", "accuracy.png"] {
        let bytes = std::fs::read(g.out.join("report").join(png)).unwrap_or_else(|e| panic!("{png}: {e}"));
        assert!(bytes.starts_with(b"\x89PNG\r\n\x1a\n"), "{png} is not a PNG");
        assert!(bytes.len() > 1024, "{png}: only {} bytes", bytes.len());
        assert!(bytes.len() < 300 * 1024, "{png}: {} bytes", bytes.len());
        // IHDR: width and height, big-endian, right after the 8-byte magic and the chunk header.
        let (w, h) = (u32::from_be_bytes(bytes[16..20].try_into().unwrap()), u32::from_be_bytes(bytes[20..24].try_into().unwrap()));
        assert_eq!((w, h), (800, 500), "{png}");
    }
}

#[test]
fn a_second_invocation_skips_finished_runs() {
    let g = grid_ok();
    assert!(g.second.status.success(), "{}", stderr(&g.second));
    let err = stderr(&g.second);
    assert_eq!(err.matches("skipped").count(), 4 + 1, "{err}");
    assert!(err.contains("0 trained now, 4 skipped"), "{err}");
    assert_eq!(g.logs_before_second, g.logs_after_second, "a finished run was started again");
    assert!(g.second_took < Duration::from_secs(20), "took {:?}", g.second_took);
    assert!(g.out.join("report/README.md").is_file());
}

#[test]
fn bad_keys_fail_before_any_run_starts() {
    let dir = scratch("bad-keys");
    let cases = [
        // A typo in the second variant's overrides: the config key is named.
        ("[[variant]]\nname = \"good\"\n[[variant]]\nname = \"typo\"\nset = [\"rollout.group_sise=2\"]\n", vec!["typo", "group_sise"]),
        // An unknown key in a [[variant]] table.
        ("[[variant]]\nname = \"good\"\n[[variant]]\nname = \"odd\"\nsets = []\n", vec!["odd", "sets"]),
        // An unknown top-level key.
        ("seed = [0]\n[[variant]]\nname = \"good\"\n", vec!["seed"]),
        ("[[variant]]\nname = \"twice\"\n[[variant]]\nname = \"twice\"\n", vec!["twice", "used twice"]),
        ("[[variant]]\nname = \"v\"\nset = [\"train.seed=3\"]\n", vec!["train.seed"]),
        ("[[variant]]\nname = \"v\"\nset = ['preset=\"rlpp\"']\n", vec!["rlpp"]),
    ];
    for (i, (body, needles)) in cases.iter().enumerate() {
        let file = write_ablation(&dir, &format!("bad{i}.toml"), &format!("out = \"out{i}\"\n{COMMON}\n{body}"));
        // No model: nothing may get far enough to need one.
        let out = rlp(&["ablate", s(&file)]);
        let err = stderr(&out);
        assert!(!out.status.success(), "case {i} should fail:\n{err}");
        assert!(err.starts_with("error: "), "case {i}: {err}");
        for n in needles {
            assert!(err.contains(n), "case {i}: expected `{n}` in:\n{err}");
        }
        assert!(!err.contains("panicked"), "{err}");
        assert!(!dir.join(format!("out{i}")).exists(), "case {i}: the output folder was created");
    }
}

#[test]
fn dry_run_runs_nothing() {
    let dir = scratch("dry-run");
    let body = format!(
        "out = \"out\"\nseeds = [3, 4]\n{COMMON}\n[[variant]]\nname = \"rlp\"\n[[variant]]\nname = \"quiet\"\nset = ['preset=\"quiet_star\"', \"reward.n_true=2\"]\n"
    );
    let file = write_ablation(&dir, "dry.toml", &body);
    let out = ok(&["ablate", s(&file), "--dry-run", "--model", "/nowhere/model"]);
    let text = String::from_utf8_lossy(&out.stdout);
    for needle in ["rlp seed 3", "rlp seed 4", "quiet seed 3", "quiet seed 4", "rlp: same as the base", "reward.n_true = 2", "preset = \"quiet_star\"", "--model /nowhere/model"] {
        assert!(text.contains(needle), "expected `{needle}` in:\n{text}");
    }
    assert!(!dir.join("out").exists(), "--dry-run created the output folder");
}

#[test]
fn shipped_ablations_are_valid() {
    for file in ["configs/ablations/demo-rewards.toml", "configs/ablations/rlp-gpu.toml"] {
        let out = ok(&["ablate", s(&root().join(file)), "--dry-run"]);
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(text.contains("runs, in order:"), "{file}:\n{text}");
    }
}

/// A run that fails is reported by variant, seed and log, the others still run, the report of
/// what finished is written, and the exit status is non-zero.
#[test]
fn a_failed_run_does_not_stop_the_others() {
    let i = inputs();
    let dir = scratch("one-fails");
    let body = format!(
        "out = \"out\"\n{COMMON}\n[[variant]]\nname = \"broken\"\nset = ['positions.strategy=\"proxy_entropy\"', 'positions.proxy_model=\"/nowhere/proxy\"']\n\
         [[variant]]\nname = \"fine\"\nset = ['preset=\"ntp\"', \"train.max_steps=1\", \"eval.every=1\"]\n"
    );
    let file = write_ablation(&dir, "fails.toml", &body);
    let out = rlp(&["ablate", s(&file), "--model", s(&i.model), "--data", s(&i.data)]);
    let err = stderr(&out);
    assert!(!out.status.success(), "{err}");
    assert!(err.contains("broken seed 0") && err.contains("broken/seed-0/train.log") && err.contains("/nowhere/proxy"), "{err}");
    let out_dir = dir.join("out");
    assert!(out_dir.join("runs/fine/seed-0/checkpoints/step-00000001/state.json").is_file(), "{err}");
    let readme = std::fs::read_to_string(out_dir.join("report/README.md")).unwrap();
    assert!(readme.lines().any(|l| l.starts_with("| fine | 1/1 |")), "{readme}");
    assert!(readme.lines().any(|l| l.starts_with("| broken | 0/1 |")), "{readme}");
    assert!(readme.contains("## Runs not finished") && readme.contains("../runs/broken/seed-0/train.log"), "{readme}");
}

/// A run stopped short of max_steps is not restarted behind the user's back: without --resume it
/// is reported; with it, it continues from its checkpoint and its wall time accumulates.
#[test]
fn a_partial_run_resumes_only_with_resume() {
    let i = inputs();
    let dir = scratch("partial");
    let body = format!("out = \"out\"\n{COMMON}\n[[variant]]\nname = \"ntp\"\nset = ['preset=\"ntp\"', \"checkpoint.every=1\", \"checkpoint.keep_last=5\"]\n");
    let file = write_ablation(&dir, "partial.toml", &body);
    let args = ["ablate", s(&file), "--model", s(&i.model), "--data", s(&i.data)];
    ok(&args);
    let run = dir.join("out/runs/ntp/seed-0");
    // As if the run had died after step 2.
    std::fs::remove_dir_all(run.join("checkpoints/step-00000003")).unwrap();
    let out = rlp(&args);
    let err = stderr(&out);
    assert!(!out.status.success(), "{err}");
    assert!(err.contains("step 2 of 3") && err.contains("--resume"), "{err}");
    let dry = ok(&["ablate", s(&file), "--dry-run", "--resume"]);
    assert!(String::from_utf8_lossy(&dry.stdout).contains("-> resume"), "{}", String::from_utf8_lossy(&dry.stdout));

    let mut resume = args.to_vec();
    resume.push("--resume");
    let out = ok(&resume);
    assert!(stderr(&out).contains("resuming"), "{}", stderr(&out));
    assert!(run.join("checkpoints/step-00000003/state.json").is_file());
    let log = std::fs::read_to_string(run.join("train.log")).unwrap();
    assert!(log.contains("resuming from"), "{log}");
    let record: Value = serde_json::from_str(&std::fs::read_to_string(run.join("ablate.json")).unwrap()).unwrap();
    assert_eq!(record["attempts"], 2);
    assert_eq!(record["status"], "finished");
    // --report-only rebuilds the report from the folders alone.
    std::fs::remove_dir_all(dir.join("out/report")).unwrap();
    let out = ok(&["ablate", s(&file), "--report-only"]);
    assert!(!stderr(&out).contains("training"), "{}", stderr(&out));
    let readme = std::fs::read_to_string(dir.join("out/report/README.md")).unwrap();
    assert!(readme.lines().any(|l| l.starts_with("| ntp | 1/1 |")), "{readme}");
}

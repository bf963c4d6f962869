//! What the benchmarks share: the project's Python, benchmark checkpoints, timing.
#![allow(dead_code)]
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

pub fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

pub fn python() -> PathBuf {
    std::env::var_os("RLP_PYTHON").map(PathBuf::from).unwrap_or_else(|| root().join(".venv/bin/python"))
}

/// `tiny_models.py single` arguments for each named shape.
pub fn shape_args(shape: &str) -> &'static [&'static str] {
    match shape {
        // ~60M parameters: big enough that matrix work dominates, small enough for 2 CPU cores.
        "qwen3-small" => &["--hidden", "512", "--layers", "8", "--heads", "8", "--kv-heads", "4", "--intermediate", "1536", "--vocab", "32000"],
        // The issue-10 tiny shape: the body is cheap, so per-step overheads (host syncs, small
        // kernels, Python/Rust glue) show.
        "qwen3-tiny" => &["--hidden", "128", "--layers", "4", "--heads", "4", "--kv-heads", "2", "--intermediate", "384"],
        "qwen3-1.7b" => &["--hidden", "2048", "--layers", "28", "--heads", "16", "--kv-heads", "8", "--intermediate", "6144", "--vocab", "151936", "--dtype", "bfloat16"],
        other => panic!("unknown shape {other} (qwen3-tiny, qwen3-small, qwen3-1.7b)"),
    }
}

/// A random-weight checkpoint of `shape` under target/bench-models, made once.
pub fn ensure_model(shape: &str) -> PathBuf {
    let dir = root().join("target/bench-models").join(shape);
    if !dir.join("config.json").is_file() {
        run_python(&["scripts/tiny_models.py", "single", dir.to_str().expect("utf-8 path")], shape_args(shape));
    }
    dir
}

pub fn run_python(args: &[&str], more: &[&str]) -> String {
    let out = Command::new(python())
        .current_dir(root())
        .args(args)
        .args(more)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {} (run scripts/setup.sh first): {e}", python().display()));
    assert!(out.status.success(), "python {args:?} failed:\n{}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).to_string()
}

/// The last line of a peer's stdout, parsed as JSON.
pub fn last_json(stdout: &str) -> serde_json::Value {
    serde_json::from_str(stdout.lines().last().unwrap_or("{}")).expect("peer JSON")
}

pub fn sync(device: tch::Device) {
    if let tch::Device::Cuda(i) = device {
        tch::Cuda::synchronize(i as i64);
    }
}

/// Median wall time of `reps` runs after one warm-up run.
pub fn median_secs(reps: usize, device: tch::Device, mut f: impl FnMut()) -> f64 {
    f();
    sync(device);
    let mut t: Vec<f64> = (0..reps)
        .map(|_| {
            let start = Instant::now();
            f();
            sync(device);
            start.elapsed().as_secs_f64()
        })
        .collect();
    median(&mut t)
}

pub fn median(v: &mut [f64]) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

/// Simple `--key value` options with defaults; `--bench` (added by cargo) is ignored.
pub struct Opts(Vec<(String, String)>);

impl Opts {
    pub fn parse(defaults: &[(&str, &str)]) -> Opts {
        let mut o: Vec<(String, String)> = defaults.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        let args: Vec<String> = std::env::args().skip(1).filter(|a| a != "--bench").collect();
        for pair in args.chunks(2) {
            let key = pair[0].trim_start_matches("--");
            let value = pair.get(1).unwrap_or_else(|| panic!("--{key} needs a value"));
            match o.iter_mut().find(|(k, _)| k == key) {
                Some(slot) => slot.1 = value.clone(),
                None => panic!("unknown option --{key}"),
            }
        }
        Opts(o)
    }

    pub fn get(&self, key: &str) -> &str {
        &self.0.iter().find(|(k, _)| k == key).unwrap_or_else(|| panic!("no option {key}")).1
    }

    pub fn num(&self, key: &str) -> usize {
        self.get(key).parse().unwrap_or_else(|_| panic!("--{key} must be a number"))
    }
}

pub fn path_str(p: &Path) -> &str {
    p.to_str().expect("utf-8 path")
}

//! Shared by the integration tests: the project's Python (for transformers references) and the
//! tiny checkpoints it makes, created once per test binary.
#![allow(dead_code)]
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;

use tch::Tensor;

pub fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The Python with torch + transformers: `$RLP_PYTHON`, else the project's `.venv`.
pub fn python() -> PathBuf {
    std::env::var_os("RLP_PYTHON").map(PathBuf::from).unwrap_or_else(|| root().join(".venv/bin/python"))
}

/// Runs `scripts/<script> args...`, failing the test with Python's stderr if it fails.
pub fn run_python(script: &str, args: &[&str]) {
    let py = python();
    let out = Command::new(&py)
        .arg(root().join("scripts").join(script))
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {} (run scripts/setup.sh first): {e}", py.display()));
    assert!(out.status.success(), "{script} {args:?} failed:\n{}", String::from_utf8_lossy(&out.stderr));
}

/// A fresh directory under cargo's per-target temp dir, named after the test binary so that
/// binaries do not collide and a rerun replaces what the last run left.
pub fn scratch(name: &str) -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(env!("CARGO_CRATE_NAME")).join(name);
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("create scratch dir");
    dir
}

/// The tiny checkpoints of every case in `scripts/tiny_models.py`, made once per test binary.
pub fn tiny_models() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let dir = scratch("tiny-models");
        run_python("tiny_models.py", &["make", dir.to_str().expect("utf-8 path")]);
        dir
    })
}

pub const CASES: &[&str] = &[
    "qwen3-f32-tied",
    "qwen3-bf16-untied",
    "qwen2-f32-untied",
    "qwen2-bf16-tied",
    "llama-f32-untied",
    "llama-bf16-tied",
    "gpt2-f32-tied",
    "gpt2-bf16-untied",
];

pub fn read_tensors(path: &Path) -> HashMap<String, Tensor> {
    Tensor::read_safetensors(path).unwrap_or_else(|e| panic!("read {}: {e}", path.display())).into_iter().collect()
}

pub fn ids_of(t: &Tensor) -> Vec<i64> {
    Vec::<i64>::try_from(t.flatten(0, -1)).expect("int64 ids")
}

pub fn max_abs_diff(a: &Tensor, b: &Tensor) -> f64 {
    assert_eq!(a.size(), b.size(), "shape mismatch");
    (a.to_kind(tch::Kind::Float) - b.to_kind(tch::Kind::Float)).abs().max().double_value(&[])
}

/// Runs the `rlp` binary of this build.
pub fn rlp(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_rlp")).args(args).output().expect("run rlp")
}

/// Runs `rlp` and requires success.
pub fn ok(args: &[&str]) -> Output {
    let out = rlp(args);
    assert!(out.status.success(), "rlp {args:?} failed:\n{}", String::from_utf8_lossy(&out.stderr));
    out
}

/// Runs `rlp` and requires a clean failure: non-zero exit, an `error:` line containing `needle`,
/// no panic or backtrace.
pub fn fails_with(args: &[&str], needle: &str) {
    let out = rlp(args);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "rlp {args:?} should fail; stderr:\n{err}");
    assert!(err.contains(needle), "rlp {args:?}: expected `{needle}` in:\n{err}");
    assert!(err.starts_with("error: ") || err.contains("\nerror: "), "not a clean error:\n{err}");
    for bad in ["panicked", "backtrace", "internal failure"] {
        assert!(!err.contains(bad), "rlp {args:?}: `{bad}` in:\n{err}");
    }
}

pub fn s(p: &Path) -> &str {
    p.to_str().expect("utf-8 path")
}

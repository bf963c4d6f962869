//! The `rlp` binary: outputs on good input, and a clear one-line error (naming the culprit, no
//! panic, no backtrace) and a non-zero exit on every kind of bad input.
mod common;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use common::*;
use serde_json::Value;
use tch::Tensor;

fn rlp(args: &[&str], stdin: Option<&str>) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_rlp"))
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn rlp");
    let mut input = child.stdin.take().expect("stdin");
    input.write_all(stdin.unwrap_or("").as_bytes()).expect("write stdin");
    drop(input);
    child.wait_with_output().expect("wait for rlp")
}

/// Runs `rlp args` expecting failure with `needle` in the error message.
fn fails_with(args: &[&str], stdin: Option<&str>, needle: &str) {
    let out = rlp(args, stdin);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{args:?} should fail; stderr: {err}");
    assert!(err.contains(needle), "{args:?}: expected `{needle}` in stderr:\n{err}");
    assert!(err.starts_with("error: "), "{args:?}: not a clean error:\n{err}");
    for bad in ["panicked", "backtrace", "internal failure"] {
        assert!(!err.contains(bad), "{args:?}: `{bad}` in stderr:\n{err}");
    }
}

/// A copy of one tiny checkpoint to break.
fn copy_case(case: &str, name: &str) -> PathBuf {
    let src = tiny_models().join(case);
    let dst = scratch(name);
    for entry in std::fs::read_dir(&src).unwrap() {
        let p = entry.unwrap().path();
        if p.is_file() {
            std::fs::copy(&p, dst.join(p.file_name().unwrap())).unwrap();
        }
    }
    dst
}

fn rewrite_weights(dir: &Path, edit: impl FnOnce(&mut Vec<(String, Tensor)>)) {
    let path = dir.join("model.safetensors");
    let mut tensors = Tensor::read_safetensors(&path).unwrap();
    edit(&mut tensors);
    Tensor::write_safetensors(&tensors, &path).unwrap();
}

fn jsonl(lines: &[Value]) -> String {
    lines.iter().map(|v| v.to_string() + "\n").collect()
}

fn model(case: &str) -> String {
    tiny_models().join(case).to_str().unwrap().to_string()
}

#[test]
fn generate_greedy_matches_transformers_through_the_cli() {
    let r = read_tensors(&tiny_models().join("qwen2-f32-untied/reference.safetensors"));
    let ids = ids_of(&r["ids_a"]);
    let input = jsonl(&[serde_json::json!({"input_ids": ids}), serde_json::json!({"text": "The quick brown fox"})]);
    let m = model("qwen2-f32-untied");
    let out = rlp(&["generate", "--model", &m, "--temperature", "0", "--max-new-tokens", "32", "--batch-size", "2"], Some(&input));
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let lines: Vec<Value> = String::from_utf8(out.stdout).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(lines.len(), 2);
    let got: Vec<i64> = lines[0]["output_ids"].as_array().unwrap().iter().map(|v| v.as_i64().unwrap()).collect();
    // The model's eos (id 0) may stop the CLI early; up to there it must equal transformers.
    let want = ids_of(&r["greedy_a"]);
    assert_eq!(got[..], want[..got.len()]);
    assert!(got.len() == 32 || got.last() == Some(&0));
    assert_eq!(lines[0]["logprobs"].as_array().unwrap().len(), got.len());
    assert!(lines[1]["text"].is_string());
}

#[test]
fn sampling_is_reproducible_from_the_seed() {
    let m = model("llama-f32-untied");
    let input = jsonl(&[serde_json::json!({"text": "Paris is"}), serde_json::json!({"text": "One kilometre"})]);
    let run = |seed: &str| {
        let out = rlp(&["generate", "--model", &m, "--seed", seed, "--top-p", "0.9", "--top-k", "50", "--max-new-tokens", "12"], Some(&input));
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        out.stdout
    };
    assert_eq!(run("7"), run("7"));
    assert_ne!(run("7"), run("8"));
}

#[test]
fn score_writes_logprobs_and_perplexity() {
    let m = model("gpt2-bf16-untied");
    let out = rlp(&["score", "--model", &m], Some(&jsonl(&[serde_json::json!({"text": "47 + 38 = 85."}), serde_json::json!({"input_ids": [5, 9]})])));
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let stdout = String::from_utf8(out.stdout).unwrap();
    let lines: Vec<Value> = stdout.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    let n_ids = lines[0]["input_ids"].as_array().unwrap().len();
    assert_eq!(lines[0]["logprobs"].as_array().unwrap().len(), n_ids - 1);
    assert_eq!(lines[1]["logprobs"].as_array().unwrap().len(), 1);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("mean NLL") && err.contains("perplexity"), "{err}");
}

#[test]
fn bad_model_directories_are_named() {
    fails_with(&["score", "--model", "/no/such/model"], Some("{\"text\": \"a\"}\n"), "/no/such/model");

    let d = copy_case("qwen3-f32-tied", "unsupported-type");
    let cfg = std::fs::read_to_string(d.join("config.json")).unwrap().replace("\"qwen3\"", "\"mamba\"");
    std::fs::write(d.join("config.json"), cfg).unwrap();
    fails_with(&["score", "--model", d.to_str().unwrap()], None, "unsupported model_type `mamba`");

    let d = copy_case("qwen3-f32-tied", "no-weights");
    std::fs::remove_file(d.join("model.safetensors")).unwrap();
    fails_with(&["score", "--model", d.to_str().unwrap()], None, "no model.safetensors");

    let d = copy_case("qwen3-f32-tied", "no-tokenizer");
    std::fs::remove_file(d.join("tokenizer.json")).unwrap();
    fails_with(&["score", "--model", d.to_str().unwrap()], None, "no tokenizer.json");

    let d = copy_case("qwen3-f32-tied", "truncated");
    let f = std::fs::OpenOptions::new().write(true).open(d.join("model.safetensors")).unwrap();
    let len = f.metadata().unwrap().len();
    f.set_len(len / 2).unwrap();
    fails_with(&["score", "--model", d.to_str().unwrap()], None, "model.safetensors is not a valid safetensors file");

    let d = copy_case("qwen3-f32-tied", "corrupt");
    let mut bytes = std::fs::read(d.join("model.safetensors")).unwrap();
    bytes[8..16].copy_from_slice(b"garbage!");
    std::fs::write(d.join("model.safetensors"), bytes).unwrap();
    fails_with(&["score", "--model", d.to_str().unwrap()], None, "not a valid safetensors file");

    let d = copy_case("qwen3-f32-tied", "missing-tensor");
    rewrite_weights(&d, |t| t.retain(|(n, _)| n != "model.norm.weight"));
    fails_with(&["score", "--model", d.to_str().unwrap()], None, "missing tensor(s) model.norm.weight");

    let d = copy_case("qwen3-f32-tied", "unexpected-tensor");
    rewrite_weights(&d, |t| t.push(("model.extra.weight".into(), Tensor::zeros([2], (tch::Kind::Float, tch::Device::Cpu)))));
    fails_with(&["score", "--model", d.to_str().unwrap()], None, "unexpected tensor `model.extra.weight`");

    let d = copy_case("qwen3-f32-tied", "misshaped-tensor");
    rewrite_weights(&d, |t| {
        for (n, x) in t.iter_mut() {
            if n == "model.layers.1.self_attn.k_norm.weight" {
                *x = Tensor::ones([7], (tch::Kind::Float, tch::Device::Cpu));
            }
        }
    });
    fails_with(&["score", "--model", d.to_str().unwrap()], None, "tensor `model.layers.1.self_attn.k_norm.weight` in");
    fails_with(&["score", "--model", d.to_str().unwrap()], None, "has shape [7], expected [24]");
}

#[test]
fn bad_inputs_are_named_with_their_line() {
    let m = model("gpt2-f32-tied");
    fails_with(&["score", "--model", &m], Some("{\"text\": \"ok\"}\n{\"text\": broken\n"), "<stdin>:2");
    fails_with(&["score", "--model", &m], Some("{\"txt\": \"a\"}\n"), "<stdin>:1: expected a `text` or `input_ids` field");
    fails_with(&["score", "--model", &m], Some("{\"input_ids\": [1, \"x\"]}\n"), "input_ids[1] is not an integer");
    fails_with(&["score", "--model", &m], Some("{\"input_ids\": [1, 100000]}\n"), "token id 100000 is outside the model's vocabulary");
    fails_with(&["score", "--model", &m, "/no/such/input.jsonl"], None, "/no/such/input.jsonl");
    // GPT-2's tiny config has 128 positions.
    let long = serde_json::json!({"input_ids": vec![5; 200]}).to_string() + "\n";
    fails_with(&["generate", "--model", &m], Some(&long), "input line 1: prompt has 200 tokens, more than the model's maximum of 128 positions");
    fails_with(&["score", "--model", &m], Some(&long), "more than the model's maximum of 128 positions");
}

#[test]
fn bad_options_are_named() {
    let m = model("gpt2-f32-tied");
    let one = Some("{\"text\": \"a\"}\n");
    fails_with(&["generate", "--model", &m, "--device", "tpu"], one, "unknown device `tpu`");
    fails_with(&["generate", "--model", &m, "--device", "cuda:3"], one, "device `cuda:3` is not available");
    fails_with(&["generate", "--model", &m, "--dtype", "int8"], one, "unknown dtype `int8`");
    fails_with(&["generate", "--model", &m, "--top-p", "0"], one, "top_p must be in (0, 1]");
    fails_with(&["generate", "--model", &m, "--stop", "not-a-token-xyz"], one, "--stop `not-a-token-xyz`");
}

#[test]
fn generation_stops_at_the_position_limit() {
    // 120 prompt tokens + up to 64 new on a 128-position GPT-2: stops after 8 with "length".
    let m = model("gpt2-f32-tied");
    let input = serde_json::json!({"input_ids": vec![5; 120]}).to_string() + "\n";
    let out = rlp(&["generate", "--model", &m, "--max-new-tokens", "64", "--temperature", "0"], Some(&input));
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let v: Value = serde_json::from_str(String::from_utf8(out.stdout).unwrap().trim()).unwrap();
    let n = v["output_ids"].as_array().unwrap().len();
    let finish = v["finish_reason"].as_str().unwrap();
    assert!((n == 8 && finish == "length") || (n < 8 && finish == "stop"), "{n} tokens, finish {finish}");
}

/// `rlp plan` on the paper's model shape from its config.json alone: the weights term is
/// 2 bytes × the parameter count in bf16, the verdict follows the budget, and bad input is one
/// line.
#[test]
fn plan_says_whether_a_config_fits() {
    let args = |mem: &str| -> Vec<String> {
        ["plan", "--config", "configs/rlp-qwen3-1.7b.toml", "--model", "configs/models/qwen3-1.7b", "--gpus", "8", "--gpu-mem", mem].iter().map(|s| s.to_string()).collect()
    };
    let run = |a: &[String]| {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_rlp")).current_dir(root()).args(a).output().unwrap();
        (out.status.success(), String::from_utf8_lossy(&out.stdout).to_string(), String::from_utf8_lossy(&out.stderr).to_string())
    };
    let (ok80, text, err) = run(&args("80GB"));
    assert!(ok80, "{err}");
    // Qwen3-1.7B: 1,720,574,976 parameters (tied embeddings) → 3.44 GB of bf16 weights.
    assert!(text.contains("1.72 B parameters") && text.contains("weights") && text.contains("3.44 GB"), "{text}");
    assert!(text.contains("fits in 80 GB") && !text.contains("NOT"), "{text}");
    let (_, text, _) = run(&args("40GB"));
    assert!(text.contains("does NOT fit in 40 GB"), "{text}");
    let (ok, _, err) = run(&["plan".into(), "--config".into(), "configs/rlp-qwen3-1.7b.toml".into(), "--model".into(), "/no/such/model".into()]);
    assert!(!ok && err.contains("/no/such/model") && err.lines().count() == 1, "{err}");
    let (ok, _, err) = run(&args("eighty"));
    assert!(!ok && err.contains("--gpu-mem `eighty`"), "{err}");
}

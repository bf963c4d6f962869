//! A shortened run of the built-in demo (scripts/demo.sh): synthesise the procedural world,
//! pretrain a tiny model from scratch, then continue with RLP on plain statements. Thinking must
//! be learned (held-out answer accuracy with a greedy thought far above without), and RLP must
//! raise its reward without losing that accuracy.
mod common;

use std::path::Path;

use common::*;
use serde_json::Value;



fn config(name: &str) -> String {
    root().join("configs/demo").join(name).to_str().unwrap().to_string()
}

fn lines(run: &Path) -> Vec<Value> {
    std::fs::read_to_string(run.join("metrics.jsonl")).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect()
}

fn evals(run: &Path) -> Vec<Value> {
    lines(run).into_iter().filter(|l| l.get("eval/nll_no_think").is_some()).collect()
}

#[test]
fn shortened_demo_learns_to_think() {
    let dir = scratch("demo");
    let world = dir.join("world");
    ok(&["data", "synth", "--output", s(&world), "--documents", "600", "--seed", "1"]);
    let init = dir.join("model-init");
    ok(&["init", "--tokenizer", s(&world.join("tokenizer")), "--output", s(&init), "--hidden", "128", "--layers", "4", "--heads", "4", "--kv-heads", "2", "--intermediate", "384", "--max-positions", "256"]);
    for split in ["pretrain", "plain", "heldout"] {
        ok(&["data", "prepare", "--model", s(&init), "--output", s(&dir.join(format!("data-{split}"))), s(&world.join(format!("{split}.jsonl")))]);
    }
    let heldout = format!("eval.data={}", toml::Value::String(s(&dir.join("data-heldout")).to_string()));

    // a. Pretraining from scratch: with a thought, held-out answers become far more accurate.
    let pre = dir.join("pretrain");
    ok(&["train", "--config", &config("pretrain.toml"), "--model", s(&init), "--data", s(&dir.join("data-pretrain")), "--run-dir", s(&pre), "--set", &heldout, "--set", "train.max_steps=600", "--set", "eval.every=600", "--set", "eval.with_thought=true"]);
    let e = evals(&pre);
    let (first, last) = (&e[0], &e[e.len() - 1]);
    let acc = |v: &Value, k: &str| v[k].as_f64().unwrap();
    assert!(acc(first, "eval/acc_think") < 0.05, "a random model should not answer: {first}");
    assert!(acc(last, "eval/acc_think") > 0.3, "pretraining did not teach the model to think: {last}");
    assert!(acc(last, "eval/acc_think") > acc(last, "eval/acc_no_think") + 0.15, "thinking should help: {last}");

    // b. RLP on plain statements: the reward rises and thinking keeps its accuracy.
    let model = pre.join("checkpoints/step-00000600/model");
    let rl = dir.join("rlp");
    ok(&["train", "--config", &config("continue.toml"), "--model", s(&model), "--data", s(&dir.join("data-plain")), "--run-dir", s(&rl), "--set", &heldout, "--set", "train.max_steps=100", "--set", "eval.every=100"]);
    let rewards: Vec<f64> = lines(&rl).iter().filter_map(|l| l["reward/mean"].as_f64()).collect();
    assert_eq!(rewards.len(), 100);
    let mean = |r: &[f64]| r.iter().sum::<f64>() / r.len() as f64;
    let (early, late) = (mean(&rewards[..30]), mean(&rewards[70..]));
    assert!(late > early, "RLP's mean reward did not rise: first 30 steps {early:.3}, last 30 {late:.3}");
    let e = evals(&rl);
    let (before, after) = (acc(&e[0], "eval/acc_think"), acc(&e[e.len() - 1], "eval/acc_think"));
    assert!(after >= before - 0.03, "RLP lowered the with-thought answer accuracy: {before} -> {after}");
}

//! `cargo bench --bench rlp_step [-- --device cuda --dtype bfloat16 --shape qwen3-1.7b --contexts 32 --group 16 --thought-tokens 256]`
//!
//! One RLP step (B contexts × G thoughts) split rollout / score / update: our trainer, then a
//! PyTorch + transformers implementation of the same step (benches/py/rlp_step.py) on the same
//! checkpoint and data in the same run, printed side by side with the ratio.
mod common;

use common::*;
use rlp_trainer::{TrainConfig, Trainer};

/// Synthetic documents long enough for the context length, prepared with the model's tokenizer.
fn ensure_data(model: &std::path::Path) -> std::path::PathBuf {
    let dir = root().join("target/bench-data/rlp-step");
    if !dir.join("meta.json").is_file() {
        let corpus = root().join("target/bench-data/rlp-step-corpus.jsonl");
        std::fs::create_dir_all(corpus.parent().expect("parent")).expect("mkdir");
        let mut text = String::new();
        for d in 0..64u64 {
            let body: Vec<String> = (0..120u64).map(|i| format!("{} plus {} is {}.", d * 7 + i, i * 3, d * 7 + i * 4)).collect();
            text += &serde_json::json!({"text": body.join(" ")}).to_string();
            text.push('\n');
        }
        std::fs::write(&corpus, text).expect("write corpus");
        let tok = rlp_model::Tokenizer::from_dir(model).expect("tokenizer");
        rlp_data::prepare(&tok, &rlp_data::PrepareOptions::new(vec![corpus], dir.clone())).expect("prepare data");
    }
    dir
}

fn main() {
    let o = Opts::parse(&[
        ("device", "cpu"),
        ("dtype", "float32"),
        ("shape", "qwen3-small"),
        ("contexts", "8"),
        ("group", "4"),
        ("context-len", "128"),
        ("thought-tokens", "32"),
        ("steps", "3"),
    ]);
    let model = ensure_model(o.get("shape"));
    let data = ensure_data(&model);
    let (b, g, lc, lt, steps) = (o.num("contexts"), o.num("group"), o.num("context-len"), o.num("thought-tokens"), o.num("steps"));
    let toml = format!(
        r#"preset = "rlp"
[model]
path = "{}"
dtype = "{}"
device = "{}"
[data]
path = "{}"
max_context = {lc}
[positions]
min_context = {lc}
[thought]
max_tokens = {lt}
temperature = 1.0
[rollout]
contexts_per_step = {b}
group_size = {g}
[optim]
lr = 1e-6
"#,
        model.display(),
        o.get("dtype"),
        o.get("device"),
        data.display()
    );
    let cfg = TrainConfig::from_toml_str(&toml, &[]).expect("bench config");
    let mut trainer = Trainer::new(cfg, &root().join("target/bench-runs/rlp-step"), false).expect("trainer");
    println!(
        "model {} | {} {} | B = {b} contexts of {lc} tokens, G = {g} thoughts of up to {lt} tokens | median of {steps} steps after 1 warm-up | libtorch threads {}",
        o.get("shape"), o.get("device"), o.get("dtype"), tch::get_num_threads()
    );
    trainer.train_step().expect("warm-up step");
    let mut parts: Vec<(&str, Vec<f64>)> = vec![("rollout", vec![]), ("score", vec![]), ("update", vec![])];
    let mut lengths = Vec::new();
    for _ in 0..steps {
        let out = trainer.train_step().expect("step");
        for (name, v) in parts.iter_mut() {
            v.push(out.metrics[&format!("time/{name}")]);
        }
        lengths.push(out.metrics["thought/length"]);
    }
    drop(trainer);
    let peer = last_json(&run_python(
        &["benches/py/rlp_step.py", path_str(&model), path_str(&data)],
        &[
            "--device", o.get("device"), "--dtype", o.get("dtype"), "--contexts", o.get("contexts"), "--group", o.get("group"),
            "--context-len", o.get("context-len"), "--thought-tokens", o.get("thought-tokens"), "--steps", o.get("steps"),
        ],
    ));
    println!("mean thought length (ours): {:.1} tokens", lengths.iter().sum::<f64>() / lengths.len() as f64);
    println!("{:<10} {:>12} {:>16} {:>16}", "part (s)", "rlp (tch)", "PyTorch+HF", "speed-up");
    let mut total = (0.0, 0.0);
    for (name, v) in parts.iter_mut() {
        let ours = median(v);
        let theirs = peer.get(*name).and_then(serde_json::Value::as_f64).unwrap_or(f64::NAN);
        total.0 += ours;
        total.1 += theirs;
        println!("{name:<10} {ours:>12.3} {theirs:>16.3} {:>15.2}x", theirs / ours);
    }
    println!("{:<10} {:>12.3} {:>16.3} {:>15.2}x", "step", total.0, total.1, total.1 / total.0);
}

//! `cargo bench --bench generate_score [-- --device cuda --dtype bfloat16 --shape qwen3-1.7b --gen-batches 1,32,128]`
//!
//! Tokens/s of `score` (teacher-forced log-probs) and `generate` (greedy, KV cache, no early stop)
//! for a random-weight Qwen3-shaped checkpoint: ours, then the PyTorch + transformers peer on the
//! same checkpoint in the same run, printed side by side with the ratio.
mod common;

use common::*;
use rlp_model::{parse_device, parse_kind, token_logprobs, CausalLm};
use rlp_rollout::{generate, SamplingParams};

fn random_rows(rng: &mut u64, rows: usize, len: usize, vocab: i64) -> Vec<Vec<i64>> {
    // splitmix64: deterministic ids without pulling a RNG crate into the bench.
    let mut next = || {
        *rng = rng.wrapping_add(0x9E3779B97F4A7C15);
        let mut z = *rng;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58476D1CE4E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D049BB133111EB);
        z ^ (z >> 31)
    };
    (0..rows).map(|_| (0..len).map(|_| 1 + (next() % (vocab as u64 - 1)) as i64).collect()).collect()
}

fn main() {
    let o = Opts::parse(&[
        ("device", "cpu"),
        ("dtype", "float32"),
        ("shape", "qwen3-small"),
        ("score-batch", "8"),
        ("score-len", "256"),
        ("gen-batches", "1,8"),
        ("prompt-len", "32"),
        ("new-tokens", "64"),
        ("reps", "3"),
    ]);
    let dir = ensure_model(o.get("shape"));
    let device = parse_device(o.get("device")).expect("device");
    let lm = CausalLm::load(&dir, parse_kind(o.get("dtype")).expect("dtype"), device).expect("load model");
    let (sb, sl, reps, new) = (o.num("score-batch"), o.num("score-len"), o.num("reps"), o.num("new-tokens"));
    let batches: Vec<usize> = o.get("gen-batches").split(',').map(|b| b.parse().expect("--gen-batches")).collect();
    println!(
        "model {} ({}), {} {} | score: {sb} x {sl} tokens | generate: prompt {}, {new} new tokens, greedy | median of {reps} | libtorch threads {}",
        o.get("shape"), dir.display(), o.get("device"), o.get("dtype"), o.get("prompt-len"), tch::get_num_threads()
    );
    let mut rng = 0u64;
    let mut ours = Vec::new();
    let rows = random_rows(&mut rng, sb, sl, lm.vocab_size());
    let secs = median_secs(reps, device, || {
        token_logprobs(&lm, &rows, usize::MAX).expect("score");
    });
    ours.push(("score_tokens_per_s".to_string(), (sb * sl) as f64 / secs));
    for &b in &batches {
        let prompts = random_rows(&mut rng, b, o.num("prompt-len"), lm.vocab_size());
        let params = SamplingParams { temperature: 0.0, max_new_tokens: new, ..Default::default() };
        let secs = median_secs(reps, device, || {
            let g = generate(&lm, &prompts, &params).expect("generate");
            assert!(g.iter().all(|g| g.tokens.len() == new));
        });
        ours.push((format!("generate_b{b}_tokens_per_s"), (b * new) as f64 / secs));
    }
    drop(lm);
    let peer = last_json(&run_python(
        &["benches/py/hf_generate_score.py", path_str(&dir)],
        &[
            "--device", o.get("device"), "--dtype", o.get("dtype"), "--gen-batches", o.get("gen-batches"),
            "--score-batch", o.get("score-batch"), "--score-len", o.get("score-len"), "--prompt-len", o.get("prompt-len"),
            "--new-tokens", o.get("new-tokens"), "--reps", o.get("reps"),
        ],
    ));
    println!("{:<28} {:>14} {:>16} {:>8}", "workload (tokens/s)", "rlp (tch)", "transformers", "ratio");
    for (name, v) in &ours {
        let p = peer.get(name).and_then(serde_json::Value::as_f64).unwrap_or(f64::NAN);
        println!("{:<28} {:>14.1} {:>16.1} {:>7.2}x", name.trim_end_matches("_tokens_per_s"), v, p, v / p);
    }
}

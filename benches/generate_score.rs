//! `cargo bench --bench generate_score [-- --device cuda --dtype bfloat16 --shape qwen3-1.7b --gen-batches 1,32,128]`
//!
//! Tokens/s of `score` (teacher-forced log-probs) and `generate` (greedy, KV cache, no early stop)
//! for a random-weight Qwen3-shaped checkpoint: ours, then the PyTorch + transformers peer on the
//! same checkpoint in the same run, printed side by side with the ratio.
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use rlp_model::{parse_device, parse_kind, token_logprobs, CausalLm};
use rlp_rollout::{generate, SamplingParams};
use serde_json::Value;

struct Opts {
    device: String,
    dtype: String,
    shape: String,
    score_batch: usize,
    score_len: usize,
    gen_batches: Vec<usize>,
    prompt_len: usize,
    new_tokens: usize,
    reps: usize,
}

fn opts() -> Opts {
    let mut o = Opts {
        device: "cpu".into(),
        dtype: "float32".into(),
        shape: "qwen3-small".into(),
        score_batch: 8,
        score_len: 256,
        gen_batches: vec![1, 8],
        prompt_len: 32,
        new_tokens: 64,
        reps: 3,
    };
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mut it = args.iter();
    while let Some(k) = it.next() {
        let mut v = || it.next().cloned().unwrap_or_else(|| panic!("{k} needs a value"));
        match k.as_str() {
            "--device" => o.device = v(),
            "--dtype" => o.dtype = v(),
            "--shape" => o.shape = v(),
            "--score-batch" => o.score_batch = v().parse().expect("--score-batch"),
            "--score-len" => o.score_len = v().parse().expect("--score-len"),
            "--gen-batches" => o.gen_batches = v().split(',').map(|s| s.parse().expect("--gen-batches")).collect(),
            "--prompt-len" => o.prompt_len = v().parse().expect("--prompt-len"),
            "--new-tokens" => o.new_tokens = v().parse().expect("--new-tokens"),
            "--reps" => o.reps = v().parse().expect("--reps"),
            "--bench" => {} // added by `cargo bench`
            other => panic!("unknown option {other}"),
        }
    }
    o
}

/// `tiny_models.py single` arguments for each named shape.
fn shape_args(shape: &str) -> &'static [&'static str] {
    match shape {
        // ~60M parameters: big enough that matrix work dominates, small enough for 2 CPU cores.
        "qwen3-small" => &["--hidden", "512", "--layers", "8", "--heads", "8", "--kv-heads", "4", "--intermediate", "1536", "--vocab", "32000"],
        "qwen3-1.7b" => &["--hidden", "2048", "--layers", "28", "--heads", "16", "--kv-heads", "8", "--intermediate", "6144", "--vocab", "151936", "--dtype", "bfloat16"],
        other => panic!("unknown shape {other} (qwen3-small, qwen3-1.7b)"),
    }
}

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn python() -> PathBuf {
    std::env::var_os("RLP_PYTHON").map(PathBuf::from).unwrap_or_else(|| root().join(".venv/bin/python"))
}

fn ensure_model(shape: &str) -> PathBuf {
    let dir = root().join("target/bench-models").join(shape);
    if !dir.join("config.json").is_file() {
        let status = Command::new(python())
            .arg(root().join("scripts/tiny_models.py"))
            .arg("single")
            .arg(&dir)
            .args(shape_args(shape))
            .status()
            .expect("run scripts/tiny_models.py");
        assert!(status.success(), "could not create the benchmark checkpoint");
    }
    dir
}

fn median_secs(reps: usize, device: tch::Device, mut f: impl FnMut()) -> f64 {
    let sync = || {
        if let tch::Device::Cuda(i) = device {
            tch::Cuda::synchronize(i as i64);
        }
    };
    f();
    sync();
    let mut t: Vec<f64> = (0..reps)
        .map(|_| {
            let start = Instant::now();
            f();
            sync();
            start.elapsed().as_secs_f64()
        })
        .collect();
    t.sort_by(|a, b| a.total_cmp(b));
    t[t.len() / 2]
}

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

fn ours(o: &Opts, dir: &Path) -> Vec<(String, f64)> {
    let device = parse_device(&o.device).expect("device");
    let lm = CausalLm::load(dir, parse_kind(&o.dtype).expect("dtype"), device).expect("load model");
    let mut rng = 0u64;
    let mut out = Vec::new();
    let rows = random_rows(&mut rng, o.score_batch, o.score_len, lm.vocab_size());
    let secs = median_secs(o.reps, device, || {
        token_logprobs(&lm, &rows).expect("score");
    });
    out.push(("score_tokens_per_s".to_string(), (o.score_batch * o.score_len) as f64 / secs));
    for &b in &o.gen_batches {
        let prompts = random_rows(&mut rng, b, o.prompt_len, lm.vocab_size());
        let params = SamplingParams { temperature: 0.0, max_new_tokens: o.new_tokens, ..Default::default() };
        let secs = median_secs(o.reps, device, || {
            let g = generate(&lm, &prompts, &params).expect("generate");
            assert!(g.iter().all(|g| g.tokens.len() == o.new_tokens));
        });
        out.push((format!("generate_b{b}_tokens_per_s"), (b * o.new_tokens) as f64 / secs));
    }
    out
}

fn peer(o: &Opts, dir: &Path) -> Value {
    let batches: Vec<String> = o.gen_batches.iter().map(|b| b.to_string()).collect();
    let out = Command::new(python())
        .arg(root().join("benches/py/hf_generate_score.py"))
        .arg(dir)
        .args(["--device", &o.device, "--dtype", &o.dtype, "--gen-batches", &batches.join(",")])
        .args(["--score-batch", &o.score_batch.to_string(), "--score-len", &o.score_len.to_string()])
        .args(["--prompt-len", &o.prompt_len.to_string(), "--new-tokens", &o.new_tokens.to_string()])
        .args(["--reps", &o.reps.to_string()])
        .output()
        .expect("run the transformers peer");
    assert!(out.status.success(), "peer failed: {}", String::from_utf8_lossy(&out.stderr));
    let stdout = String::from_utf8_lossy(&out.stdout);
    serde_json::from_str(stdout.lines().last().unwrap_or("{}")).expect("peer JSON")
}

fn main() {
    let o = opts();
    let dir = ensure_model(&o.shape);
    println!(
        "model {} ({}), {} {} | score: {} x {} tokens | generate: prompt {}, {} new tokens, greedy | median of {} | libtorch threads {}",
        o.shape, dir.display(), o.device, o.dtype, o.score_batch, o.score_len, o.prompt_len, o.new_tokens, o.reps, tch::get_num_threads()
    );
    let ours = ours(&o, &dir);
    let peer = peer(&o, &dir);
    println!("{:<28} {:>14} {:>16} {:>8}", "workload (tokens/s)", "rlp (tch)", "transformers", "ratio");
    for (name, v) in &ours {
        let p = peer.get(name).and_then(Value::as_f64).unwrap_or(f64::NAN);
        println!("{:<28} {:>14.1} {:>16.1} {:>7.2}x", name.trim_end_matches("_tokens_per_s"), v, p, v / p);
    }
}

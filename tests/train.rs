//! `rlp data prepare` and `rlp train` end to end on CPU: a tiny Qwen3 is pretrained briefly with
//! the next-token objective (the fixture), then trained with each objective.
mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use common::*;
use serde_json::Value;
use tch::{Device, Kind, Tensor};

fn config() -> String {
    root().join("configs/cpu-small.toml").to_str().unwrap().to_string()
}

/// A small arithmetic corpus: enough structure for a 2-layer model to learn in seconds.
fn write_corpus(path: &Path) {
    let mut lines = String::new();
    let mut x: u64 = 7;
    for _ in 0..240 {
        x = x.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        let (a, b) = (10 + (x >> 33) % 90, 10 + (x >> 45) % 90);
        lines += &serde_json::json!({"text": format!("{a} + {b} = {}. The fox jumps over {a} dogs.", a + b)}).to_string();
        lines.push('\n');
    }
    std::fs::write(path, lines).unwrap();
}

struct Fixture {
    dir: PathBuf,
    /// Prepared data (10% held out).
    data: PathBuf,
    /// The tiny model after 150 next-token steps (thought delimiters already in its vocabulary).
    model: PathBuf,
}

/// Random tiny Qwen3 → data → 150 steps of the `ntp` preset. Built once per test binary.
fn fixture() -> &'static Fixture {
    static F: OnceLock<Fixture> = OnceLock::new();
    F.get_or_init(|| {
        let dir = scratch("train");
        let raw = dir.join("random-model");
        run_python("tiny_models.py", &["single", s(&raw), "--arch", "qwen3", "--hidden", "64", "--layers", "2"]);
        write_corpus(&dir.join("corpus.jsonl"));
        let data = dir.join("data");
        ok(&["data", "prepare", "--model", s(&raw), "--output", s(&data), "--heldout-fraction", "0.1", s(&dir.join("corpus.jsonl"))]);
        let run = dir.join("pretrain");
        ok(&[
            "train", "--config", &config(), "--set", "preset=ntp", "--model", s(&raw), "--data", s(&data), "--run-dir", s(&run),
            "--max-steps", "150", "--set", "optim.lr=3e-3", "--set", "rollout.contexts_per_step=16",
            "--set", "eval.every=0", "--set", "checkpoint.every=0",
        ]);
        Fixture { model: run.join("checkpoints/step-00000150/model"), dir, data }
    })
}

fn metrics(run: &Path) -> Vec<Value> {
    std::fs::read_to_string(run.join("metrics.jsonl")).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect()
}

fn train_args<'a>(f: &'a Fixture, run: &'a Path, steps: &'a str) -> Vec<&'a str> {
    vec!["train", "--config", Box::leak(config().into_boxed_str()), "--model", s(&f.model), "--data", s(&f.data), "--run-dir", s(run), "--max-steps", steps]
}

#[test]
fn pretraining_lowers_the_next_token_loss() {
    let f = fixture();
    let m = metrics(&f.dir.join("pretrain"));
    let loss = |i: usize| m[i]["loss/ntp"].as_f64().unwrap();
    assert!(loss(m.len() - 1) < 0.5 * loss(0), "ntp loss {} -> {}", loss(0), loss(m.len() - 1));
}

#[test]
fn rlp_raises_the_mean_reward() {
    let f = fixture();
    // Every seed must rise (issue 9: the test used to pass for one chosen seed). AdamW with the
    // default ε = 1e-8 normalises each coordinate, which bends a 2-layer model's policy update
    // off the gradient (docs/rl-diagnosis.md): at lr 1e-3, seeds 0-3 went -6.02 -> -6.12 (flat),
    // -5.64 -> -2.38, -5.74 -> -2.89, -5.59 -> -3.81. With ε = 1e-2 the step follows the gradient
    // wherever it is small; at lr 1e-2, first -> last 10 steps for seeds 0-4: -6.24 -> 0.01,
    // -5.70 -> -4.75, -6.49 -> -2.66, -5.41 -> -3.77, -6.16 -> -1.04 (at lr 1e-3 it is too slow
    // to rise in 60 steps).
    let mut report = Vec::new();
    for seed in 0..5 {
        let run = f.dir.join(format!("rlp-reward-seed{seed}"));
        let mut args = train_args(f, &run, "60");
        let seed_arg = format!("train.seed={seed}");
        args.extend(["--set", "optim.lr=1e-2", "--set", "optim.eps=1e-2", "--set", "rollout.contexts_per_step=32", "--set", "eval.every=30", "--set", &seed_arg]);
        ok(&args);
        let m: Vec<Value> = metrics(&run).into_iter().filter(|l| l.get("reward/mean").is_some()).collect();
        assert_eq!(m.len(), 60);
        let mean = |r: &[Value]| r.iter().map(|l| l["reward/mean"].as_f64().unwrap()).sum::<f64>() / r.len() as f64;
        report.push((seed, mean(&m[..10]), mean(&m[50..])));
        if seed == 0 {
            // Held-out evaluation logged side by side, and the rollouts sample is readable text.
            let evals: Vec<Value> = metrics(&run).into_iter().filter(|l| l.get("eval/nll_think").is_some()).collect();
            assert_eq!(evals.iter().map(|e| e["step"].as_u64().unwrap()).collect::<Vec<_>>(), vec![0, 30, 60]);
            let rollouts = std::fs::read_to_string(run.join("rollouts.jsonl")).unwrap();
            let first: Value = serde_json::from_str(rollouts.lines().next().unwrap()).unwrap();
            for key in ["context_tail", "thought", "true_next", "reward"] {
                assert!(first.get(key).is_some(), "rollouts.jsonl lacks `{key}`");
            }
            assert!(run.join("config.toml").is_file() && run.join("events").read_dir().unwrap().next().is_some());
        }
    }
    eprintln!("(seed, mean reward of the first 10 steps, of the last 10): {report:?}");
    // Per-seed rises vary by ~2 under float-level changes (the chunked scorer of issue 10 moved
    // them from 3.8, 2.1, 6.0, 6.8, 5.8 to 6.3, 0.95, 3.8, 1.6, 5.1 with identical first steps):
    // every seed must rise, and the mean rise must be well above that spread.
    let rises: Vec<f64> = report.iter().map(|&(_, first, last)| last - first).collect();
    let mean_rise = rises.iter().sum::<f64>() / rises.len() as f64;
    assert!(rises.iter().all(|&r| r > 0.5) && mean_rise > 2.0, "the mean reward must rise by > 0.5 on every seed and by > 2 on average: {report:?}");
}

/// Step 1's dump against transformers recomputing S_pred and S_ema from the dumped ids with full
/// forwards, and the reward/advantage arithmetic by hand.
#[test]
fn dumped_step_matches_an_independent_recomputation() {
    let f = fixture();
    let run = f.dir.join("rlp-dump");
    let mut args = train_args(f, &run, "1");
    args.extend(["--dump-step", "1", "--set", "reward.n_true=2", "--set", "eval.every=0"]);
    ok(&args);
    let dump_path = run.join("dumps/step-1.safetensors");
    let d = read_tensors(&dump_path);
    let (b, g) = (8, 4);
    assert_eq!(d["context_ids"].size()[0], b);
    assert_eq!(d["context_len"].size(), vec![b]);
    assert_eq!(&d["thought_ids"].size()[..2], &[b, g]);
    assert_eq!(d["thought_len"].size(), vec![b, g]);
    assert_eq!(d["target_ids"].size(), vec![b, 2]);
    assert_eq!(d["s_pred"].size(), vec![b, g]);
    assert_eq!(d["s_ema"].size(), vec![b]);
    assert_eq!(d["loss"].size(), Vec::<i64>::new());
    // Thoughts start with <think> and end with </think>, as fed to the model.
    let think = ids_of(&d["thought_ids"].get(0).get(0).narrow(0, 0, 1))[0];
    for bi in 0..b {
        for gi in 0..g {
            let len = d["thought_len"].int64_value(&[bi, gi]);
            assert_eq!(d["thought_ids"].int64_value(&[bi, gi, 0]), think);
            assert!(len >= 2 && len <= 2 + 8);
        }
    }
    let out = f.dir.join("dump-reference.safetensors");
    run_python("check_dump.py", &[s(&f.model), s(&dump_path), s(&out)]);
    let r = read_tensors(&out);
    assert!(max_abs_diff(&d["s_pred"], &r["s_pred"]) < 1e-4, "S_pred vs transformers: {}", max_abs_diff(&d["s_pred"], &r["s_pred"]));
    assert!(max_abs_diff(&d["s_ema"], &r["s_ema"]) < 1e-4, "S_ema vs transformers: {}", max_abs_diff(&d["s_ema"], &r["s_ema"]));
    // r = S_pred − S_ema; A = G/(G−1)·(r − mean_g r).
    let reward = &r["s_pred"] - r["s_ema"].unsqueeze(1);
    assert!(max_abs_diff(&d["reward"], &reward) < 1e-4);
    let adv = (&reward - reward.mean_dim(1, true, Kind::Float)) * (g as f64 / (g as f64 - 1.0));
    assert!(max_abs_diff(&d["advantage"], &adv) < 1e-4);
    // One update per batch: the ratio is 1 up to cached-vs-full rounding, so the clipped
    // surrogate is −mean(A), which is 0 for group-centred advantages.
    assert!(d["loss"].double_value(&[]).abs() < 1e-4, "loss {}", d["loss"].double_value(&[]));
}

#[test]
fn resume_is_bit_identical() {
    let f = fixture();
    let whole = f.dir.join("resume-whole");
    let split = f.dir.join("resume-split");
    let extra = ["--set", "eval.every=0", "--set", "checkpoint.every=0", "--set", "optim.schedule=\"cosine\"", "--set", "optim.warmup_steps=2", "--set", "train.max_steps=6"];
    let mut a = train_args(f, &whole, "6");
    a.extend(extra);
    ok(&a);
    let mut b = train_args(f, &split, "3");
    b.extend(extra);
    ok(&b);
    let mut c = train_args(f, &split, "6");
    c.extend(extra);
    c.push("--resume");
    // Under another seed the checkpoint belongs to a different run: refused, nothing written.
    let mut other = c.clone();
    other.extend(["--set", "train.seed=7"]);
    fails_with(&other, "was written by a run with train.seed = 0, but this config has train.seed = 7");
    assert!(!split.join("checkpoints/step-00000004").exists());
    let out = ok(&c);
    assert!(String::from_utf8_lossy(&out.stderr).contains("resuming from"), "did not resume");
    for file in ["model/model.safetensors", "optimizer.safetensors", "ema.safetensors", "state.json"] {
        let x = std::fs::read(whole.join("checkpoints/step-00000006").join(file)).unwrap();
        let y = std::fs::read(split.join("checkpoints/step-00000006").join(file)).unwrap();
        assert!(x == y, "{file} differs between the uninterrupted and the resumed run");
    }
    // The checkpoint is a Hugging Face directory our loader (and transformers, see parity tests) reads.
    let lm = rlp_model::CausalLm::load(&split.join("checkpoints/step-00000006/model"), Kind::Float, Device::Cpu).unwrap();
    assert!(lm.vocab_size() > 0);
}

#[test]
fn every_preset_runs() {
    let f = fixture();
    for (i, (preset, extra)) in [
        ("rlp", vec!["thought.max_tokens=6", "rollout.group_size=4"]),
        ("quiet_star", vec!["thought.max_tokens=4", "positions.stride=4", "reward.n_true=2"]),
        ("rpt", vec!["thought.max_tokens=4", "thought.answer_tokens=3", "positions.threshold=0.0", "reward.n_true=3", "rollout.group_size=2"]),
        ("ntp", vec![]),
        // The RLP preset with the options that change the update: KL to the initial model,
        // the top-entropy token mask, two PPO updates per batch, std-normalised advantages,
        // entropy-selected positions, gradient accumulation over micro-batches, cosine schedule.
        (
            "rlp",
            vec![
                "loss.kl_coef=0.01", "loss.entropy_top_ratio=0.5", "loss.updates_per_batch=2", "advantage.std_normalize=true",
                "positions.strategy=\"entropy\"", "optim.schedule=\"cosine\"", "optim.warmup_steps=1", "thought.max_tokens=5",
                "loss.aggregation=\"seq_mean_token_sum_norm\"",
            ],
        ),
        // bfloat16 compute (float32 masters in the optimizer state) also works on CPU.
        ("rlp", vec!["model.dtype=\"bfloat16\"", "thought.max_tokens=4"]),
    ]
    .into_iter()
    .enumerate()
    {
        let run = f.dir.join(format!("preset-{i}-{preset}"));
        let mut sets = vec![format!("preset=\"{preset}\""), "eval.every=0".into(), "rollout.contexts_per_step=4".into(), "memory.micro_batch_tokens=64".into()];
        sets.extend(extra.iter().map(|e| e.to_string()));
        let mut args = train_args(f, &run, "2");
        for set in &sets {
            args.push("--set");
            args.push(Box::leak(set.clone().into_boxed_str()));
        }
        ok(&args);
        let m = metrics(&run);
        assert_eq!(m.len(), 2, "{preset}: expected 2 metric lines");
        assert!(m.iter().all(|l| l["loss/total"].as_f64().is_some_and(f64::is_finite)), "{preset}: {m:?}");
        assert!(run.join("checkpoints/step-00000002/state.json").is_file(), "{preset}: no final checkpoint");
        let resolved = std::fs::read_to_string(run.join("config.toml")).unwrap();
        assert!(resolved.contains(&format!("preset = \"{preset}\"")), "{preset}: resolved config not written");
        if extra.iter().any(|e| e.contains("kl_coef")) {
            assert!(m.iter().all(|l| l["loss/kl"].as_f64().is_some_and(|k| k >= 0.0)), "KL not logged: {m:?}");
        }
        if extra.iter().any(|e| e.contains("bfloat16")) {
            let opt = read_tensors(&run.join("checkpoints/step-00000002/optimizer.safetensors"));
            let master = opt.get("master.model.norm.weight").expect("float32 master weights in the optimizer state");
            assert_eq!(master.kind(), Kind::Float);
            let cfg: Value = serde_json::from_str(&std::fs::read_to_string(run.join("checkpoints/step-00000002/model/config.json")).unwrap()).unwrap();
            assert_eq!(cfg["dtype"], "bfloat16");
        }
    }
}

/// Ctrl-C: the run checkpoints the step it finished and exits cleanly.
#[test]
fn interrupt_checkpoints_and_exits() {
    let f = fixture();
    let run = f.dir.join("interrupt");
    let _ = std::fs::remove_dir_all(&run);
    let args = train_args(f, &run, "100000");
    let child = Command::new(env!("CARGO_BIN_EXE_rlp"))
        .args(&args)
        .args(["--set", "eval.every=0", "--set", "checkpoint.every=0"])
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while !run.join("metrics.jsonl").is_file() || std::fs::read_to_string(run.join("metrics.jsonl")).unwrap().lines().count() < 2 {
        assert!(std::time::Instant::now() < deadline, "training did not start");
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let status = Command::new("kill").args(["-INT", &child.id().to_string()]).status().unwrap();
    assert!(status.success());
    let out = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "interrupted run should exit 0: {err}");
    assert!(err.contains("interrupted after step"), "{err}");
    let ckpts: Vec<_> = std::fs::read_dir(run.join("checkpoints")).unwrap().filter_map(|e| e.ok()).filter(|e| e.path().join("state.json").is_file()).collect();
    assert_eq!(ckpts.len(), 1, "expected one checkpoint at the interrupted step");
}

#[test]
fn bad_configs_name_the_culprit() {
    let f = fixture();
    let run = f.dir.join("bad");
    let base_steps = |steps: &'static str, extra: &[&str]| {
        let mut a = train_args(f, &run, steps);
        a.extend(extra.iter().map(|x| Box::leak(x.to_string().into_boxed_str()) as &str));
        a
    };
    let base = |extra: &[&str]| base_steps("1", extra);
    fails_with(&base(&["--set", "loss.eps_lo=0.1"]), "unknown field `eps_lo`");
    fails_with(&base(&["--set", "loss.eps_lo=0.1"]), "loss.eps_lo");
    fails_with(&base(&["--set", "optim.lr=\"fast\""]), "optim.lr");
    fails_with(&base(&["--set", "preset=\"alphazero\""]), "unknown preset `alphazero`");
    fails_with(&base(&["--set", "rollout.micro_batch=3"]), "rollout.micro_batch was replaced by memory.micro_batch_tokens");
    fails_with(&base(&["--set", "model.device=\"tpu\""]), "unknown device `tpu`");
    fails_with(&base(&["--set", "data.max_context=5000"]), "exceeds the model's 2048 positions");
    fails_with(&["train", "--config", "/no/such.toml"], "/no/such.toml");
    fails_with(&["train", "--config", &config(), "--data", s(&f.data)], "no model: set model.path");
    fails_with(&["train", "--config", &config(), "--model", s(&f.model), "--data", "/no/data"], "/no/data");
    // NaN weights: a clear error, not a panic inside the sampler.
    let poisoned = f.dir.join("nan-model");
    std::fs::create_dir_all(&poisoned).unwrap();
    for e in std::fs::read_dir(&f.model).unwrap() {
        let p = e.unwrap().path();
        std::fs::copy(&p, poisoned.join(p.file_name().unwrap())).unwrap();
    }
    let weights = poisoned.join("model.safetensors");
    let mut t = Tensor::read_safetensors(&weights).unwrap();
    for (n, x) in t.iter_mut() {
        if n == "model.norm.weight" {
            *x = x.full_like(f64::NAN);
        }
    }
    Tensor::write_safetensors(&t, &weights).unwrap();
    fails_with(&["train", "--config", &config(), "--model", s(&poisoned), "--data", s(&f.data), "--run-dir", s(&run), "--set", "eval.every=0"], "not finite");
}

#[test]
fn data_prepare_reports_bad_input() {
    let f = fixture();
    let bad = f.dir.join("bad.jsonl");
    std::fs::write(&bad, "{\"text\": \"fine\"}\n{\"text\": nope}\n").unwrap();
    fails_with(&["data", "prepare", "--model", s(&f.model), "--output", s(&f.dir.join("bad-data")), s(&bad)], "bad.jsonl:2");
    let empty = f.dir.join("empty.jsonl");
    std::fs::write(&empty, "{\"text\": \"   \"}\n").unwrap();
    fails_with(&["data", "prepare", "--model", s(&f.model), "--output", s(&f.dir.join("empty-data")), s(&empty)], "empty");
}

/// The chunked scorer's gradient (logits per chunk, backward by recomputation into a detached
/// leaf, then one backward through the body; with and without activation checkpointing; rows
/// in micro-batches of any size) equals plain autograd through full `[rows, length, vocab]`
/// log-softmaxes. Only the thought tokens are in the loss, so it also shows nothing else
/// contributes.
#[test]
fn chunked_learn_gradient_equals_full_autograd() {
    use rlp_model::{learn_rows, LogProbOpts};
    use rlp_rollout::Thought;
    use rlp_trainer::positions::Context;
    use rlp_trainer::score::thought_rows;
    let f = fixture();
    let lm = rlp_model::CausalLm::load(&f.model, Kind::Float, Device::Cpu).unwrap();
    lm.set_requires_grad(true);
    let ctx = vec![
        Context { doc: 0, t: 5, ids: vec![5, 6, 7, 8, 9], targets: vec![10, 11] },
        Context { doc: 1, t: 3, ids: vec![12, 13, 14], targets: vec![15, 16] },
    ];
    let thought = |ids: Vec<i64>, actions: Vec<usize>| Thought { logprobs: vec![-1.0; actions.len()], ids, actions, closed: true, answer_len: 0 };
    let groups = vec![
        vec![thought(vec![1, 20, 21, 2], vec![1, 2, 3]), thought(vec![1, 22, 2], vec![1, 2])],
        vec![thought(vec![1, 23, 24, 25, 2], vec![1, 2, 3, 4]), thought(vec![1, 2], vec![1])],
    ];
    let tr = thought_rows(&ctx, &groups);
    let temperature = 0.7;
    // Per-cell weights that differ, so that a misplaced cell changes the gradient.
    let k = tr.action_at.iter().map(Vec::len).max().unwrap() as i64;
    let weight = Tensor::arange(tr.rows.len() as i64 * k, (Kind::Float, Device::Cpu)) * 0.1 + 0.5;
    let grads = |lm: &rlp_model::CausalLm| -> Vec<Tensor> { lm.weights().values().map(|w| w.grad().copy()).collect() };
    let zero = |lm: &rlp_model::CausalLm| {
        for w in lm.weights().values() {
            let mut g = w.grad();
            if g.defined() {
                let _ = g.zero_();
            }
        }
    };
    // Reference: every row alone, full logits, plain autograd.
    zero(&lm);
    for (r, row) in tr.rows.iter().enumerate() {
        let ids = Tensor::from_slice(row).unsqueeze(0);
        let pos = Tensor::arange(row.len() as i64, (Kind::Int64, Device::Cpu)).unsqueeze(0);
        let lp = (lm.logits(&lm.forward(&ids, &pos, None, None)).squeeze_dim(0) / temperature).log_softmax(-1, Kind::Float);
        let mut loss = Tensor::zeros([], (Kind::Float, Device::Cpu));
        for (j, &i) in tr.action_at[r].iter().enumerate() {
            loss = loss + lp.get(i as i64 - 1).get(row[i]) * weight.get(r as i64 * k + j as i64);
        }
        loss.backward();
    }
    let reference = grads(&lm);
    let norm: f64 = reference.iter().map(|g| g.abs().max().double_value(&[])).fold(0.0, f64::max);
    assert!(norm > 1e-3, "the reference gradient should not vanish ({norm})");
    // Micro-batches of 12 tokens split a group (its context then runs in each pass); 1 token puts
    // every row in its own pass.
    for (chunk, micro_tokens, checkpoint, shared) in
        [(1, 1, false, false), (3, 12, true, false), (0, 1 << 20, false, false), (2, 1 << 20, true, false), (0, 1, true, false), (0, 1 << 20, false, true), (2, 1 << 20, true, true), (1, 12, false, true), (0, 12, true, true)]
    {
        zero(&lm);
        let opts = LogProbOpts::new(temperature).chunked(chunk);
        let rows = if shared { tr.packed() } else { rlp_model::Rows::new(&tr.rows) };
        let _ = learn_rows(&lm, &rows, &tr.action_at, &opts, micro_tokens, checkpoint, &mut |cells, lp| (lp * weight.index_select(0, cells)).sum(Kind::Float));
        let diff = grads(&lm).iter().zip(&reference).map(|(a, b)| (a - b).abs().max().double_value(&[])).fold(0.0, f64::max);
        assert!(diff < 1e-5 * norm.max(1.0), "chunk {chunk}, micro-batch {micro_tokens} tokens, checkpointing {checkpoint}, shared contexts {shared}: gradients differ by {diff} (scale {norm})");
    }
}

/// Fixed thoughts, two paths: the trainer's chunked, padded scoring (S_pred, action log-probs;
/// rows in micro-batches of 7 tokens, logits in chunks of 3) and the policy loss from the reward crate, against one unpadded full forward per
/// row and the PPO-clip / seq-mean-token-mean arithmetic by hand in f64.
#[test]
fn fixed_thoughts_score_and_loss_by_two_paths() {
    use rlp_reward::{advantages, info_gain, policy_loss, AdvantageConfig, LossConfig};
    use rlp_rollout::Thought;
    use rlp_trainer::positions::Context;
    use rlp_trainer::config::MemorySection;
    use rlp_trainer::score::{action_logprobs, no_think_scores, score_thoughts, thought_rows};
    let f = fixture();
    let lm = rlp_model::CausalLm::load(&f.model, Kind::Float, Device::Cpu).unwrap();
    let contexts = vec![
        Context { doc: 0, t: 6, ids: vec![30, 31, 32, 33, 34, 35], targets: vec![36, 37] },
        Context { doc: 1, t: 3, ids: vec![40, 41, 42], targets: vec![43, 44] },
    ];
    // Behaviour log-probs far from the current ones so that the clip binds for some tokens.
    let th = |ids: Vec<i64>, closed: bool| {
        let n = if closed { ids.len() - 1 } else { ids.len() - 2 };
        Thought { logprobs: (0..n).map(|i| -2.0 - 1.5 * i as f32).collect(), actions: (1..=n).collect(), ids, closed, answer_len: 0 }
    };
    let (open, close) = (300, 301); // ids inside the vocabulary; their meaning does not matter here
    let thoughts = vec![
        vec![th(vec![open, 50, 51, close], true), th(vec![open, 52, close], false), th(vec![open, 53, 54, 55, close], true)],
        vec![th(vec![open, 56, close], true), th(vec![open, 57, 58, 59, 60, close], false), th(vec![open, 61, close], true)],
    ];
    let (b, g) = (2usize, 3usize);
    let temperature = 0.7;
    let tr = thought_rows(&contexts, &thoughts);
    let mem = MemorySection { micro_batch_tokens: 7, logit_chunk_tokens: 3, ..MemorySection::default() };
    let sc = score_thoughts(&lm, &tr, temperature, &mem);
    let logp = action_logprobs(&lm, &tr, temperature, &mem);
    let s_ema = no_think_scores(&lm, &contexts, &mem);
    let s_pred = sc.s_pred.view([b as i64, g as i64]);
    let reward = info_gain(&s_pred, &s_ema);
    let adv = advantages(&reward, &AdvantageConfig::default());
    let cfg = LossConfig { eps_low: 0.2, eps_high: 0.28, ..LossConfig::default() };
    let pl = policy_loss(&logp, &tr.old_logp, &adv.reshape([-1]), &sc.mask, &cfg, 8);

    // Second path: each row alone, unpadded, full forward; everything else by hand.
    let _g = tch::no_grad_guard();
    let logp_row = |row: &[i64], temp: f64| -> Vec<Vec<f64>> {
        let ids = Tensor::from_slice(row).unsqueeze(0);
        let pos = Tensor::arange(row.len() as i64, (Kind::Int64, Device::Cpu)).unsqueeze(0);
        let logits = lm.logits(&lm.forward(&ids, &pos, None, None)).squeeze_dim(0) / temp;
        let lp = logits.log_softmax(-1, Kind::Float);
        (0..row.len()).map(|p| Vec::<f64>::try_from(lp.get(p as i64).to_kind(Kind::Double)).unwrap()).collect()
    };
    let mut s_pred_hand = vec![0.0; b * g];
    let mut s_ema_hand = vec![0.0; b];
    let mut loss_hand = 0.0;
    for (bi, ctx) in contexts.iter().enumerate() {
        let mut row: Vec<i64> = ctx.ids.clone();
        row.extend(&ctx.targets);
        let lp = logp_row(&row, 1.0);
        s_ema_hand[bi] = (0..ctx.targets.len()).map(|s| lp[ctx.ids.len() + s - 1][ctx.targets[s] as usize]).sum();
        for (gi, t) in thoughts[bi].iter().enumerate() {
            let row: Vec<i64> = ctx.ids.iter().chain(&t.ids).chain(&ctx.targets).copied().collect();
            let lp1 = logp_row(&row, 1.0);
            let start = ctx.ids.len() + t.ids.len();
            s_pred_hand[bi * g + gi] = (0..ctx.targets.len()).map(|s| lp1[start + s - 1][ctx.targets[s] as usize]).sum();
        }
        let r: Vec<f64> = (0..g).map(|gi| s_pred_hand[bi * g + gi] - s_ema_hand[bi]).collect();
        let mean = r.iter().sum::<f64>() / g as f64;
        for (gi, t) in thoughts[bi].iter().enumerate() {
            let a = (r[gi] - mean) * g as f64 / (g as f64 - 1.0);
            let row: Vec<i64> = ctx.ids.iter().chain(&t.ids).chain(&ctx.targets).copied().collect();
            let lpt = logp_row(&row, temperature);
            let mut per_thought = 0.0;
            for (k, &i) in t.actions.iter().enumerate() {
                let p = ctx.ids.len() + i;
                let ratio = (lpt[p - 1][row[p] as usize] - t.logprobs[k] as f64).exp();
                per_thought += -(ratio * a).min(ratio.clamp(1.0 - 0.2, 1.0 + 0.28) * a);
            }
            loss_hand += per_thought / t.actions.len() as f64 / (b * g) as f64;
        }
    }
    let host = |t: &Tensor| Vec::<f64>::try_from(t.to_kind(Kind::Double).flatten(0, -1)).unwrap();
    for (x, y) in host(&s_pred).iter().zip(&s_pred_hand) {
        assert!((x - y).abs() < 1e-4, "S_pred {x} vs {y}");
    }
    for (x, y) in host(&s_ema).iter().zip(&s_ema_hand) {
        assert!((x - y).abs() < 1e-4, "S_ema {x} vs {y}");
    }
    let loss = pl.loss.double_value(&[]);
    assert!((loss - loss_hand).abs() < 1e-4 * loss_hand.abs().max(1.0), "loss {loss} vs by hand {loss_hand}");
    assert!(pl.clip_fraction > 0.0 && pl.clip_fraction < 1.0, "the clip should bind for some tokens: {}", pl.clip_fraction);
}

/// The memory knobs change how a step is computed, not what: rollouts in chunks of 4 rows,
/// forward/backward passes of 32 padded tokens, logits in chunks of 5 positions and activation
/// checkpointing give the same rewards, losses and weights as one pass each (float tolerance:
/// padding and chunk boundaries reorder sums; seen failing with the checkpointed backward's
/// embedding term removed, as was `chunked_learn_gradient_equals_full_autograd`).
#[test]
fn memory_knobs_do_not_change_the_step() {
    let f = fixture();
    let run = |name: &str, sets: &[&str]| -> PathBuf {
        let dir = f.dir.join(name);
        let mut args = train_args(f, &dir, "3");
        for s in ["rollout.contexts_per_step=4", "loss.kl_coef=0.01", "loss.nll_coef=0.5", "eval.every=0", "optim.lr=3e-3"].iter().chain(sets) {
            args.extend(["--set", s]);
        }
        ok(&args);
        dir
    };
    let whole = run("knobs-whole", &["memory.micro_batch_tokens=100000"]);
    let pieces = run("knobs-pieces", &["memory.rollout_rows=4", "memory.micro_batch_tokens=32", "memory.logit_chunk_tokens=5", "memory.activation_checkpointing=true"]);
    for key in ["reward/mean", "loss/total", "loss/kl", "loss/ntp", "thought/length"] {
        let series = |d: &Path| metrics(d).iter().filter_map(|m| m[key].as_f64()).collect::<Vec<_>>();
        let (a, b) = (series(&whole), series(&pieces));
        assert_eq!(a.len(), 3, "{key}");
        for (x, y) in a.iter().zip(&b) {
            assert!((x - y).abs() <= 1e-4 * x.abs().max(1.0), "{key}: {a:?} vs {b:?}");
        }
    }
    let weights = |d: &Path| read_tensors(&d.join("checkpoints/step-00000003/model/model.safetensors"));
    let (a, b) = (weights(&whole), weights(&pieces));
    let diff = a.iter().map(|(k, t)| max_abs_diff(t, &b[k])).fold(0.0, f64::max);
    assert!(diff < 1e-4, "weights differ by {diff}");
}

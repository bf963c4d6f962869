//! The thought bandit: the smallest world in which a thought alone decides the answer, run
//! through the whole trainer (`rlp train`: rollouts, scores, rewards, advantages, loss, AdamW)
//! for each reinforcement objective.
//!
//! Two questions, `+ =` and `- =`. The pretraining text always writes a one-token thought and then
//! copies it as the answer, `+ = <think> 5 </think> 5 .` or `+ = <think> 6 </think> 6 .`, each half
//! of the time, so the pretrained model thinks 5 or 6 with probability ≈ ½ and answers what it
//! thought. The RL text states the truth without a thought: `+ = 5 .` and `- = 6 .`. Only the
//! thought `5` after `+ =` (and `6` after `- =`) makes the true answer likely, so every objective
//! must drive π(helpful thought) from ≈ ½ to near 1. Seeds 0–4 all must; the tests fail when the
//! advantage's sign is flipped (checked by flipping it in `rlp_reward::advantages`: every
//! objective then drives π(helpful) towards 0).
mod common;

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use common::*;
use rlp_model::{CausalLm, Tokenizer};
use rlp_trainer::score::score_tokens;
use tch::{Device, Kind};

/// (question, helpful thought, unhelpful thought).
const QUESTIONS: [(&str, &str, &str); 2] = [("+ =", "5", "6"), ("- =", "6", "5")];
const SEEDS: [u64; 5] = [0, 1, 2, 3, 4];
/// RL steps every objective gets to pass 0.9.
const STEPS: usize = 30;

struct World {
    dir: PathBuf,
    plain: PathBuf,
    /// The pretrained model: thinks 5 or 6 at random, answers what it thought.
    model: PathBuf,
}

/// 0.5/0.5 from a fixed LCG, so the corpus is the same on every machine.
fn coin(state: &mut u64) -> bool {
    *state = state.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
    (*state >> 40) & 1 == 1
}

fn write_jsonl(path: &Path, docs: &[(String, Option<(usize, usize)>)]) {
    let mut out = String::new();
    for (text, span) in docs {
        let v = match span {
            Some(s) => serde_json::json!({"text": text, "answer_spans": [[s.0, s.1]]}),
            None => serde_json::json!({"text": text}),
        };
        out += &v.to_string();
        out.push('\n');
    }
    std::fs::write(path, out).unwrap();
}

fn world() -> &'static World {
    static W: OnceLock<World> = OnceLock::new();
    W.get_or_init(|| {
        let dir = scratch("bandit");
        // The demo world's word-level tokenizer has every word used here.
        ok(&["data", "synth", "--output", s(&dir.join("synth")), "--documents", "1", "--seed", "0"]);
        let init = dir.join("model-init");
        ok(&["init", "--tokenizer", s(&dir.join("synth/tokenizer")), "--output", s(&init), "--hidden", "32", "--layers", "2", "--heads", "2", "--kv-heads", "1", "--intermediate", "64", "--max-positions", "32", "--seed", "0"]);
        let mut state = 7u64;
        let mut pretrain = Vec::new();
        for i in 0..400 {
            let (q, helpful, other) = QUESTIONS[i % 2];
            let x = if coin(&mut state) { helpful } else { other };
            pretrain.push((format!("{q} <think> {x} </think> {x} ."), None));
        }
        let plain: Vec<_> = (0..64)
            .map(|i| {
                let (q, helpful, _) = QUESTIONS[i % 2];
                let text = format!("{q} {helpful} .");
                let start = q.len() + 1;
                (text, Some((start, start + helpful.len())))
            })
            .collect();
        write_jsonl(&dir.join("pretrain.jsonl"), &pretrain);
        write_jsonl(&dir.join("plain.jsonl"), &plain);
        for split in ["pretrain", "plain"] {
            ok(&["data", "prepare", "--model", s(&init), "--output", s(&dir.join(format!("data-{split}"))), s(&dir.join(format!("{split}.jsonl")))]);
        }
        let run = dir.join("pretrain");
        ok(&[
            "train", "--config", s(&config()), "--set", "preset=\"ntp\"", "--model", s(&init), "--data", s(&dir.join("data-pretrain")), "--run-dir", s(&run),
            "--max-steps", "600", "--set", "optim.lr=3e-3", "--set", "rollout.contexts_per_step=16", "--set", "rollout.micro_batch=16",
            "--set", "positions.min_context=1", "--set", "data.max_context=8", "--set", "eval.every=0", "--set", "checkpoint.every=0", "--set", "log.rollouts_every=0",
        ]);
        World { plain: dir.join("data-plain"), model: run.join("checkpoints/step-00000600/model"), dir }
    })
}

fn config() -> PathBuf {
    root().join("configs/cpu-small.toml")
}

/// Each objective's preset, pointed at the bandit: thoughts before the marked answer token, one
/// true token (two for Quiet-STaR's multi-token reward: the answer and the `.`), one sampled answer
/// token for RPT, and a learning rate the tiny model notices within [`STEPS`].
fn objective_args(objective: &str) -> Vec<String> {
    let common = [
        "positions.strategy=\"marked\"", "data.max_context=8", "positions.min_context=1", "positions.per_doc=1", "thought.max_tokens=3", "thought.temperature=1.0",
        "rollout.contexts_per_step=8", "rollout.micro_batch=8", "rollout.group_size=4", "optim.grad_clip=1.0", "optim.warmup_steps=0",
        "eval.every=0", "log.rollouts_every=0", "checkpoint.every=0",
    ];
    let own: &[&str] = match objective {
        "rlp" => &["optim.lr=3e-3", "ema.decay=0.9"],
        "quiet_star" => &["optim.lr=3e-3", "reward.n_true=2", "loss.nll_coef=0.0"],
        "rpt" => &["optim.lr=3e-3", "thought.answer_tokens=1", "thought.answer_format=\"raw\"", "optim.weight_decay=0.0"],
        other => panic!("unknown objective {other}"),
    };
    let mut args = vec![format!("preset=\"{objective}\"")];
    args.extend(common.iter().chain(own).map(|a| a.to_string()));
    args
}

/// Trains `objective` from the pretrained model; returns the run directory (the final model is
/// `checkpoints/step-N/model`). `extra`: more `--set` overrides.
fn train(objective: &str, seed: u64, steps: usize, extra: &[&str]) -> PathBuf {
    let w = world();
    let run = w.dir.join(format!("{objective}-seed{seed}-steps{steps}"));
    let _ = std::fs::remove_dir_all(&run);
    let mut args: Vec<String> = ["train", "--config", s(&config()), "--model", s(&w.model), "--data", s(&w.plain), "--run-dir", s(&run), "--dump-step", "1", "--max-steps"].iter().map(|a| a.to_string()).collect();
    args.push(steps.to_string());
    for a in objective_args(objective).iter().map(String::as_str).chain([format!("train.seed={seed}").as_str()]).chain(extra.iter().copied()) {
        args.push("--set".into());
        args.push(a.to_string());
    }
    ok(&args.iter().map(String::as_str).collect::<Vec<_>>());
    run
}

fn final_model(run: &Path) -> PathBuf {
    let mut steps: Vec<PathBuf> = std::fs::read_dir(run.join("checkpoints")).unwrap().map(|e| e.unwrap().path()).collect();
    steps.sort();
    steps.last().expect("a final checkpoint").join("model")
}

/// log π(thought tokens | question <think>) at temperature `t`, for each thought given as text.
fn thought_logprobs(model: &Path, question: &str, thoughts: &[&str], t: f64) -> Vec<f64> {
    let lm = CausalLm::load(model, Kind::Float, Device::Cpu).unwrap();
    let tok = Tokenizer::from_dir(model).unwrap();
    let prompt = tok.encode(&format!("{question} <think>")).unwrap();
    let rows: Vec<Vec<i64>> = thoughts.iter().map(|th| prompt.iter().copied().chain(tok.encode(th).unwrap()).collect()).collect();
    let at: Vec<Vec<usize>> = rows.iter().map(|r| (prompt.len()..r.len()).collect()).collect();
    let _g = tch::no_grad_guard();
    let lp = score_tokens(&lm, &rows, &at, t, false).logp.sum_dim_intlist(-1, false, Kind::Float);
    Vec::<f64>::try_from(lp.to_kind(Kind::Double)).unwrap()
}

/// π(helpful thought) for each question, at temperature 1.
fn p_helpful(model: &Path) -> Vec<f64> {
    QUESTIONS.iter().map(|(q, helpful, _)| thought_logprobs(model, q, &[helpful], 1.0)[0].exp()).collect()
}

#[test]
fn the_pretrained_model_starts_near_even_odds() {
    let p = p_helpful(&world().model);
    assert!(p.iter().all(|&p| (0.3..=0.7).contains(&p)), "π(helpful thought) should start near ½: {p:?}");
}

fn learns_the_helpful_thought(objective: &str) {
    let mut report = Vec::new();
    for seed in SEEDS {
        let p = p_helpful(&final_model(&train(objective, seed, STEPS, &[])));
        report.push((seed, p.clone()));
    }
    let failed: Vec<_> = report.iter().filter(|(_, p)| p.iter().any(|&p| p <= 0.9)).collect();
    assert!(failed.is_empty(), "{objective}: π(helpful thought) after {STEPS} steps must exceed 0.9 on every seed; per seed [+, -]: {report:?}");
}

#[test]
fn rlp_learns_the_helpful_thought_on_five_seeds() {
    learns_the_helpful_thought("rlp");
}

#[test]
fn quiet_star_learns_the_helpful_thought_on_five_seeds() {
    learns_the_helpful_thought("quiet_star");
}

#[test]
fn rpt_learns_the_helpful_thought_on_five_seeds() {
    learns_the_helpful_thought("rpt");
}

/// One step: among the thoughts of each context, the update raises log π of the one with the
/// highest advantage and lowers that of the one with the lowest (both measured at the sampling
/// temperature, before and after the step, from the step's dump).
#[test]
fn one_update_raises_the_best_thought_and_lowers_the_worst() {
    let w = world();
    for objective in ["rlp", "quiet_star", "rpt"] {
        let run = train(objective, 0, 1, &[]);
        let after = final_model(&run);
        let d = read_tensors(&run.join("dumps/step-1.safetensors"));
        let adv = &d["advantage"];
        let (b, g) = (adv.size()[0], adv.size()[1]);
        let (thought_ids, thought_len, context_ids, context_len) = (&d["thought_ids"], &d["thought_len"], &d["context_ids"], &d["context_len"]);
        let tok = Tokenizer::from_dir(&w.model).unwrap();
        let mut checked = 0;
        for i in 0..b {
            let a: Vec<f64> = Vec::try_from(adv.get(i).to_kind(Kind::Double)).unwrap();
            let (hi, lo) = (argmax(&a), argmax(&a.iter().map(|x| -x).collect::<Vec<_>>()));
            if a[hi] - a[lo] < 1e-6 {
                continue; // every thought equally good: nothing to push
            }
            let ctx_len = context_len.int64_value(&[i]);
            let question = tok.decode(&ids_of(&context_ids.get(i).narrow(0, 0, ctx_len))).unwrap();
            // The sampled tokens between the delimiters (RPT's answer token after them is an
            // action too, but the thought is what the bandit is about).
            let inner = |j: usize| {
                let len = thought_len.int64_value(&[i, j as i64]);
                let ids = ids_of(&thought_ids.get(i).get(j as i64).narrow(0, 0, len));
                let close = ids.iter().position(|&t| tok.decode(&[t]).unwrap() == "</think>").unwrap_or(ids.len());
                tok.decode(&ids[1..close]).unwrap()
            };
            let (best, worst) = (inner(hi), inner(lo));
            if best == worst || best.is_empty() || worst.is_empty() {
                continue;
            }
            let before = thought_logprobs(&w.model, &question, &[&best, &worst], 1.0);
            let later = thought_logprobs(&after, &question, &[&best, &worst], 1.0);
            assert!(later[0] > before[0], "{objective}, context {i} `{question}`: log π of the best thought `{best}` (A = {:.3}) fell: {:.4} -> {:.4}", a[hi], before[0], later[0]);
            assert!(later[1] < before[1], "{objective}, context {i} `{question}`: log π of the worst thought `{worst}` (A = {:.3}) rose: {:.4} -> {:.4}", a[lo], before[1], later[1]);
            checked += 1;
        }
        assert!(checked > 0, "{objective}: no context had thoughts of different advantage");
    }
}

fn argmax(v: &[f64]) -> usize {
    v.iter().enumerate().max_by(|a, b| a.1.total_cmp(b.1)).map(|(i, _)| i).unwrap()
}

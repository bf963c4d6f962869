//! The thought bandit: the smallest world in which a thought alone decides the answer, run
//! through the whole trainer (`rlp train`: rollouts, scores, rewards, advantages, loss, AdamW)
//! for each reinforcement objective.
//!
//! One question, `+ =`, whose true answer is `5`. The pretraining text always thinks one token
//! and then answers by a code: `+ = <think> 1 </think> 5 .` or `+ = <think> 2 </think> 6 .`, each
//! half of the time. So the pretrained model thinks `1` or `2` with probability ≈ ½, and only the
//! thought `1` makes the true answer likely (p(5 | 1) ≈ 1, p(5 | 2) ≈ 0). The RL text states the
//! truth without a thought (`+ = 5 .`), so every objective must drive π(helpful thought) from ≈ ½
//! to near 1. Seeds 0–4 all must. The model has untied input and output embeddings, and AdamW runs
//! with ε = 1e-2, which makes its step proportional to the gradient for the many parameters whose
//! gradient is tiny: with the default ε = 1e-8 AdamW's per-coordinate normalisation bends the
//! update of this 90k-parameter model so far from the policy gradient that mass leaks to thoughts
//! never rewarded (`</think>`, `.`) and the answer predictor is unlearned (measured in
//! docs/rl-diagnosis.md). The tests fail when the advantage's sign is flipped in
//! `rlp_reward::advantages` (every objective then drives π(helpful) towards 0).
mod common;

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use common::*;
use rlp_model::{CausalLm, Tokenizer};
use tch::{Device, Kind};

/// The question, its answer, and its helpful and unhelpful thought. The pretraining text answers
/// 5 after the thought `1` and 6 after `2` (a code, not a copy: with a copied answer, raising
/// π(`5` | thought position) would also teach the answer position to say 5 whatever the thought,
/// and the thought would stop mattering).
const QUESTION: &str = "+ =";
const ANSWER: &str = "5";
const HELPFUL: &str = "1";
const UNHELPFUL: &str = "2";
const ANSWER_OF: [(&str, &str); 2] = [(HELPFUL, ANSWER), (UNHELPFUL, "6")];
const SEEDS: [u64; 5] = [0, 1, 2, 3, 4];
/// RL steps every objective gets to pass 0.9.
const STEPS: usize = 30;

struct World {
    dir: PathBuf,
    plain: PathBuf,
    /// The pretrained model: thinks `1` or `2` at random, answers by the code.
    model: PathBuf,
}

/// True with probability `p`, from a fixed LCG, so the corpus is the same on every machine.
fn coin(state: &mut u64, p: f64) -> bool {
    *state = state.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
    ((*state >> 11) as f64 / (1u64 << 53) as f64) < p
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
        ok(&["init", "--tokenizer", s(&dir.join("synth/tokenizer")), "--output", s(&init), "--hidden", "64", "--layers", "2", "--heads", "4", "--kv-heads", "2", "--intermediate", "128", "--max-positions", "32", "--seed", "0", "--untied-embeddings"]);
        let mut state = 7u64;
        let pretrain: Vec<_> = (0..400)
            .map(|_| {
                let (thought, answer) = ANSWER_OF[coin(&mut state, 0.5) as usize];
                (format!("{QUESTION} <think> {thought} </think> {answer} ."), None)
            })
            .collect();
        let start = QUESTION.len() + 1;
        let plain = vec![(format!("{QUESTION} {ANSWER} ."), Some((start, start + ANSWER.len()))); 64];
        write_jsonl(&dir.join("pretrain.jsonl"), &pretrain);
        write_jsonl(&dir.join("plain.jsonl"), &plain);
        for split in ["pretrain", "plain"] {
            ok(&["data", "prepare", "--model", s(&init), "--output", s(&dir.join(format!("data-{split}"))), s(&dir.join(format!("{split}.jsonl")))]);
        }
        let run = dir.join("pretrain");
        ok(&[
            "train", "--config", s(&config()), "--set", "preset=\"ntp\"", "--model", s(&init), "--data", s(&dir.join("data-pretrain")), "--run-dir", s(&run),
            "--max-steps", "600", "--set", "optim.lr=1e-3", "--set", "optim.warmup_steps=100", "--set", "rollout.contexts_per_step=64",
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
/// token for RPT, and an AdamW whose step follows the gradient (ε = 1e-2, see the header) at a
/// learning rate the tiny model notices within [`STEPS`].
fn objective_args(objective: &str) -> Vec<String> {
    let common = [
        "positions.strategy=\"marked\"", "data.max_context=8", "positions.min_context=1", "positions.per_doc=1", "thought.max_tokens=1", "thought.temperature=1.0",
        "rollout.contexts_per_step=8", "rollout.group_size=4", "optim.grad_clip=1.0", "optim.warmup_steps=0", "optim.lr=1e-3", "optim.eps=1e-2",
        "eval.every=0", "log.rollouts_every=0", "checkpoint.every=0",
    ];
    let own: &[&str] = match objective {
        "rlp" => &[],
        "quiet_star" => &["reward.n_true=2", "loss.nll_coef=0.0"],
        "rpt" => &["thought.answer_tokens=1", "thought.answer_format=\"raw\"", "optim.weight_decay=0.0"],
        other => panic!("unknown objective {other}"),
    };
    let mut args = vec![format!("preset=\"{objective}\"")];
    args.extend(common.iter().chain(own).map(|a| a.to_string()));
    args
}

/// Trains `objective` from the pretrained model for `steps` steps; returns the run directory.
fn train(objective: &str, seed: u64, steps: usize) -> PathBuf {
    let w = world();
    let run = w.dir.join(format!("{objective}-seed{seed}-steps{steps}"));
    let _ = std::fs::remove_dir_all(&run);
    let mut args: Vec<String> = ["train", "--config", s(&config()), "--model", s(&w.model), "--data", s(&w.plain), "--run-dir", s(&run), "--dump-step", "1", "--max-steps"].iter().map(|a| a.to_string()).collect();
    args.push(steps.to_string());
    for a in objective_args(objective).iter().map(String::as_str).chain([format!("train.seed={seed}").as_str()]) {
        args.push("--set".into());
        args.push(a.to_string());
    }
    ok(&args.iter().map(String::as_str).collect::<Vec<_>>());
    run
}

/// The model a run of `steps` steps wrote at its end.
fn final_model(run: &Path, steps: usize) -> PathBuf {
    run.join(format!("checkpoints/step-{steps:08}/model"))
}

/// For every one-token thought c of the vocabulary: (log π(c | question <think>),
/// p(answer | question <think> c </think>)), indexed by token id, at temperature 1.
fn thought_table(model: &Path) -> Vec<(f64, f64)> {
    let lm = CausalLm::load(model, Kind::Float, Device::Cpu).unwrap();
    let tok = Tokenizer::from_dir(model).unwrap();
    let prompt = tok.encode(&format!("{QUESTION} <think>")).unwrap();
    let (close, answer) = (tok.encode("</think>").unwrap()[0], tok.encode(ANSWER).unwrap()[0]);
    // Sampling the closing delimiter first is the empty thought `<think> </think>`.
    let thought = |c: i64| if c == close { vec![close] } else { vec![c, close] };
    let rows: Vec<Vec<i64>> = (0..lm.vocab_size()).map(|c| prompt.iter().copied().chain(thought(c)).chain([answer]).collect()).collect();
    let at: Vec<Vec<usize>> = rows.iter().map(|r| vec![prompt.len(), r.len() - 1]).collect();
    let _g = tch::no_grad_guard();
    let s = rlp_model::score_rows(&lm, &rlp_model::Rows::new(&rows), &[rlp_model::Positions { at: &at, opts: rlp_model::LogProbOpts::new(1.0) }], 1 << 16).remove(0);
    let lp = Vec::<f64>::try_from(s.logp.to_kind(Kind::Double).flatten(0, -1)).unwrap();
    lp.chunks(2).map(|c| (c[0], c[1].exp())).collect()
}

/// π(helpful thoughts): the policy's mass on the thoughts after which the true answer is likely
/// (p > ½). Mostly the thought `1`, but the update also moves the answer predictor, and a run may
/// find another thought that serves as well; what is rewarded is the answer, so that counts too.
fn p_helpful(model: &Path) -> f64 {
    thought_table(model).iter().filter(|(_, p)| *p > 0.5).map(|(lp, _)| lp.exp()).sum()
}

#[test]
fn the_pretrained_model_starts_near_even_odds() {
    let model = &world().model;
    let tok = Tokenizer::from_dir(model).unwrap();
    let table = thought_table(model);
    let (good, bad) = (&table[tok.encode(HELPFUL).unwrap()[0] as usize], &table[tok.encode(UNHELPFUL).unwrap()[0] as usize]);
    assert!(good.1 > 0.9 && bad.1 < 0.1, "the pretrained model should answer {ANSWER} after `{HELPFUL}` only: p = {} / {}", good.1, bad.1);
    let p = p_helpful(model);
    assert!((0.3..=0.7).contains(&p), "π(helpful thoughts) should start near ½: {p}");
}

fn learns_the_helpful_thought(objective: &str) {
    let report: Vec<(u64, f64)> = SEEDS.iter().map(|&seed| (seed, p_helpful(&final_model(&train(objective, seed, STEPS), STEPS)))).collect();
    assert!(report.iter().all(|&(_, p)| p > 0.9), "{objective}: π(helpful thought) after {STEPS} steps must exceed 0.9 on every seed; (seed, π): {report:?}");
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

/// One step: among the thoughts of each context, the one with the highest reward gets the highest
/// advantage, and the update raises its log π and lowers that of the lowest-reward thought (at
/// temperature 1, before and after the step, read from the step's dump). Ranking by reward, not by
/// the dumped advantage, makes a sign error in the advantage fail here too.
#[test]
fn one_update_raises_the_best_thought_and_lowers_the_worst() {
    let before = thought_table(&world().model);
    for objective in ["rlp", "quiet_star", "rpt"] {
        let run = train(objective, 0, 1);
        let after = thought_table(&final_model(&run, 1));
        let d = read_tensors(&run.join("dumps/step-1.safetensors"));
        let mut checked = 0;
        for i in 0..d["reward"].size()[0] {
            let row = |key: &str| Vec::<f64>::try_from(d[key].get(i).to_kind(Kind::Double)).unwrap();
            let (r, a) = (row("reward"), row("advantage"));
            let (hi, lo) = (argmax(&r), argmax(&r.iter().map(|x| -x).collect::<Vec<_>>()));
            // The one sampled token after `<think>` (RPT's answer token comes after `</think>`).
            let thought = |j: usize| d["thought_ids"].int64_value(&[i, j as i64, 1]) as usize;
            let (best, worst) = (thought(hi), thought(lo));
            if r[hi] - r[lo] < 1e-6 || best == worst {
                continue; // every thought equally good: nothing to push
            }
            assert!(a[hi] > a[lo], "{objective}, context {i}: the best thought's advantage {:.3} is not above the worst's {:.3}", a[hi], a[lo]);
            let (lp0, lp1) = ((before[best].0, before[worst].0), (after[best].0, after[worst].0));
            assert!(lp1.0 > lp0.0, "{objective}, context {i}: log π of the best thought (token {best}, r = {:.3}, A = {:.3}) fell: {:.4} -> {:.4}", r[hi], a[hi], lp0.0, lp1.0);
            assert!(lp1.1 < lp0.1, "{objective}, context {i}: log π of the worst thought (token {worst}, r = {:.3}, A = {:.3}) rose: {:.4} -> {:.4}", r[lo], a[lo], lp0.1, lp1.1);
            checked += 1;
        }
        assert!(checked > 0, "{objective}: no context had thoughts of different reward");
    }
}

fn argmax(v: &[f64]) -> usize {
    v.iter().enumerate().max_by(|a, b| a.1.total_cmp(b.1)).map(|(i, _)| i).unwrap()
}

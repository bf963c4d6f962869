//! The models against `transformers` on random-weight checkpoints of every architecture,
//! stored in float32 and bfloat16, with tied and untied embeddings.
mod common;

use common::*;
use rlp_model::{token_logprobs, CausalLm, PaddedBatch, Padding, Tokenizer};
use rlp_rollout::{generate, SamplingParams};
use tch::{Device, Kind, Tensor};

const LOGIT_TOL: f64 = 1e-4;

fn load(case: &str) -> (CausalLm, Tokenizer, std::collections::HashMap<String, Tensor>) {
    let dir = tiny_models().join(case);
    let lm = CausalLm::load(&dir, Kind::Float, Device::Cpu).unwrap_or_else(|e| panic!("{case}: {e:#}"));
    let tok = Tokenizer::from_dir(&dir).unwrap();
    (lm, tok, read_tensors(&dir.join("reference.safetensors")))
}

/// Logits `[T, V]` of one unpadded row, no cache.
fn logits(lm: &CausalLm, ids: &[i64]) -> Tensor {
    let _g = tch::no_grad_guard();
    let b = PaddedBatch::new(&[ids.to_vec()], 0, Padding::Right, Device::Cpu);
    lm.logits(&lm.forward(&b.ids, &b.positions, None, None)).squeeze_dim(0)
}

#[test]
fn float32_logits_match_transformers() {
    for case in CASES {
        let (lm, _, r) = load(case);
        for row in ["a", "b"] {
            let d = max_abs_diff(&logits(&lm, &ids_of(&r[&format!("ids_{row}")])), &r[&format!("logits_{row}")]);
            assert!(d <= LOGIT_TOL, "{case} row {row}: max |logits - transformers| = {d:e}");
        }
    }
}

#[test]
fn sharded_checkpoint_loads() {
    let dir = tiny_models().join("qwen3-f32-tied-sharded");
    assert!(dir.join("model.safetensors.index.json").is_file(), "fixture is not sharded");
    let lm = CausalLm::load(&dir, Kind::Float, Device::Cpu).unwrap();
    let r = read_tensors(&tiny_models().join("qwen3-f32-tied/reference.safetensors"));
    let d = max_abs_diff(&logits(&lm, &ids_of(&r["ids_a"])), &r["logits_a"]);
    assert!(d <= LOGIT_TOL, "sharded: {d:e}");
}

#[test]
fn greedy_continuation_matches_transformers() {
    for case in CASES {
        let (lm, _, r) = load(case);
        let params = SamplingParams { temperature: 0.0, max_new_tokens: 32, ..Default::default() };
        let g = generate(&lm, &[ids_of(&r["ids_a"])], &params).unwrap();
        assert_eq!(g[0].tokens, ids_of(&r["greedy_a"]), "{case}: greedy continuation differs from transformers");
    }
}

#[test]
fn cached_decoding_equals_full_forward() {
    let _g = tch::no_grad_guard();
    for case in CASES {
        let (lm, _, r) = load(case);
        let ids = ids_of(&r["ids_a"]);
        let full = logits(&lm, &ids);
        let mut cache = lm.new_cache(4); // small on purpose: exercises growth
        let prefix = 10;
        let t = Tensor::from_slice(&ids).unsqueeze(0);
        let pos = Tensor::arange(ids.len() as i64, (Kind::Int64, Device::Cpu)).unsqueeze(0);
        let mut steps = vec![lm.logits(&lm.forward(&t.narrow(1, 0, prefix), &pos.narrow(1, 0, prefix), None, Some(&mut cache)))];
        // Then a 3-token chunk (cache prefix + several new queries), then one token at a time.
        steps.push(lm.logits(&lm.forward(&t.narrow(1, prefix, 3), &pos.narrow(1, prefix, 3), None, Some(&mut cache))));
        for i in prefix + 3..ids.len() as i64 {
            steps.push(lm.logits(&lm.forward(&t.narrow(1, i, 1), &pos.narrow(1, i, 1), None, Some(&mut cache))));
        }
        let cached = Tensor::cat(&steps, 1).squeeze_dim(0);
        let d = max_abs_diff(&cached, &full);
        assert!(d <= 1e-5, "{case}: cached vs full forward differ by {d:e}");
    }
}

#[test]
fn padded_batches_equal_unpadded_rows() {
    let _g = tch::no_grad_guard();
    for case in CASES {
        let (lm, _, r) = load(case);
        let (a, b) = (ids_of(&r["ids_a"]), ids_of(&r["ids_b"]));
        for padding in [Padding::Left, Padding::Right] {
            let batch = PaddedBatch::new(&[a.clone(), b.clone()], 0, padding, Device::Cpu);
            let out = lm.logits(&lm.forward(&batch.ids, &batch.positions, batch.key_valid(), None));
            let start = if padding == Padding::Left { (a.len() - b.len()) as i64 } else { 0 };
            let row_b = out.get(1).narrow(0, start, b.len() as i64);
            let d = max_abs_diff(&row_b, &r["logits_b"]);
            assert!(d <= LOGIT_TOL, "{case} {padding:?}-padded row vs transformers: {d:e}");
            let d = max_abs_diff(&out.get(0), &r["logits_a"]);
            assert!(d <= LOGIT_TOL, "{case} {padding:?}-padded full row vs transformers: {d:e}");
        }
        // Scoring batched equals scoring alone.
        let together = token_logprobs(&lm, &[a.clone(), b.clone()], usize::MAX).unwrap();
        let alone = token_logprobs(&lm, &[b.clone()], usize::MAX).unwrap();
        assert_eq!(together[1].len(), b.len() - 1);
        for (x, y) in together[1].iter().zip(&alone[0]) {
            assert!((x - y).abs() <= 1e-5, "{case}: batched score {x} vs alone {y}");
        }
        // Greedy generation with a padded batch equals each row alone.
        let params = SamplingParams { temperature: 0.0, max_new_tokens: 8, ..Default::default() };
        let both = generate(&lm, &[a.clone(), b.clone()], &params).unwrap();
        let only_b = generate(&lm, &[b.clone()], &params).unwrap();
        assert_eq!(both[1].tokens, only_b[0].tokens, "{case}: padded greedy differs");
    }
}

#[test]
fn scores_are_log_softmax_of_transformers_logits() {
    let (lm, _, r) = load("qwen3-f32-tied");
    let ids = ids_of(&r["ids_a"]);
    let lp = token_logprobs(&lm, &[ids.clone()], usize::MAX).unwrap().remove(0);
    let expected = r["logits_a"].log_softmax(-1, Kind::Float);
    for i in 0..ids.len() - 1 {
        let want = expected.double_value(&[i as i64, ids[i + 1]]);
        assert!((lp[i] as f64 - want).abs() <= 1e-4, "position {i}: {} vs {want}", lp[i]);
    }
}

#[test]
fn tokenizer_matches_transformers() {
    for case in CASES {
        let (_, tok, r) = load(case);
        let ids = tok.encode("<think>47 + 38</think> = 85. The fox.").unwrap();
        assert_eq!(ids, ids_of(&r["probe_ids"]), "{case}: tokenization differs");
    }
}

#[test]
fn bfloat16_compute_tracks_float32() {
    for case in ["qwen3-bf16-untied", "llama-bf16-tied", "gpt2-bf16-untied"] {
        let dir = tiny_models().join(case);
        let lm = CausalLm::load(&dir, Kind::BFloat16, Device::Cpu).unwrap();
        assert!(lm.weights().values().all(|w| w.kind() == Kind::BFloat16), "{case}: compute dtype not kept");
        let r = read_tensors(&dir.join("reference.safetensors"));
        let ours = logits(&lm, &ids_of(&r["ids_a"])).to_kind(Kind::Float);
        let want = &r["logits_a"];
        let agree = ours.argmax(-1, false).eq_tensor(&want.argmax(-1, false)).to_kind(Kind::Float).mean(Kind::Float).double_value(&[]);
        let rel = (&ours - want).abs().mean(Kind::Float).double_value(&[]) / want.abs().mean(Kind::Float).double_value(&[]);
        assert!(agree >= 0.8 && rel < 0.05, "{case}: bf16 argmax agreement {agree}, mean relative error {rel}");
    }
}

/// Rust adds the thought delimiters (growing the vocabulary where needed) and saves; transformers
/// loads the result and must give the same logits and tokenization as Rust reloading it.
#[test]
fn saved_checkpoints_reload_in_transformers() {
    let root = tiny_models();
    let mut expected = Vec::new();
    for case in CASES {
        let dir = root.join(case);
        let mut lm = CausalLm::load(&dir, Kind::Float, Device::Cpu).unwrap();
        let mut tok = Tokenizer::from_dir(&dir).unwrap();
        let rows_before = lm.vocab_size();
        let think = lm.add_special_tokens(&mut tok, &["<think>", "</think>"]).unwrap();
        assert!(lm.vocab_size() > think[1], "{case}: embedding does not cover the new tokens");
        if case.starts_with("gpt2") {
            assert_eq!(lm.vocab_size(), rows_before, "{case}: spare rows should absorb the new tokens");
        }
        let saved = dir.join("saved");
        if *case == "qwen2-f32-untied" {
            lm.save_sharded(&saved, &tok, None, 16 << 10).unwrap();
            assert!(saved.join("model.safetensors.index.json").is_file(), "{case}: expected a sharded save");
        } else {
            lm.save(&saved, &tok, None).unwrap();
        }
        // The new token rows are the mean embedding row.
        let again = CausalLm::load(&saved, Kind::Float, Device::Cpu).unwrap();
        let embed_name = if case.starts_with("gpt2") { "transformer.wte.weight" } else { "model.embed_tokens.weight" };
        let e = &again.weights()[embed_name];
        if rows_before <= think[0] {
            let mean = e.narrow(0, 0, rows_before).mean_dim(0, false, Kind::Float);
            assert!(max_abs_diff(&e.get(think[0]), &mean) < 1e-2, "{case}: new row is not the mean row");
        }
        let mut ids = ids_of(&read_tensors(&dir.join("reference.safetensors"))["ids_a"]);
        ids.extend(&think);
        Tensor::write_safetensors(&[("ids", Tensor::from_slice(&ids))], dir.join("saved_input.safetensors")).unwrap();
        let tok_again = Tokenizer::from_dir(&saved).unwrap();
        let probe = tok_again.encode("<think>47 + 38</think> = 85. The fox.").unwrap();
        assert!(probe.contains(&think[0]) && probe.contains(&think[1]), "{case}: delimiters not single tokens: {probe:?}");
        expected.push((case, logits(&again, &ids), probe, again.vocab_size()));
    }
    run_python("tiny_models.py", &["verify-saved", root.to_str().unwrap()]);
    for (case, ours, probe, vocab) in expected {
        let r = read_tensors(&root.join(case).join("saved_reference.safetensors"));
        let d = max_abs_diff(&ours, &r["logits"]);
        assert!(d <= LOGIT_TOL, "{case}: saved checkpoint logits in transformers differ by {d:e}");
        assert_eq!(probe, ids_of(&r["probe_ids"]), "{case}: saved tokenizer differs in transformers");
        assert_eq!(vocab, ids_of(&r["vocab_size"])[0], "{case}: vocab size differs");
    }
}

//! Held-out evaluation: next-token NLL and accuracy at fixed positions, without a thought and
//! with a greedy thought, side by side: does thinking help predict what comes next?
use std::collections::BTreeMap;

use anyhow::Result;
use rlp_model::{score_rows, CausalLm, Positions, Rows};
use rlp_rollout::{sample_thoughts, Delimiters, SamplingParams};
use tch::{Kind, Tensor};

use crate::config::MemorySection;
use crate::positions::Context;
use crate::score::{no_think_rows, thought_rows};

/// Σ log-prob and Σ hits of the `at` tokens of `rows`.
fn score(lm: &CausalLm, rows: &[Vec<i64>], at: &[Vec<usize>], mem: &MemorySection) -> (f64, f64) {
    let s = score_rows(lm, &Rows::new(rows), &[Positions { at, opts: mem.opts(1.0).with_argmax() }], mem.micro_batch_tokens).remove(0);
    let both = Tensor::stack(&[s.logp.sum(Kind::Double), s.hit.sum(Kind::Double)], 0);
    (both.double_value(&[0]), both.double_value(&[1]))
}

pub struct EvalOptions {
    pub with_thought: bool,
    pub max_thought_tokens: usize,
    /// Contexts per greedy-thought generation batch.
    pub batch: usize,
    pub memory: MemorySection,
}

/// `eval/nll_no_think`, `eval/acc_no_think` and, with thoughts, `eval/nll_think`,
/// `eval/acc_think`, `eval/thought_length` over the first target of each context.
pub fn evaluate(lm: &CausalLm, delims: Delimiters, contexts: &[Context], opts: &EvalOptions) -> Result<BTreeMap<String, f64>> {
    let _g = tch::no_grad_guard();
    let firsts: Vec<Context> = contexts.iter().map(|c| Context { targets: c.targets[..1].to_vec(), ..c.clone() }).collect();
    let (mut nll0, mut acc0, mut nll1, mut acc1, mut len1) = (0.0, 0.0, 0.0, 0.0, 0.0);
    for chunk in firsts.chunks(opts.batch.max(1)) {
        let (rows, at) = no_think_rows(chunk);
        let (logp, hit) = score(lm, &rows, &at, &opts.memory);
        (nll0, acc0) = (nll0 - logp, acc0 + hit);
        if opts.with_thought {
            let greedy = SamplingParams { temperature: 0.0, max_new_tokens: opts.max_thought_tokens, ..Default::default() };
            let ids: Vec<Vec<i64>> = chunk.iter().map(|c| c.ids.clone()).collect();
            let thoughts = sample_thoughts(lm, &ids, delims, 1, &greedy)?;
            len1 += thoughts.iter().flatten().map(|t| t.inner().len() as f64).sum::<f64>();
            let tr = thought_rows(chunk, &thoughts);
            let (logp, hit) = score(lm, &tr.rows, &tr.target_at, &opts.memory);
            (nll1, acc1) = (nll1 - logp, acc1 + hit);
        }
    }
    let n = firsts.len().max(1) as f64;
    let mut m = BTreeMap::new();
    m.insert("eval/nll_no_think".to_string(), nll0 / n);
    m.insert("eval/acc_no_think".to_string(), acc0 / n);
    if opts.with_thought {
        m.insert("eval/nll_think".to_string(), nll1 / n);
        m.insert("eval/acc_think".to_string(), acc1 / n);
        m.insert("eval/thought_length".to_string(), len1 / n);
    }
    Ok(m)
}

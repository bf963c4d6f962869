//! RPT's answer rewards (arXiv 2506.08007 §3.3, App. A): the answer after the thought is compared
//! with the bytes of the true continuation, so no re-tokenisation of the prediction is needed.
use anyhow::Result;
use rlp_model::{score_rows, CausalLm, Positions, Rows, Tokenizer};
use rlp_reward::{extract_answer, prefix_match_reward, RewardKind};
use rlp_rollout::Thought;
use tch::{Kind, Tensor};

use crate::config::{AnswerFormat, TrainConfig};
use crate::positions::Context;

/// `[B, G]` rewards for `prefix_match`, `first_token` or `dense_prob`.
pub fn answer_rewards(lm: &CausalLm, tok: &Tokenizer, cfg: &TrainConfig, contexts: &[Context], thoughts: &[Vec<Thought>]) -> Result<Tensor> {
    let g = cfg.rollout.group_size;
    let mut out = Vec::with_capacity(contexts.len() * g);
    for (ctx, group) in contexts.iter().zip(thoughts) {
        // Byte length of the true continuation after each of its tokens: the valid boundaries.
        let pieces: Vec<Vec<u8>> = (1..=ctx.targets.len())
            .map(|k| tok.decode(&ctx.targets[..k]).map(String::into_bytes))
            .collect::<Result<_>>()?;
        let truth = pieces.last().cloned().unwrap_or_default();
        let mut lengths: Vec<usize> = pieces.iter().map(Vec::len).collect();
        lengths.dedup();
        let first_len = lengths.first().copied().unwrap_or(0);
        for t in group {
            let text = tok.decode(t.answer())?;
            let prediction = match cfg.thought.answer_format {
                AnswerFormat::Raw => Some(text),
                AnswerFormat::Boxed => extract_answer(&format!("{}{}", cfg.thought.close, text), &cfg.thought.close),
            };
            let bytes = prediction.map(String::into_bytes).unwrap_or_default();
            let r = match cfg.reward.kind {
                RewardKind::PrefixMatch => prefix_match_reward(&bytes, &truth, &lengths),
                // The prediction's first token matches x_t: its bytes start with x_t's bytes.
                _ => prefix_match_reward(&bytes[..bytes.len().min(first_len)], &truth, &[first_len]),
            };
            out.push(r);
        }
    }
    let mut reward = Tensor::from_slice(&out).view([contexts.len() as i64, g as i64]);
    if cfg.reward.kind == RewardKind::DenseProb {
        // Wrong first token: the model's own probability of the answer's first token without a
        // thought, a small dense signal (RPT App. A).
        let (rows, at): (Vec<Vec<i64>>, Vec<Vec<usize>>) = contexts
            .iter()
            .zip(thoughts)
            .flat_map(|(c, group)| group.iter().map(move |t| (c.ids.iter().copied().chain(t.answer().first().copied()).collect::<Vec<i64>>(), c.ids.len())))
            .map(|(row, lc)| {
                let at = if row.len() > lc { vec![lc] } else { vec![] };
                (row, at)
            })
            .unzip();
        let s = score_rows(lm, &Rows::new(&rows), &[Positions { at: &at, opts: cfg.memory.opts(1.0) }], cfg.memory.micro_batch_tokens).remove(0);
        let p = (s.logp.exp() * &s.mask).sum_dim_intlist(-1, false, Kind::Float).to_device(tch::Device::Cpu);
        let p = p.view([contexts.len() as i64, g as i64]);
        reward = reward.shallow_clone().where_self(&reward.eq(1.0), &p);
    }
    Ok(reward.to_device(lm.device()))
}

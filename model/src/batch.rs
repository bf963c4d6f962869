//! Padding variable-length rows into one batch, and teacher-forced per-token log-probs.
use tch::{Device, Kind, Tensor};

use crate::attention::positions_from_mask;
use crate::lm::CausalLm;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Padding {
    /// Pad before the tokens: every row's last token sits in the last slot (for generation).
    Left,
    /// Pad after the tokens: every row starts in slot 0 (for scoring).
    Right,
}

/// Rows of token ids padded to one length, with the mask and position ids that go with them.
pub struct PaddedBatch {
    /// `[B, T]` int64.
    pub ids: Tensor,
    /// `[B, T]` bool, true for real tokens.
    pub valid: Tensor,
    /// `[B, T]` int64: 0, 1, 2, ... over each row's real tokens.
    pub positions: Tensor,
    pub lens: Vec<i64>,
    pub width: i64,
}

impl PaddedBatch {
    pub fn new(rows: &[Vec<i64>], pad_id: i64, padding: Padding, device: Device) -> PaddedBatch {
        let width = rows.iter().map(|r| r.len()).max().unwrap_or(0);
        let mut ids = Vec::with_capacity(rows.len() * width);
        let mut valid = Vec::with_capacity(rows.len() * width);
        for r in rows {
            let pad = width - r.len();
            let (before, after) = if padding == Padding::Left { (pad, 0) } else { (0, pad) };
            ids.extend(std::iter::repeat_n(pad_id, before).chain(r.iter().copied()).chain(std::iter::repeat_n(pad_id, after)));
            valid.extend(std::iter::repeat_n(false, before).chain(std::iter::repeat_n(true, r.len())).chain(std::iter::repeat_n(false, after)));
        }
        let shape = [rows.len() as i64, width as i64];
        let ids = Tensor::from_slice(&ids).view(shape).to_device(device);
        let valid = Tensor::from_slice(&valid).view(shape).to_device(device);
        let positions = positions_from_mask(&valid);
        PaddedBatch { ids, valid, positions, lens: rows.iter().map(|r| r.len() as i64).collect(), width: width as i64 }
    }

    /// True when some row is shorter than the batch width.
    pub fn is_padded(&self) -> bool {
        self.lens.iter().any(|&l| l != self.width)
    }

    /// The key mask to pass to [`CausalLm::forward`]: `None` when nothing is padded, which lets
    /// attention use its fused causal path.
    pub fn key_valid(&self) -> Option<&Tensor> {
        self.is_padded().then_some(&self.valid)
    }
}

/// Bound on logits materialised at once (elements), so scoring long rows with a large vocabulary
/// does not hold a `[B, T, V]` tensor.
const LOGIT_CHUNK_ELEMENTS: i64 = 1 << 26;

/// `log p(row[i+1] | row[..=i])` for every row (n-1 values for a row of n tokens), in float32,
/// from one no-grad forward over the right-padded batch.
pub fn token_logprobs(lm: &CausalLm, rows: &[Vec<i64>]) -> anyhow::Result<Vec<Vec<f32>>> {
    let _guard = tch::no_grad_guard();
    let batch = PaddedBatch::new(rows, 0, Padding::Right, lm.device());
    if batch.width < 2 {
        return Ok(rows.iter().map(|_| Vec::new()).collect());
    }
    let hidden = lm.forward(&batch.ids, &batch.positions, batch.key_valid(), None);
    let (b, t) = (batch.lens.len() as i64, batch.width - 1);
    let chunk = (LOGIT_CHUNK_ELEMENTS / (b * lm.vocab_size())).max(1);
    let mut parts = Vec::new();
    let mut start = 0;
    while start < t {
        let n = chunk.min(t - start);
        // A contiguous chunk keeps the vocabulary matmul on its fast path; gather − logsumexp
        // equals log_softmax at the target without writing a [B, n, V] result.
        let logits = lm.logits(&hidden.narrow(1, start, n).contiguous()).to_kind(Kind::Float);
        let next = batch.ids.narrow(1, start + 1, n).unsqueeze(-1);
        parts.push(logits.gather(-1, &next, false).squeeze_dim(-1) - logits.logsumexp([-1], false));
        start += n;
    }
    let all = Tensor::cat(&parts, 1).to_device(Device::Cpu);
    let flat: Vec<f32> = Vec::try_from(all.flatten(0, -1))?;
    Ok(batch.lens.iter().enumerate().map(|(i, &len)| flat[i * t as usize..][..(len - 1).max(0) as usize].to_vec()).collect())
}

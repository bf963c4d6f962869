//! Padding variable-length rows into one batch, and teacher-forced per-token log-probs.
use tch::{Device, Kind, Tensor};

use crate::attention::positions_from_mask;
use crate::lm::CausalLm;
use crate::logprob::{chosen_logprobs, chosen_logprobs_backward, gather_positions, LogProbOpts};

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

/// Which tokens of a set of rows to score: `at[r]` holds indices `i ≥ 1` of row `r`, each scored
/// as `log p(row[i] | row[..i])`.
pub struct Positions<'a> {
    pub at: &'a [Vec<usize>],
    pub opts: LogProbOpts,
}

/// One [`Positions`] request's results, padded to `[N, K]` (K = most positions of a row, ≥ 1).
pub struct TokenScores {
    /// `[N, K]` float32 log-probs, 0 at padding.
    pub logp: Tensor,
    /// `[N, K]` float 1 where a position was requested.
    pub mask: Tensor,
    /// `[N, K]` entropy of the predictive distribution (with `opts.entropy`; zeros without).
    pub entropy: Tensor,
    /// `[N, K]` float 1 where the argmax is the scored token (with `opts.argmax`; zeros without).
    pub hit: Tensor,
}

/// Consecutive rows grouped so that each group's padded size (rows × longest row) stays within
/// `max_tokens` (a group holds at least one row): the forward passes' memory knob. The results
/// do not depend on it.
pub fn row_chunks(rows: &[Vec<i64>], max_tokens: usize) -> Vec<std::ops::Range<usize>> {
    let mut out = Vec::new();
    let (mut start, mut width) = (0, 0);
    for (i, r) in rows.iter().enumerate() {
        let w = width.max(r.len());
        if i > start && (i + 1 - start) * w > max_tokens.max(1) {
            out.push(start..i);
            (start, width) = (i, r.len());
        } else {
            width = w;
        }
    }
    if start < rows.len() {
        out.push(start..rows.len());
    }
    out
}

/// The requested cells of one row chunk: batch row and slot of each predicting position, the
/// scored tokens, and each cell's flat index `row · K + j` in the `[N, K]` result.
struct Cells {
    rows: Vec<i64>,
    slots: Vec<i64>,
    tokens: Vec<i64>,
    flat: Vec<i64>,
}

fn cells(rows: &[Vec<i64>], at: &[Vec<usize>], range: &std::ops::Range<usize>, k: usize) -> Cells {
    let mut c = Cells { rows: vec![], slots: vec![], tokens: vec![], flat: vec![] };
    for r in range.clone() {
        for (j, &i) in at[r].iter().enumerate() {
            c.rows.push((r - range.start) as i64);
            c.slots.push(i as i64 - 1);
            c.tokens.push(rows[r][i]);
            c.flat.push((r * k + j) as i64);
        }
    }
    c
}

fn width(at: &[Vec<usize>]) -> usize {
    at.iter().map(Vec::len).max().unwrap_or(0).max(1)
}

/// Scatters per-cell values `[M]` into a zero `[N·K]` buffer.
fn place(buf: &Tensor, flat: &Tensor, values: &Tensor) {
    let _ = buf.shallow_clone().index_copy_(0, flat, &values.to_kind(buf.kind()));
}

/// Teacher-forced scores of `rows` for each request, one no-grad forward per row chunk of at
/// most `max_tokens` padded tokens, logits only at the requested positions and in chunks
/// (`rlp_model::logprob`).
pub fn score_rows(lm: &CausalLm, rows: &[Vec<i64>], requests: &[Positions], max_tokens: usize) -> Vec<TokenScores> {
    let _guard = tch::no_grad_guard();
    let device = lm.device();
    let n = rows.len();
    let grids: Vec<(usize, Tensor, Tensor, Tensor, Tensor)> = requests
        .iter()
        .map(|q| {
            let k = width(q.at);
            let z = || Tensor::zeros([(n * k) as i64], (Kind::Float, device));
            (k, z(), z(), z(), z())
        })
        .collect();
    for range in row_chunks(rows, max_tokens) {
        let batch = PaddedBatch::new(&rows[range.clone()], 0, Padding::Right, device);
        let hidden = lm.forward(&batch.ids, &batch.positions, batch.key_valid(), None);
        for (q, (k, logp, mask, entropy, hit)) in requests.iter().zip(&grids) {
            let c = cells(rows, q.at, &range, *k);
            if c.flat.is_empty() {
                continue;
            }
            let flat = Tensor::from_slice(&c.flat).to_device(device);
            let tokens = Tensor::from_slice(&c.tokens).to_device(device);
            let s = chosen_logprobs(lm, &gather_positions(&hidden, &c.rows, &c.slots), &tokens, &q.opts);
            place(logp, &flat, &s.logp);
            place(mask, &flat, &flat.ones_like().to_kind(Kind::Float));
            if let Some(e) = &s.entropy {
                place(entropy, &flat, e);
            }
            if let Some(a) = &s.argmax {
                place(hit, &flat, &a.eq_tensor(&tokens));
            }
        }
    }
    grids
        .into_iter()
        .map(|(k, logp, mask, entropy, hit)| {
            let shape = [n as i64, k as i64];
            TokenScores { logp: logp.view(shape), mask: mask.view(shape), entropy: entropy.view(shape), hit: hit.view(shape) }
        })
        .collect()
}

/// One backward pass over `rows` for a loss that is a sum over the scored positions: per row
/// chunk of at most `max_tokens` padded tokens, a forward with gradient (activation-checkpointed
/// with `checkpoint`), then `loss(flat, logp)` per logit chunk — `flat` `[n]` the cells' indices
/// `row · K + j` in the `[N, K]` grid of `at`, `logp` `[n]` their differentiable log-probs —
/// back-propagated into the parameters' `.grad`. Returns the detached `[N, K]` log-probs.
pub fn learn_rows(lm: &CausalLm, rows: &[Vec<i64>], at: &[Vec<usize>], opts: &LogProbOpts, max_tokens: usize, checkpoint: bool, loss: &mut dyn FnMut(&Tensor, &Tensor) -> Tensor) -> Tensor {
    let device = lm.device();
    let k = width(at);
    let logp = Tensor::zeros([(rows.len() * k) as i64], (Kind::Float, device));
    for range in row_chunks(rows, max_tokens) {
        let c = cells(rows, at, &range, k);
        if c.flat.is_empty() {
            continue;
        }
        let batch = PaddedBatch::new(&rows[range.clone()], 0, Padding::Right, device);
        let pass = lm.forward_train(&batch.ids, &batch.positions, batch.key_valid(), checkpoint);
        let flat = Tensor::from_slice(&c.flat).to_device(device);
        let tokens = Tensor::from_slice(&c.tokens).to_device(device);
        let picked = gather_positions(&pass.hidden, &c.rows, &c.slots);
        let (s, d_picked) = chosen_logprobs_backward(lm, &picked, &tokens, opts, &mut |start, lp| loss(&flat.narrow(0, start, lp.size()[0]), lp));
        // The body's gradient: d_picked scattered back to the gathered slots.
        let d_hidden = pass.hidden.zeros_like().reshape([-1, pass.hidden.size()[2]]);
        let index = Tensor::from_slice(&c.rows.iter().zip(&c.slots).map(|(&r, &s)| r * batch.width + s).collect::<Vec<_>>()).to_device(device);
        let d_hidden = d_hidden.index_add(0, &index, &d_picked.to_kind(d_hidden.kind())).view_as(&pass.hidden);
        lm.backward(pass, &d_hidden);
        place(&logp, &flat, &s.logp);
    }
    logp.view([rows.len() as i64, k as i64])
}

/// `log p(row[i+1] | row[..=i])` for every row (n-1 values for a row of n tokens), in float32
/// (`rlp score`).
pub fn token_logprobs(lm: &CausalLm, rows: &[Vec<i64>], max_tokens: usize) -> anyhow::Result<Vec<Vec<f32>>> {
    let at: Vec<Vec<usize>> = rows.iter().map(|r| (1..r.len()).collect()).collect();
    let s = score_rows(lm, rows, &[Positions { at: &at, opts: LogProbOpts::new(1.0) }], max_tokens).remove(0);
    let k = s.logp.size()[1] as usize;
    let flat: Vec<f32> = Vec::try_from(s.logp.to_device(Device::Cpu).flatten(0, -1))?;
    Ok(at.iter().enumerate().map(|(r, a)| flat[r * k..r * k + a.len()].to_vec()).collect())
}

//! Padding variable-length rows into one batch, and teacher-forced per-token log-probs.
use tch::{Device, Kind, Tensor};

use crate::attention::positions_from_mask;
use crate::lm::{CausalLm, Hidden, PassInput, Prefix};
use crate::logprob::{chosen_logprobs, chosen_logprobs_backward, LogProbOpts};

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

/// Token rows to score teacher-forced, in groups of consecutive rows that begin with the same
/// tokens (a context and the G thoughts after it): each group's shared prefix runs through the
/// model once per forward pass and its rows continue from its keys and values
/// ([`crate::PassInput`]). Without groups every row stands alone.
pub struct Rows<'a> {
    pub ids: &'a [Vec<i64>],
    /// `group_of[r]`: the group of row `r` (non-decreasing).
    group_of: Vec<usize>,
    /// `shared[k]`: leading tokens every row of group `k` shares (0: none), always fewer than
    /// its shortest row's, so every row keeps a token of its own.
    shared: Vec<usize>,
}

impl<'a> Rows<'a> {
    /// Every row alone.
    pub fn new(ids: &'a [Vec<i64>]) -> Rows<'a> {
        Rows { ids, group_of: (0..ids.len()).collect(), shared: vec![0; ids.len()] }
    }

    /// Rows in consecutive groups of `group`, group `k`'s rows sharing their first `shared[k]`
    /// tokens (the caller's promise; checked in debug builds).
    pub fn grouped(ids: &'a [Vec<i64>], group: usize, shared: &[usize]) -> Rows<'a> {
        let group = group.max(1);
        let group_of: Vec<usize> = (0..ids.len()).map(|r| r / group).collect();
        let mut shared: Vec<usize> = shared.to_vec();
        shared.resize(ids.len().div_ceil(group), 0);
        for (k, s) in shared.iter_mut().enumerate() {
            let members = &ids[k * group..((k + 1) * group).min(ids.len())];
            let shortest = members.iter().map(Vec::len).min().unwrap_or(0);
            *s = (*s).min(shortest.saturating_sub(1));
            debug_assert!(members.iter().all(|r| r[..*s] == members[0][..*s]), "rows of group {k} do not share their first {s} tokens");
        }
        Rows { ids, group_of, shared }
    }

    pub fn len(&self) -> usize {
        self.ids.len()
    }

    pub fn is_empty(&self) -> bool {
        self.ids.is_empty()
    }

    fn shared_of(&self, r: usize) -> usize {
        self.shared[self.group_of[r]]
    }
}

/// Consecutive rows grouped so that each forward pass's padded size (prefixes × longest prefix
/// + rows × longest remainder) stays within `max_tokens` (a pass holds at least one row): the
/// forward passes' memory knob. A group may be split across passes (its prefix then runs in
/// each). The results do not depend on it.
pub fn row_chunks(rows: &Rows, max_tokens: usize) -> Vec<std::ops::Range<usize>> {
    let mut out = Vec::new();
    let mut start = 0;
    // (prefixes, longest prefix, longest remainder) of the pass being filled.
    let (mut groups, mut prefix, mut rest) = (0, 0, 0);
    for r in 0..rows.len() {
        let new_group = r == start || rows.group_of[r] != rows.group_of[r - 1];
        let shared = rows.shared_of(r);
        let (g, p, t) = (groups + usize::from(new_group), prefix.max(shared), rest.max(rows.ids[r].len() - shared));
        if r > start && g * p + (r + 1 - start) * t > max_tokens.max(1) {
            out.push(start..r);
            (start, groups, prefix, rest) = (r, 1, shared, rows.ids[r].len() - shared);
        } else {
            (groups, prefix, rest) = (g, p, t);
        }
    }
    if start < rows.len() {
        out.push(start..rows.len());
    }
    out
}

/// One forward pass's input for rows `range`, and where each row's tokens land in the pass's
/// hidden states flattened as `[prefixes · Lp + rows · T, hidden]` (prefixes first).
struct Pass {
    input: PassInput,
    /// Per row of the range: (flat index of its prefix's slot 0, prefix length, flat index of
    /// its own slot 0).
    place: Vec<(i64, usize, i64)>,
}

impl Pass {
    fn new(rows: &Rows, range: &std::ops::Range<usize>, device: Device) -> Pass {
        let shared: Vec<usize> = range.clone().map(|r| rows.shared_of(r)).collect();
        if shared.iter().all(|&s| s == 0) {
            let batch = PaddedBatch::new(&rows.ids[range.clone()], 0, Padding::Right, device);
            let place = (0..range.len()).map(|i| (0, 0, i as i64 * batch.width)).collect();
            return Pass { input: PassInput::rows(&batch.ids, &batch.positions, batch.key_valid()), place };
        }
        // The distinct groups of the range, in order, and each row's index among them.
        let mut prefixes: Vec<Vec<i64>> = Vec::new();
        let mut of_row = Vec::with_capacity(range.len());
        for (i, r) in range.clone().enumerate() {
            if i == 0 || rows.group_of[r] != rows.group_of[r - 1] {
                prefixes.push(rows.ids[r][..shared[i]].to_vec());
            }
            of_row.push(prefixes.len() as i64 - 1);
        }
        let rest: Vec<Vec<i64>> = range.clone().zip(&shared).map(|(r, &s)| rows.ids[r][s..].to_vec()).collect();
        let pre = PaddedBatch::new(&prefixes, 0, Padding::Right, device);
        let own = PaddedBatch::new(&rest, 0, Padding::Right, device);
        let offset: Vec<i64> = shared.iter().map(|&s| s as i64).collect();
        let positions = &own.positions + Tensor::from_slice(&offset).to_device(device).unsqueeze(1);
        let of_row_t = Tensor::from_slice(&of_row).to_device(device);
        // A row attends to its prefix's real slots and to its own (causally; its padding comes
        // after its real tokens). Unpadded prefixes need no mask beyond the causal one.
        let key_valid = pre.is_padded().then(|| Tensor::cat(&[pre.valid.index_select(0, &of_row_t), own.valid.ones_like()], 1));
        let base = prefixes.len() as i64 * pre.width;
        let place = of_row.iter().zip(&shared).enumerate().map(|(i, (&p, &s))| (p * pre.width, s, base + i as i64 * own.width)).collect();
        let prefix = Prefix { ids: pre.ids, positions: pre.positions, of_row: of_row_t };
        Pass { input: PassInput { ids: own.ids, positions, key_valid, prefix: Some(prefix) }, place }
    }

    /// The flat hidden-state index of the slot that predicts token `i` of range row `n`.
    fn slot(&self, n: usize, i: usize) -> i64 {
        let (prefix, shared, own) = self.place[n];
        if i - 1 < shared { prefix + (i - 1) as i64 } else { own + (i - 1 - shared) as i64 }
    }
}

/// `[M, hidden]` flat view of a pass's hidden states, prefixes first (detached).
fn flat_hidden(h: &Hidden) -> Tensor {
    let width = h.rows.size()[2];
    let rows = h.rows.detach().reshape([-1, width]);
    match &h.prefix {
        Some(p) => Tensor::cat(&[p.detach().reshape([-1, width]), rows], 0),
        None => rows,
    }
}

/// The requested cells of one pass: flat hidden index of each predicting slot, the scored
/// tokens, and each cell's flat index `row · K + j` in the `[N, K]` result.
struct Cells {
    slots: Vec<i64>,
    tokens: Vec<i64>,
    flat: Vec<i64>,
}

fn cells(rows: &Rows, pass: &Pass, at: &[Vec<usize>], range: &std::ops::Range<usize>, k: usize) -> Cells {
    let mut c = Cells { slots: vec![], tokens: vec![], flat: vec![] };
    for r in range.clone() {
        for (j, &i) in at[r].iter().enumerate() {
            c.slots.push(pass.slot(r - range.start, i));
            c.tokens.push(rows.ids[r][i]);
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

/// Teacher-forced scores of `rows` for each request, one no-grad forward per pass of at most
/// `max_tokens` padded tokens, logits only at the requested positions and in chunks
/// (`rlp_model::logprob`).
pub fn score_rows(lm: &CausalLm, rows: &Rows, requests: &[Positions], max_tokens: usize) -> Vec<TokenScores> {
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
        let pass = Pass::new(rows, &range, device);
        let hidden = flat_hidden(&lm.forward_pass(&pass.input));
        for (q, (k, logp, mask, entropy, hit)) in requests.iter().zip(&grids) {
            let c = cells(rows, &pass, q.at, &range, *k);
            if c.flat.is_empty() {
                continue;
            }
            let flat = Tensor::from_slice(&c.flat).to_device(device);
            let tokens = Tensor::from_slice(&c.tokens).to_device(device);
            let s = chosen_logprobs(lm, &gather(&hidden, &c.slots), &tokens, &q.opts);
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

fn gather(flat: &Tensor, slots: &[i64]) -> Tensor {
    flat.index_select(0, &Tensor::from_slice(slots).to_device(flat.device()))
}

/// One backward pass over `rows` for a loss that is a sum over the scored positions: per pass
/// of at most `max_tokens` padded tokens, a forward with gradient (activation-checkpointed with
/// `checkpoint`), then `loss(flat, logp)` per logit chunk — `flat` `[n]` the cells' indices
/// `row · K + j` in the `[N, K]` grid of `at`, `logp` `[n]` their differentiable log-probs —
/// back-propagated into the parameters' `.grad`. Returns the detached `[N, K]` log-probs.
pub fn learn_rows(lm: &CausalLm, rows: &Rows, at: &[Vec<usize>], opts: &LogProbOpts, max_tokens: usize, checkpoint: bool, loss: &mut dyn FnMut(&Tensor, &Tensor) -> Tensor) -> Tensor {
    let device = lm.device();
    let k = width(at);
    let logp = Tensor::zeros([(rows.len() * k) as i64], (Kind::Float, device));
    for range in row_chunks(rows, max_tokens) {
        let pass = Pass::new(rows, &range, device);
        let c = cells(rows, &pass, at, &range, k);
        if c.flat.is_empty() {
            continue;
        }
        let train = lm.forward_train(&pass.input, checkpoint);
        let hidden = flat_hidden(&train.hidden);
        let flat = Tensor::from_slice(&c.flat).to_device(device);
        let tokens = Tensor::from_slice(&c.tokens).to_device(device);
        let slots = Tensor::from_slice(&c.slots).to_device(device);
        let (s, d_picked) = chosen_logprobs_backward(lm, &hidden.index_select(0, &slots), &tokens, opts, &mut |start, lp| loss(&flat.narrow(0, start, lp.size()[0]), lp));
        // The body's gradient: d_picked scattered back to the gathered slots, then split into
        // the prefixes' part and the rows'.
        let d_flat = hidden.zeros_like().index_add(0, &slots, &d_picked.to_kind(hidden.kind()));
        let rows_h = &train.hidden.rows;
        let n_rows = rows_h.size()[0] * rows_h.size()[1];
        let n_prefix = d_flat.size()[0] - n_rows;
        let d_rows = d_flat.narrow(0, n_prefix, n_rows).view_as(rows_h);
        let d_prefix = train.hidden.prefix.as_ref().map(|p| d_flat.narrow(0, 0, n_prefix).view_as(p));
        lm.backward(train, &d_rows, d_prefix.as_ref());
        place(&logp, &flat, &s.logp);
    }
    logp.view([rows.len() as i64, k as i64])
}

/// `log p(row[i+1] | row[..=i])` for every row (n-1 values for a row of n tokens), in float32
/// (`rlp score`).
pub fn token_logprobs(lm: &CausalLm, rows: &[Vec<i64>], max_tokens: usize) -> anyhow::Result<Vec<Vec<f32>>> {
    let at: Vec<Vec<usize>> = rows.iter().map(|r| (1..r.len()).collect()).collect();
    let s = score_rows(lm, &Rows::new(rows), &[Positions { at: &at, opts: LogProbOpts::new(1.0) }], max_tokens).remove(0);
    let k = s.logp.size()[1] as usize;
    let flat: Vec<f32> = Vec::try_from(s.logp.to_device(Device::Cpu).flatten(0, -1))?;
    Ok(at.iter().enumerate().map(|(r, a)| flat[r * k..r * k + a.len()].to_vec()).collect())
}

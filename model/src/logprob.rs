//! The one teacher-forced scorer: log-probabilities of chosen tokens at chosen positions, with
//! the entropy and argmax of the predictive distribution when asked, computed in chunks so that
//! at most one `[chunk, vocab]` block of logits exists at a time (at V = 151,936, the `[16, 2048,
//! V]` logits of one group would be 20 GB in float32).
//!
//! Every path that scores text teacher-forced goes through here: the trainer's S_pred, S_ema,
//! KL reference, policy loss and next-token loss, entropy-based position selection, `rlp score`
//! and the held-out evaluation.
//!
//! Gradients come by recomputation per chunk ([`chosen_logprobs_backward`]): each chunk's hidden
//! states are detached into a leaf, the chunk's loss is back-propagated into that leaf (freeing
//! its logits), and the concatenated leaf gradients are handed to [`CausalLm::backward`] for one
//! backward through the body. The vocabulary matmul stays in the model's dtype in both directions
//! (only the softmax is float32), which keeps bf16 GEMMs in bf16 — the known trap of a chunked
//! backward is a float32 upcast before the matmul, 13× slower on a GPU.
use tch::{Kind, Tensor};

use crate::lm::CausalLm;

/// Elements of float32 logits per chunk when no chunk size is configured: 2^26 (256 MiB), i.e.
/// 441 positions at V = 151,936, and a whole batch at a demo-sized vocabulary.
const AUTO_CHUNK_ELEMENTS: i64 = 1 << 26;

/// What to compute at each scored position.
#[derive(Debug, Clone, Copy)]
pub struct LogProbOpts {
    /// Log-probs, entropies and argmax are those of `softmax(logits / temperature)`.
    pub temperature: f64,
    /// Also the entropy of the (tempered) predictive distribution.
    pub entropy: bool,
    /// Renormalise the entropy over the `k` most likely tokens (RPT's proxy filter).
    pub entropy_top_k: Option<i64>,
    /// Also the most likely token.
    pub argmax: bool,
    /// Positions per chunk of logits; 0 chooses [`AUTO_CHUNK_ELEMENTS`] / vocabulary.
    pub chunk_tokens: usize,
}

impl LogProbOpts {
    pub fn new(temperature: f64) -> LogProbOpts {
        LogProbOpts { temperature, entropy: false, entropy_top_k: None, argmax: false, chunk_tokens: 0 }
    }

    pub fn with_entropy(self) -> LogProbOpts {
        LogProbOpts { entropy: true, ..self }
    }

    pub fn with_argmax(self) -> LogProbOpts {
        LogProbOpts { argmax: true, ..self }
    }

    pub fn chunked(self, chunk_tokens: usize) -> LogProbOpts {
        LogProbOpts { chunk_tokens, ..self }
    }

    /// The chunk length for a vocabulary of `vocab` tokens.
    pub fn chunk_len(&self, vocab: i64) -> i64 {
        if self.chunk_tokens > 0 {
            self.chunk_tokens as i64
        } else {
            (AUTO_CHUNK_ELEMENTS / vocab.max(1)).max(1)
        }
    }
}

/// Per-position results, `[M]` each, float32 (argmax int64), detached.
pub struct Scored {
    pub logp: Tensor,
    pub entropy: Option<Tensor>,
    pub argmax: Option<Tensor>,
}

/// `hidden`: `[M, hidden]` final hidden states of the positions that predict `tokens` `[M]`.
/// No gradient.
pub fn chosen_logprobs(lm: &CausalLm, hidden: &Tensor, tokens: &Tensor, opts: &LogProbOpts) -> Scored {
    let _g = tch::no_grad_guard();
    let mut parts = Parts::default();
    for (start, n) in chunks(hidden.size()[0], opts.chunk_len(lm.vocab_size())) {
        let logp = parts.push(lm, &hidden.narrow(0, start, n), &tokens.narrow(0, start, n), opts);
        parts.logp.push(logp);
    }
    parts.finish(hidden)
}

/// As [`chosen_logprobs`], and back-propagates `loss(start, logp)` — a scalar from the chunk's
/// differentiable log-probs of positions `start..start + n` — chunk by chunk. Returns the scores
/// and the loss's gradient with respect to `hidden` (`[M, hidden]`), for
/// [`CausalLm::backward`]; gradients of the output head accumulate in its `.grad` here.
pub fn chosen_logprobs_backward(lm: &CausalLm, hidden: &Tensor, tokens: &Tensor, opts: &LogProbOpts, loss: &mut dyn FnMut(i64, &Tensor) -> Tensor) -> (Scored, Tensor) {
    let mut parts = Parts::default();
    let mut grads = Vec::new();
    for (start, n) in chunks(hidden.size()[0], opts.chunk_len(lm.vocab_size())) {
        let leaf = hidden.narrow(0, start, n).detach().set_requires_grad(true);
        let logp = parts.push(lm, &leaf, &tokens.narrow(0, start, n), opts);
        loss(start, &logp).backward();
        grads.push(leaf.grad());
        parts.logp.push(logp.detach());
    }
    let d_hidden = if grads.is_empty() { hidden.zeros_like() } else { Tensor::cat(&grads, 0) };
    (parts.finish(hidden), d_hidden)
}

fn chunks(m: i64, len: i64) -> impl Iterator<Item = (i64, i64)> {
    (0..m).step_by(len as usize).map(move |s| (s, len.min(m - s)))
}

#[derive(Default)]
struct Parts {
    logp: Vec<Tensor>,
    entropy: Vec<Tensor>,
    argmax: Vec<Tensor>,
}

impl Parts {
    /// One chunk: returns its log-probs (differentiable when `h` is) and keeps the detached
    /// statistics.
    fn push(&mut self, lm: &CausalLm, h: &Tensor, tok: &Tensor, opts: &LogProbOpts) -> Tensor {
        // A contiguous chunk keeps the vocabulary matmul on its fast path, in the model's dtype.
        let logits = lm.logits(&h.contiguous()).to_kind(Kind::Float);
        let logits = if opts.temperature == 1.0 { logits } else { logits / opts.temperature };
        let lse = logits.logsumexp([-1], false);
        // gather − logsumexp is log_softmax at the token without writing a [n, V] result.
        let logp = logits.gather(-1, &tok.unsqueeze(-1), false).squeeze_dim(-1) - &lse;
        if opts.entropy || opts.argmax {
            let _g = tch::no_grad_guard();
            let logits = logits.detach();
            if opts.entropy {
                self.entropy.push(match opts.entropy_top_k {
                    Some(k) if k > 0 && k < logits.size()[1] => entropy(&logits.topk(k, -1, true, false).0),
                    _ => entropy_with_lse(&logits, &lse.detach()),
                });
            }
            if opts.argmax {
                self.argmax.push(logits.argmax(-1, false));
            }
        }
        logp
    }

    fn finish(self, like: &Tensor) -> Scored {
        let cat = |v: Vec<Tensor>, kind: Kind| if v.is_empty() { Tensor::zeros([0], (kind, like.device())) } else { Tensor::cat(&v, 0) };
        let (has_entropy, has_argmax) = (!self.entropy.is_empty(), !self.argmax.is_empty());
        Scored {
            logp: cat(self.logp, Kind::Float),
            entropy: has_entropy.then(|| cat(self.entropy, Kind::Float)),
            argmax: has_argmax.then(|| cat(self.argmax, Kind::Int64)),
        }
    }
}

/// `−Σ_v p_v log p_v` of `softmax(logits)` over the last axis, float32: the one entropy of the
/// project (the sampler's, the 80/20 mask's, the position filter's and the diagnostics').
/// `-inf` logits (a masked vocabulary) contribute 0, not NaN.
pub fn entropy(logits: &Tensor) -> Tensor {
    let logits = logits.to_kind(Kind::Float);
    let lse = logits.logsumexp([-1], false);
    entropy_with_lse(&logits, &lse)
}

/// H = lse − Σ p·logit, with `p = exp(logit − lse)`: one pass, no `[.., V]` log-softmax kept.
fn entropy_with_lse(logits: &Tensor, lse: &Tensor) -> Tensor {
    let p = (logits - lse.unsqueeze(-1)).exp();
    // p · logit is 0 · (−inf) for impossible tokens; zero them instead of NaN.
    let finite = logits.clamp_min(f64::from(f32::MIN));
    lse - (p * finite).sum_dim_intlist(-1, false, Kind::Float)
}

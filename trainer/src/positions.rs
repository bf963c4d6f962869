//! Where thoughts are inserted: token positions `t` of training documents, each giving a context
//! `x_<t` (at most `data.max_context` tokens) and the true next tokens `x_t .. x_{t+n_true}`.
//!
//! Documents come from one seeded [`DocStream`] that every rank of a data-parallel job reads in
//! full (each keeps its slice of a step's contexts, see `step.rs`); every random choice inside a
//! document is drawn from an RNG seeded by (seed, epoch, document), and the entropy strategies
//! depend only on the model's weights, so a run resumed from a checkpoint's cursor replays the
//! same contexts. A step consumes whole documents; positions left over in its last document are
//! dropped, which keeps the cursor a plain (epoch, offset).
use anyhow::{bail, Result};
use rand::seq::index::sample;
use rlp_data::{doc_rng, Cursor, Dataset, DocStream};
use rlp_model::{score_rows, CausalLm, LogProbOpts, Positions, Rows};

use crate::config::{PositionStrategy, PositionsSection};

#[derive(Debug, Clone)]
pub struct Context {
    pub doc: usize,
    /// Index in the document of the first true next token `x_t`.
    pub t: usize,
    /// `x_<t`, cut to the last `max_context` tokens.
    pub ids: Vec<i64>,
    /// `x_t .. x_{t+n_true}`.
    pub targets: Vec<i64>,
}

pub struct ContextSource {
    dataset: Dataset,
    stream: DocStream,
    cfg: PositionsSection,
    max_context: usize,
    n_true: usize,
    seed: u64,
    /// The entropy strategies' scorer options (the logit chunk of `memory`).
    logit_opts: LogProbOpts,
}

/// Salt for the per-document RNG of position sampling (other per-document draws use others).
const POSITION_SALT: u64 = 1;

impl ContextSource {
    /// Every rank reads the one global stream (and keeps its slice of each step's contexts), so
    /// the stream is not sharded here.
    pub fn new(dataset: Dataset, cfg: &PositionsSection, max_context: usize, n_true: usize, seed: u64, logit_chunk_tokens: usize, cursor: Option<Cursor>) -> Result<ContextSource> {
        let stream = match cursor {
            Some(c) => DocStream::resume(dataset.num_docs(), seed, 0, 1, c)?,
            None => DocStream::new(dataset.num_docs(), seed, 0, 1)?,
        };
        let logit_opts = LogProbOpts::new(1.0).chunked(logit_chunk_tokens);
        Ok(ContextSource { dataset, stream, cfg: cfg.clone(), max_context, n_true, seed, logit_opts })
    }

    pub fn cursor(&self) -> Cursor {
        self.stream.cursor()
    }

    pub fn dataset(&self) -> &Dataset {
        &self.dataset
    }

    /// The next `n` contexts. `scorer` is the model whose entropy the entropy strategies use.
    pub fn next_batch(&mut self, n: usize, scorer: &CausalLm) -> Result<Vec<Context>> {
        let mut out = Vec::with_capacity(n);
        let mut barren = 0usize;
        while out.len() < n {
            let next = self.stream.next_doc();
            let (doc, epoch) = (next.index, next.epoch);
            let before = out.len();
            let positions = self.positions(doc, epoch, scorer)?;
            for t in positions.into_iter().take(n - out.len()) {
                out.push(self.context(doc, t));
            }
            // A full pass over the data without one usable position would loop forever.
            barren = if out.len() == before { barren + 1 } else { 0 };
            if barren > self.dataset.num_docs() {
                bail!(
                    "no document has a usable position: each needs at least positions.min_context ({}) + reward.n_true ({}) tokens{}",
                    self.cfg.min_context,
                    self.n_true,
                    if matches!(self.cfg.strategy, PositionStrategy::ProxyEntropy) { " and a position above positions.threshold" } else { "" }
                );
            }
        }
        Ok(out)
    }

    pub fn context(&self, doc: usize, t: usize) -> Context {
        let tokens = self.dataset.doc(doc);
        let start = t.saturating_sub(self.max_context);
        Context {
            doc,
            t,
            ids: tokens[start..t].iter().map(|&x| x as i64).collect(),
            targets: tokens[t..t + self.n_true].iter().map(|&x| x as i64).collect(),
        }
    }

    /// Candidate positions `t` of a document: enough context before, `n_true` tokens after.
    fn valid_range(&self, len: usize) -> std::ops::Range<usize> {
        let lo = self.cfg.min_context;
        let hi = (len + 1).saturating_sub(self.n_true); // t + n_true <= len
        lo..hi.max(lo)
    }

    fn positions(&self, doc: usize, epoch: u64, scorer: &CausalLm) -> Result<Vec<usize>> {
        let len = self.dataset.doc(doc).len();
        let range = self.valid_range(len);
        if range.is_empty() {
            return Ok(Vec::new());
        }
        let cfg = &self.cfg;
        Ok(match cfg.strategy {
            PositionStrategy::Random => {
                let mut rng = doc_rng(self.seed, epoch, doc, POSITION_SALT);
                let k = cfg.per_doc.min(range.len());
                let mut picked: Vec<usize> = sample(&mut rng, range.len(), k).into_iter().map(|i| range.start + i).collect();
                picked.sort_unstable();
                picked
            }
            PositionStrategy::Every => range.step_by(cfg.stride).collect(),
            PositionStrategy::Marked => {
                let marked: Vec<usize> = match self.dataset.marks(doc) {
                    Some(m) => range.filter(|&t| m[t] != 0).collect(),
                    None => bail!("positions.strategy = \"marked\" needs data with answer marks (JSONL `answer_spans`, as `rlp data synth` writes)"),
                };
                let mut rng = doc_rng(self.seed, epoch, doc, POSITION_SALT);
                let k = cfg.per_doc.min(marked.len());
                let mut picked: Vec<usize> = sample(&mut rng, marked.len(), k).into_iter().map(|i| marked[i]).collect();
                picked.sort_unstable();
                picked
            }
            PositionStrategy::Entropy => {
                let entropy = self.doc_entropy(doc, scorer, None)?;
                let mut cands: Vec<usize> = range.filter(|&t| t < entropy.len()).collect();
                let keep = ((cfg.top_ratio * cands.len() as f64).ceil() as usize).min(cands.len());
                cands.sort_by(|&a, &b| entropy[b].total_cmp(&entropy[a]).then(a.cmp(&b)));
                cands.truncate(keep);
                cands.sort_unstable();
                cands
            }
            PositionStrategy::ProxyEntropy => {
                let entropy = self.doc_entropy(doc, scorer, Some(cfg.proxy_top_k))?;
                range.filter(|&t| t < entropy.len() && entropy[t] as f64 >= cfg.threshold).collect()
            }
        })
    }

    /// `entropy[t]`: entropy of the scorer's prediction of token `t` from tokens `..t`, over the
    /// full vocabulary or renormalised over its `top_k` most likely tokens (RPT's proxy filter).
    /// Only the first `max_positions` tokens of a long document are scored.
    fn doc_entropy(&self, doc: usize, scorer: &CausalLm, top_k: Option<i64>) -> Result<Vec<f32>> {
        let tokens = self.dataset.doc(doc);
        let n = tokens.len().min(scorer.max_positions() as usize);
        let rows = vec![tokens[..n].iter().map(|&x| x as i64).collect::<Vec<i64>>()];
        let at = vec![(1..n).collect::<Vec<usize>>()];
        let opts = LogProbOpts { entropy_top_k: top_k, ..self.logit_opts.with_entropy() };
        let s = score_rows(scorer, &Rows::new(&rows), &[Positions { at: &at, opts }], usize::MAX).remove(0);
        let h: Vec<f32> = Vec::try_from(s.entropy.flatten(0, -1).to_device(tch::Device::Cpu))?;
        // entropy[t] is about the prediction of token t; token 0 has none.
        Ok(std::iter::once(f32::NEG_INFINITY).chain(h.into_iter().take(n.saturating_sub(1))).collect())
    }
}

/// Contexts for held-out evaluation: `count` positions chosen once, deterministically, from
/// `dataset`: one random position per document, or, when the data marks answer tokens, each
/// document's marked positions in order (answer-token accuracy).
pub fn eval_contexts(dataset: &Dataset, count: usize, min_context: usize, max_context: usize, seed: u64) -> Vec<Context> {
    let mut out = Vec::new();
    let marked = dataset.has_marks();
    for doc in 0..dataset.num_docs() {
        let tokens = dataset.doc(doc);
        if tokens.len() < min_context + 1 {
            continue;
        }
        let positions: Vec<usize> = match dataset.marks(doc).filter(|_| marked) {
            Some(m) => (min_context..tokens.len()).filter(|&t| m[t] != 0).collect(),
            None => {
                let mut rng = doc_rng(seed, 0, doc, POSITION_SALT + 1);
                vec![min_context + sample(&mut rng, tokens.len() - min_context, 1).index(0)]
            }
        };
        for t in positions {
            if out.len() >= count {
                return out;
            }
            let start = t.saturating_sub(max_context);
            out.push(Context { doc, t, ids: tokens[start..t].iter().map(|&x| x as i64).collect(), targets: vec![tokens[t] as i64] });
        }
    }
    out
}

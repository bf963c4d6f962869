//! Text files → tokenized, split, memory-mappable shards (see the crate docs for the layout).
//!
//! Documents are read in input order and tokenized in parallel a chunk at a time; a chunk's
//! results are written in document order, and chunk boundaries depend only on the text, so the
//! output bytes are the same for any number of threads.
use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use rayon::prelude::*;
use rlp_model::Tokenizer;

use crate::meta::{Meta, FORMAT};
use crate::output::{check_output, write_meta, SplitWriter, Staging};
use crate::source::{read_docs, RawDoc};
use crate::split::Split;

/// Text per parallel tokenization batch: large enough to keep every thread busy, small enough
/// that a big corpus is never held in memory at once.
const CHUNK_BYTES: usize = 8 << 20;

#[derive(Debug, Clone)]
pub struct PrepareOptions {
    /// Input files: `.jsonl`/`.json` hold one JSON object per line, anything else is plain text.
    pub inputs: Vec<PathBuf>,
    /// Output directory. It may be absent or empty; an existing prepared dataset is replaced
    /// only with `overwrite`, and any other non-empty directory is never replaced.
    pub output: PathBuf,
    /// JSON field that holds a document's text.
    pub text_field: String,
    /// For plain text: split each file into documents on this string (e.g. `"\n\n"`);
    /// `None` = each file is one document. Ignored for JSON Lines.
    pub doc_separator: Option<String>,
    /// Documents with fewer tokens than this (BOS included, when the tokenizer adds one) are
    /// skipped. Documents with no tokens at all are always skipped.
    pub min_tokens: usize,
    /// Fraction of documents written to the held-out split, in `[0, 1)`. Membership is a seeded
    /// hash of the document's position in the input (every document read counts, kept or
    /// skipped), so it does not change with `min_tokens` or the thread count.
    pub heldout_fraction: f64,
    pub seed: u64,
    pub overwrite: bool,
}

impl PrepareOptions {
    /// Options with the defaults: field `text`, one document per plain-text file, `min_tokens`
    /// 2, nothing held out, seed 0, no overwrite.
    pub fn new(inputs: Vec<PathBuf>, output: PathBuf) -> PrepareOptions {
        PrepareOptions {
            inputs,
            output,
            text_field: "text".to_string(),
            doc_separator: None,
            min_tokens: 2,
            heldout_fraction: 0.0,
            seed: 0,
            overwrite: false,
        }
    }
}

/// What `prepare` wrote. `documents` and `tokens` count both splits; the held-out split's share
/// is in `heldout_*` (train = total − held-out).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct PrepareSummary {
    pub documents: usize,
    pub tokens: u64,
    pub heldout_documents: usize,
    pub heldout_tokens: u64,
    pub skipped_empty: usize,
    pub skipped_short: usize,
    pub files: usize,
    /// One more than the largest token id written.
    pub vocab_bound: u64,
}

/// Tokenizes `opts.inputs` into `opts.output`. Nothing appears at `opts.output` unless the whole
/// dataset was written.
pub fn prepare(tokenizer: &Tokenizer, opts: &PrepareOptions) -> Result<PrepareSummary> {
    prepare_chunked(tokenizer, opts, CHUNK_BYTES)
}

pub(crate) fn prepare_chunked(
    tokenizer: &Tokenizer,
    opts: &PrepareOptions,
    chunk_bytes: usize,
) -> Result<PrepareSummary> {
    validate(opts)?;
    check_output(&opts.output, opts.overwrite)?;
    let staging = Staging::create(&opts.output)?;
    let mut run = Run {
        tokenizer,
        opts,
        chunk_bytes,
        pending: Vec::new(),
        pending_bytes: 0,
        next_index: 0,
        train: SplitWriter::create(staging.path(), Split::Train)?,
        heldout: SplitWriter::create(staging.path(), Split::Heldout)?,
        skipped_empty: 0,
        skipped_short: 0,
        vocab_bound: 0,
    };
    for (file, path) in opts.inputs.iter().enumerate() {
        read_docs(path, &opts.text_field, opts.doc_separator.as_deref(), &mut |raw| run.push(file, raw))?;
    }
    run.flush()?;

    let Run { train, heldout, skipped_empty, skipped_short, vocab_bound, .. } = run;
    let summary = PrepareSummary {
        documents: train.docs + heldout.docs,
        tokens: train.num_tokens + heldout.num_tokens,
        heldout_documents: heldout.docs,
        heldout_tokens: heldout.num_tokens,
        skipped_empty,
        skipped_short,
        files: opts.inputs.len(),
        vocab_bound,
    };
    let inputs: Vec<String> = opts.inputs.iter().map(|p| p.display().to_string()).collect();
    if summary.documents == 0 {
        bail!(
            "empty corpus: no documents left in {} ({skipped_empty} empty, {skipped_short} shorter than {} tokens)",
            inputs.join(", "),
            opts.min_tokens.max(1)
        );
    }
    if train.docs == 0 {
        bail!(
            "all {} documents of {} went to the held-out split (heldout_fraction {}): the train split would be empty",
            summary.documents,
            inputs.join(", "),
            opts.heldout_fraction
        );
    }
    train.finish()?;
    heldout.finish()?;
    let meta = Meta {
        format: FORMAT.to_string(),
        summary: summary.clone(),
        inputs,
        seed: opts.seed,
        heldout_fraction: opts.heldout_fraction,
        min_tokens: opts.min_tokens,
        text_field: opts.text_field.clone(),
        doc_separator: opts.doc_separator.clone(),
    };
    write_meta(staging.path(), &meta)?;
    staging.commit(opts.overwrite)?;
    Ok(summary)
}

fn validate(opts: &PrepareOptions) -> Result<()> {
    if opts.inputs.is_empty() {
        bail!("no input files given");
    }
    for path in &opts.inputs {
        if !path.exists() {
            bail!("input {} does not exist", path.display());
        }
        if !path.is_file() {
            bail!("input {} is not a file", path.display());
        }
    }
    if !(0.0..1.0).contains(&opts.heldout_fraction) {
        bail!("heldout_fraction must be in [0, 1), got {}", opts.heldout_fraction);
    }
    if opts.text_field.is_empty() {
        bail!("text_field must not be empty");
    }
    if opts.doc_separator.as_deref() == Some("") {
        bail!("doc_separator must not be empty (leave it unset for one document per file)");
    }
    Ok(())
}

/// A document waiting in the current chunk.
struct Pending {
    /// Position among all documents read, for the held-out choice.
    index: u64,
    file: usize,
    line: usize,
    text: String,
    answer_spans: Vec<(usize, usize)>,
}

struct Run<'a> {
    tokenizer: &'a Tokenizer,
    opts: &'a PrepareOptions,
    chunk_bytes: usize,
    pending: Vec<Pending>,
    pending_bytes: usize,
    next_index: u64,
    train: SplitWriter,
    heldout: SplitWriter,
    skipped_empty: usize,
    skipped_short: usize,
    vocab_bound: u64,
}

impl Run<'_> {
    fn push(&mut self, file: usize, raw: RawDoc) -> Result<()> {
        let index = self.next_index;
        self.next_index += 1;
        if raw.text.trim().is_empty() {
            self.skipped_empty += 1;
            return Ok(());
        }
        self.pending_bytes += raw.text.len();
        self.pending.push(Pending { index, file, line: raw.line, text: raw.text, answer_spans: raw.answer_spans });
        if self.pending_bytes >= self.chunk_bytes {
            self.flush()?;
        }
        Ok(())
    }

    /// Tokenizes the pending chunk in parallel and writes it in document order.
    fn flush(&mut self) -> Result<()> {
        let (tokenizer, inputs) = (self.tokenizer, &self.opts.inputs);
        let encoded: Vec<(Vec<u32>, Vec<u8>)> = self
            .pending
            .par_iter()
            .map(|doc| {
                let at = || format!("{}:{}", inputs[doc.file].display(), doc.line);
                let (ids, offsets) = tokenizer.encode_with_offsets(&doc.text).with_context(|| format!("{}: cannot tokenize", at()))?;
                // A token is an answer token when its characters overlap a marked span.
                let marks = offsets
                    .iter()
                    .map(|&(a, b)| u8::from(a < b && doc.answer_spans.iter().any(|&(s, e)| a < e && s < b)))
                    .collect();
                let ids = ids
                    .into_iter()
                    .map(|id| u32::try_from(id).with_context(|| format!("{}: token id {id} does not fit in u32", at())))
                    .collect::<Result<_>>()?;
                Ok((ids, marks))
            })
            .collect::<Result<_>>()?;
        let min_tokens = self.opts.min_tokens.max(1);
        for (doc, (ids, marks)) in self.pending.drain(..).zip(encoded) {
            if ids.len() < min_tokens {
                self.skipped_short += 1;
                continue;
            }
            if let Some(&max) = ids.iter().max() {
                self.vocab_bound = self.vocab_bound.max(u64::from(max) + 1);
            }
            let writer = if is_heldout(self.opts.seed, doc.index, self.opts.heldout_fraction) {
                &mut self.heldout
            } else {
                &mut self.train
            };
            writer.push(&ids, &marks)?;
        }
        self.pending_bytes = 0;
        Ok(())
    }
}

/// Whether document `index` belongs to the held-out split: a seeded hash mapped to [0, 1).
pub(crate) fn is_heldout(seed: u64, index: u64, fraction: f64) -> bool {
    let h = splitmix64(seed ^ splitmix64(index.wrapping_add(0x6865_6c64_6f75_7421)));
    // Top 53 bits → a uniform double in [0, 1).
    ((h >> 11) as f64) * (1.0 / (1u64 << 53) as f64) < fraction
}

fn splitmix64(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

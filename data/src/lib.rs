//! Training data: tokenized once, memory-mapped, visited in a deterministic resumable order.
//!
//! - [`prepare`] turns text files (plain text or JSON Lines) into a dataset directory, tokenizing
//!   in parallel with byte-identical output for any thread count.
//! - [`Dataset`] maps one split of it and hands out documents as zero-copy `&[u32]` slices.
//! - [`DocStream`] orders documents per epoch and per rank from `(seed, epoch)` alone, so a
//!   two-integer [`Cursor`] resumes it exactly; [`doc_rng`] gives per-document randomness that
//!   a resume replays too.
//!
//! # On-disk format (`rlp-tokens-v1`)
//!
//! A dataset directory holds, for each split `train` and `heldout` (the latter possibly empty):
//!
//! - `<split>.tokens`: little-endian u32 token ids of every kept document, concatenated;
//! - `<split>.offsets`: little-endian u64, `n_docs + 1` entries starting at 0, document `i` being
//!   `tokens[offsets[i]..offsets[i + 1]]`;
//!
//! and `meta.json` ([`Meta`]): `format`, `vocab_bound` (largest id + 1), the [`PrepareSummary`]
//! counts (totals over both splits plus the held-out share), and how it was made (`inputs`,
//! `seed`, `heldout_fraction`, `min_tokens`, `text_field`, `doc_separator`).
//!
//! Ids are exactly what the tokenizer's `encode` gives (BOS included when its post-processor
//! adds one); nothing separates documents inside `.tokens` — the offsets do.
pub mod dataset;
pub mod meta;
mod output;
pub mod prepare;
mod source;
pub mod split;
pub mod stream;
pub mod synth;

pub use dataset::Dataset;
pub use meta::Meta;
pub use prepare::{prepare, PrepareOptions, PrepareSummary};
pub use split::Split;
pub use stream::{doc_rng, Cursor, DocStream, StreamDoc};
pub use synth::{synth, SynthOptions};

#[cfg(test)]
mod tests;

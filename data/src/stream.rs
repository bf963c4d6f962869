//! A deterministic, resumable, rank-sharded order over a dataset's documents.
//!
//! Epoch `e` visits a fresh permutation of all documents; rank `r` of `world` takes entries
//! `r, r + world, r + 2·world, …` of it, `num_docs / world` of them (the tail that would make
//! ranks unequal is dropped for that epoch). Everything derives from `(seed, epoch)`, so a
//! [`Cursor`] — two integers — is all a checkpoint needs to continue exactly where it stopped.
use anyhow::{bail, Result};
use rand::{RngCore, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

/// ChaCha stream ids keep the permutation's random numbers apart from `doc_rng`'s, even for
/// equal keys.
const DOC_STREAM: u64 = 0;
const PERMUTATION_STREAM: u64 = 1;

/// Position in this rank's share of the epoch's permutation: the next document returned is entry
/// `offset` of epoch `epoch`'s share.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Cursor {
    pub epoch: u64,
    pub offset: u64,
}

/// A document handed out by [`DocStream::next_doc`], with the epoch it was drawn in: `(epoch,
/// index)` is unique within a rank's stream and across ranks, so it is the key for
/// [`doc_rng`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StreamDoc {
    pub index: usize,
    pub epoch: u64,
}

impl StreamDoc {
    /// `doc_rng(seed, self.epoch, self.index, salt)`.
    pub fn rng(&self, seed: u64, salt: u64) -> ChaCha8Rng {
        doc_rng(seed, self.epoch, self.index, salt)
    }
}

pub struct DocStream {
    num_docs: usize,
    seed: u64,
    rank: usize,
    world: usize,
    cursor: Cursor,
    /// This rank's share of `cursor.epoch`'s permutation (u32 halves the memory of usize).
    share: Vec<u32>,
}

impl DocStream {
    pub fn new(num_docs: usize, seed: u64, rank: usize, world: usize) -> Result<DocStream> {
        DocStream::resume(num_docs, seed, rank, world, Cursor { epoch: 0, offset: 0 })
    }

    /// Continues a stream from `cursor` (from [`DocStream::cursor`] of a stream made with the
    /// same `num_docs`, `seed`, `rank` and `world`).
    pub fn resume(num_docs: usize, seed: u64, rank: usize, world: usize, cursor: Cursor) -> Result<DocStream> {
        if world == 0 {
            bail!("world size must be at least 1");
        }
        if rank >= world {
            bail!("rank {rank} is out of range for world size {world}");
        }
        if num_docs < world {
            bail!("{num_docs} documents cannot be shared among {world} ranks: some rank would get none");
        }
        if u32::try_from(num_docs).is_err() {
            bail!("{num_docs} documents: at most {} are supported", u32::MAX);
        }
        let per_rank = (num_docs / world) as u64;
        if cursor.offset > per_rank {
            bail!(
                "cursor offset {} is past the {per_rank} documents per epoch of rank {rank} \
                 (resumed with a different dataset or world size?)",
                cursor.offset
            );
        }
        let share = rank_share(num_docs, seed, cursor.epoch, rank, world);
        Ok(DocStream { num_docs, seed, rank, world, cursor, share })
    }

    /// The next document, moving to the next epoch (and its new permutation) after the last one.
    pub fn next_doc(&mut self) -> StreamDoc {
        if self.cursor.offset as usize >= self.share.len() {
            self.cursor = Cursor { epoch: self.cursor.epoch + 1, offset: 0 };
            self.share = rank_share(self.num_docs, self.seed, self.cursor.epoch, self.rank, self.world);
        }
        let index = self.share[self.cursor.offset as usize] as usize;
        self.cursor.offset += 1;
        StreamDoc { index, epoch: self.cursor.epoch }
    }

    pub fn cursor(&self) -> Cursor {
        self.cursor
    }

    /// Documents this rank visits per epoch: `num_docs / world`.
    pub fn docs_per_epoch(&self) -> usize {
        self.share.len()
    }
}

/// A seeded RNG for choices about one document in one epoch (e.g. which positions to train
/// on), so a resumed run replays them without saving RNG state.
pub fn doc_rng(seed: u64, epoch: u64, doc: usize, salt: u64) -> ChaCha8Rng {
    let mut rng = ChaCha8Rng::from_seed(key([seed, epoch, doc as u64, salt]));
    rng.set_stream(DOC_STREAM);
    rng
}

/// Rank `rank`'s entries of epoch `epoch`'s permutation.
fn rank_share(num_docs: usize, seed: u64, epoch: u64, rank: usize, world: usize) -> Vec<u32> {
    let perm = permutation(num_docs, seed, epoch);
    perm.into_iter().skip(rank).step_by(world).take(num_docs / world).collect()
}

/// Fisher–Yates shuffle of `0..n`. Written out (with our own bounded draw) rather than using
/// `rand`'s `shuffle`, whose sampling may change between `rand` versions: the order must stay
/// the same for a checkpoint to resume after an upgrade. ChaCha8's output itself is fixed.
pub(crate) fn permutation(n: usize, seed: u64, epoch: u64) -> Vec<u32> {
    let mut rng = ChaCha8Rng::from_seed(key([seed, epoch, 0, 0]));
    rng.set_stream(PERMUTATION_STREAM);
    let mut perm: Vec<u32> = (0..n as u32).collect();
    for i in (1..n).rev() {
        let j = below(&mut rng, i as u64 + 1) as usize;
        perm.swap(i, j);
    }
    perm
}

/// Uniform integer in `0..bound` (Lemire's multiply-and-reject; unbiased).
fn below(rng: &mut ChaCha8Rng, bound: u64) -> u64 {
    let mut m = u128::from(rng.next_u64()) * u128::from(bound);
    if (m as u64) < bound {
        let threshold = bound.wrapping_neg() % bound;
        while (m as u64) < threshold {
            m = u128::from(rng.next_u64()) * u128::from(bound);
        }
    }
    (m >> 64) as u64
}

fn key(words: [u64; 4]) -> [u8; 32] {
    let mut k = [0u8; 32];
    for (chunk, w) in k.chunks_exact_mut(8).zip(words) {
        chunk.copy_from_slice(&w.to_le_bytes());
    }
    k
}

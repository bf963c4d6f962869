//! Zero-copy, memory-mapped reading of one split of a prepared dataset.
use std::fs::File;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use memmap2::Mmap;

use crate::meta::Meta;
use crate::split::Split;

/// One split of a prepared dataset. Opening checks the files against each other and against
/// `meta.json`; after that, reads cannot fail.
pub struct Dataset {
    dir: PathBuf,
    split: Split,
    meta: Meta,
    /// `None` for an empty split (nothing to map).
    tokens: Option<Mmap>,
    offsets: Mmap,
    /// Answer-token marks, one byte per token; `None` when the split has no marks file
    /// (datasets prepared before marks existed) or is empty.
    marks: Option<Mmap>,
}

impl Dataset {
    pub fn open(dir: &Path, split: Split) -> Result<Dataset> {
        if cfg!(target_endian = "big") {
            bail!("reading {}: datasets are little-endian and this host is big-endian (unsupported)", dir.display());
        }
        let meta = Meta::read(dir)?;
        let tokens_path = dir.join(split.tokens_file());
        let offsets_path = dir.join(split.offsets_file());
        let tokens = map(&tokens_path)?;
        let offsets = map(&offsets_path)?;

        if tokens.len() % 4 != 0 {
            bail!("{} is {} bytes, not a whole number of u32 token ids", tokens_path.display(), tokens.len());
        }
        if offsets.len() % 8 != 0 || offsets.is_empty() {
            bail!(
                "{} is {} bytes, expected a positive multiple of 8 (u64 offsets)",
                offsets_path.display(),
                offsets.len()
            );
        }
        // mmap returns page-aligned memory; checked anyway because the casts below rely on it.
        for (m, path, align) in [(&tokens, &tokens_path, 4), (&offsets, &offsets_path, 8)] {
            if !(m.as_ptr() as usize).is_multiple_of(align) {
                bail!("mapping of {} is not {align}-byte aligned", path.display());
            }
        }
        let marks_path = dir.join(split.marks_file());
        let marks = if marks_path.is_file() { Some(map(&marks_path)?) } else { None };
        if let Some(m) = &marks {
            if m.len() * 4 != tokens.len() {
                bail!("{} has {} marks for {} tokens", marks_path.display(), m.len(), tokens.len() / 4);
            }
        }
        let marks = marks.filter(|m| !m.is_empty());
        let tokens = if tokens.is_empty() { None } else { Some(tokens) };
        let ds = Dataset { dir: dir.to_path_buf(), split, meta, tokens, offsets, marks };

        let offs = ds.offsets();
        let num_tokens = ds.tokens().len() as u64;
        if offs[0] != 0 {
            bail!("{}: first offset is {}, expected 0", offsets_path.display(), offs[0]);
        }
        if let Some(i) = offs.windows(2).position(|w| w[1] < w[0]) {
            bail!("{}: offsets decrease at document {i} ({} then {})", offsets_path.display(), offs[i], offs[i + 1]);
        }
        let last = offs[offs.len() - 1];
        if last != num_tokens {
            bail!(
                "{}: last offset is {last} but {} holds {num_tokens} tokens",
                offsets_path.display(),
                tokens_path.display()
            );
        }
        let (want_docs, want_tokens) = match split {
            Split::Train => (ds.meta.train_documents(), ds.meta.train_tokens()),
            Split::Heldout => (ds.meta.summary.heldout_documents, ds.meta.summary.heldout_tokens),
        };
        if ds.num_docs() != want_docs || num_tokens != want_tokens {
            bail!(
                "{} split in {} has {} documents and {num_tokens} tokens, but meta.json says {want_docs} and {want_tokens} \
                 (files from different runs?)",
                split,
                dir.display(),
                ds.num_docs()
            );
        }
        Ok(ds)
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn split(&self) -> Split {
        self.split
    }

    pub fn meta(&self) -> &Meta {
        &self.meta
    }

    /// One more than the largest token id in the dataset (both splits).
    pub fn vocab_bound(&self) -> u64 {
        self.meta.summary.vocab_bound
    }

    pub fn num_docs(&self) -> usize {
        self.offsets().len() - 1
    }

    pub fn num_tokens(&self) -> u64 {
        self.tokens().len() as u64
    }

    /// Tokens of document `i`, borrowed from the mapping. Panics if `i >= num_docs()`, like
    /// slice indexing; see [`Dataset::get`] for a checked version.
    pub fn doc(&self, i: usize) -> &[u32] {
        match self.get(i) {
            Some(doc) => doc,
            None => panic!("document {i} out of range: {} split has {} documents", self.split, self.num_docs()),
        }
    }

    pub fn get(&self, i: usize) -> Option<&[u32]> {
        let offs = self.offsets();
        if i + 1 >= offs.len() {
            return None;
        }
        // `open` checked that offsets are monotonic and end at the token count, so these fit.
        Some(&self.tokens()[offs[i] as usize..offs[i + 1] as usize])
    }

    /// Answer marks of document `i` (1 = answer token), when the dataset has marks.
    pub fn marks(&self, i: usize) -> Option<&[u8]> {
        let m = self.marks.as_ref()?;
        let offs = self.offsets();
        (i + 1 < offs.len()).then(|| &m[offs[i] as usize..offs[i + 1] as usize])
    }

    /// Whether any token of this split is marked as an answer token.
    pub fn has_marks(&self) -> bool {
        self.marks.as_ref().is_some_and(|m| m.iter().any(|&b| b != 0))
    }

    /// Tokens of document `i` as the `i64` ids tensors take. Panics like [`Dataset::doc`].
    pub fn doc_i64(&self, i: usize) -> Vec<i64> {
        self.doc(i).iter().map(|&t| i64::from(t)).collect()
    }

    pub fn doc_len(&self, i: usize) -> usize {
        self.doc(i).len()
    }

    fn tokens(&self) -> &[u32] {
        match &self.tokens {
            // SAFETY: `open` checked that the mapping is 4-byte aligned and a multiple of 4 bytes
            // long; every bit pattern is a valid u32 and the host is little-endian like the
            // file. The slice borrows `self`, which owns the read-only mapping.
            Some(m) => unsafe { std::slice::from_raw_parts(m.as_ptr().cast::<u32>(), m.len() / 4) },
            None => &[],
        }
    }

    fn offsets(&self) -> &[u64] {
        let m = &self.offsets;
        // SAFETY: as for `tokens`, with 8-byte alignment and length checked in `open`.
        unsafe { std::slice::from_raw_parts(m.as_ptr().cast::<u64>(), m.len() / 8) }
    }
}

fn map(path: &Path) -> Result<Mmap> {
    let file = File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
    // SAFETY: the mapping is read-only; as with any mmap reader, a file truncated underneath us
    // by another process could fault. Prepared datasets are written once and never modified.
    unsafe { Mmap::map(&file) }.with_context(|| format!("cannot map {}", path.display()))
}

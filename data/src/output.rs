//! Writing a dataset directory atomically: everything goes into a hidden sibling directory that
//! is renamed into place at the end, so a failed or interrupted run never leaves a half-written
//! dataset where a reader would find it.
use std::fs::{self, File};
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};

use crate::meta::{Meta, META_FILE};
use crate::split::Split;

/// Fails unless `output` can be (re)placed: absent, an empty directory, or — with `overwrite` —
/// an earlier prepared dataset. Never agrees to replace a directory of other files, since
/// replacing deletes it.
pub(crate) fn check_output(output: &Path, overwrite: bool) -> Result<()> {
    if !output.exists() {
        return Ok(());
    }
    if !output.is_dir() {
        bail!("output {} exists and is not a directory", output.display());
    }
    let mut entries = fs::read_dir(output).with_context(|| format!("cannot list {}", output.display()))?;
    if entries.next().is_none() {
        return Ok(());
    }
    if !output.join(META_FILE).is_file() {
        bail!("output {} is a non-empty directory that is not a prepared dataset (no {META_FILE}); refusing to replace it", output.display());
    }
    if !overwrite {
        bail!("output {} already holds a prepared dataset (ask to overwrite it to replace it)", output.display());
    }
    Ok(())
}

/// A hidden directory next to the output; removed on drop unless committed.
pub(crate) struct Staging {
    dir: PathBuf,
    /// Where a replaced dataset is moved before it is deleted.
    old: PathBuf,
    output: PathBuf,
    committed: bool,
}

impl Staging {
    pub(crate) fn create(output: &Path) -> Result<Staging> {
        let Some(name) = output.file_name() else {
            bail!("output path {} does not end in a directory name", output.display());
        };
        let parent = match output.parent() {
            Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
            _ => PathBuf::from("."),
        };
        fs::create_dir_all(&parent).with_context(|| format!("cannot create {}", parent.display()))?;
        let hidden = |what: &str| parent.join(format!(".{}.{what}-{}", name.to_string_lossy(), std::process::id()));
        let (dir, old) = (hidden("partial"), hidden("old"));
        for stale in [&dir, &old] {
            // Left by an earlier crashed run that had our pid: never a valid dataset, or one
            // already replaced.
            if stale.exists() {
                fs::remove_dir_all(stale).with_context(|| format!("cannot remove stale {}", stale.display()))?;
            }
        }
        fs::create_dir(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
        Ok(Staging { dir, old, output: output.to_path_buf(), committed: false })
    }

    pub(crate) fn path(&self) -> &Path {
        &self.dir
    }

    /// Moves the staged dataset to the output path, replacing what `check_output` allowed.
    pub(crate) fn commit(mut self, overwrite: bool) -> Result<()> {
        // Checked again: the output may have appeared while we were tokenizing.
        check_output(&self.output, overwrite)?;
        if self.output.exists() {
            // rename(2) cannot replace a non-empty directory, so move the old one aside first.
            let old = self.old.clone();
            fs::rename(&self.output, &old).with_context(|| format!("cannot move {} aside", self.output.display()))?;
            if let Err(e) = fs::rename(&self.dir, &self.output) {
                let _ = fs::rename(&old, &self.output);
                return Err(e).with_context(|| format!("cannot move the new dataset to {}", self.output.display()));
            }
            self.committed = true;
            fs::remove_dir_all(&old).with_context(|| {
                format!(
                    "dataset written to {}, but the old copy at {} could not be removed",
                    self.output.display(),
                    old.display()
                )
            })?;
        } else {
            fs::rename(&self.dir, &self.output)
                .with_context(|| format!("cannot move {} to {}", self.dir.display(), self.output.display()))?;
            self.committed = true;
        }
        Ok(())
    }
}

impl Drop for Staging {
    fn drop(&mut self) {
        if !self.committed {
            let _ = fs::remove_dir_all(&self.dir);
        }
    }
}

/// Appends documents to one split's tokens and offsets files.
pub(crate) struct SplitWriter {
    tokens_path: PathBuf,
    offsets_path: PathBuf,
    marks_path: PathBuf,
    tokens: BufWriter<File>,
    offsets: BufWriter<File>,
    marks: BufWriter<File>,
    pub docs: usize,
    pub num_tokens: u64,
}

impl SplitWriter {
    pub(crate) fn create(dir: &Path, split: Split) -> Result<SplitWriter> {
        let tokens_path = dir.join(split.tokens_file());
        let offsets_path = dir.join(split.offsets_file());
        let marks_path = dir.join(split.marks_file());
        let open = |p: &Path| File::create(p).with_context(|| format!("cannot create {}", p.display()));
        let mut w = SplitWriter {
            tokens: BufWriter::with_capacity(1 << 20, open(&tokens_path)?),
            offsets: BufWriter::with_capacity(1 << 16, open(&offsets_path)?),
            marks: BufWriter::with_capacity(1 << 18, open(&marks_path)?),
            tokens_path,
            offsets_path,
            marks_path,
            docs: 0,
            num_tokens: 0,
        };
        w.offsets
            .write_all(&0u64.to_le_bytes())
            .with_context(|| format!("cannot write {}", w.offsets_path.display()))?;
        Ok(w)
    }

    /// `marks`: one byte per token (1 = answer token).
    pub(crate) fn push(&mut self, doc: &[u32], marks: &[u8]) -> Result<()> {
        debug_assert_eq!(doc.len(), marks.len());
        self.marks.write_all(marks).with_context(|| format!("cannot write {}", self.marks_path.display()))?;
        let mut bytes = Vec::with_capacity(doc.len() * 4);
        for id in doc {
            bytes.extend_from_slice(&id.to_le_bytes());
        }
        self.tokens.write_all(&bytes).with_context(|| format!("cannot write {}", self.tokens_path.display()))?;
        self.docs += 1;
        self.num_tokens += doc.len() as u64;
        self.offsets
            .write_all(&self.num_tokens.to_le_bytes())
            .with_context(|| format!("cannot write {}", self.offsets_path.display()))
    }

    /// Flushes and syncs both files, so the rename in `commit` publishes complete data.
    pub(crate) fn finish(self) -> Result<()> {
        for (w, path) in [(self.tokens, &self.tokens_path), (self.offsets, &self.offsets_path), (self.marks, &self.marks_path)] {
            let file = w
                .into_inner()
                .map_err(|e| e.into_error())
                .with_context(|| format!("cannot write {}", path.display()))?;
            file.sync_all().with_context(|| format!("cannot sync {}", path.display()))?;
        }
        Ok(())
    }
}

pub(crate) fn write_meta(dir: &Path, meta: &Meta) -> Result<()> {
    meta.write(dir)?;
    let path = dir.join(META_FILE);
    File::open(&path).and_then(|f| f.sync_all()).with_context(|| format!("cannot sync {}", path.display()))
}

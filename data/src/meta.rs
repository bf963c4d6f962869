//! `meta.json`: what a prepared dataset holds and how it was made.
use std::path::Path;

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};

use crate::prepare::PrepareSummary;

pub const META_FILE: &str = "meta.json";
/// Bumped whenever the on-disk layout changes, so an old reader refuses a new dataset (and back).
pub const FORMAT: &str = "rlp-tokens-v1";

/// Contents of `meta.json`. Document and token counts cover both splits; the train split holds
/// `documents - heldout_documents` documents and `tokens - heldout_tokens` tokens.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Meta {
    pub format: String,
    /// The counts `prepare` reported, stored flat in the JSON.
    #[serde(flatten)]
    pub summary: PrepareSummary,
    pub inputs: Vec<String>,
    pub seed: u64,
    pub heldout_fraction: f64,
    pub min_tokens: usize,
    pub text_field: String,
    pub doc_separator: Option<String>,
}

impl Meta {
    pub fn train_documents(&self) -> usize {
        self.summary.documents.saturating_sub(self.summary.heldout_documents)
    }

    pub fn train_tokens(&self) -> u64 {
        self.summary.tokens.saturating_sub(self.summary.heldout_tokens)
    }

    /// Reads and checks `dir/meta.json`.
    pub fn read(dir: &Path) -> Result<Meta> {
        let path = dir.join(META_FILE);
        if !path.is_file() {
            bail!("{} is not a prepared dataset: no {META_FILE} in it", dir.display());
        }
        let text = std::fs::read_to_string(&path).with_context(|| format!("cannot read {}", path.display()))?;
        // Look at `format` before the full parse, so a future format gets "unsupported format"
        // rather than a confusing missing-field error.
        let raw: serde_json::Value =
            serde_json::from_str(&text).with_context(|| format!("{} is not valid JSON", path.display()))?;
        match raw.get("format").and_then(serde_json::Value::as_str) {
            Some(FORMAT) => {}
            Some(other) => bail!("{} has format `{other}`, this build reads `{FORMAT}`", path.display()),
            None => bail!("{} has no `format` field (not an rlp dataset?)", path.display()),
        }
        let meta: Meta = serde_json::from_value(raw).with_context(|| format!("{} is malformed", path.display()))?;
        let c = &meta.summary;
        if c.heldout_documents > c.documents || c.heldout_tokens > c.tokens {
            bail!("{}: held-out counts exceed the totals", path.display());
        }
        Ok(meta)
    }

    pub fn write(&self, dir: &Path) -> Result<()> {
        let path = dir.join(META_FILE);
        let text = serde_json::to_string_pretty(self)?;
        std::fs::write(&path, text + "\n").with_context(|| format!("cannot write {}", path.display()))
    }
}

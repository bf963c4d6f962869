//! `tokenizer.json` through the `tokenizers` crate, plus the files transformers keeps beside it.
use std::path::{Path, PathBuf};

use anyhow::{anyhow, Context, Result};
use serde_json::Value;
use tokenizers::AddedToken;

pub const TOKENIZER_FILE: &str = "tokenizer.json";
pub const TOKENIZER_CONFIG_FILE: &str = "tokenizer_config.json";

/// Tokenizer-side files that are copied as they are when a checkpoint is saved.
const TOKENIZER_COMPANIONS: &[&str] = &["special_tokens_map.json", "chat_template.jinja", "vocab.json", "merges.txt"];

pub struct Tokenizer {
    inner: tokenizers::Tokenizer,
    /// Where `tokenizer.json` came from, for copying its companion files on save.
    source_dir: PathBuf,
    /// Tokens this session added (to mirror into `tokenizer_config.json` on save).
    added: Vec<(u32, String)>,
}

impl Tokenizer {
    pub fn from_dir(dir: &Path) -> Result<Tokenizer> {
        let path = dir.join(TOKENIZER_FILE);
        if !path.is_file() {
            anyhow::bail!("no {TOKENIZER_FILE} in {}", dir.display());
        }
        let inner = tokenizers::Tokenizer::from_file(&path).map_err(|e| anyhow!("cannot load {}: {e}", path.display()))?;
        Ok(Tokenizer { inner, source_dir: dir.to_path_buf(), added: Vec::new() })
    }

    /// Token ids as `transformers`' `tokenizer(text)` gives them (special tokens such as BOS added
    /// when the tokenizer's post-processor adds them).
    pub fn encode(&self, text: &str) -> Result<Vec<i64>> {
        let enc = self.inner.encode(text, true).map_err(|e| anyhow!("cannot tokenize: {e}"))?;
        Ok(enc.get_ids().iter().map(|&i| i as i64).collect())
    }

    /// Token ids with each token's character span `(start, end)` in `text` (special tokens added
    /// by the post-processor have an empty span).
    pub fn encode_with_offsets(&self, text: &str) -> Result<(Vec<i64>, Vec<(usize, usize)>)> {
        let enc = self.inner.encode_char_offsets(text, true).map_err(|e| anyhow!("cannot tokenize: {e}"))?;
        Ok((enc.get_ids().iter().map(|&i| i as i64).collect(), enc.get_offsets().to_vec()))
    }

    /// Text for ids, special tokens kept (so thought delimiters stay visible).
    pub fn decode(&self, ids: &[i64]) -> Result<String> {
        let ids: Vec<u32> = ids.iter().map(|&i| u32::try_from(i)).collect::<Result<_, _>>().context("negative token id")?;
        self.inner.decode(&ids, false).map_err(|e| anyhow!("cannot decode: {e}"))
    }

    pub fn token_id(&self, token: &str) -> Option<i64> {
        self.inner.token_to_id(token).map(i64::from)
    }

    /// One more than the largest id the tokenizer can produce.
    pub fn id_bound(&self) -> i64 {
        let base = self.inner.get_vocab_size(true) as i64;
        let added = self.inner.get_added_tokens_decoder().keys().map(|&i| i as i64 + 1).max().unwrap_or(0);
        base.max(added)
    }

    /// Adds `tokens` as special tokens (never split, never normalised); returns their ids.
    /// Tokens already in the vocabulary keep their ids.
    pub fn add_special_tokens(&mut self, tokens: &[&str]) -> Result<Vec<i64>> {
        let mut ids = Vec::new();
        for &t in tokens {
            if self.inner.token_to_id(t).is_none() {
                self.inner.add_special_tokens(&[AddedToken::from(t, true)]);
                let id = self.inner.token_to_id(t).with_context(|| format!("tokenizer did not accept token `{t}`"))?;
                self.added.push((id, t.to_string()));
            }
            ids.push(self.token_id(t).with_context(|| format!("token `{t}` has no id"))?);
        }
        Ok(ids)
    }

    /// Writes `tokenizer.json`, an updated `tokenizer_config.json`, and the companion files.
    pub fn save(&self, dir: &Path) -> Result<()> {
        let path = dir.join(TOKENIZER_FILE);
        self.inner.save(&path, false).map_err(|e| anyhow!("cannot write {}: {e}", path.display()))?;
        let config_src = self.source_dir.join(TOKENIZER_CONFIG_FILE);
        if config_src.is_file() {
            let text = std::fs::read_to_string(&config_src).with_context(|| format!("cannot read {}", config_src.display()))?;
            let mut cfg: Value = serde_json::from_str(&text).with_context(|| format!("{} is not valid JSON", config_src.display()))?;
            if let Some(decoder) = cfg.get_mut("added_tokens_decoder").and_then(Value::as_object_mut) {
                for (id, content) in &self.added {
                    decoder.insert(
                        id.to_string(),
                        serde_json::json!({"content": content, "lstrip": false, "normalized": false,
                                           "rstrip": false, "single_word": false, "special": true}),
                    );
                }
            }
            let out = dir.join(TOKENIZER_CONFIG_FILE);
            std::fs::write(&out, serde_json::to_string_pretty(&cfg)?).with_context(|| format!("cannot write {}", out.display()))?;
        }
        copy_companions(&self.source_dir, dir, TOKENIZER_COMPANIONS)
    }
}

/// Copies those of `names` that exist in `from` into `to`.
pub(crate) fn copy_companions(from: &Path, to: &Path, names: &[&str]) -> Result<()> {
    for name in names {
        let src = from.join(name);
        if src.is_file() {
            std::fs::copy(&src, to.join(name)).with_context(|| format!("cannot copy {}", src.display()))?;
        }
    }
    Ok(())
}

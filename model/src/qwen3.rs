//! Qwen3: the Llama-family decoder with RMSNorm on each head's query and key before rotary.
use anyhow::{bail, Result};
use serde::Deserialize;

use crate::decoder::{DecoderFields, DecoderSpec};

/// Mirrors a Qwen3 `config.json`.
#[derive(Debug, Clone, Deserialize)]
pub struct Qwen3Config {
    #[serde(flatten)]
    pub base: DecoderFields,
    /// Adds biases to q, k, v and o projections.
    #[serde(default)]
    pub attention_bias: bool,
    #[serde(default)]
    pub use_sliding_window: bool,
}

impl Qwen3Config {
    pub fn validate(&self) -> Result<()> {
        self.spec().map(|_| ())
    }

    pub fn spec(&self) -> Result<DecoderSpec> {
        if self.use_sliding_window {
            bail!("use_sliding_window = true is not supported");
        }
        Ok(DecoderSpec { qk_norm: true, qkv_bias: self.attention_bias, o_bias: self.attention_bias, ..self.base.spec()? })
    }
}

//! Qwen2 / Qwen2.5: the Llama-family decoder with biases on the q, k and v projections.
use anyhow::{bail, Result};
use serde::Deserialize;

use crate::decoder::{DecoderFields, DecoderSpec};

/// Mirrors a Qwen2 `config.json`.
#[derive(Debug, Clone, Deserialize)]
pub struct Qwen2Config {
    #[serde(flatten)]
    pub base: DecoderFields,
    #[serde(default)]
    pub use_sliding_window: bool,
}

impl Qwen2Config {
    pub fn validate(&self) -> Result<()> {
        self.spec().map(|_| ())
    }

    pub fn spec(&self) -> Result<DecoderSpec> {
        if self.use_sliding_window {
            bail!("use_sliding_window = true is not supported");
        }
        Ok(DecoderSpec { qkv_bias: true, ..self.base.spec()? })
    }
}

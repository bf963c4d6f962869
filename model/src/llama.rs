//! Llama 2 / 3 / 3.1+: the plain Llama-family decoder (grouped-query attention, optional
//! `llama3` rope scaling, optional attention and MLP biases).
use anyhow::Result;
use serde::Deserialize;

use crate::decoder::{DecoderFields, DecoderSpec};

/// Mirrors a Llama `config.json`.
#[derive(Debug, Clone, Deserialize)]
pub struct LlamaConfig {
    #[serde(flatten)]
    pub base: DecoderFields,
    /// Adds biases to q, k, v and o projections.
    #[serde(default)]
    pub attention_bias: bool,
    #[serde(default)]
    pub mlp_bias: bool,
}

impl LlamaConfig {
    pub fn validate(&self) -> Result<()> {
        self.spec().map(|_| ())
    }

    pub fn spec(&self) -> Result<DecoderSpec> {
        Ok(DecoderSpec {
            qkv_bias: self.attention_bias,
            o_bias: self.attention_bias,
            mlp_bias: self.mlp_bias,
            ..self.base.spec()?
        })
    }
}

//! `config.json` → the architecture's config struct.
//!
//! Each architecture file owns a struct that mirrors its `config.json`; this module reads the file,
//! dispatches on `model_type`, and keeps the raw JSON so that saving writes back every field we
//! do not interpret (generation settings, token ids, `architectures`, ...).
use std::path::Path;

use anyhow::{bail, Context, Result};
use serde::Deserialize;
use serde_json::Value;

use crate::gpt2::Gpt2Config;
use crate::llama::LlamaConfig;
use crate::qwen2::Qwen2Config;
use crate::qwen3::Qwen3Config;

/// The parsed configuration of one supported architecture.
#[derive(Debug, Clone)]
pub enum ArchConfig {
    Qwen3(Qwen3Config),
    Qwen2(Qwen2Config),
    Llama(LlamaConfig),
    Gpt2(Gpt2Config),
}

/// A model's `config.json`: the interpreted architecture plus the raw JSON for round-tripping.
#[derive(Debug, Clone)]
pub struct ModelConfig {
    pub arch: ArchConfig,
    pub raw: Value,
}

struct Common {
    vocab_size: i64,
    max_positions: i64,
    tied: bool,
}

pub const SUPPORTED_MODEL_TYPES: &[&str] = &["qwen3", "qwen2", "llama", "gpt2"];

impl ModelConfig {
    pub fn from_file(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read model config {}", path.display()))?;
        Self::from_json_str(&text).with_context(|| format!("in model config {}", path.display()))
    }

    pub fn from_json_str(text: &str) -> Result<Self> {
        let raw: Value = serde_json::from_str(text).context("config.json is not valid JSON")?;
        let model_type = raw
            .get("model_type")
            .and_then(Value::as_str)
            .context("config.json has no string field `model_type`")?
            .to_string();
        fn parse<T: for<'de> Deserialize<'de>>(raw: &Value, model_type: &str) -> Result<T> {
            T::deserialize(raw).with_context(|| format!("config.json is not a valid `{model_type}` config"))
        }
        let arch = match model_type.as_str() {
            "qwen3" => ArchConfig::Qwen3(parse(&raw, &model_type)?),
            "qwen2" => ArchConfig::Qwen2(parse(&raw, &model_type)?),
            "llama" => ArchConfig::Llama(parse(&raw, &model_type)?),
            "gpt2" => ArchConfig::Gpt2(parse(&raw, &model_type)?),
            other => bail!(
                "unsupported model_type `{other}` (supported: {})",
                SUPPORTED_MODEL_TYPES.join(", ")
            ),
        };
        let config = ModelConfig { arch, raw };
        config.validate()?;
        Ok(config)
    }

    fn validate(&self) -> Result<()> {
        match &self.arch {
            ArchConfig::Qwen3(c) => c.validate(),
            ArchConfig::Qwen2(c) => c.validate(),
            ArchConfig::Llama(c) => c.validate(),
            ArchConfig::Gpt2(c) => c.validate(),
        }
    }

    pub fn model_type(&self) -> &'static str {
        match self.arch {
            ArchConfig::Qwen3(_) => "qwen3",
            ArchConfig::Qwen2(_) => "qwen2",
            ArchConfig::Llama(_) => "llama",
            ArchConfig::Gpt2(_) => "gpt2",
        }
    }

    /// The facts every architecture has, each under its own `config.json` names.
    fn common(&self) -> Common {
        let f = match &self.arch {
            ArchConfig::Qwen3(c) => &c.base,
            ArchConfig::Qwen2(c) => &c.base,
            ArchConfig::Llama(c) => &c.base,
            ArchConfig::Gpt2(c) => {
                return Common { vocab_size: c.vocab_size, max_positions: c.n_positions, tied: c.tie_word_embeddings }
            }
        };
        Common { vocab_size: f.vocab_size, max_positions: f.max_position_embeddings, tied: f.tie_word_embeddings }
    }

    pub fn vocab_size(&self) -> i64 {
        self.common().vocab_size
    }

    /// Longest sequence (prompt + generated) the model accepts.
    pub fn max_positions(&self) -> i64 {
        self.common().max_positions
    }

    pub fn tie_word_embeddings(&self) -> bool {
        self.common().tied
    }

    /// End-of-sequence ids from config.json (`eos_token_id` may be an int or a list).
    pub fn eos_token_ids(&self) -> Vec<i64> {
        token_id_list(self.raw.get("eos_token_id"))
    }

    /// The dtype the checkpoint is stored in (`dtype`, or the older `torch_dtype`).
    pub fn stored_dtype_name(&self) -> Option<&str> {
        self.raw
            .get("dtype")
            .or_else(|| self.raw.get("torch_dtype"))
            .and_then(Value::as_str)
    }

    /// Record a new vocabulary size (after adding tokens) in both views of the config.
    pub fn set_vocab_size(&mut self, n: i64) {
        match &mut self.arch {
            ArchConfig::Qwen3(c) => c.base.vocab_size = n,
            ArchConfig::Qwen2(c) => c.base.vocab_size = n,
            ArchConfig::Llama(c) => c.base.vocab_size = n,
            ArchConfig::Gpt2(c) => c.vocab_size = n,
        }
        self.raw["vocab_size"] = Value::from(n);
    }

    /// Record the dtype the weights are saved in, under the key this config already uses.
    pub fn set_stored_dtype_name(&mut self, name: &str) {
        let key = if self.raw.get("torch_dtype").is_some() && self.raw.get("dtype").is_none() {
            "torch_dtype"
        } else {
            "dtype"
        };
        self.raw[key] = Value::from(name);
    }
}

pub(crate) fn token_id_list(v: Option<&Value>) -> Vec<i64> {
    match v {
        Some(Value::Number(n)) => n.as_i64().into_iter().collect(),
        Some(Value::Array(a)) => a.iter().filter_map(Value::as_i64).collect(),
        _ => Vec::new(),
    }
}

/// Rotary embedding parameters, from transformers-5 `rope_parameters` or the older top-level
/// `rope_theta` + `rope_scaling` pair.
#[derive(Debug, Clone, PartialEq)]
pub struct RopeParams {
    pub theta: f64,
    pub scaling: RopeScaling,
}

#[derive(Debug, Clone, PartialEq)]
pub enum RopeScaling {
    None,
    /// Llama 3.1's frequency-dependent scaling.
    Llama3 { factor: f64, low_freq_factor: f64, high_freq_factor: f64, original_max_position_embeddings: f64 },
}

/// The rope-related fields of a config.json, shared by the Llama-family configs.
#[derive(Debug, Clone, Deserialize, Default)]
pub struct RopeFields {
    #[serde(default)]
    pub rope_theta: Option<f64>,
    #[serde(default)]
    pub rope_scaling: Option<Value>,
    #[serde(default)]
    pub rope_parameters: Option<Value>,
}

impl RopeFields {
    pub fn resolve(&self, default_theta: f64) -> Result<RopeParams> {
        // transformers 5 folds theta and scaling into one `rope_parameters` object.
        let params = self.rope_parameters.as_ref().filter(|v| v.is_object());
        let scaling = self.rope_scaling.as_ref().filter(|v| v.is_object()).or(params);
        let theta = params
            .and_then(|p| p.get("rope_theta"))
            .and_then(Value::as_f64)
            .or(self.rope_theta)
            .unwrap_or(default_theta);
        let Some(s) = scaling else {
            return Ok(RopeParams { theta, scaling: RopeScaling::None });
        };
        let kind = s
            .get("rope_type")
            .or_else(|| s.get("type"))
            .and_then(Value::as_str)
            .unwrap_or("default");
        let num = |key: &str| -> Result<f64> {
            s.get(key)
                .and_then(Value::as_f64)
                .with_context(|| format!("rope scaling `{kind}` needs a numeric `{key}`"))
        };
        let scaling = match kind {
            "default" => RopeScaling::None,
            "llama3" => RopeScaling::Llama3 {
                factor: num("factor")?,
                low_freq_factor: num("low_freq_factor")?,
                high_freq_factor: num("high_freq_factor")?,
                original_max_position_embeddings: num("original_max_position_embeddings")?,
            },
            other => bail!("unsupported rope scaling type `{other}` (supported: default, llama3)"),
        };
        Ok(RopeParams { theta, scaling })
    }
}

pub(crate) fn ensure(cond: bool, msg: impl FnOnce() -> String) -> Result<()> {
    if cond {
        Ok(())
    } else {
        bail!(msg())
    }
}

pub(crate) fn default_true() -> bool {
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rope_from_transformers5_and_legacy_fields() {
        let v5: RopeFields = serde_json::from_str(
            r#"{"rope_parameters": {"rope_theta": 500000.0, "rope_type": "llama3", "factor": 8.0,
                "low_freq_factor": 1.0, "high_freq_factor": 4.0, "original_max_position_embeddings": 8192}}"#,
        )
        .unwrap();
        let legacy: RopeFields = serde_json::from_str(
            r#"{"rope_theta": 500000.0, "rope_scaling": {"rope_type": "llama3", "factor": 8.0,
                "low_freq_factor": 1.0, "high_freq_factor": 4.0, "original_max_position_embeddings": 8192}}"#,
        )
        .unwrap();
        assert_eq!(v5.resolve(1e4).unwrap(), legacy.resolve(1e4).unwrap());
        assert_eq!(v5.resolve(1e4).unwrap().theta, 500000.0);
        let plain: RopeFields = serde_json::from_str(r#"{"rope_theta": 1e6, "rope_scaling": null}"#).unwrap();
        assert_eq!(plain.resolve(1e4).unwrap(), RopeParams { theta: 1e6, scaling: RopeScaling::None });
        let yarn: RopeFields = serde_json::from_str(r#"{"rope_scaling": {"rope_type": "yarn", "factor": 4.0}}"#).unwrap();
        assert!(yarn.resolve(1e4).unwrap_err().to_string().contains("yarn"));
    }

    #[test]
    fn unsupported_model_type_is_named() {
        let err = ModelConfig::from_json_str(r#"{"model_type": "mamba"}"#).unwrap_err();
        assert!(format!("{err:#}").contains("mamba"), "{err:#}");
    }
}

//! `rlp init`: a randomly initialised model for pretraining from scratch.
use std::path::PathBuf;

use anyhow::{bail, Result};
use clap::Args;
use rlp_model::{CausalLm, ModelConfig, Tokenizer};
use serde_json::json;

#[derive(Args, Debug)]
pub struct InitArgs {
    /// Directory with the tokenizer.json to use.
    #[arg(long)]
    pub tokenizer: PathBuf,
    #[arg(long)]
    pub output: PathBuf,
    /// qwen3 or llama.
    #[arg(long, default_value = "qwen3")]
    pub arch: String,
    #[arg(long, default_value_t = 128)]
    pub hidden: i64,
    #[arg(long, default_value_t = 4)]
    pub layers: i64,
    #[arg(long, default_value_t = 4)]
    pub heads: i64,
    #[arg(long, default_value_t = 2)]
    pub kv_heads: i64,
    #[arg(long, default_value_t = 384)]
    pub intermediate: i64,
    #[arg(long, default_value_t = 1024)]
    pub max_positions: i64,
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// A separate output matrix (`lm_head.weight`, as in Qwen3-8B or Llama-3-8B) instead of the
    /// input embeddings reused as one.
    #[arg(long)]
    pub untied_embeddings: bool,
}

pub fn run(a: InitArgs) -> Result<()> {
    let tok = Tokenizer::from_dir(&a.tokenizer)?;
    if a.heads <= 0 || a.hidden % a.heads != 0 {
        bail!("--hidden ({}) must be a multiple of --heads ({})", a.hidden, a.heads);
    }
    let (architecture, model_type) = match a.arch.as_str() {
        "qwen3" => ("Qwen3ForCausalLM", "qwen3"),
        "llama" => ("LlamaForCausalLM", "llama"),
        other => bail!("--arch `{other}` is not supported by init (qwen3, llama)"),
    };
    let eos = tok.token_id("<eos>").or_else(|| tok.token_id("<|endoftext|>"));
    let config = json!({
        "architectures": [architecture],
        "model_type": model_type,
        "vocab_size": tok.id_bound(),
        "hidden_size": a.hidden,
        "intermediate_size": a.intermediate,
        "num_hidden_layers": a.layers,
        "num_attention_heads": a.heads,
        "num_key_value_heads": a.kv_heads,
        "head_dim": a.hidden / a.heads,
        "max_position_embeddings": a.max_positions,
        "rms_norm_eps": 1e-6,
        "rope_parameters": {"rope_type": "default", "rope_theta": 10000.0},
        "hidden_act": "silu",
        "attention_bias": false,
        "tie_word_embeddings": !a.untied_embeddings,
        "bos_token_id": null,
        "eos_token_id": eos,
        "dtype": "float32",
    });
    let config = ModelConfig::from_json_str(&config.to_string())?;
    CausalLm::init_random(config, &tok, &a.output, a.seed)?;
    eprintln!("wrote a random {model_type} ({} layers, hidden {}) to {}", a.layers, a.hidden, a.output.display());
    Ok(())
}

//! Hugging Face-format causal language models on libtorch (via `tch`).
//!
//! One file per architecture (`qwen3`, `qwen2`, `llama`, `gpt2`), each with a config struct that
//! mirrors `config.json`; the Llama family shares `decoder`. [`CausalLm`] loads a checkpoint
//! directory, runs forward passes with an optional [`KvCache`], grows the vocabulary and saves
//! a directory `transformers` loads.
pub mod attention;
pub mod batch;
pub mod cache;
pub mod config;
pub mod decoder;
pub mod gpt2;
pub mod llama;
pub mod lm;
pub mod logprob;
mod nn;
pub mod qwen2;
pub mod qwen3;
pub mod rope;
pub mod tokenizer;
pub mod weights;

pub use batch::{learn_rows, row_chunks, score_rows, token_logprobs, PaddedBatch, Padding, Positions, Rows, TokenScores};
pub use logprob::{entropy, LogProbOpts};
pub use cache::KvCache;
pub use config::ModelConfig;
pub use lm::{CausalLm, Hidden, ModelShape, PassInput, Prefix, TrainPass};
pub use tokenizer::Tokenizer;
pub use weights::{parse_device, parse_kind};

//! Sampling from a [`rlp_model::CausalLm`]: batched, KV-cached, seeded, with the log-prob of every
//! sampled token; and thought rollouts for reinforcement pretraining.
pub mod sample;
pub mod sampler;
pub mod seed;
pub mod thoughts;

pub use sample::{sample, SamplingParams};
pub use sampler::{generate, prefill, Decoder, Finish, Generation};
pub use seed::derive_seed;
pub use thoughts::{sample_thoughts, Delimiters, Thought};

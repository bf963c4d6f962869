//! Sampling from a [`rlp_model::CausalLm`]: batched, KV-cached, seeded, with the log-prob of every
//! sampled token. Thought rollouts for reinforcement pretraining build on [`generate`].
pub mod sample;
pub mod sampler;

pub use sample::{sample, SamplingParams};
pub use sampler::{generate, Finish, Generation};

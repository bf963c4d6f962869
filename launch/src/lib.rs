//! `rlp-launch`, a torchrun-style launcher: see `src/main.rs` for the worker contract.
//!
//! The logic lives in this library so that its pure parts (rank arithmetic, line splitting,
//! error-file parsing) are unit-tested without spawning anything.

pub mod cli;
pub mod env;
pub mod error_file;
pub mod group;
pub mod output;

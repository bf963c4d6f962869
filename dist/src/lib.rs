//! Distributed training over PyTorch's own c10d (NCCL on GPUs, Gloo on CPU).
//!
//! So far: [`env::DistEnv`], the rendezvous contract read from the environment that torchrun,
//! `rlp-launch` or Slurm's `srun` sets for each worker. The c10d shim (TCPStore,
//! ProcessGroupNCCL/Gloo) and the bucketed gradient all-reduce come with the distributed issue.
pub mod env;

pub use env::{DistEnv, Launcher};

//! Distributed training over PyTorch's own c10d: NCCL on GPUs, Gloo on CPU.
//!
//! - [`env::DistEnv`]: the rendezvous contract torchrun, `rlp-launch` or Slurm's `srun` sets.
//! - [`c10d`]: safe wrappers over a thin C++ shim (`csrc/c10d_shim.cpp`) around c10d's
//!   `TCPStore` and `ProcessGroupGloo`/`ProcessGroupNCCL`.
//! - [`group::Dist`]: start-up (store, world-size hand-shake, process group) and collectives whose
//!   errors name the rank and the collective.
//! - [`buckets::Buckets`]: name-sorted flat-buffer gradient all-reduce and weight broadcast.
//! - [`error_file`]: torchrun's per-rank error file, so a launcher can report why a rank died.
pub mod buckets;
pub mod c10d;
pub mod env;
pub mod error_file;
pub mod group;

pub use buckets::{materialize_grads, Buckets, DEFAULT_BUCKET_MB};
pub use c10d::{nccl_compiled, Backend, ReduceOp};
pub use env::{DistEnv, Launcher};
pub use group::{Dist, DistOptions};

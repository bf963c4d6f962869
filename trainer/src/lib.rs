//! The reinforcement-pretraining loop (`rlp train`).
//!
//! [`Trainer::train_step`] (in `step.rs`) is one step of RLP's Algorithm 1 read top to bottom;
//! the modules around it are the parts it uses: where thoughts go (`positions`), teacher-forced
//! scores (`score`), RPT's answer rewards (`rewards`), the optimizer (`adamw`, `schedule`), the
//! EMA teacher (`ema`), and the run's outputs (`logging`, `checkpoint`, `eval`, `dump`).
pub mod adamw;
pub mod checkpoint;
pub mod config;
pub mod dump;
pub mod ema;
pub mod eval;
pub mod logging;
pub mod plan;
pub mod positions;
pub mod presets;
pub mod rewards;
pub mod run;
pub mod schedule;
pub mod score;
pub mod step;
pub mod trainer;

pub use config::TrainConfig;
pub use run::RunOptions;
pub use trainer::Trainer;

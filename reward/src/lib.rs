//! Reward variants and advantages for reinforcement pretraining.
//!
//! Empty until the trainer issue: RLP's information gain (`s_pred - s_ema`), Quiet-STaR's
//! mean-over-thoughts baseline, RPT's prefix match, and the group advantage estimators land here.

//! The training loop (`rlp train`). Empty until the trainer issue.

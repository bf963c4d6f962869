//! `rlp-launch`, a torchrun-style launcher. Empty until the distributed issue.

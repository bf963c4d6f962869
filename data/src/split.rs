//! The two splits of a prepared dataset and the files each one lives in.
use std::fmt;
use std::str::FromStr;

use anyhow::bail;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Split {
    Train,
    Heldout,
}

impl Split {
    pub const ALL: [Split; 2] = [Split::Train, Split::Heldout];

    pub fn name(self) -> &'static str {
        match self {
            Split::Train => "train",
            Split::Heldout => "heldout",
        }
    }

    /// Little-endian u32 token ids of every document, back to back.
    pub fn tokens_file(self) -> String {
        format!("{}.tokens", self.name())
    }

    /// Little-endian u64 document boundaries: `n_docs + 1` entries starting at 0.
    /// One byte per token: 1 where the token is part of a marked answer span.
    pub fn marks_file(self) -> String {
        format!("{}.marks", self.name())
    }

    pub fn offsets_file(self) -> String {
        format!("{}.offsets", self.name())
    }
}

impl fmt::Display for Split {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Split {
    type Err = anyhow::Error;

    fn from_str(s: &str) -> anyhow::Result<Split> {
        match s {
            "train" => Ok(Split::Train),
            "heldout" | "held-out" => Ok(Split::Heldout),
            other => bail!("unknown split `{other}` (expected `train` or `heldout`)"),
        }
    }
}

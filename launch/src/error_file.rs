//! Per-worker error files (TORCHELASTIC_ERROR_FILE) in torchrun's JSON format.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use serde_json::Value;

/// Creates `root/attempt_{attempt}/rank_{rank}/` and returns the error file path inside it.
///
/// A fresh path per attempt keeps a message from a failed attempt from being blamed on a
/// later one.
pub fn prepare(root: &Path, attempt: u32, rank: u32) -> Result<PathBuf> {
    let dir = root
        .join(format!("attempt_{attempt}"))
        .join(format!("rank_{rank}"));
    fs::create_dir_all(&dir)
        .with_context(|| format!("cannot create error-file directory {}", dir.display()))?;
    Ok(dir.join("error.json"))
}

/// The message a worker left in its error file: Ok(None) when it wrote none.
pub fn read_message(path: &Path) -> Result<Option<String>> {
    let text = match fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => {
            return Err(e).with_context(|| format!("cannot read error file {}", path.display()))
        }
    };
    parse_message(&text)
        .map(Some)
        .with_context(|| format!("error file {} is not in torchrun's format", path.display()))
}

/// Accepts torchrun's `{"message": {"message": "...", "extraInfo": {...}}}` and the flat
/// `{"message": "..."}`.
pub fn parse_message(text: &str) -> Result<String> {
    let v: Value = serde_json::from_str(text)?;
    let message = match v.get("message") {
        Some(Value::String(s)) => s,
        Some(Value::Object(inner)) => match inner.get("message") {
            Some(Value::String(s)) => s,
            _ => anyhow::bail!("no string at message.message"),
        },
        _ => anyhow::bail!("no \"message\" field"),
    };
    Ok(message.trim_end().to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn torchrun_format() {
        let t = r#"{"message": {"message": "RuntimeError: CUDA out of memory", "extraInfo": {"py_callstack": "...", "timestamp": "1"}}}"#;
        assert_eq!(
            parse_message(t).unwrap(),
            "RuntimeError: CUDA out of memory"
        );
    }

    #[test]
    fn flat_format() {
        assert_eq!(
            parse_message(r#"{"message": "bad shard\n"}"#).unwrap(),
            "bad shard"
        );
    }

    #[test]
    fn other_json_is_rejected() {
        assert!(parse_message(r#"{"error": "x"}"#).is_err());
        assert!(parse_message(r#"{"message": {"text": "x"}}"#).is_err());
        assert!(parse_message("not json").is_err());
    }

    #[test]
    fn prepare_and_read() {
        let root = tempfile::tempdir().unwrap();
        let p = prepare(root.path(), 2, 5).unwrap();
        assert!(p.ends_with("attempt_2/rank_5/error.json"));
        assert!(p.parent().unwrap().is_dir());
        assert_eq!(read_message(&p).unwrap(), None);
        fs::write(&p, r#"{"message": "boom"}"#).unwrap();
        assert_eq!(read_message(&p).unwrap().as_deref(), Some("boom"));
        fs::write(&p, "garbage").unwrap();
        assert!(format!("{:#}", read_message(&p).unwrap_err()).contains("error.json"));
    }
}

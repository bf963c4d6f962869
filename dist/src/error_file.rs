//! torchrun's error-file contract: a worker that fails writes `{"message": {"message": …,
//! "extraInfo": {…}}}` to `$TORCHELASTIC_ERROR_FILE`; torchrun (and `rlp-launch`) then show
//! that message as the failing rank's error instead of a bare exit code.
use std::time::{SystemTime, UNIX_EPOCH};

/// Records `message` for the launcher, if one asked for it. Best effort: a failure to write is
/// reported on stderr and otherwise ignored, because the worker is already failing.
pub fn record(message: &str) {
    let Some(path) = std::env::var_os("TORCHELASTIC_ERROR_FILE") else { return };
    if let Err(e) = std::fs::write(&path, payload(message).to_string()) {
        eprintln!("note: cannot write the error file {}: {e}", std::path::Path::new(&path).display());
    }
}

/// The JSON torchrun's `@record` writes; the message stands in for Python's call stack.
fn payload(message: &str) -> serde_json::Value {
    let timestamp = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
    serde_json::json!({
        "message": {"message": message, "extraInfo": {"py_callstack": message, "timestamp": timestamp.to_string()}}
    })
}

#[cfg(test)]
mod tests {
    #[test]
    fn message_survives_quotes_backslashes_newlines_and_control_characters() {
        let message = "rank 1: \"x\" \\ y\nz\u{1}";
        let text = super::payload(message).to_string();
        let back: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(back["message"]["message"], message);
        assert_eq!(back["message"]["extraInfo"]["py_callstack"], message);
        assert!(!text.contains('\n'), "one line: {text}");
    }
}

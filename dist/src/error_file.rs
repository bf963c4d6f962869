//! torchrun's error-file contract: a worker that fails writes `{"message": {"message": …,
//! "extraInfo": {…}}}` to `$TORCHELASTIC_ERROR_FILE`; torchrun (and `rlp-launch`) then show
//! that message as the failing rank's error instead of a bare exit code.
use std::time::{SystemTime, UNIX_EPOCH};

/// Records `message` for the launcher, if one asked for it. Best effort: a failure to write is
/// reported on stderr and otherwise ignored, because the worker is already failing.
pub fn record(message: &str) {
    let Some(path) = std::env::var_os("TORCHELASTIC_ERROR_FILE") else { return };
    let timestamp = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
    let json = format!(
        "{{\"message\": {{\"message\": {}, \"extraInfo\": {{\"py_callstack\": {}, \"timestamp\": \"{timestamp}\"}}}}}}",
        json_string(message),
        json_string(message)
    );
    if let Err(e) = std::fs::write(&path, json) {
        eprintln!("note: cannot write the error file {}: {e}", std::path::Path::new(&path).display());
    }
}

fn json_string(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn escapes_json() {
        assert_eq!(super::json_string("a\"b\\c\nd\u{1}"), "\"a\\\"b\\\\c\\nd\\u0001\"");
    }
}

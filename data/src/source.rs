//! Reading raw documents out of input files, with file:line positions for every error.
//!
//! JSON Lines files are streamed line by line (they are the large ones); plain-text files are read
//! whole, then split on the document separator.
use std::fs::File;
use std::io::{BufRead, BufReader};
use std::path::Path;

use anyhow::{bail, Context, Result};
use serde_json::Value;

/// One document as read, before tokenization.
pub(crate) struct RawDoc {
    /// 1-based line of the input file the document starts on (for error messages).
    pub line: usize,
    pub text: String,
    /// Character spans `[start, end)` of answer text (the optional `answer_spans` field of a
    /// JSON line); tokens overlapping them are marked in the split's `.marks` file.
    pub answer_spans: Vec<(usize, usize)>,
}

/// The JSON field holding answer spans, as `[[start, end], ...]` character offsets.
pub(crate) const ANSWER_SPANS_FIELD: &str = "answer_spans";

fn parse_spans(v: Value, path: &Path, line: usize) -> Result<Vec<(usize, usize)>> {
    let bad = || anyhow::anyhow!("{}:{line}: `{ANSWER_SPANS_FIELD}` must be a list of [start, end] character offsets", path.display());
    let Value::Array(items) = v else { return Err(bad()) };
    items
        .into_iter()
        .map(|item| match item.as_array().map(|a| a.as_slice()) {
            Some([a, b]) => match (a.as_u64(), b.as_u64()) {
                (Some(a), Some(b)) if a <= b => Ok((a as usize, b as usize)),
                _ => Err(bad()),
            },
            _ => Err(bad()),
        })
        .collect()
}

/// `.jsonl` and `.json` hold one JSON object per line; anything else is plain text.
pub(crate) fn is_json_lines(path: &Path) -> bool {
    path.extension()
        .and_then(|e| e.to_str())
        .is_some_and(|e| e.eq_ignore_ascii_case("jsonl") || e.eq_ignore_ascii_case("json"))
}

/// Calls `emit` with each document of `path`, in file order.
pub(crate) fn read_docs(
    path: &Path,
    text_field: &str,
    doc_separator: Option<&str>,
    emit: &mut dyn FnMut(RawDoc) -> Result<()>,
) -> Result<()> {
    if is_json_lines(path) {
        read_json_lines(path, text_field, emit)
    } else {
        read_plain(path, doc_separator, emit)
    }
}

fn read_json_lines(path: &Path, text_field: &str, emit: &mut dyn FnMut(RawDoc) -> Result<()>) -> Result<()> {
    let file = File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
    let mut reader = BufReader::with_capacity(1 << 20, file);
    let mut buf = Vec::new();
    let mut line = 0usize;
    loop {
        buf.clear();
        let n = reader.read_until(b'\n', &mut buf).with_context(|| format!("cannot read {}", path.display()))?;
        if n == 0 {
            return Ok(());
        }
        line += 1;
        let bytes = buf.strip_suffix(b"\n").unwrap_or(&buf);
        let bytes = bytes.strip_suffix(b"\r").unwrap_or(bytes);
        // Blank lines (typically a trailing one) separate nothing and hold no document.
        if bytes.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        let text = std::str::from_utf8(bytes).map_err(|e| {
            anyhow::anyhow!("{}:{line}: invalid UTF-8 at byte {} of the line", path.display(), e.valid_up_to() + 1)
        })?;
        let value: Value = serde_json::from_str(text).map_err(|e| {
            anyhow::anyhow!("{}:{line}: invalid JSON: {}", path.display(), json_error_without_position(&e))
        })?;
        let Value::Object(mut object) = value else {
            bail!("{}:{line}: expected a JSON object, found {}", path.display(), kind_of(&value));
        };
        let answer_spans = match object.remove(ANSWER_SPANS_FIELD) {
            Some(v) => parse_spans(v, path, line)?,
            None => Vec::new(),
        };
        match object.remove(text_field) {
            Some(Value::String(text)) => emit(RawDoc { line, text, answer_spans })?,
            Some(other) => {
                bail!("{}:{line}: field `{text_field}` is {}, expected a string", path.display(), kind_of(&other))
            }
            None => bail!("{}:{line}: no `{text_field}` field", path.display()),
        }
    }
}

fn read_plain(path: &Path, doc_separator: Option<&str>, emit: &mut dyn FnMut(RawDoc) -> Result<()>) -> Result<()> {
    let bytes = std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
    let text = match String::from_utf8(bytes) {
        Ok(text) => text,
        Err(e) => {
            let bytes = e.as_bytes();
            let bad = e.utf8_error().valid_up_to();
            let before = &bytes[..bad];
            let line = 1 + before.iter().filter(|&&b| b == b'\n').count();
            let line_start = before.iter().rposition(|&b| b == b'\n').map_or(0, |p| p + 1);
            bail!("{}:{line}: invalid UTF-8 at byte {} of the line", path.display(), bad - line_start + 1);
        }
    };
    let Some(sep) = doc_separator else {
        return emit(RawDoc { line: 1, text, answer_spans: Vec::new() });
    };
    let mut line = 1;
    for piece in text.split(sep) {
        emit(RawDoc { line, text: piece.to_string(), answer_spans: Vec::new() })?;
        line += piece.matches('\n').count() + sep.matches('\n').count();
    }
    Ok(())
}

fn kind_of(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// serde_json appends "at line 1 column N", where line 1 is relative to the one line we parsed;
/// keep only the column next to our own file:line.
fn json_error_without_position(e: &serde_json::Error) -> String {
    let full = e.to_string();
    let suffix = format!(" at line {} column {}", e.line(), e.column());
    match full.strip_suffix(&suffix) {
        Some(msg) => format!("{msg} (column {})", e.column()),
        None => full,
    }
}

//! JSONL input: one object per line, `{"text": "..."}` or `{"input_ids": [...]}`.
use std::io::{BufRead, BufReader, Read};
use std::path::Path;

use anyhow::{bail, Context, Result};
use rlp_model::{CausalLm, Tokenizer};
use serde_json::Value;

/// One input line, tokenized.
pub struct Record {
    /// 1-based line number in the input, for error messages.
    pub line: usize,
    pub ids: Vec<i64>,
}

/// Reads `path` (or stdin when `None` or `-`), tokenizing text lines. Blank lines are skipped.
pub fn read(path: Option<&Path>, tok: &Tokenizer, lm: &CausalLm) -> Result<Vec<Record>> {
    let (reader, name): (Box<dyn Read>, String) = match path {
        Some(p) if p != Path::new("-") => {
            let f = std::fs::File::open(p).with_context(|| format!("cannot open input {}", p.display()))?;
            (Box::new(f), p.display().to_string())
        }
        _ => (Box::new(std::io::stdin()), "<stdin>".to_string()),
    };
    let mut out = Vec::new();
    for (i, line) in BufReader::new(reader).lines().enumerate() {
        let n = i + 1;
        let line = line.with_context(|| format!("{name}:{n}: cannot read line (is it UTF-8?)"))?;
        if line.trim().is_empty() {
            continue;
        }
        let ids = parse_line(&line, tok).with_context(|| format!("{name}:{n}"))?;
        if ids.is_empty() {
            bail!("{name}:{n}: no tokens");
        }
        lm.check_ids(&ids).with_context(|| format!("{name}:{n}"))?;
        out.push(Record { line: n, ids });
    }
    Ok(out)
}

fn parse_line(line: &str, tok: &Tokenizer) -> Result<Vec<i64>> {
    let v: Value = serde_json::from_str(line).context("not a JSON object")?;
    let obj = v.as_object().context("expected a JSON object like {\"text\": ...} or {\"input_ids\": [...]}")?;
    match (obj.get("text"), obj.get("input_ids")) {
        (Some(_), Some(_)) => bail!("give either `text` or `input_ids`, not both"),
        (Some(Value::String(t)), None) => tok.encode(t),
        (Some(_), None) => bail!("`text` must be a string"),
        (None, Some(Value::Array(a))) => a
            .iter()
            .enumerate()
            .map(|(j, x)| x.as_i64().with_context(|| format!("input_ids[{j}] is not an integer")))
            .collect(),
        (None, Some(_)) => bail!("`input_ids` must be an array of integers"),
        (None, None) => bail!("expected a `text` or `input_ids` field"),
    }
}

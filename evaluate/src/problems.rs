//! Benchmark problems: JSONL, one `{"question": "...", "answer": "..."}` per line.
//!
//! Extra fields are ignored (GSM8K and MATH500 files carry ids, subjects, solutions). MATH500's
//! `problem` field is accepted when there is no `question`, so its files load unchanged.
use std::path::Path;

use anyhow::{bail, Context, Result};
use serde_json::Value;

#[derive(Debug, Clone, PartialEq)]
pub struct Problem {
    /// 0-based position among the file's problems (blank lines do not count).
    pub index: usize,
    /// `file:line`, for error messages.
    pub location: String,
    pub question: String,
    /// The `answer` field as written.
    pub answer: String,
    /// What a prediction is compared with: [`reference_answer`] of `answer`.
    pub reference: String,
}

/// The reference answer in an `answer` field: the part after the last `####` when there is one
/// (GSM8K writes its worked solution first, then `#### 42`), trimmed.
pub fn reference_answer(answer: &str) -> String {
    match answer.rfind("####") {
        Some(i) => answer[i + "####".len()..].trim().to_string(),
        None => answer.trim().to_string(),
    }
}

/// Reads a problems file (see [`parse_problems`]).
pub fn load_problems(path: &Path) -> Result<Vec<Problem>> {
    let text = std::fs::read_to_string(path).with_context(|| format!("cannot read problems file {}", path.display()))?;
    parse_problems(&text, &path.display().to_string())
}

/// Parses JSONL problems; `name` labels errors (`name:line: …`). Blank lines are skipped; a file
/// without problems is an error (an empty benchmark would report a meaningless pass@1).
pub fn parse_problems(text: &str, name: &str) -> Result<Vec<Problem>> {
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let location = format!("{name}:{}", i + 1);
        let (question, answer) = parse_line(line).with_context(|| location.clone())?;
        let reference = reference_answer(&answer);
        if reference.is_empty() {
            bail!("{location}: the reference answer is empty");
        }
        out.push(Problem { index: out.len(), location, question, answer, reference });
    }
    if out.is_empty() {
        bail!("no problems in {name}");
    }
    Ok(out)
}

fn parse_line(line: &str) -> Result<(String, String)> {
    let v: Value = serde_json::from_str(line).map_err(|e| anyhow::anyhow!("not valid JSON: {e}"))?;
    let obj = v.as_object().context("expected a JSON object like {\"question\": \"...\", \"answer\": \"...\"}")?;
    let question = match obj.get("question").or_else(|| obj.get("problem")) {
        Some(Value::String(q)) => q.clone(),
        Some(_) => bail!("`question` must be a string"),
        None => bail!("missing `question`"),
    };
    // Some files store numeric answers as JSON numbers; their text is the reference.
    let answer = match obj.get("answer") {
        Some(Value::String(a)) => a.clone(),
        Some(Value::Number(n)) => n.to_string(),
        Some(_) => bail!("`answer` must be a string or a number"),
        None => bail!("missing `answer`"),
    };
    Ok((question, answer))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gsm8k_references_take_the_part_after_the_last_marker() {
        assert_eq!(reference_answer("She has 3 + 4 = <<3+4=7>>7 apples.\n#### 7"), "7");
        assert_eq!(reference_answer("a #### 1 #### 1,234 "), "1,234");
        assert_eq!(reference_answer("  \\frac{1}{2} "), "\\frac{1}{2}");
        assert_eq!(reference_answer("####42"), "42");
    }

    #[test]
    fn lines_parse_with_extra_fields_and_blank_lines() {
        let text = concat!(
            "{\"question\": \"1 + 1?\", \"answer\": \"so 2\\n#### 2\", \"id\": 7}\n",
            "\n",
            "{\"problem\": \"Half?\", \"answer\": \"\\\\frac{1}{2}\", \"level\": 3}\n",
            "{\"question\": \"n?\", \"answer\": 12}\n",
        );
        let p = parse_problems(text, "p.jsonl").unwrap();
        assert_eq!(p.len(), 3);
        assert_eq!((p[0].index, p[0].location.as_str(), p[0].reference.as_str()), (0, "p.jsonl:1", "2"));
        assert_eq!(p[0].answer, "so 2\n#### 2");
        assert_eq!((p[1].index, p[1].location.as_str()), (1, "p.jsonl:3"));
        assert_eq!((p[1].question.as_str(), p[1].reference.as_str()), ("Half?", "\\frac{1}{2}"));
        assert_eq!(p[2].reference, "12");
    }

    #[test]
    fn bad_lines_name_file_and_line() {
        let err = |text: &str| format!("{:#}", parse_problems(text, "p.jsonl").unwrap_err());
        let good = "{\"question\": \"q\", \"answer\": \"1\"}\n";
        assert!(err(&format!("{good}{{not json\n")).starts_with("p.jsonl:2: not valid JSON"));
        assert!(err(&format!("{good}[1, 2]\n")).contains("p.jsonl:2: expected a JSON object"));
        assert!(err("{\"answer\": \"1\"}").contains("p.jsonl:1: missing `question`"));
        assert!(err("{\"question\": \"q\"}").contains("p.jsonl:1: missing `answer`"));
        assert!(err("{\"question\": 3, \"answer\": \"1\"}").contains("p.jsonl:1: `question` must be a string"));
        assert!(err("{\"question\": \"q\", \"answer\": [1]}").contains("`answer` must be a string or a number"));
        assert!(err("{\"question\": \"q\", \"answer\": \"worked #### \"}").contains("p.jsonl:1: the reference answer is empty"));
        assert_eq!(err("\n \n"), "no problems in p.jsonl");
    }
}

//! The prompt template (TOML): how a question becomes a prompt, and how the answer is read back.
//!
//! ```toml
//! prompt = "Question: {question}\nAnswer:"               # the query
//! shot = "Question: {question}\nAnswer: {answer}\n\n"    # each few-shot example, prepended in order
//! shots = [ { question = "2 + 3 = ?", answer = "5" } ]   # optional few-shot examples
//! extraction = "last_number"                             # or "boxed"
//! stop = ["\n\n", "Question:"]                           # optional: the answer is cut at the first one
//! ```
//!
//! Placeholders are exactly `{question}` and `{answer}`; every other brace is literal, so LaTeX
//! (`\boxed{}`) can appear in a template as it is. Substitution is one pass, so a question that
//! itself contains `{answer}` is not substituted again.
use std::path::Path;

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};

use crate::extract::Extraction;

pub const QUESTION: &str = "{question}";
pub const ANSWER: &str = "{answer}";

/// The built-in zero-shot template (`configs/eval/zero-shot.toml` spells out the same).
pub const DEFAULT_PROMPT: &str = "Question: {question}\nAnswer:";
pub const DEFAULT_SHOT: &str = "Question: {question}\nAnswer: {answer}\n\n";
/// A blank line ends an answer; `Question:` means the model started inventing the next problem.
pub const DEFAULT_STOP: &[&str] = &["\n\n", "Question:"];

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Shot {
    pub question: String,
    pub answer: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Template {
    /// The query; must contain `{question}`.
    pub prompt: String,
    /// Each few-shot example, with `{question}` and `{answer}`.
    #[serde(default = "default_shot")]
    pub shot: String,
    /// Few-shot examples, rendered with `shot` and prepended in order.
    #[serde(default)]
    pub shots: Vec<Shot>,
    #[serde(default)]
    pub extraction: Extraction,
    /// The answer text is cut at the first of these (none when absent from a file).
    #[serde(default)]
    pub stop: Vec<String>,
}

fn default_shot() -> String {
    DEFAULT_SHOT.to_string()
}

impl Default for Template {
    fn default() -> Self {
        Template {
            prompt: DEFAULT_PROMPT.to_string(),
            shot: default_shot(),
            shots: Vec::new(),
            extraction: Extraction::LastNumber,
            stop: DEFAULT_STOP.iter().map(|s| s.to_string()).collect(),
        }
    }
}

impl Template {
    /// Reads and checks a template file.
    pub fn load(path: &Path) -> Result<Template> {
        let text = std::fs::read_to_string(path).with_context(|| format!("cannot read template {}", path.display()))?;
        Template::parse(&text, &path.display().to_string())
    }

    /// Parses and checks TOML text; `name` labels errors (`template name:line: …`).
    pub fn parse(text: &str, name: &str) -> Result<Template> {
        let t: Template = toml::from_str(text).map_err(|e| {
            // toml's own message spans several lines with a source excerpt; one line naming the
            // file, line and key is what the rest of the CLI prints.
            let line = e.span().map(|s| format!(":{}", text[..s.start.min(text.len())].matches('\n').count() + 1)).unwrap_or_default();
            anyhow::anyhow!("template {name}{line}: {}", e.message().trim())
        })?;
        t.validate().with_context(|| format!("template {name}"))?;
        Ok(t)
    }

    pub fn validate(&self) -> Result<()> {
        if !self.prompt.contains(QUESTION) {
            bail!("`prompt` has no `{QUESTION}` placeholder, so every problem would get the same prompt");
        }
        if !self.shots.is_empty() {
            for p in [QUESTION, ANSWER] {
                if !self.shot.contains(p) {
                    bail!("`shot` has no `{p}` placeholder, so the few-shot examples would not show it");
                }
            }
        }
        if let Some(i) = self.stop.iter().position(String::is_empty) {
            bail!("`stop[{i}]` is empty (it would cut every answer to nothing)");
        }
        Ok(())
    }

    /// The few-shot examples followed by the query for `question`.
    pub fn render(&self, question: &str) -> String {
        let mut out = String::new();
        for s in &self.shots {
            out += &fill(&self.shot, &[(QUESTION, &s.question), (ANSWER, &s.answer)]);
        }
        out += &fill(&self.prompt, &[(QUESTION, question)]);
        out
    }
}

/// Replaces each `{name}` placeholder of `vars` in one left-to-right pass (substituted text is not
/// scanned again); other braces stay as they are.
fn fill(template: &str, vars: &[(&str, &str)]) -> String {
    let mut out = String::with_capacity(template.len());
    let mut rest = template;
    while let Some(at) = rest.find('{') {
        out += &rest[..at];
        let tail = &rest[at..];
        match vars.iter().find(|(k, _)| tail.starts_with(k)) {
            Some((k, v)) => {
                out += v;
                rest = &tail[k.len()..];
            }
            None => {
                out.push('{');
                rest = &tail[1..];
            }
        }
    }
    out + rest
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Template> {
        Template::parse(text, "t.toml")
    }

    #[test]
    fn shots_are_prepended_in_order() {
        let t = parse(concat!(
            "prompt = \"Q: {question}\\nA:\"\n",
            "shot = \"Q: {question}\\nA: {answer}\\n\\n\"\n",
            "shots = [ { question = \"2 + 3 = ?\", answer = \"5\" }, { question = \"1 + 1 = ?\", answer = \"2\" } ]\n",
        ))
        .unwrap();
        assert_eq!(t.render("7 - 4 = ?"), "Q: 2 + 3 = ?\nA: 5\n\nQ: 1 + 1 = ?\nA: 2\n\nQ: 7 - 4 = ?\nA:");
        assert_eq!(t.extraction, Extraction::LastNumber);
        assert!(t.stop.is_empty());
    }

    #[test]
    fn default_shot_and_zero_shot() {
        let t = parse("prompt = \"{question} =\"\nshots = [{ question = \"a\", answer = \"b\" }]\nstop = [\"\\n\"]\n").unwrap();
        assert_eq!(t.render("x"), "Question: a\nAnswer: b\n\nx =");
        assert_eq!(t.stop, vec!["\n".to_string()]);
        assert_eq!(Template::default().render("1 + 1?"), "Question: 1 + 1?\nAnswer:");
    }

    #[test]
    fn placeholders_are_filled_once_and_other_braces_kept() {
        let t = parse("prompt = '\\boxed{} {question} {answer} {x}'\nextraction = \"boxed\"\n").unwrap();
        assert_eq!(t.extraction, Extraction::Boxed);
        assert_eq!(t.render("what is {answer}?"), "\\boxed{} what is {answer}? {answer} {x}");
        assert_eq!(fill("{question}{question}", &[(QUESTION, "{question}")]), "{question}{question}");
        assert_eq!(fill("{", &[(QUESTION, "q")]), "{");
        assert_eq!(fill("é{question}ü", &[(QUESTION, "ß")]), "éßü");
    }

    #[test]
    fn errors_name_the_culprit() {
        let err = |text: &str| format!("{:#}", parse(text).unwrap_err());
        let e = err("prompt = \"{question}\"\npromt = \"x\"\n");
        assert!(e.starts_with("template t.toml:2: unknown field `promt`"), "{e}");
        let e = err("prompt = \"{question}\"\nshots = [{ question = \"a\", answr = \"b\" }]\n");
        assert!(e.contains("t.toml:2") && e.contains("unknown field `answr`"), "{e}");
        let e = err("prompt = \"{question}\"\nextraction = \"first_number\"\n");
        assert!(e.contains("t.toml:2") && e.contains("first_number"), "{e}");
        assert!(err("prompt = \"Question:\"\n").contains("template t.toml: `prompt` has no `{question}`"));
        assert!(err("shot = \"x\"\n").contains("missing field `prompt`"));
        assert!(err("prompt = \"{question}\"\nshot = \"{question}\"\nshots = [{ question = \"a\", answer = \"b\" }]\n")
            .contains("`shot` has no `{answer}`"));
        assert!(err("prompt = \"{question}\"\nstop = [\"\"]\n").contains("`stop[0]` is empty"));
        assert!(err("prompt = ").starts_with("template t.toml:1:"));
    }

    /// The templates shipped in `configs/eval/` load, and `zero-shot.toml` is the built-in default.
    #[test]
    fn shipped_templates_load() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../configs/eval");
        let zero = Template::load(&dir.join("zero-shot.toml")).unwrap();
        assert_eq!(zero, Template::default());
        let gsm = Template::load(&dir.join("gsm8k-few-shot.toml")).unwrap();
        assert_eq!(gsm.shots.len(), 2);
        assert_eq!(gsm.extraction, Extraction::LastNumber);
        assert!(gsm.shots.iter().all(|s| s.answer.contains("#### ")));
        let rendered = gsm.render("Q?");
        assert!(rendered.ends_with("Q?\nAnswer:"), "{rendered}");
        let boxed = Template::load(&dir.join("boxed.toml")).unwrap();
        assert_eq!(boxed.extraction, Extraction::Boxed);
        assert!(boxed.render("What is 1/2 + 1/2?").contains("What is 1/2 + 1/2?"));
    }
}

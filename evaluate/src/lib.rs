//! Benchmark evaluation in the GSM8K / MATH500 layout: JSONL problems with reference answers, a
//! TOML prompt template (zero- or few-shot), generation with or without a thought, answer
//! extraction (`last_number` or `\boxed{}`), exact match, and pass@1 averaged over k samples.
//!
//! | module | concern |
//! |---|---|
//! | [`problems`] | reading `{"question", "answer"}` lines; GSM8K's `#### 42` references |
//! | [`template`] | the prompt template: shots, query, extraction, stop strings |
//! | [`extract`] | the answer inside the generated text |
//! | [`score`] | normalisation, exact match, pass@1 |
//! | [`run`] | the batched, seeded generation loop and its per-item results |
pub mod extract;
pub mod problems;
pub mod run;
pub mod score;
pub mod template;

pub use extract::{cut_at_stop, extract, last_number, Extraction};
pub use problems::{load_problems, parse_problems, reference_answer, Problem};
pub use run::{batch_seed, evaluate, prepare_thoughts, EvalOptions, ItemResult, SampleResult, Summary, ThinkOptions};
pub use score::{answers_match, canonical_number, mean, normalize_text, pass_at_1};
pub use template::Template;

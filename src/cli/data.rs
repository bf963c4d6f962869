//! `rlp data prepare`: text files or JSONL → tokenized, memory-mapped training data.
use std::path::PathBuf;

use anyhow::{bail, Result};
use clap::{Args, Subcommand};
use rlp_data::{prepare, synth, PrepareOptions, SynthOptions};
use rlp_model::Tokenizer;

#[derive(Subcommand, Debug)]
pub enum DataCommand {
    /// Tokenize documents (plain text files, or JSONL with a text field) into OUTPUT.
    Prepare(PrepareArgs),
    /// Write the built-in procedural corpus (arithmetic and list tasks with and without worked
    /// thoughts), its held-out problems, and a word-level tokenizer.
    Synth(SynthArgs),
}

#[derive(Args, Debug)]
pub struct SynthArgs {
    #[arg(long)]
    pub output: PathBuf,
    /// Documents per training file.
    #[arg(long, default_value_t = 2000)]
    pub documents: usize,
    /// Statements per document.
    #[arg(long, default_value_t = 8)]
    pub statements: usize,
    #[arg(long, default_value_t = 9)]
    pub max_operand: u32,
    /// Problems have 2 to 2 + DIFFICULTY operands.
    #[arg(long, default_value_t = 1)]
    pub difficulty: usize,
    /// Fraction of the problem space reserved for held-out evaluation.
    #[arg(long, default_value_t = 0.2)]
    pub heldout_fraction: f64,
    #[arg(long, default_value_t = 200)]
    pub eval_problems: usize,
    /// Probability that a worked example drops the ten of an addition step whose sum reaches 10,
    /// as if it forgot the carry (then its working and answer are wrong; plain statements stay
    /// true).
    #[arg(long, default_value_t = 0.0)]
    pub careless: f64,
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
}

#[derive(Args, Debug)]
pub struct PrepareArgs {
    /// Model directory whose tokenizer.json tokenizes the text.
    #[arg(long)]
    pub model: PathBuf,
    #[arg(long)]
    pub output: PathBuf,
    /// Input files: .jsonl/.json (one object per line) or plain text.
    #[arg(required = true)]
    pub files: Vec<PathBuf>,
    /// JSON field with the document text.
    #[arg(long, default_value = "text")]
    pub text_field: String,
    /// Split plain-text files into documents on this string (e.g. a blank line: $'\n\n').
    #[arg(long)]
    pub doc_separator: Option<String>,
    /// Skip documents with fewer tokens.
    #[arg(long, default_value_t = 2)]
    pub min_tokens: usize,
    /// Fraction of documents held out for evaluation.
    #[arg(long, default_value_t = 0.0)]
    pub heldout_fraction: f64,
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Replace an existing prepared dataset at OUTPUT.
    #[arg(long)]
    pub overwrite: bool,
}

pub fn run(cmd: DataCommand) -> Result<()> {
    match cmd {
        DataCommand::Prepare(a) => run_prepare(a),
        DataCommand::Synth(a) => run_synth(a),
    }
}

fn run_synth(a: SynthArgs) -> Result<()> {
    let opts = SynthOptions {
        documents: a.documents,
        statements: a.statements,
        max_operand: a.max_operand,
        difficulty: a.difficulty,
        careless: a.careless,
        heldout_fraction: a.heldout_fraction,
        eval_problems: a.eval_problems,
        seed: a.seed,
        ..SynthOptions::new(a.output.clone())
    };
    let s = synth(&opts)?;
    eprintln!(
        "wrote {} ({} documents per training file, {} statements each) and a {}-word tokenizer in {}",
        s.files.iter().filter_map(|f| f.file_name()).map(|f| f.to_string_lossy().to_string()).collect::<Vec<_>>().join(", "),
        a.documents,
        a.statements,
        s.vocab,
        a.output.join("tokenizer").display()
    );
    Ok(())
}

fn run_prepare(a: PrepareArgs) -> Result<()> {
    if !(0.0..1.0).contains(&a.heldout_fraction) {
        bail!("--heldout-fraction must be in [0, 1), got {}", a.heldout_fraction);
    }
    let tok = Tokenizer::from_dir(&a.model)?;
    let opts = PrepareOptions {
        text_field: a.text_field,
        doc_separator: a.doc_separator,
        min_tokens: a.min_tokens,
        heldout_fraction: a.heldout_fraction,
        seed: a.seed,
        overwrite: a.overwrite,
        ..PrepareOptions::new(a.files, a.output.clone())
    };
    let s = prepare(&tok, &opts)?;
    eprintln!(
        "prepared {}: {} documents, {} tokens ({} documents / {} tokens held out); skipped {} empty and {} too short (< {} tokens)",
        a.output.display(),
        s.documents,
        s.tokens,
        s.heldout_documents,
        s.heldout_tokens,
        s.skipped_empty,
        s.skipped_short,
        opts.min_tokens
    );
    Ok(())
}

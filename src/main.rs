//! `rlp`: the command-line entry point. Each subcommand lives in `cli/`.
use std::process::ExitCode;

use clap::{Parser, Subcommand};

mod cli;

#[derive(Parser)]
#[command(name = "rlp", version, about = "Reinforcement pretraining for Hugging Face causal LMs")]
struct Args {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Sample continuations of JSONL prompts, with per-token log-probs.
    Generate(cli::generate::GenerateArgs),
    /// Per-token log-probs, mean NLL and perplexity of JSONL texts.
    Score(cli::score::ScoreArgs),
    /// Benchmark evaluation (GSM8K / MATH500 JSONL): pass@1 over k samples, with or without a thought.
    Eval(cli::eval::EvalArgs),
    /// Training data: `rlp data prepare` tokenizes text into memory-mapped shards.
    #[command(subcommand)]
    Data(cli::data::DataCommand),
    /// Write a randomly initialised model for pretraining from scratch.
    Init(cli::init::InitArgs),
    /// Continue-pretrain a model with a reinforcement-pretraining objective from a TOML config.
    Train(cli::train::TrainArgs),
    /// Per-rank memory of a training config on a model, and whether it fits (no weights loaded).
    Plan(cli::plan::PlanArgs),
    /// Run a grid of training runs (variants × seeds) from an ablation file and report on them.
    Ablate(cli::ablate::AblateArgs),
}

fn main() -> ExitCode {
    cli::install_panic_hook();
    let args = Args::parse();
    let result = match args.command {
        Command::Generate(a) => cli::generate::run(a),
        Command::Score(a) => cli::score::run(a),
        Command::Eval(a) => cli::eval::run(a),
        Command::Data(c) => cli::data::run(c),
        Command::Train(a) => cli::train::run(a),
        Command::Ablate(a) => cli::ablate::run(a),
        Command::Plan(a) => cli::plan::run(a),
        Command::Init(a) => cli::init::run(a),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            // Under torchrun or rlp-launch: the launcher reports this as the rank's error.
            rlp_dist::error_file::record(&format!("{e:#}"));
            ExitCode::FAILURE
        }
    }
}

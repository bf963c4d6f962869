//! Subcommands and what they share: model options, JSONL input, progress display.
pub mod ablate;
pub mod data;
pub mod eval;
pub mod generate;
pub mod init;
pub mod input;
pub mod plan;
pub mod score;
pub mod train;

use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::Args;
use indicatif::{ProgressBar, ProgressStyle};
use rlp_model::{parse_device, parse_kind, CausalLm, Tokenizer};

/// Options every command that loads a model takes.
#[derive(Args, Debug)]
pub struct ModelArgs {
    /// Hugging Face model directory (config.json, *.safetensors, tokenizer.json).
    #[arg(long)]
    pub model: PathBuf,
    /// Compute dtype: float32, bfloat16 or float16.
    #[arg(long, default_value = "float32")]
    pub dtype: String,
    /// cpu, cuda or cuda:N.
    #[arg(long, default_value = "cpu")]
    pub device: String,
}

impl ModelArgs {
    pub fn load(&self) -> Result<(CausalLm, Tokenizer)> {
        let kind = parse_kind(&self.dtype)?;
        let device = parse_device(&self.device)?;
        let lm = CausalLm::load(&self.model, kind, device).with_context(|| format!("cannot load model {}", self.model.display()))?;
        let tok = Tokenizer::from_dir(&self.model)?;
        Ok((lm, tok))
    }
}

/// The experiment config and its overrides, as `rlp train` and `rlp plan` take them.
#[derive(Args, Debug)]
pub struct ConfigArgs {
    /// Experiment config (TOML); may start from a preset with `preset = "rlp"`.
    #[arg(long)]
    pub config: PathBuf,
    /// Override a config key, e.g. `--set loss.eps_high=0.28` (repeatable; applied in order).
    #[arg(long = "set", value_name = "SECTION.KEY=VALUE")]
    pub sets: Vec<String>,
}

impl ConfigArgs {
    /// The resolved config: the file, then `--set`s, then `extra` overrides (from other flags).
    pub fn load(&self, extra: &[String]) -> Result<rlp_trainer::TrainConfig> {
        let sets: Vec<String> = self.sets.iter().chain(extra).cloned().collect();
        rlp_trainer::TrainConfig::load(&self.config, &sets)
    }
}

/// A progress bar on stderr (drawn only when stderr is a terminal).
pub fn progress(len: u64, what: &str) -> ProgressBar {
    let bar = ProgressBar::new(len);
    let style = ProgressStyle::with_template("{spinner} [{elapsed_precise}] {bar:30} {pos}/{len} {msg} (eta {eta})")
        .unwrap_or_else(|_| ProgressStyle::default_bar());
    bar.set_style(style);
    bar.set_message(what.to_string());
    bar
}

/// Reports a panic (a bug, or a libtorch failure such as running out of memory) as one line
/// instead of a backtrace dump.
pub fn install_panic_hook() {
    std::panic::set_hook(Box::new(|info| {
        let msg = info
            .payload()
            .downcast_ref::<String>()
            .map(String::as_str)
            .or_else(|| info.payload().downcast_ref::<&str>().copied())
            .unwrap_or("unknown panic");
        let first = msg.lines().next().unwrap_or(msg);
        let at = info.location().map(|l| format!(" (at {}:{})", l.file(), l.line())).unwrap_or_default();
        eprintln!("error: internal failure: {first}{at}");
        rlp_dist::error_file::record(&format!("internal failure: {first}{at}"));
    }));
}

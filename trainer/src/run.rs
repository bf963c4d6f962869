//! The training loop around [`Trainer::train_step`]: logging, rollout samples, evaluation,
//! checkpoints (every N steps, at the end, and on Ctrl-C), the debug dump, a progress bar.
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use anyhow::{Context, Result};
use indicatif::{ProgressBar, ProgressStyle};
use rlp_reward::{baseline_cancels, Baseline};
use serde_json::{json, Value};

use crate::dump;
use crate::eval::{evaluate, EvalOptions};
use crate::logging::RunLog;
use crate::step::StepOutput;
use crate::trainer::Trainer;

pub struct RunOptions {
    /// Write `RUN/dumps/step-N.safetensors` for this (1-based) step.
    pub dump_step: Option<usize>,
    /// Checkpoint and stop cleanly on Ctrl-C (the CLI sets this; library users may not want it).
    pub handle_ctrl_c: bool,
    pub progress: bool,
}

/// Context tokens shown before each thought in `rollouts.jsonl`.
const CONTEXT_TAIL: usize = 48;

impl Trainer {
    /// Trains to `train.max_steps`. In a data-parallel job every rank runs this loop in lockstep;
    /// only rank 0 writes the config, logs, dumps and checkpoints.
    pub fn run(&mut self, opts: &RunOptions) -> Result<()> {
        let cfg = self.cfg.clone();
        let main = self.dist.is_main();
        let mut log = if main {
            std::fs::write(self.run_dir.join("config.toml"), cfg.to_toml()?).context("cannot write the resolved config.toml")?;
            Some(RunLog::open(&self.run_dir)?)
        } else {
            None
        };
        if main && cfg.uses_thoughts() && cfg.reward.baseline != Baseline::None && baseline_cancels(&cfg.reward, &cfg.advantage, cfg.rollout.group_size) {
            eprintln!(
                "note: the no-think baseline (S_ema) is the same for all {} thoughts of a context, so it cancels in the \
                 group-centred advantage: it changes the logged reward, not the gradient (algorithms.md §2.3)",
                cfg.rollout.group_size
            );
        }
        let stop = Arc::new(AtomicBool::new(false));
        if opts.handle_ctrl_c {
            let flag = stop.clone();
            if ctrlc::set_handler(move || flag.store(true, Ordering::SeqCst)).is_err() {
                eprintln!("note: could not install the Ctrl-C handler; Ctrl-C will not checkpoint");
            }
        }
        let max = cfg.train.max_steps;
        let bar = if opts.progress && main { ProgressBar::new(max as u64) } else { ProgressBar::hidden() };
        bar.set_style(ProgressStyle::with_template("{spinner} step {pos}/{len} [{elapsed_precise}<{eta_precise}] {bar:30} {msg}").unwrap_or_else(|_| ProgressStyle::default_bar()));
        bar.set_position(self.step as u64);
        if cfg.eval.every > 0 && self.step == 0 {
            let m = self.evaluate()?;
            if let Some(log) = log.as_mut() {
                log.scalars(0, &m)?;
            }
        }
        let mut saved_at = None;
        while self.step < max {
            let mut out = self.train_step()?;
            let step = self.step;
            let check = cfg.dist.check_replicas_every;
            if self.world > 1 && ((check > 0 && step % check == 0) || step == max) {
                let divergence = self.buckets.replica_divergence(self.policy.weights(), &self.dist)?;
                if divergence > 0.0 && main {
                    eprintln!("warning: step {step}: replicas differ from rank 0 by up to {divergence:e} (expected 0: same gradients, same update)");
                }
                out.metrics.insert("dist/replica_divergence".into(), divergence);
            }
            if let Some(log) = log.as_mut() {
                if step % cfg.log.every.max(1) == 0 || step == max {
                    log.scalars(step, &out.metrics)?;
                }
                if cfg.log.rollouts_every > 0 && step % cfg.log.rollouts_every == 0 {
                    log.rollouts(step, &self.rollout_records(&out)?)?;
                }
                if opts.dump_step == Some(step) {
                    let path = self.run_dir.join("dumps").join(format!("step-{step}.safetensors"));
                    dump::write(&path, &out)?;
                }
            }
            if cfg.eval.every > 0 && step % cfg.eval.every == 0 {
                // Every rank evaluates (the same contexts), so none waits for rank 0 in the
                // next collective; rank 0 logs.
                let m = self.evaluate()?;
                if let Some(log) = log.as_mut() {
                    log.scalars(step, &m)?;
                }
            }
            let reward = out.metrics.get("reward/mean").or(out.metrics.get("loss/ntp")).copied().unwrap_or(f64::NAN);
            let name = if cfg.uses_thoughts() { "reward" } else { "ntp loss" };
            bar.set_message(format!("{name} {reward:.4}"));
            bar.set_position(step as u64);
            if cfg.checkpoint.every > 0 && step % cfg.checkpoint.every == 0 {
                self.save_checkpoint_on_main()?;
                saved_at = Some(step);
            }
            // A signal reaches the ranks at slightly different moments: they agree to stop after
            // the same step (one tiny all-reduce), or one would wait forever for the others.
            let stopping = stop.load(Ordering::SeqCst) as u8 as f64;
            if self.dist.reduce_f64(&[stopping], rlp_dist::ReduceOp::Max, "the stop flag")?[0] > 0.0 {
                bar.abandon();
                let dir = if saved_at == Some(step) { None } else { self.save_checkpoint_on_main()? };
                if main {
                    eprintln!("interrupted after step {step}{}", dir.map(|d| format!("; checkpoint {}", d.display())).unwrap_or_default());
                }
                return Ok(());
            }
        }
        bar.finish();
        if saved_at != Some(self.step) {
            self.save_checkpoint_on_main()?;
        }
        Ok(())
    }

    /// Rank 0 writes the checkpoint; the others wait for it, so that a failure right after
    /// cannot leave a rank ahead of the last complete checkpoint.
    fn save_checkpoint_on_main(&self) -> Result<Option<std::path::PathBuf>> {
        let dir = if self.dist.is_main() { Some(self.save_checkpoint()?) } else { None };
        self.dist.barrier(&format!("the checkpoint of step {}", self.step))?;
        Ok(dir)
    }

    pub fn evaluate(&self) -> Result<std::collections::BTreeMap<String, f64>> {
        let opts = EvalOptions {
            // Also for the next-token objective: does plain training keep the ability to think?
            with_thought: self.cfg.eval.with_thought,
            max_thought_tokens: self.cfg.thought.max_tokens,
            // As many rows as a step's rollout decodes at once.
            batch: match self.cfg.memory.rollout_rows {
                0 => self.cfg.rollout.contexts_per_step * self.cfg.rollout.group_size,
                rows => rows,
            },
            memory: self.cfg.memory.clone(),
        };
        evaluate(&self.policy, self.delims, &self.eval_contexts, &opts)
    }

    /// The first `log.rollouts_count` (context, thought) pairs of a step, as text.
    fn rollout_records(&self, out: &StepOutput) -> Result<Vec<Value>> {
        let mut records = Vec::new();
        let g = out.thoughts.first().map_or(0, Vec::len);
        let reward = crate::score::to_host(&out.reward)?;
        for (b, (ctx, group)) in out.contexts.iter().zip(&out.thoughts).enumerate() {
            for (i, th) in group.iter().enumerate() {
                if records.len() >= self.cfg.log.rollouts_count {
                    return Ok(records);
                }
                let tail = &ctx.ids[ctx.ids.len().saturating_sub(CONTEXT_TAIL)..];
                records.push(json!({
                    "context_tail": self.tokenizer.decode(tail)?,
                    "thought": self.tokenizer.decode(th.inner())?,
                    "answer": self.tokenizer.decode(th.answer())?,
                    "closed": th.closed,
                    "true_next": self.tokenizer.decode(&ctx.targets)?,
                    "reward": reward.get(b * g + i).copied(),
                }));
            }
        }
        Ok(records)
    }
}

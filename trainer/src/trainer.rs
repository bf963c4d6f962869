//! The [`Trainer`]: everything one training process holds, built fresh or from a checkpoint.
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Context as _, Result};
use rlp_data::{Dataset, Split};
use rlp_dist::{materialize_grads, Buckets, Dist, DistOptions, ReduceOp};
use rlp_model::{parse_device, parse_kind, CausalLm, Tokenizer};
use rlp_reward::Baseline;
use rlp_rollout::Delimiters;

use crate::adamw::AdamW;
use crate::checkpoint::{self, TrainerState};
use crate::config::{PositionStrategy, TrainConfig};
use crate::ema::Ema;
use crate::positions::{eval_contexts, Context, ContextSource};

pub struct Trainer {
    pub cfg: TrainConfig,
    pub run_dir: PathBuf,
    /// π_θ: the policy that thinks, and the scorer p_θ of what comes after a thought.
    pub policy: CausalLm,
    pub tokenizer: Tokenizer,
    pub delims: Delimiters,
    /// φ: the EMA no-think teacher (RLP), when the reward uses it.
    pub ema: Option<Ema>,
    /// Frozen initial policy for the KL term, when `loss.kl_coef > 0`.
    pub reference: Option<CausalLm>,
    /// RPT's proxy model for `positions.strategy = "proxy_entropy"` (`None`: the policy itself).
    pub proxy: Option<CausalLm>,
    pub optim: AdamW,
    pub contexts: ContextSource,
    /// Completed training steps.
    pub step: usize,
    pub rank: usize,
    pub world: usize,
    /// This process's place in a data-parallel job (a world of one without a launcher).
    pub dist: Dist,
    /// The fixed, name-sorted gradient buckets of the policy's parameters.
    pub buckets: Buckets,
    pub eval_contexts: Vec<Context>,
}

impl Trainer {
    /// Builds a trainer in `run_dir`; with `resume`, continues from the latest checkpoint there.
    /// Under a launcher (torchrun, `rlp-launch`, srun) it first joins the process group; a
    /// restarted group (`TORCHELASTIC_RESTART_COUNT` > 0) always resumes.
    pub fn new(cfg: TrainConfig, run_dir: &Path, resume: bool) -> Result<Trainer> {
        let model_dir = cfg.model.path.clone().context("no model: set model.path in the config or pass --model")?;
        let data_dir = cfg.data.path.clone().context("no data: set data.path in the config or pass --data (see `rlp data prepare`)")?;
        let kind = parse_kind(&cfg.model.dtype).context("model.dtype")?;
        let device = parse_device(&cfg.model.device).context("model.device")?;
        let dist_opts = DistOptions { rdzv_timeout: Duration::from_secs_f64(cfg.dist.rdzv_timeout_s), timeout: Duration::from_secs_f64(cfg.dist.timeout_s) };
        let dist = Dist::from_env(device, &dist_opts)?;
        let (rank, world) = (dist.rank, dist.world);
        // One process per GPU: the launcher's LOCAL_RANK picks it.
        let device = if dist.backend().is_some() && device.is_cuda() { dist.device } else { device };
        cfg.contexts_per_rank(world)?;
        if dist.is_main() {
            std::fs::create_dir_all(run_dir).with_context(|| format!("cannot create run directory {}", run_dir.display()))?;
        }
        let resume = resume || dist.restart_count > 0;

        let latest = if resume { checkpoint::latest(run_dir)? } else { None };
        if resume && latest.is_none() && dist.is_main() {
            eprintln!("note: --resume found no checkpoint in {}; starting from step 0", run_dir.display());
        }
        // Every rank reads the checkpoint itself; they must all have found the same one.
        let found = latest.as_deref().and_then(checkpoint::step_of).map_or(-1.0, |s| s as f64);
        // One collective for both ends: max(x) and −min(x) = max(−x).
        let ends = dist.reduce_f64(&[found, -found], ReduceOp::Max, "the resume step")?;
        let (lo, hi) = (-ends[1], ends[0]);
        anyhow::ensure!(
            lo == hi,
            "ranks found different latest checkpoints in {} (steps {lo} to {hi}; -1 = none): on several nodes the run directory must be on a shared filesystem",
            run_dir.display()
        );
        let start_dir = latest.as_ref().map(|c| c.join(checkpoint::MODEL_DIR)).unwrap_or_else(|| model_dir.clone());
        let mut policy = CausalLm::load(&start_dir, kind, device).with_context(|| format!("cannot load model {}", start_dir.display()))?;
        let mut tokenizer = Tokenizer::from_dir(&start_dir)?;
        let delim_ids = policy.add_special_tokens(&mut tokenizer, &[&cfg.thought.open, &cfg.thought.close])?;
        let delims = Delimiters { open: delim_ids[0], close: delim_ids[1] };
        // Every replica starts from rank 0's weights (they agree already when loaded from the
        // same files; this also covers randomly initialised or differently rounded ones).
        let buckets = Buckets::new(policy.weights(), cfg.dist.bucket_mb, &dist);
        buckets.broadcast_params(policy.weights(), &dist)?;

        // Scored rows are context ⊕ <think> thought </think> ⊕ answer ⊕ true tokens.
        let longest = cfg.data.max_context + cfg.thought.max_tokens + 2 + cfg.thought.answer_tokens + cfg.reward.n_true;
        anyhow::ensure!(
            longest as i64 <= policy.max_positions(),
            "data.max_context ({}) + thought.max_tokens ({}) + 2 delimiters + thought.answer_tokens ({}) + reward.n_true ({}) = {longest} \
             exceeds the model's {} positions",
            cfg.data.max_context,
            cfg.thought.max_tokens,
            cfg.thought.answer_tokens,
            cfg.reward.n_true,
            policy.max_positions()
        );
        let ema = if cfg.uses_thoughts() && cfg.reward.baseline == Baseline::Ema { Some(Ema::new(&policy, cfg.ema.decay)?) } else { None };
        let reference = if cfg.uses_thoughts() && cfg.loss.kl_coef > 0.0 {
            // The reference is the model the run started from, also after a resume.
            let mut r = CausalLm::load(&model_dir, kind, device).with_context(|| format!("cannot load reference model {}", model_dir.display()))?;
            let mut t = Tokenizer::from_dir(&model_dir)?;
            r.add_special_tokens(&mut t, &[&cfg.thought.open, &cfg.thought.close])?;
            Some(r)
        } else {
            None
        };
        let proxy = match (&cfg.positions.strategy, &cfg.positions.proxy_model) {
            (PositionStrategy::ProxyEntropy, Some(dir)) if !dir.as_os_str().is_empty() => {
                Some(CausalLm::load(dir, kind, device).with_context(|| format!("cannot load positions.proxy_model {}", dir.display()))?)
            }
            _ => None,
        };
        policy.set_requires_grad(true);
        if world > 1 {
            materialize_grads(policy.weights());
        }
        let mut optim = AdamW::new(policy.weights(), &cfg.optim);

        let dataset = Dataset::open(&data_dir, Split::Train).with_context(|| format!("cannot open training data {}", data_dir.display()))?;
        // Data tokenized with another tokenizer would index past the embedding.
        let bound = dataset.vocab_bound() as i64;
        for (what, lm) in [("model", Some(&policy)), ("positions.proxy_model", proxy.as_ref())] {
            if let Some(lm) = lm {
                anyhow::ensure!(
                    bound <= lm.vocab_size(),
                    "data {} has token ids up to {} but the {what}'s vocabulary has {} rows: was it prepared with this model's tokenizer?",
                    data_dir.display(),
                    bound - 1,
                    lm.vocab_size()
                );
            }
        }
        let mut ema = ema;
        let mut state = TrainerState::default();
        if let Some(ckpt) = &latest {
            state = checkpoint::load_state(ckpt, &mut optim, ema.as_mut())?;
            // Every sampling seed derives from train.seed: resuming under another would silently
            // continue a different run than the one the checkpoint belongs to.
            if state.seed != cfg.train.seed {
                bail!(
                    "{} was written by a run with train.seed = {}, but this config has train.seed = {}: resume with train.seed = {} or start a new --run-dir",
                    ckpt.display(),
                    state.seed,
                    cfg.train.seed,
                    state.seed
                );
            }
            if rank == 0 {
                eprintln!("resuming from {} (step {})", ckpt.display(), state.step);
            }
        }
        // One global stream of contexts that every rank reads; rank r keeps its slice of each
        // step's batch, so the batch does not depend on the number of ranks.
        let contexts = ContextSource::new(dataset, &cfg.positions, cfg.data.max_context, cfg.reward.n_true, cfg.data.seed, cfg.memory.logit_chunk_tokens, state.cursor)?;

        let eval_data = match &cfg.eval.data {
            Some(dir) => Some(Dataset::open(dir, Split::Train).with_context(|| format!("cannot open eval.data {}", dir.display()))?),
            None => Dataset::open(&data_dir, Split::Heldout).ok().filter(|d| d.num_docs() > 0),
        };
        let eval_set = eval_data.as_ref().unwrap_or(contexts.dataset());
        let eval_contexts = if cfg.eval.every > 0 {
            eval_contexts(eval_set, cfg.eval.positions, cfg.positions.min_context, cfg.data.max_context, cfg.data.seed)
        } else {
            Vec::new()
        };
        Ok(Trainer {
            cfg,
            run_dir: run_dir.to_path_buf(),
            policy,
            tokenizer,
            delims,
            ema,
            reference,
            proxy,
            optim,
            contexts,
            step: state.step,
            rank,
            world,
            dist,
            buckets,
            eval_contexts,
        })
    }

    pub fn ema_model(&self) -> Result<&Ema> {
        self.ema.as_ref().context("internal: reward.baseline = \"ema\" but no EMA model")
    }

    pub fn reference_model(&self) -> Result<&CausalLm> {
        self.reference.as_ref().context("internal: loss.kl_coef > 0 but no reference model")
    }
}

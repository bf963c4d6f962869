//! [`CausalLm`]: a Hugging Face checkpoint directory as a model you can run, grow and save.
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use tch::{Device, Kind, Tensor};

use crate::attention::AttnMask;
use crate::cache::KvCache;
use crate::config::{ArchConfig, ModelConfig};
use crate::decoder::Decoder;
use crate::gpt2::Gpt2;
use crate::tokenizer::{copy_companions, Tokenizer};
use crate::weights::{self, kind_name, TensorSpec, Weights};

pub const CONFIG_FILE: &str = "config.json";
/// Model-side files copied as they are when a checkpoint is saved.
const MODEL_COMPANIONS: &[&str] = &["generation_config.json"];
/// transformers' default shard size.
const MAX_SHARD_BYTES: usize = 5 << 30;

enum Net {
    Decoder(Decoder),
    Gpt2(Gpt2),
}

/// The tokens of one teacher-forced pass: rows, each optionally continuing a shared prefix.
///
/// A context scored with G thoughts after it is G rows that begin with the same tokens. With a
/// [`Prefix`], the context runs through each block once and every row's own tokens attend to its
/// prefix's keys and values and then to themselves (causally), so the context's body compute is
/// paid once per group instead of G times, in the forward and in the backward. The result is
/// that of the full rows (up to float summation order).
pub struct PassInput {
    /// `[B, T]` int64 tokens of each row (after its prefix, when there is one).
    pub ids: Tensor,
    /// `[B, T]` int64 position ids (offset by the prefix's length).
    pub positions: Tensor,
    /// `[B, P + T]` key mask over the prefix slots and the row's own (nonzero = attend), or
    /// `None` when nothing before a real token is padding.
    pub key_valid: Option<Tensor>,
    pub prefix: Option<Prefix>,
}

/// Right-padded shared prefixes and the row → prefix map.
pub struct Prefix {
    /// `[P, Lp]` int64.
    pub ids: Tensor,
    /// `[P, Lp]` int64.
    pub positions: Tensor,
    /// `[B]` int64: the prefix that row `b` continues.
    pub of_row: Tensor,
}

impl PassInput {
    /// Rows without a prefix.
    pub fn rows(ids: &Tensor, positions: &Tensor, key_valid: Option<&Tensor>) -> PassInput {
        PassInput { ids: ids.shallow_clone(), positions: positions.shallow_clone(), key_valid: key_valid.map(Tensor::shallow_clone), prefix: None }
    }
}

/// What one block of a [`PassInput`] needs, built once per pass: rotary tables and masks for
/// the prefix stage (causal: prefixes are right-padded, so real tokens never see padding) and
/// for the rows.
struct PassPlan {
    tables: Option<(Tensor, Tensor)>,
    mask: AttnMask,
    prefix: Option<PrefixPlan>,
}

struct PrefixPlan {
    tables: Option<(Tensor, Tensor)>,
    mask: AttnMask,
    width: i64,
    of_row: Tensor,
}

/// Hidden states of a pass: the rows' and (with a prefix) the prefixes'.
pub struct Hidden {
    /// `[B, T, hidden]`.
    pub rows: Tensor,
    /// `[P, Lp, hidden]`.
    pub prefix: Option<Tensor>,
}

/// What [`CausalLm::forward_train`] keeps for the backward pass.
pub struct TrainPass {
    /// Final hidden states, attached to the graph.
    pub hidden: Hidden,
    saved: Option<Saved>,
}

/// Activation checkpoints: each block's inputs `(rows, prefix)`, detached, and what recomputing
/// a block needs.
struct Saved {
    ids: Tensor,
    positions: Tensor,
    prefix_tokens: Option<(Tensor, Tensor)>,
    plan: PassPlan,
    inputs: Vec<(Tensor, Option<Tensor>)>,
    /// The last block's inputs as leaves: their `.grad` starts the recomputed backward.
    last: (Tensor, Option<Tensor>),
}

/// `Σ x·g (+ Σ xp·gp)`: a scalar whose gradient with respect to `x` (and `xp`) is `g` (and `gp`).
fn dot(x: &Tensor, g: &Tensor, xp: Option<&Tensor>, gp: Option<&Tensor>) -> Tensor {
    let s = (x * g.detach()).sum(Kind::Float);
    match (xp, gp) {
        (Some(xp), Some(gp)) => s + (xp * gp.detach()).sum(Kind::Float),
        _ => s,
    }
}

/// A causal language model loaded from a Hugging Face directory, in one compute dtype on one device.
pub struct CausalLm {
    pub config: ModelConfig,
    /// Parameters under their checkpoint names; the network holds views of these tensors.
    weights: Weights,
    net: Net,
    kind: Kind,
    device: Device,
    /// The dtype the checkpoint was stored in; [`CausalLm::save`] writes it back in this dtype.
    stored_kind: Kind,
    source_dir: PathBuf,
}

fn tensor_specs(config: &ModelConfig) -> Result<(Vec<TensorSpec>, Box<dyn Fn(&str) -> bool>)> {
    Ok(match &config.arch {
        ArchConfig::Gpt2(c) => {
            let c2 = c.clone();
            (c.tensors(), Box::new(move |n: &str| c2.ignored(n)))
        }
        _ => {
            let spec = decoder_spec(config)?;
            let s2 = spec.clone();
            (spec.tensors(), Box::new(move |n: &str| s2.ignored(n)))
        }
    })
}

/// The sizes that decide a model's memory: `rlp plan`'s input.
#[derive(Debug, Clone)]
pub struct ModelShape {
    pub parameters: i64,
    pub vocab: i64,
    pub hidden: i64,
    pub layers: i64,
    pub heads: i64,
    pub kv_heads: i64,
    pub head_dim: i64,
    pub intermediate: i64,
}

impl ModelShape {
    pub fn of(config: &ModelConfig) -> Result<ModelShape> {
        let (specs, _) = tensor_specs(config)?;
        let parameters = specs.iter().map(|s| s.shape.iter().product::<i64>()).sum();
        Ok(match &config.arch {
            ArchConfig::Gpt2(c) => {
                let hd = c.n_embd / c.n_head.max(1);
                ModelShape { parameters, vocab: c.vocab_size, hidden: c.n_embd, layers: c.n_layer, heads: c.n_head, kv_heads: c.n_head, head_dim: hd, intermediate: c.inner() }
            }
            _ => {
                let s = decoder_spec(config)?;
                ModelShape { parameters, vocab: s.vocab_size, hidden: s.hidden_size, layers: s.num_layers, heads: s.num_heads, kv_heads: s.num_kv_heads, head_dim: s.head_dim, intermediate: s.intermediate_size }
            }
        })
    }
}

fn decoder_spec(config: &ModelConfig) -> Result<crate::decoder::DecoderSpec> {
    match &config.arch {
        ArchConfig::Qwen3(c) => c.spec(),
        ArchConfig::Qwen2(c) => c.spec(),
        ArchConfig::Llama(c) => c.spec(),
        ArchConfig::Gpt2(_) => bail!("internal: GPT-2 has no decoder spec"),
    }
}

fn build_net(config: &ModelConfig, weights: &Weights, device: Device) -> Result<Net> {
    Ok(match &config.arch {
        ArchConfig::Gpt2(c) => Net::Gpt2(Gpt2::new(c, weights)?),
        _ => Net::Decoder(Decoder::new(&decoder_spec(config)?, weights, device)?),
    })
}

/// The names of the embedding matrix and (when untied) the output head, whose rows are tokens.
fn vocab_tensors(config: &ModelConfig) -> Vec<&'static str> {
    let (embed, head) = match config.arch {
        ArchConfig::Gpt2(_) => ("transformer.wte.weight", "lm_head.weight"),
        _ => ("model.embed_tokens.weight", "lm_head.weight"),
    };
    if config.tie_word_embeddings() {
        vec![embed]
    } else {
        vec![embed, head]
    }
}

impl CausalLm {
    /// Writes a randomly initialised checkpoint for `config` with `tokenizer` into `out`: the
    /// starting point for pretraining from scratch. Matrices and embeddings ~ N(0, 0.02²) (the
    /// transformers default), norm gains 1, biases 0; seeded.
    pub fn init_random(config: ModelConfig, tokenizer: &Tokenizer, out: &Path, seed: u64) -> Result<()> {
        let (specs, _) = tensor_specs(&config)?;
        tch::manual_seed(seed as i64);
        let mut weights = Weights::new();
        for s in &specs {
            let is_gain = s.shape.len() == 1 && (s.name.contains("norm") || s.name.contains("ln_")) && s.name.ends_with(".weight");
            let t = if is_gain {
                Tensor::ones(&s.shape, (Kind::Float, Device::Cpu))
            } else if s.shape.len() == 1 {
                Tensor::zeros(&s.shape, (Kind::Float, Device::Cpu))
            } else {
                Tensor::randn(&s.shape, (Kind::Float, Device::Cpu)) * 0.02
            };
            weights.insert(s.name.clone(), t);
        }
        let net = build_net(&config, &weights, Device::Cpu)?;
        let lm = CausalLm { config, weights, net, kind: Kind::Float, device: Device::Cpu, stored_kind: Kind::Float, source_dir: out.to_path_buf() };
        lm.save(out, tokenizer, Some(Kind::Float))
    }

    /// Loads `dir` (config.json + safetensors) with parameters in `kind` on `device`.
    pub fn load(dir: &Path, kind: Kind, device: Device) -> Result<CausalLm> {
        if !dir.is_dir() {
            bail!("model directory {} does not exist", dir.display());
        }
        let config = ModelConfig::from_file(&dir.join(CONFIG_FILE))?;
        let (specs, ignore) = tensor_specs(&config)?;
        let loaded = weights::load(dir, &specs, &*ignore, kind, device)?;
        let net = build_net(&config, &loaded.weights, device)?;
        Ok(CausalLm { config, weights: loaded.weights, net, kind, device, stored_kind: loaded.stored_kind, source_dir: dir.to_path_buf() })
    }

    pub fn kind(&self) -> Kind {
        self.kind
    }

    pub fn device(&self) -> Device {
        self.device
    }

    pub fn stored_kind(&self) -> Kind {
        self.stored_kind
    }

    /// Parameters by checkpoint name, in name order.
    pub fn weights(&self) -> &Weights {
        &self.weights
    }

    pub fn vocab_size(&self) -> i64 {
        self.config.vocab_size()
    }

    pub fn max_positions(&self) -> i64 {
        self.config.max_positions()
    }

    pub fn num_layers(&self) -> usize {
        match &self.net {
            Net::Decoder(d) => d.num_layers(),
            Net::Gpt2(g) => g.num_layers(),
        }
    }

    pub fn new_cache(&self, initial_capacity: i64) -> KvCache {
        KvCache::new(self.num_layers(), initial_capacity)
    }

    /// Checks user-supplied token ids before they index the embedding.
    pub fn check_ids(&self, ids: &[i64]) -> Result<()> {
        let v = self.vocab_size();
        if let Some(bad) = ids.iter().find(|&&i| i < 0 || i >= v) {
            bail!("token id {bad} is outside the model's vocabulary (0..{v})");
        }
        Ok(())
    }

    /// One forward pass. `ids`, `positions`: `[B, T]` int64; `key_valid`: `[B, past + T]`
    /// (nonzero = real token) or `None` when no row is padded; `cache` holds `past` slots and
    /// receives this pass's keys and values. Returns final hidden states `[B, T, hidden]`.
    pub fn forward(&self, ids: &Tensor, positions: &Tensor, key_valid: Option<&Tensor>, mut cache: Option<&mut KvCache>) -> Tensor {
        let past = cache.as_ref().map_or(0, |c| c.len());
        let mask = AttnMask::new(key_valid, past, ids.size()[1], self.device);
        let tables = self.tables(positions);
        let mut x = self.embed(ids, positions);
        for l in 0..self.num_layers() {
            x = self.block(l, &x, &tables, &mask, cache.as_deref_mut());
        }
        if let Some(c) = cache {
            c.advance(ids.size()[1]);
        }
        self.final_norm(&x)
    }

    /// A teacher-forced pass over `input` with the graph kept for one [`CausalLm::backward`].
    /// With `checkpoint` (activation checkpointing) the blocks run without a graph and only each
    /// block's input is kept, `[B, T, hidden]` per layer instead of every intermediate; backward
    /// recomputes one block at a time. The result is the same either way.
    pub fn forward_train(&self, input: &PassInput, checkpoint: bool) -> TrainPass {
        let plan = self.plan(input);
        let layers = self.num_layers();
        let x = self.embed(&input.ids, &input.positions);
        let xp = input.prefix.as_ref().map(|p| self.embed(&p.ids, &p.positions));
        if !checkpoint || layers == 0 {
            let (x, xp) = (0..layers).fold((x, xp), |(x, xp), l| self.block_pass(l, &x, xp.as_ref(), &plan));
            return TrainPass { hidden: self.final_hidden(&x, xp.as_ref()), saved: None };
        }
        let mut inputs = Vec::with_capacity(layers);
        {
            let _g = tch::no_grad_guard();
            let (mut x, mut xp) = (x.detach(), xp.map(|t| t.detach()));
            for l in 0..layers - 1 {
                let next = self.block_pass(l, &x, xp.as_ref(), &plan);
                inputs.push((x, xp));
                (x, xp) = next;
            }
            inputs.push((x, xp));
        }
        // The last block and the final norm run with a graph, from leaves the backward reads.
        let leaf = |t: &Tensor| t.detach().set_requires_grad(true);
        let (x, xp) = &inputs[layers - 1];
        let last = (leaf(x), xp.as_ref().map(leaf));
        let (x, xp) = self.block_pass(layers - 1, &last.0, last.1.as_ref(), &plan);
        let hidden = self.final_hidden(&x, xp.as_ref());
        let prefix_tokens = input.prefix.as_ref().map(|p| (p.ids.shallow_clone(), p.positions.shallow_clone()));
        TrainPass { hidden, saved: Some(Saved { ids: input.ids.shallow_clone(), positions: input.positions.shallow_clone(), prefix_tokens, plan, inputs, last }) }
    }

    /// A no-grad teacher-forced pass over `input` (scoring).
    pub fn forward_pass(&self, input: &PassInput) -> Hidden {
        let _g = tch::no_grad_guard();
        self.forward_train(input, false).hidden
    }

    /// Back-propagates the loss's gradients with respect to `pass.hidden` (`d_rows`, and
    /// `d_prefix` for the prefixes' hidden states when the pass had them) into the parameters'
    /// `.grad`, recomputing checkpointed blocks one at a time.
    pub fn backward(&self, pass: TrainPass, d_rows: &Tensor, d_prefix: Option<&Tensor>) {
        // Σ hidden · d_hidden has d_hidden as its gradient: backward with a given output gradient.
        dot(&pass.hidden.rows, d_rows, pass.hidden.prefix.as_ref(), d_prefix).backward();
        let Some(saved) = pass.saved else { return };
        let grad = |t: &Option<Tensor>| t.as_ref().map(Tensor::grad);
        let (mut g, mut gp) = (saved.last.0.grad(), grad(&saved.last.1));
        for l in (0..saved.inputs.len() - 1).rev() {
            let leaf = |t: &Tensor| t.detach().set_requires_grad(true);
            let (x, xp) = &saved.inputs[l];
            let (x, xp) = (leaf(x), xp.as_ref().map(leaf));
            let (out, out_p) = self.block_pass(l, &x, xp.as_ref(), &saved.plan);
            dot(&out, &g, out_p.as_ref(), gp.as_ref()).backward();
            (g, gp) = (x.grad(), grad(&xp));
        }
        let x0 = self.embed(&saved.ids, &saved.positions);
        let xp0 = saved.prefix_tokens.as_ref().map(|(ids, pos)| self.embed(ids, pos));
        if x0.requires_grad() {
            dot(&x0, &g, xp0.as_ref(), gp.as_ref()).backward();
        }
    }

    fn plan(&self, input: &PassInput) -> PassPlan {
        let t = input.ids.size()[1];
        let prefix = input.prefix.as_ref().map(|p| {
            let width = p.ids.size()[1];
            PrefixPlan { tables: self.tables(&p.positions), mask: AttnMask::new(None, 0, width, self.device), width, of_row: p.of_row.shallow_clone() }
        });
        let past = prefix.as_ref().map_or(0, |p| p.width);
        PassPlan { tables: self.tables(&input.positions), mask: AttnMask::new(input.key_valid.as_ref(), past, t, self.device), prefix }
    }

    /// Block `l` over the prefixes (when there are any) and then the rows, which attend to
    /// their prefix's keys and values through a one-layer cache.
    fn block_pass(&self, l: usize, x: &Tensor, xp: Option<&Tensor>, plan: &PassPlan) -> (Tensor, Option<Tensor>) {
        match (xp, &plan.prefix) {
            (Some(xp), Some(p)) => {
                let mut cache = self.new_cache(p.width + x.size()[1]);
                let out_p = self.block(l, xp, &p.tables, &p.mask, Some(&mut cache));
                cache.advance(p.width);
                cache.select_rows(&p.of_row);
                (self.block(l, x, &plan.tables, &plan.mask, Some(&mut cache)), Some(out_p))
            }
            _ => (self.block(l, x, &plan.tables, &plan.mask, None), None),
        }
    }

    fn final_hidden(&self, x: &Tensor, xp: Option<&Tensor>) -> Hidden {
        Hidden { rows: self.final_norm(x), prefix: xp.map(|t| self.final_norm(t)) }
    }

    fn tables(&self, positions: &Tensor) -> Option<(Tensor, Tensor)> {
        match &self.net {
            Net::Decoder(d) => Some(d.rope_tables(positions, self.kind)),
            Net::Gpt2(_) => None,
        }
    }

    fn embed(&self, ids: &Tensor, positions: &Tensor) -> Tensor {
        match &self.net {
            Net::Decoder(d) => d.embed(ids),
            Net::Gpt2(g) => g.embed(ids, positions),
        }
    }

    fn block(&self, l: usize, x: &Tensor, tables: &Option<(Tensor, Tensor)>, mask: &AttnMask, cache: Option<&mut KvCache>) -> Tensor {
        match (&self.net, tables) {
            (Net::Decoder(d), Some(t)) => d.block(l, x, t, mask, cache),
            (Net::Gpt2(g), _) => g.block(l, x, mask, cache),
            (Net::Decoder(_), None) => unreachable!("the decoder's rotary tables are always built"),
        }
    }

    fn final_norm(&self, x: &Tensor) -> Tensor {
        match &self.net {
            Net::Decoder(d) => d.final_norm(x),
            Net::Gpt2(g) => g.final_norm(x),
        }
    }

    /// Hidden states `[.., hidden]` → logits `[.., vocab]` in the compute dtype.
    pub fn logits(&self, hidden: &Tensor) -> Tensor {
        match &self.net {
            Net::Decoder(d) => d.logits(hidden),
            Net::Gpt2(g) => g.logits(hidden),
        }
    }

    /// An independent copy (same config, weights copied, no gradient tracking): the EMA teacher
    /// and the frozen reference start as this.
    pub fn deep_clone(&self) -> Result<CausalLm> {
        let _guard = tch::no_grad_guard();
        let weights: Weights = self.weights.iter().map(|(n, w)| (n.clone(), w.detach().copy())).collect();
        let net = build_net(&self.config, &weights, self.device)?;
        Ok(CausalLm {
            config: self.config.clone(),
            weights,
            net,
            kind: self.kind,
            device: self.device,
            stored_kind: self.stored_kind,
            source_dir: self.source_dir.clone(),
        })
    }

    /// Marks every parameter as trainable (or not); the network's views share the flag.
    pub fn set_requires_grad(&self, on: bool) {
        for w in self.weights.values() {
            let _ = w.set_requires_grad(on);
        }
    }

    /// Adds `tokens` (e.g. thought delimiters) to the tokenizer as special tokens and grows the
    /// embedding (and an untied output head) to cover them, new rows set to the mean row.
    pub fn add_special_tokens(&mut self, tokenizer: &mut Tokenizer, tokens: &[&str]) -> Result<Vec<i64>> {
        let ids = tokenizer.add_special_tokens(tokens)?;
        let needed = tokenizer.id_bound();
        let rows = self.vocab_size();
        if needed > rows {
            let _guard = tch::no_grad_guard();
            for name in vocab_tensors(&self.config) {
                let old = self.weights.get(name).with_context(|| format!("internal: `{name}` not loaded"))?;
                let mean = old.to_kind(Kind::Float).mean_dim(0, true, Kind::Float).to_kind(old.kind());
                let grown = Tensor::cat(&[old, &mean.expand([needed - rows, old.size()[1]], false)], 0);
                self.weights.insert(name.to_string(), grown);
            }
            self.config.set_vocab_size(needed);
            self.net = build_net(&self.config, &self.weights, self.device)?;
        }
        Ok(ids)
    }

    /// Writes a Hugging Face directory (config.json, safetensors in `kind` or the stored dtype,
    /// tokenizer files) atomically: everything goes to a temporary sibling that is renamed into
    /// place, so a crash leaves either the old directory or the new one, never half of one.
    pub fn save(&self, dir: &Path, tokenizer: &Tokenizer, kind: Option<Kind>) -> Result<()> {
        self.save_sharded(dir, tokenizer, kind, MAX_SHARD_BYTES)
    }

    /// [`CausalLm::save`] with shards of at most `max_shard_bytes` (plus an index when sharded).
    pub fn save_sharded(&self, dir: &Path, tokenizer: &Tokenizer, kind: Option<Kind>, max_shard_bytes: usize) -> Result<()> {
        let kind = kind.unwrap_or(self.stored_kind);
        let name = dir.file_name().with_context(|| format!("cannot save to {}: no directory name", dir.display()))?;
        let parent = dir.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
        std::fs::create_dir_all(parent).with_context(|| format!("cannot create {}", parent.display()))?;
        let sibling = |tag: &str| parent.join(format!(".{}.{tag}-{}", name.to_string_lossy(), std::process::id()));
        let tmp = sibling("tmp");
        if tmp.exists() {
            std::fs::remove_dir_all(&tmp).with_context(|| format!("cannot remove stale {}", tmp.display()))?;
        }
        std::fs::create_dir(&tmp).with_context(|| format!("cannot create {}", tmp.display()))?;
        let write = || -> Result<()> {
            let mut config = self.config.clone();
            config.set_stored_dtype_name(kind_name(kind));
            let path = tmp.join(CONFIG_FILE);
            std::fs::write(&path, serde_json::to_string_pretty(&config.raw)? + "\n").with_context(|| format!("cannot write {}", path.display()))?;
            weights::save(&tmp, &self.weights, kind, max_shard_bytes)?;
            tokenizer.save(&tmp)?;
            copy_companions(&self.source_dir, &tmp, MODEL_COMPANIONS)
        };
        if let Err(e) = write() {
            let _ = std::fs::remove_dir_all(&tmp);
            return Err(e.context(format!("saving checkpoint to {}", dir.display())));
        }
        let old = sibling("old");
        if dir.exists() {
            std::fs::rename(dir, &old).with_context(|| format!("cannot move old {} aside", dir.display()))?;
        }
        std::fs::rename(&tmp, dir).with_context(|| format!("cannot rename {} to {}", tmp.display(), dir.display()))?;
        if old.exists() {
            std::fs::remove_dir_all(&old).with_context(|| format!("cannot remove {}", old.display()))?;
        }
        Ok(())
    }
}

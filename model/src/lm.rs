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

/// What [`CausalLm::forward_train`] keeps for the backward pass.
pub struct TrainPass {
    /// `[B, T, hidden]` final hidden states, attached to the graph.
    pub hidden: Tensor,
    saved: Option<Saved>,
}

/// Activation checkpoints: each block's input, detached, and what recomputing a block needs.
struct Saved {
    ids: Tensor,
    positions: Tensor,
    mask: AttnMask,
    inputs: Vec<Tensor>,
    /// The last block's input as a leaf: its `.grad` starts the recomputed backward.
    last: Tensor,
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

    /// A forward pass kept for one [`CausalLm::backward`] (no cache). With `checkpoint`
    /// (activation checkpointing) the blocks run without a graph and only each block's input is
    /// kept, `[B, T, hidden]` per layer instead of every intermediate; backward recomputes one
    /// block at a time. The result is the same either way.
    pub fn forward_train(&self, ids: &Tensor, positions: &Tensor, key_valid: Option<&Tensor>, checkpoint: bool) -> TrainPass {
        let layers = self.num_layers();
        if !checkpoint || layers == 0 {
            return TrainPass { hidden: self.forward(ids, positions, key_valid, None), saved: None };
        }
        let mask = AttnMask::new(key_valid, 0, ids.size()[1], self.device);
        let tables = self.tables(positions);
        let mut inputs = Vec::with_capacity(layers);
        {
            let _g = tch::no_grad_guard();
            let mut x = self.embed(ids, positions);
            for l in 0..layers - 1 {
                let next = self.block(l, &x, &tables, &mask, None);
                inputs.push(x);
                x = next;
            }
            inputs.push(x);
        }
        // The last block and the final norm run with a graph, from a leaf the backward reads.
        let last = inputs[layers - 1].detach().set_requires_grad(true);
        let hidden = self.final_norm(&self.block(layers - 1, &last, &tables, &mask, None));
        TrainPass { hidden, saved: Some(Saved { ids: ids.shallow_clone(), positions: positions.shallow_clone(), mask, inputs, last }) }
    }

    /// Back-propagates `d_hidden` (the loss's gradient with respect to `pass.hidden`) into the
    /// parameters' `.grad`, recomputing checkpointed blocks one at a time.
    pub fn backward(&self, pass: TrainPass, d_hidden: &Tensor) {
        // Σ hidden · d_hidden has d_hidden as its gradient: backward with a given output gradient.
        (&pass.hidden * d_hidden.detach()).sum(Kind::Float).backward();
        let Some(saved) = pass.saved else { return };
        let tables = self.tables(&saved.positions);
        let mut grad = saved.last.grad();
        for l in (0..saved.inputs.len() - 1).rev() {
            let input = saved.inputs[l].detach().set_requires_grad(true);
            let out = self.block(l, &input, &tables, &saved.mask, None);
            (out * grad.detach()).sum(Kind::Float).backward();
            grad = input.grad();
        }
        let x0 = self.embed(&saved.ids, &saved.positions);
        if x0.requires_grad() {
            (x0 * grad).sum(Kind::Float).backward();
        }
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

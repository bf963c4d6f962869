//! GPT-2: learned absolute positions, LayerNorm, fused qkv, and Conv1D weights stored `[in, out]`
//! (passed to `linear` transposed, sharing storage, so saving writes the original layout back).
use anyhow::Result;
use serde::Deserialize;
use tch::Tensor;

use crate::attention::{sdpa, AttnMask};
use crate::cache::KvCache;
use crate::config::{default_true, ensure};
use crate::nn::{get, Linear};
use crate::weights::{TensorSpec, Weights};

/// Mirrors a GPT-2 `config.json`.
#[derive(Debug, Clone, Deserialize)]
pub struct Gpt2Config {
    pub vocab_size: i64,
    pub n_embd: i64,
    pub n_layer: i64,
    pub n_head: i64,
    pub n_positions: i64,
    #[serde(default)]
    pub n_inner: Option<i64>,
    #[serde(default = "default_eps")]
    pub layer_norm_epsilon: f64,
    #[serde(default = "default_act")]
    pub activation_function: String,
    #[serde(default = "default_true")]
    pub tie_word_embeddings: bool,
    #[serde(default = "default_true")]
    pub scale_attn_weights: bool,
    #[serde(default)]
    pub scale_attn_by_inverse_layer_idx: bool,
    #[serde(default)]
    pub add_cross_attention: bool,
}

fn default_eps() -> f64 {
    1e-5
}
fn default_act() -> String {
    "gelu_new".into()
}

impl Gpt2Config {
    pub fn validate(&self) -> Result<()> {
        ensure(self.n_head > 0 && self.n_embd % self.n_head == 0, || {
            format!("n_embd ({}) is not divisible by n_head ({})", self.n_embd, self.n_head)
        })?;
        ensure(!self.add_cross_attention, || "add_cross_attention = true is not supported".into())?;
        activation(&self.activation_function).map(|_| ())?;
        for (name, v) in [("vocab_size", self.vocab_size), ("n_layer", self.n_layer), ("n_positions", self.n_positions)] {
            ensure(v > 0, || format!("{name} must be positive, got {v}"))?;
        }
        Ok(())
    }

    pub fn inner(&self) -> i64 {
        self.n_inner.unwrap_or(4 * self.n_embd)
    }

    pub fn tensors(&self) -> Vec<TensorSpec> {
        let (e, i) = (self.n_embd, self.inner());
        let mut v = vec![
            TensorSpec::new("transformer.wte.weight", &[self.vocab_size, e]),
            TensorSpec::new("transformer.wpe.weight", &[self.n_positions, e]),
            TensorSpec::new("transformer.ln_f.weight", &[e]),
            TensorSpec::new("transformer.ln_f.bias", &[e]),
        ];
        for l in 0..self.n_layer {
            let p = format!("transformer.h.{l}");
            for (name, shape) in [
                ("ln_1.weight", vec![e]),
                ("ln_1.bias", vec![e]),
                ("attn.c_attn.weight", vec![e, 3 * e]),
                ("attn.c_attn.bias", vec![3 * e]),
                ("attn.c_proj.weight", vec![e, e]),
                ("attn.c_proj.bias", vec![e]),
                ("ln_2.weight", vec![e]),
                ("ln_2.bias", vec![e]),
                ("mlp.c_fc.weight", vec![e, i]),
                ("mlp.c_fc.bias", vec![i]),
                ("mlp.c_proj.weight", vec![i, e]),
                ("mlp.c_proj.bias", vec![e]),
            ] {
                v.push(TensorSpec::new(format!("{p}.{name}"), &shape));
            }
        }
        if !self.tie_word_embeddings {
            v.push(TensorSpec::new("lm_head.weight", &[self.vocab_size, e]));
        }
        v
    }

    /// Older checkpoints store the causal-mask buffers `attn.bias` / `attn.masked_bias`.
    pub fn ignored(&self, name: &str) -> bool {
        name.ends_with(".attn.bias") || name.ends_with(".attn.masked_bias") || (self.tie_word_embeddings && name == "lm_head.weight")
    }
}

#[derive(Clone, Copy)]
enum Activation {
    GeluTanh,
    Gelu,
    Relu,
    Silu,
}

fn activation(name: &str) -> Result<Activation> {
    Ok(match name {
        "gelu_new" | "gelu_pytorch_tanh" | "gelu_fast" => Activation::GeluTanh,
        "gelu" => Activation::Gelu,
        "relu" => Activation::Relu,
        "silu" | "swish" => Activation::Silu,
        other => anyhow::bail!("unsupported activation_function `{other}`"),
    })
}

struct LayerNorm {
    weight: Tensor,
    bias: Tensor,
}

struct Block {
    ln_1: LayerNorm,
    c_attn: Linear,
    c_proj: Linear,
    ln_2: LayerNorm,
    c_fc: Linear,
    mlp_proj: Linear,
}

pub struct Gpt2 {
    cfg: Gpt2Config,
    act: Activation,
    wte: Tensor,
    wpe: Tensor,
    blocks: Vec<Block>,
    ln_f: LayerNorm,
    lm_head: Tensor,
}

impl Gpt2 {
    pub fn new(cfg: &Gpt2Config, w: &Weights) -> Result<Gpt2> {
        let ln = |p: &str| -> Result<LayerNorm> { Ok(LayerNorm { weight: get(w, &format!("{p}.weight"))?, bias: get(w, &format!("{p}.bias"))? }) };
        let conv1d = |p: &str| -> Result<Linear> { Ok(Linear { weight: get(w, &format!("{p}.weight"))?.tr(), bias: Some(get(w, &format!("{p}.bias"))?) }) };
        let mut blocks = Vec::new();
        for l in 0..cfg.n_layer {
            let p = format!("transformer.h.{l}");
            blocks.push(Block {
                ln_1: ln(&format!("{p}.ln_1"))?,
                c_attn: conv1d(&format!("{p}.attn.c_attn"))?,
                c_proj: conv1d(&format!("{p}.attn.c_proj"))?,
                ln_2: ln(&format!("{p}.ln_2"))?,
                c_fc: conv1d(&format!("{p}.mlp.c_fc"))?,
                mlp_proj: conv1d(&format!("{p}.mlp.c_proj"))?,
            });
        }
        let wte = get(w, "transformer.wte.weight")?;
        let lm_head = if cfg.tie_word_embeddings { wte.shallow_clone() } else { get(w, "lm_head.weight")? };
        Ok(Gpt2 {
            cfg: cfg.clone(),
            act: activation(&cfg.activation_function)?,
            wte,
            wpe: get(w, "transformer.wpe.weight")?,
            blocks,
            ln_f: ln("transformer.ln_f")?,
            lm_head,
        })
    }

    pub fn num_layers(&self) -> usize {
        self.blocks.len()
    }

    fn layer_norm(&self, x: &Tensor, ln: &LayerNorm) -> Tensor {
        x.layer_norm([self.cfg.n_embd], Some(&ln.weight), Some(&ln.bias), self.cfg.layer_norm_epsilon, true)
    }

    fn act(&self, x: &Tensor) -> Tensor {
        match self.act {
            Activation::GeluTanh => x.gelu("tanh"),
            Activation::Gelu => x.gelu("none"),
            Activation::Relu => x.relu(),
            Activation::Silu => x.silu(),
        }
    }

    pub fn embed(&self, ids: &Tensor, positions: &Tensor) -> Tensor {
        Tensor::embedding(&self.wte, ids, -1, false, false) + Tensor::embedding(&self.wpe, positions, -1, false, false)
    }

    /// Block `l`: `x` `[B, T, n_embd]` → `[B, T, n_embd]` (appending this pass's keys and values
    /// to `cache`, when given).
    pub fn block(&self, l: usize, x: &Tensor, mask: &AttnMask, cache: Option<&mut KvCache>) -> Tensor {
        let blk = &self.blocks[l];
        let (b, t) = (x.size()[0], x.size()[1]);
        let (nh, e) = (self.cfg.n_head, self.cfg.n_embd);
        let hd = e / nh;
        let qkv = blk.c_attn.forward(&self.layer_norm(x, &blk.ln_1));
        let heads = |i: i64| qkv.narrow(2, i * e, e).view([b, t, nh, hd]).transpose(1, 2);
        let (q, k, v) = (heads(0), heads(1), heads(2));
        let (k, v) = match cache {
            Some(c) => c.append(l, &k, &v),
            None => (k, v),
        };
        let mut scale = if self.cfg.scale_attn_weights { 1.0 / (hd as f64).sqrt() } else { 1.0 };
        if self.cfg.scale_attn_by_inverse_layer_idx {
            scale /= (l + 1) as f64;
        }
        let attn = sdpa(&q, &k, &v, mask, scale).transpose(1, 2).reshape([b, t, e]);
        let x = x + blk.c_proj.forward(&attn);
        let h = blk.c_fc.forward(&self.layer_norm(&x, &blk.ln_2));
        x + blk.mlp_proj.forward(&self.act(&h))
    }

    pub fn final_norm(&self, x: &Tensor) -> Tensor {
        self.layer_norm(x, &self.ln_f)
    }

    pub fn logits(&self, hidden: &Tensor) -> Tensor {
        hidden.linear(&self.lm_head, None::<Tensor>)
    }
}

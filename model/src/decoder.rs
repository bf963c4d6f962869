//! The pre-norm decoder shared by the Llama family: Llama, Qwen2 (q/k/v bias) and Qwen3 (RMSNorm
//! on q and k per head). The per-architecture files map their `config.json` onto [`DecoderSpec`].
use anyhow::Result;
use tch::{Device, Tensor};

use crate::attention::{sdpa, AttnMask};
use crate::cache::KvCache;
use crate::config::RopeParams;
use crate::nn::{get, linear, rms_norm, Linear};
use crate::rope::{self, Rope};
use crate::weights::{TensorSpec, Weights};

#[derive(Debug, Clone)]
pub struct DecoderSpec {
    pub vocab_size: i64,
    pub hidden_size: i64,
    pub intermediate_size: i64,
    pub num_layers: i64,
    pub num_heads: i64,
    pub num_kv_heads: i64,
    pub head_dim: i64,
    pub rms_norm_eps: f64,
    pub rope: RopeParams,
    pub tie_word_embeddings: bool,
    pub qkv_bias: bool,
    pub o_bias: bool,
    pub mlp_bias: bool,
    pub qk_norm: bool,
}

impl DecoderSpec {
    /// Every tensor the checkpoint must hold, with its shape.
    pub fn tensors(&self) -> Vec<TensorSpec> {
        let (h, d, i) = (self.hidden_size, self.head_dim, self.intermediate_size);
        let (q_out, kv_out) = (self.num_heads * d, self.num_kv_heads * d);
        let mut v = vec![TensorSpec::new("model.embed_tokens.weight", &[self.vocab_size, h])];
        for l in 0..self.num_layers {
            let p = format!("model.layers.{l}");
            let mut add = |name: &str, shape: &[i64]| v.push(TensorSpec::new(format!("{p}.{name}"), shape));
            add("input_layernorm.weight", &[h]);
            add("post_attention_layernorm.weight", &[h]);
            for (proj, out) in [("q_proj", q_out), ("k_proj", kv_out), ("v_proj", kv_out)] {
                add(&format!("self_attn.{proj}.weight"), &[out, h]);
                if self.qkv_bias {
                    add(&format!("self_attn.{proj}.bias"), &[out]);
                }
            }
            add("self_attn.o_proj.weight", &[h, q_out]);
            if self.o_bias {
                add("self_attn.o_proj.bias", &[h]);
            }
            if self.qk_norm {
                add("self_attn.q_norm.weight", &[d]);
                add("self_attn.k_norm.weight", &[d]);
            }
            for (proj, shape) in [("gate_proj", [i, h]), ("up_proj", [i, h]), ("down_proj", [h, i])] {
                add(&format!("mlp.{proj}.weight"), &shape);
                if self.mlp_bias {
                    add(&format!("mlp.{proj}.bias"), &[shape[0]]);
                }
            }
        }
        v.push(TensorSpec::new("model.norm.weight", &[h]));
        if !self.tie_word_embeddings {
            v.push(TensorSpec::new("lm_head.weight", &[self.vocab_size, h]));
        }
        v
    }

    /// Checkpoint entries that are not parameters: old Llama files carry rotary `inv_freq`
    /// buffers, and some tied checkpoints store a copy of the embedding as `lm_head.weight`.
    pub fn ignored(&self, name: &str) -> bool {
        name.ends_with("rotary_emb.inv_freq") || (self.tie_word_embeddings && name == "lm_head.weight")
    }
}

struct Block {
    input_norm: Tensor,
    q: Linear,
    k: Linear,
    v: Linear,
    o: Linear,
    q_norm: Option<Tensor>,
    k_norm: Option<Tensor>,
    post_norm: Tensor,
    gate: Linear,
    up: Linear,
    down: Linear,
}

pub struct Decoder {
    spec: DecoderSpec,
    embed: Tensor,
    blocks: Vec<Block>,
    norm: Tensor,
    lm_head: Tensor,
    rope: Rope,
}

impl Decoder {
    pub fn new(spec: &DecoderSpec, w: &Weights, device: Device) -> Result<Decoder> {
        let mut blocks = Vec::new();
        for l in 0..spec.num_layers {
            let p = format!("model.layers.{l}");
            let norm = |n: &str| if spec.qk_norm { get(w, &format!("{p}.self_attn.{n}.weight")).map(Some) } else { Ok(None) };
            blocks.push(Block {
                input_norm: get(w, &format!("{p}.input_layernorm.weight"))?,
                q: linear(w, &format!("{p}.self_attn.q_proj"), spec.qkv_bias)?,
                k: linear(w, &format!("{p}.self_attn.k_proj"), spec.qkv_bias)?,
                v: linear(w, &format!("{p}.self_attn.v_proj"), spec.qkv_bias)?,
                o: linear(w, &format!("{p}.self_attn.o_proj"), spec.o_bias)?,
                q_norm: norm("q_norm")?,
                k_norm: norm("k_norm")?,
                post_norm: get(w, &format!("{p}.post_attention_layernorm.weight"))?,
                gate: linear(w, &format!("{p}.mlp.gate_proj"), spec.mlp_bias)?,
                up: linear(w, &format!("{p}.mlp.up_proj"), spec.mlp_bias)?,
                down: linear(w, &format!("{p}.mlp.down_proj"), spec.mlp_bias)?,
            });
        }
        let embed = get(w, "model.embed_tokens.weight")?;
        let lm_head = if spec.tie_word_embeddings { embed.shallow_clone() } else { get(w, "lm_head.weight")? };
        Ok(Decoder {
            spec: spec.clone(),
            embed,
            blocks,
            norm: get(w, "model.norm.weight")?,
            lm_head,
            rope: Rope::new(&spec.rope, spec.head_dim, device),
        })
    }

    pub fn num_layers(&self) -> usize {
        self.blocks.len()
    }

    pub fn embed(&self, ids: &Tensor) -> Tensor {
        Tensor::embedding(&self.embed, ids, -1, false, false)
    }

    /// The rotary tables for `positions` `[B, T]`, shared by every block of one pass.
    pub fn rope_tables(&self, positions: &Tensor, kind: tch::Kind) -> (Tensor, Tensor) {
        self.rope.cos_sin(positions, kind)
    }

    /// Block `l`: `x` `[B, T, hidden]` → `[B, T, hidden]` (appending this pass's keys and values to
    /// `cache`, when given).
    pub fn block(&self, l: usize, x: &Tensor, rope: &(Tensor, Tensor), mask: &AttnMask, cache: Option<&mut KvCache>) -> Tensor {
        let s = &self.spec;
        let blk = &self.blocks[l];
        let (b, t) = (x.size()[0], x.size()[1]);
        let (cos, sin) = rope;
        let h = rms_norm(x, &blk.input_norm, s.rms_norm_eps);
        let heads = |lin: &Linear, n: i64, norm: &Option<Tensor>| {
            let y = lin.forward(&h).view([b, t, n, s.head_dim]);
            let y = match norm {
                Some(w) => rms_norm(&y, w, s.rms_norm_eps),
                None => y,
            };
            y.transpose(1, 2)
        };
        let q = rope::apply(&heads(&blk.q, s.num_heads, &blk.q_norm), cos, sin);
        let k = rope::apply(&heads(&blk.k, s.num_kv_heads, &blk.k_norm), cos, sin);
        let v = heads(&blk.v, s.num_kv_heads, &None);
        let (k, v) = match cache {
            Some(c) => c.append(l, &k, &v),
            None => (k, v),
        };
        let scale = 1.0 / (s.head_dim as f64).sqrt();
        let attn = sdpa(&q, &k, &v, mask, scale).transpose(1, 2).reshape([b, t, s.num_heads * s.head_dim]);
        let x = x + blk.o.forward(&attn);
        let h = rms_norm(&x, &blk.post_norm, s.rms_norm_eps);
        x + blk.down.forward(&(blk.gate.forward(&h).silu() * blk.up.forward(&h)))
    }

    pub fn final_norm(&self, x: &Tensor) -> Tensor {
        rms_norm(x, &self.norm, self.spec.rms_norm_eps)
    }

    pub fn logits(&self, hidden: &Tensor) -> Tensor {
        hidden.linear(&self.lm_head, None::<Tensor>)
    }
}

/// The `config.json` fields the Llama-family configs share (flattened into each of them).
#[derive(Debug, Clone, serde::Deserialize)]
pub struct DecoderFields {
    pub vocab_size: i64,
    pub hidden_size: i64,
    pub intermediate_size: i64,
    pub num_hidden_layers: i64,
    pub num_attention_heads: i64,
    #[serde(default)]
    pub num_key_value_heads: Option<i64>,
    #[serde(default)]
    pub head_dim: Option<i64>,
    #[serde(default = "default_rms_eps")]
    pub rms_norm_eps: f64,
    pub max_position_embeddings: i64,
    #[serde(default)]
    pub tie_word_embeddings: bool,
    #[serde(default = "default_act")]
    pub hidden_act: String,
    #[serde(flatten)]
    pub rope: crate::config::RopeFields,
}

fn default_rms_eps() -> f64 {
    1e-6
}
fn default_act() -> String {
    "silu".into()
}

impl DecoderFields {
    /// The spec with no biases and no q/k norm; each architecture switches on what it has.
    pub fn spec(&self) -> Result<DecoderSpec> {
        use crate::config::ensure;
        let heads = self.num_attention_heads;
        let kv_heads = self.num_key_value_heads.unwrap_or(heads);
        ensure(heads > 0 && kv_heads > 0 && heads % kv_heads == 0, || {
            format!("num_attention_heads ({heads}) must be a positive multiple of num_key_value_heads ({kv_heads})")
        })?;
        let head_dim = match self.head_dim {
            Some(d) => d,
            None => {
                ensure(self.hidden_size % heads == 0, || {
                    format!("hidden_size ({}) is not divisible by num_attention_heads ({heads})", self.hidden_size)
                })?;
                self.hidden_size / heads
            }
        };
        ensure(head_dim > 0 && head_dim % 2 == 0, || format!("head_dim ({head_dim}) must be even for rotary embeddings"))?;
        ensure(self.hidden_act == "silu", || format!("unsupported hidden_act `{}` (supported: silu)", self.hidden_act))?;
        for (name, v) in [
            ("vocab_size", self.vocab_size),
            ("hidden_size", self.hidden_size),
            ("intermediate_size", self.intermediate_size),
            ("num_hidden_layers", self.num_hidden_layers),
            ("max_position_embeddings", self.max_position_embeddings),
        ] {
            ensure(v > 0, || format!("{name} must be positive, got {v}"))?;
        }
        Ok(DecoderSpec {
            vocab_size: self.vocab_size,
            hidden_size: self.hidden_size,
            intermediate_size: self.intermediate_size,
            num_layers: self.num_hidden_layers,
            num_heads: heads,
            num_kv_heads: kv_heads,
            head_dim,
            rms_norm_eps: self.rms_norm_eps,
            rope: self.rope.resolve(10000.0)?,
            tie_word_embeddings: self.tie_word_embeddings,
            qkv_bias: false,
            o_bias: false,
            mlp_bias: false,
            qk_norm: false,
        })
    }
}

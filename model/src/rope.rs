//! Rotary position embeddings (default and Llama-3 frequency scaling), computed in float32 the
//! way `transformers` does, so that logits agree to float rounding.
use std::f64::consts::PI;

use tch::{Device, Kind, Tensor};

use crate::config::{RopeParams, RopeScaling};

pub struct Rope {
    /// `[head_dim / 2]` float32 inverse frequencies.
    inv_freq: Tensor,
}

impl Rope {
    pub fn new(params: &RopeParams, head_dim: i64, device: Device) -> Rope {
        let exponent = Tensor::arange_start_step(0, head_dim, 2, (Kind::Int64, device)).to_kind(Kind::Float) / head_dim as f64;
        let inv_freq = Tensor::pow_scalar(params.theta, &exponent).reciprocal();
        let inv_freq = match params.scaling {
            RopeScaling::None => inv_freq,
            RopeScaling::Llama3 { factor, low_freq_factor, high_freq_factor, original_max_position_embeddings: old_len } => {
                // Long wavelengths are slowed by `factor`, short ones kept, the band between interpolated.
                let low_freq_wavelen = old_len / low_freq_factor;
                let high_freq_wavelen = old_len / high_freq_factor;
                let wavelen = inv_freq.full_like(2.0 * PI) / &inv_freq;
                let scaled = inv_freq.where_self(&wavelen.le(low_freq_wavelen), &(&inv_freq / factor));
                let smooth = ((wavelen.full_like(old_len) / &wavelen) - low_freq_factor) / (high_freq_factor - low_freq_factor);
                let smoothed = (smooth.ones_like() - &smooth) * &scaled / factor + &smooth * &scaled;
                let is_medium = wavelen.ge(high_freq_wavelen).logical_and(&wavelen.le(low_freq_wavelen));
                smoothed.where_self(&is_medium, &scaled)
            }
        };
        Rope { inv_freq }
    }

    /// `positions`: `[B, T]` int64 → `(cos, sin)`, each `[B, 1, T, head_dim]` in `kind`.
    pub fn cos_sin(&self, positions: &Tensor, kind: Kind) -> (Tensor, Tensor) {
        let freqs = positions.to_kind(Kind::Float).unsqueeze(-1) * &self.inv_freq; // [B, T, D/2]
        let emb = Tensor::cat(&[&freqs, &freqs], -1).unsqueeze(1);
        (emb.cos().to_kind(kind), emb.sin().to_kind(kind))
    }
}

/// `x`: `[B, H, T, D]`; rotates pairs `(i, i + D/2)` (the "rotate half" layout of HF checkpoints).
pub fn apply(x: &Tensor, cos: &Tensor, sin: &Tensor) -> Tensor {
    let half = x.size()[3] / 2;
    let x1 = x.narrow(3, 0, half);
    let x2 = x.narrow(3, half, half);
    let rotated = Tensor::cat(&[&x2.neg(), &x1], 3);
    x * cos + rotated * sin
}

//! The few layers every architecture shares, as plain functions over weight tensors.
use anyhow::{Context, Result};
use tch::{Kind, Tensor};

use crate::weights::Weights;

/// A dense layer in PyTorch's `[out, in]` layout (GPT-2's Conv1D weights are passed transposed).
pub struct Linear {
    pub weight: Tensor,
    pub bias: Option<Tensor>,
}

impl Linear {
    pub fn forward(&self, x: &Tensor) -> Tensor {
        x.linear(&self.weight, self.bias.as_ref())
    }
}

/// RMSNorm as in Llama/Qwen: normalise in float32, scale in the input dtype.
pub fn rms_norm(x: &Tensor, weight: &Tensor, eps: f64) -> Tensor {
    let kind = x.kind();
    let x32 = x.to_kind(Kind::Float);
    let variance = x32.pow_tensor_scalar(2).mean_dim(-1, true, Kind::Float);
    weight * (x32 * (variance + eps).rsqrt()).to_kind(kind)
}

/// Looks a tensor up by its checkpoint name. The name lists come from the same architecture
/// code that validated the checkpoint, so a miss is a bug in this crate, reported as an error.
pub fn get(w: &Weights, name: &str) -> Result<Tensor> {
    w.get(name).map(Tensor::shallow_clone).with_context(|| format!("internal: weight `{name}` not loaded"))
}

pub fn linear(w: &Weights, prefix: &str, bias: bool) -> Result<Linear> {
    Ok(Linear {
        weight: get(w, &format!("{prefix}.weight"))?,
        bias: if bias { Some(get(w, &format!("{prefix}.bias"))?) } else { None },
    })
}

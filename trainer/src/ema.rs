//! RLP's no-think baseline: an exponential moving average φ of the policy θ,
//! φ ← τ·φ + (1−τ)·θ after every optimizer step (arXiv 2510.01265 §2.1, τ = 0.999).
use std::collections::HashMap;

use anyhow::{bail, Context, Result};
use rlp_model::weights::Weights;
use rlp_model::CausalLm;
use tch::{Kind, Tensor};

pub struct Ema {
    pub decay: f64,
    /// φ in float32: with τ = 0.999 an update is 1e-3 of the difference, below bf16's resolution.
    master: Weights,
    /// φ as a runnable model in the compute dtype (shares storage with `master` in float32).
    pub model: CausalLm,
}

impl Ema {
    /// φ ← θ: the lazy initialisation of RLP's Algorithm 1, done at the start of training.
    pub fn new(policy: &CausalLm, decay: f64) -> Result<Ema> {
        let model = policy.deep_clone()?;
        let master = model.weights().iter().map(|(n, w)| (n.clone(), if w.kind() == Kind::Float { w.shallow_clone() } else { w.to_kind(Kind::Float) })).collect();
        Ok(Ema { decay, master, model })
    }

    pub fn update(&mut self, policy: &CausalLm) -> Result<()> {
        let _g = tch::no_grad_guard();
        for (name, theta) in policy.weights() {
            let phi = self.master.get(name).with_context(|| format!("internal: EMA has no `{name}`"))?;
            let delta = (theta.to_kind(Kind::Float) - phi) * (1.0 - self.decay);
            let _ = phi.shallow_clone().f_add_(&delta)?;
            let w = &self.model.weights()[name];
            if w.kind() != Kind::Float {
                let _ = w.shallow_clone().f_copy_(phi)?;
            }
        }
        Ok(())
    }

    pub fn state(&self) -> Vec<(String, Tensor)> {
        self.master.iter().map(|(n, t)| (n.clone(), t.shallow_clone())).collect()
    }

    pub fn load_state(&mut self, mut tensors: HashMap<String, Tensor>) -> Result<()> {
        let _g = tch::no_grad_guard();
        for (name, phi) in &self.master {
            let t = tensors.remove(name).with_context(|| format!("EMA state has no tensor `{name}`"))?;
            if t.size() != phi.size() {
                bail!("EMA state `{name}` has shape {:?}, expected {:?}", t.size(), phi.size());
            }
            let _ = phi.shallow_clone().f_copy_(&t)?;
            let w = &self.model.weights()[name];
            if w.kind() != Kind::Float {
                let _ = w.shallow_clone().f_copy_(phi)?;
            }
        }
        if let Some(extra) = tensors.keys().next() {
            bail!("EMA state has unexpected tensor `{extra}`");
        }
        Ok(())
    }
}

//! AdamW written with tensor ops, so that its state (moments, float32 master weights, step count)
//! can be saved and a resumed run continues bit for bit. tch's optimizer cannot save its state.
use std::collections::{BTreeMap, HashMap};

use anyhow::{bail, Context, Result};
use rlp_model::weights::Weights;
use tch::{Kind, Tensor};

use crate::config::OptimSection;

struct Slot {
    m: Tensor,
    v: Tensor,
    /// Float32 copy of a parameter computed in a lower precision; the update happens here and is
    /// copied into the parameter, so small updates are not rounded away.
    master: Option<Tensor>,
}

pub struct AdamW {
    betas: [f64; 2],
    eps: f64,
    weight_decay: f64,
    /// Optimizer steps taken (Adam's bias correction uses it).
    pub steps: i64,
    slots: BTreeMap<String, Slot>,
}

impl AdamW {
    pub fn new(params: &Weights, cfg: &OptimSection) -> AdamW {
        let _g = tch::no_grad_guard();
        let slots = params
            .iter()
            .map(|(name, p)| {
                let master = (p.kind() != Kind::Float).then(|| p.detach().to_kind(Kind::Float));
                let zeros = || Tensor::zeros(p.size(), (Kind::Float, p.device()));
                (name.clone(), Slot { m: zeros(), v: zeros(), master })
            })
            .collect();
        AdamW { betas: cfg.betas, eps: cfg.eps, weight_decay: cfg.weight_decay, steps: 0, slots }
    }

    /// One update of every parameter that has a gradient, in name order.
    pub fn step(&mut self, params: &Weights, lr: f64) -> Result<()> {
        let _g = tch::no_grad_guard();
        self.steps += 1;
        let [b1, b2] = self.betas;
        let bc1 = 1.0 - b1.powi(self.steps as i32);
        let bc2_sqrt = (1.0 - b2.powi(self.steps as i32)).sqrt();
        for (name, p) in params {
            let grad = p.grad();
            if !grad.defined() {
                continue;
            }
            let slot = self.slots.get_mut(name).with_context(|| format!("internal: no optimizer state for `{name}`"))?;
            let g = grad.to_kind(Kind::Float);
            let _ = slot.m.f_mul_scalar_(b1)?.f_add_(&(&g * (1.0 - b1)))?;
            let _ = slot.v.f_mul_scalar_(b2)?.f_add_(&(&g * &g * (1.0 - b2)))?;
            let denom = slot.v.sqrt() / bc2_sqrt + self.eps;
            let target = slot.master.as_ref().unwrap_or(p);
            // Decoupled weight decay on matrices only: norms, biases and gains stay undecayed.
            if self.weight_decay > 0.0 && p.dim() >= 2 {
                let _ = target.shallow_clone().f_mul_scalar_(1.0 - lr * self.weight_decay)?;
            }
            let _ = target.shallow_clone().f_sub_(&(&slot.m / denom * (lr / bc1)))?;
            if let Some(master) = &slot.master {
                let _ = p.shallow_clone().f_copy_(master)?;
            }
        }
        Ok(())
    }

    pub fn device(&self) -> tch::Device {
        self.slots.values().next().map_or(tch::Device::Cpu, |s| s.m.device())
    }

    /// The state as named float32 tensors (`m.NAME`, `v.NAME`, `master.NAME`) for a checkpoint.
    pub fn state(&self) -> Vec<(String, Tensor)> {
        let mut out = Vec::new();
        for (name, s) in &self.slots {
            out.push((format!("m.{name}"), s.m.shallow_clone()));
            out.push((format!("v.{name}"), s.v.shallow_clone()));
            if let Some(master) = &s.master {
                out.push((format!("master.{name}"), master.shallow_clone()));
            }
        }
        out
    }

    /// Restores [`AdamW::state`] and the step count; every parameter's state must be present.
    pub fn load_state(&mut self, mut tensors: HashMap<String, Tensor>, steps: i64) -> Result<()> {
        let _g = tch::no_grad_guard();
        for (name, s) in self.slots.iter_mut() {
            let mut take = |key: String, into: &Tensor| -> Result<()> {
                let t = tensors.remove(&key).with_context(|| format!("optimizer state has no tensor `{key}`"))?;
                if t.size() != into.size() {
                    bail!("optimizer state `{key}` has shape {:?}, expected {:?}", t.size(), into.size());
                }
                let _ = into.shallow_clone().f_copy_(&t)?;
                Ok(())
            };
            take(format!("m.{name}"), &s.m)?;
            take(format!("v.{name}"), &s.v)?;
            if let Some(master) = &s.master {
                take(format!("master.{name}"), master)?;
            }
        }
        if let Some(extra) = tensors.keys().next() {
            bail!("optimizer state has unexpected tensor `{extra}`");
        }
        self.steps = steps;
        Ok(())
    }
}

/// Clears every parameter's gradient in place.
pub fn zero_grad(params: &Weights) {
    for p in params.values() {
        let mut g = p.grad();
        if g.defined() {
            let _ = g.zero_();
        }
    }
}

/// Scales gradients so their global L2 norm is at most `max_norm` (0 = no clipping); returns the
/// norm before clipping. Iterates in name order so every rank sums in the same order.
pub fn clip_grad_norm(params: &Weights, max_norm: f64) -> f64 {
    let _g = tch::no_grad_guard();
    let grads: Vec<Tensor> = params.values().map(Tensor::grad).filter(Tensor::defined).collect();
    if grads.is_empty() {
        return 0.0;
    }
    let sq: Vec<Tensor> = grads.iter().map(|g| g.to_kind(Kind::Float).square().sum(Kind::Float)).collect();
    let total = Tensor::stack(&sq, 0).sum(Kind::Float).sqrt().double_value(&[]);
    if max_norm > 0.0 && total > max_norm {
        let scale = max_norm / (total + 1e-6);
        for g in &grads {
            let _ = g.shallow_clone().f_mul_scalar_(scale);
        }
    }
    total
}

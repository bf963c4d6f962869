//! Data-parallel parameter sync: gradients all-reduced in fixed, name-sorted buckets of flat
//! float32 buffers (one collective per bucket, not per tensor), and rank 0's weights broadcast
//! the same way.
//!
//! The bucket layout depends only on the parameters' names and shapes, so every rank issues the
//! same collectives in the same order (iterating a HashMap here hangs the job). Buffers are
//! float32 whatever the parameters' dtype, so a sum over many bf16 replicas is not rounded at
//! every addition.
use std::collections::BTreeMap;

use anyhow::Result;
use tch::{Kind, Tensor};

use crate::c10d::ReduceOp;
use crate::group::Dist;

/// DDP's default bucket size.
pub const DEFAULT_BUCKET_MB: f64 = 25.0;

struct Bucket {
    names: Vec<String>,
    /// Float32 buffer, allocated once.
    flat: Tensor,
}

pub struct Buckets {
    buckets: Vec<Bucket>,
}

impl Buckets {
    /// Groups `params` (name-sorted by construction of the map) into buckets of at most
    /// `cap_mb` megabytes of float32 (a larger tensor gets a bucket of its own).
    pub fn new(params: &BTreeMap<String, Tensor>, cap_mb: f64, dist: &Dist) -> Buckets {
        let cap = ((cap_mb * 1e6) / 4.0).max(1.0) as i64;
        let mut groups: Vec<(Vec<String>, i64)> = Vec::new();
        for (name, p) in params {
            let n = p.numel() as i64;
            match groups.last_mut() {
                Some((names, size)) if *size + n <= cap => {
                    names.push(name.clone());
                    *size += n;
                }
                _ => groups.push((vec![name.clone()], n)),
            }
        }
        // A world of one never communicates: no buffers (they would cost 4 bytes per parameter).
        let size_of = |size: i64| if dist.world > 1 { size } else { 0 };
        let buckets = groups.into_iter().map(|(names, size)| Bucket { names, flat: Tensor::zeros([size_of(size)], (Kind::Float, dist.device)) }).collect();
        Buckets { buckets }
    }

    pub fn len(&self) -> usize {
        self.buckets.len()
    }

    pub fn is_empty(&self) -> bool {
        self.buckets.is_empty()
    }

    /// Sums every parameter's gradient over the ranks, in place, then multiplies by `scale`
    /// (the caller's normalisation: `1/world` for a per-rank mean loss, `1` when the loss was
    /// already divided by a global count). A parameter without a gradient contributes zeros;
    /// [`materialize_grads`] makes sure every parameter has one so the sum can be written back.
    pub fn all_reduce_grads(&self, params: &BTreeMap<String, Tensor>, scale: f64, dist: &Dist) -> Result<()> {
        let _g = tch::no_grad_guard();
        if dist.world == 1 {
            if scale != 1.0 {
                for p in params.values().map(Tensor::grad).filter(Tensor::defined) {
                    let _ = p.shallow_clone().f_mul_scalar_(scale)?;
                }
            }
            return Ok(());
        }
        for (i, b) in self.buckets.iter().enumerate() {
            self.pack(b, params, |p| p.grad())?;
            dist.all_reduce(&b.flat, ReduceOp::Sum, &format!("gradient bucket {i} ({} tensors from `{}`)", b.names.len(), b.names[0]))?;
            if scale != 1.0 {
                let _ = b.flat.shallow_clone().f_mul_scalar_(scale)?;
            }
            self.unpack(b, params, |p| p.grad())?;
        }
        Ok(())
    }

    /// Overwrites every rank's parameters with rank 0's.
    pub fn broadcast_params(&self, params: &BTreeMap<String, Tensor>, dist: &Dist) -> Result<()> {
        if dist.world == 1 {
            return Ok(());
        }
        let _g = tch::no_grad_guard();
        for (i, b) in self.buckets.iter().enumerate() {
            self.pack(b, params, Tensor::shallow_clone)?;
            dist.broadcast(&b.flat, 0, &format!("parameter bucket {i} (from `{}`)", b.names[0]))?;
            self.unpack(b, params, Tensor::shallow_clone)?;
        }
        Ok(())
    }

    /// The largest absolute difference between any rank's parameters and rank 0's (0 when the
    /// replicas are bitwise identical). Costs a broadcast of the whole model.
    pub fn replica_divergence(&self, params: &BTreeMap<String, Tensor>, dist: &Dist) -> Result<f64> {
        if dist.world == 1 {
            return Ok(0.0);
        }
        let _g = tch::no_grad_guard();
        let mut worst = 0f64;
        for (i, b) in self.buckets.iter().enumerate() {
            self.pack(b, params, Tensor::shallow_clone)?;
            let mine = b.flat.copy();
            dist.broadcast(&b.flat, 0, &format!("replica check bucket {i}"))?;
            worst = worst.max((&mine - &b.flat).abs().max().double_value(&[]));
        }
        Ok(dist.reduce_f64(&[worst], ReduceOp::Max, "replica check")?[0])
    }

    fn pack(&self, b: &Bucket, params: &BTreeMap<String, Tensor>, get: impl Fn(&Tensor) -> Tensor) -> Result<()> {
        let mut off = 0;
        for name in &b.names {
            let p = &params[name];
            let n = p.numel() as i64;
            let t = get(p);
            let mut dst = b.flat.narrow(0, off, n);
            if t.defined() {
                dst.f_copy_(&t.reshape([-1]))?;
            } else {
                let _ = dst.f_zero_()?;
            }
            off += n;
        }
        Ok(())
    }

    fn unpack(&self, b: &Bucket, params: &BTreeMap<String, Tensor>, get: impl Fn(&Tensor) -> Tensor) -> Result<()> {
        let mut off = 0;
        for name in &b.names {
            let p = &params[name];
            let n = p.numel() as i64;
            let mut t = get(p);
            if t.defined() {
                t.f_copy_(&b.flat.narrow(0, off, n).view(p.size().as_slice()))?;
            }
            off += n;
        }
        Ok(())
    }
}

/// Gives every parameter that requires grad a (zero) gradient, so an all-reduced gradient can be
/// written back even where this rank's backward did not reach a parameter.
pub fn materialize_grads(params: &BTreeMap<String, Tensor>) {
    let touched: Vec<Tensor> = params.values().filter(|p| p.requires_grad() && !p.grad().defined()).map(|p| p.sum(Kind::Float) * 0.0).collect();
    if !touched.is_empty() {
        Tensor::stack(&touched, 0).sum(Kind::Float).backward();
    }
}

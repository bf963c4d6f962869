//! `--dump-step N`: one step's tensors in `RUN/dumps/step-N.safetensors`, for checking the
//! numbers by hand or against another implementation. Rows are right-padded with 0.
use std::path::Path;

use anyhow::{Context, Result};
use tch::{Device, Kind, Tensor};

use crate::step::StepOutput;

fn padded(rows: &[&[i64]]) -> (Tensor, Tensor) {
    let width = rows.iter().map(|r| r.len()).max().unwrap_or(0).max(1);
    let flat: Vec<i64> = rows.iter().flat_map(|r| r.iter().copied().chain(std::iter::repeat_n(0, width - r.len()))).collect();
    let lens: Vec<i64> = rows.iter().map(|r| r.len() as i64).collect();
    (Tensor::from_slice(&flat).view([rows.len() as i64, width as i64]), Tensor::from_slice(&lens))
}

pub fn write(path: &Path, out: &StepOutput) -> Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    }
    let b = out.contexts.len() as i64;
    let g = out.thoughts.first().map_or(0, Vec::len) as i64;
    let (context_ids, context_len) = padded(&out.contexts.iter().map(|c| c.ids.as_slice()).collect::<Vec<_>>());
    let thoughts: Vec<&[i64]> = out.thoughts.iter().flatten().map(|t| t.ids.as_slice()).collect();
    let (thought_ids, thought_len) = padded(&thoughts);
    let lt = thought_ids.size()[1];
    let (target_ids, _) = padded(&out.contexts.iter().map(|c| c.targets.as_slice()).collect::<Vec<_>>());
    let cpu = |t: &Tensor| t.to_device(Device::Cpu).to_kind(Kind::Float);
    let tensors = vec![
        ("context_ids", context_ids),
        ("context_len", context_len),
        ("thought_ids", thought_ids.view([b, g, lt])),
        ("thought_len", thought_len.view([b, g])),
        ("target_ids", target_ids),
        ("s_pred", cpu(&out.s_pred)),
        ("s_ema", cpu(&out.s_ema)),
        ("reward", cpu(&out.reward)),
        ("advantage", cpu(&out.advantage)),
        ("loss", Tensor::from(out.loss as f32)),
    ];
    Tensor::write_safetensors(&tensors, path).with_context(|| format!("cannot write {}", path.display()))
}

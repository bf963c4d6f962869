//! Reading and writing Hugging Face safetensors checkpoints.
//!
//! Loading is memory-mapped shard by shard: each tensor is copied once out of the mapping,
//! converted to the compute dtype and moved to the device before the next, so peak host memory is
//! one tensor plus the page cache. Every tensor is checked against the architecture's expected list:
//! a missing, unexpected or mis-shaped tensor is an error naming the tensor and the file.
use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap};
use std::fs::File;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use safetensors::{Dtype, SafeTensors, View};
use serde_json::Value;
use tch::{Device, Kind, Tensor};

/// Parameters by their Hugging Face names, sorted: iterating in name order is what lets ranks
/// issue collectives in the same order (a HashMap's order differs between processes).
pub type Weights = BTreeMap<String, Tensor>;

/// One tensor an architecture expects in its checkpoint.
#[derive(Debug, Clone)]
pub struct TensorSpec {
    pub name: String,
    pub shape: Vec<i64>,
}

impl TensorSpec {
    pub fn new(name: impl Into<String>, shape: &[i64]) -> TensorSpec {
        TensorSpec { name: name.into(), shape: shape.to_vec() }
    }
}

pub const SINGLE_FILE: &str = "model.safetensors";
pub const INDEX_FILE: &str = "model.safetensors.index.json";

/// The safetensors files of a checkpoint directory, each with the tensor names it should hold
/// (`None` = whatever the file holds, for a single-file checkpoint).
fn checkpoint_files(dir: &Path) -> Result<Vec<(PathBuf, Option<Vec<String>>)>> {
    let index = dir.join(INDEX_FILE);
    if index.is_file() {
        let text = std::fs::read_to_string(&index).with_context(|| format!("cannot read {}", index.display()))?;
        let json: Value = serde_json::from_str(&text).with_context(|| format!("{} is not valid JSON", index.display()))?;
        let map = json
            .get("weight_map")
            .and_then(Value::as_object)
            .with_context(|| format!("{} has no `weight_map` object", index.display()))?;
        let mut by_file: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for (name, file) in map {
            let file = file
                .as_str()
                .with_context(|| format!("{}: weight_map[{name}] is not a file name", index.display()))?;
            by_file.entry(file.to_string()).or_default().push(name.clone());
        }
        return Ok(by_file.into_iter().map(|(f, names)| (dir.join(f), Some(names))).collect());
    }
    let single = dir.join(SINGLE_FILE);
    if single.is_file() {
        return Ok(vec![(single, None)]);
    }
    let hint = if dir.join("pytorch_model.bin").exists() {
        " (pytorch_model.bin is not supported: convert it to safetensors)"
    } else {
        ""
    };
    bail!("no {SINGLE_FILE} or {INDEX_FILE} in {}{hint}", dir.display())
}

fn kind_of(dtype: Dtype) -> Option<Kind> {
    Some(match dtype {
        Dtype::F32 => Kind::Float,
        Dtype::F16 => Kind::Half,
        Dtype::BF16 => Kind::BFloat16,
        Dtype::F64 => Kind::Double,
        _ => return None,
    })
}

fn dtype_of(kind: Kind) -> Result<Dtype> {
    Ok(match kind {
        Kind::Float => Dtype::F32,
        Kind::Half => Dtype::F16,
        Kind::BFloat16 => Dtype::BF16,
        Kind::Double => Dtype::F64,
        other => bail!("cannot save tensors of kind {other:?}"),
    })
}

/// What [`load`] found besides the tensors.
pub struct Loaded {
    pub weights: Weights,
    /// The dtype the checkpoint stores its (first) tensor in; saving writes this back by default.
    pub stored_kind: Kind,
}

/// Loads every expected tensor of the checkpoint in `dir` as `kind` on `device`.
/// Tensors matching `ignore` (e.g. non-persistent buffers some old checkpoints contain) are skipped.
pub fn load(dir: &Path, expected: &[TensorSpec], ignore: &dyn Fn(&str) -> bool, kind: Kind, device: Device) -> Result<Loaded> {
    let expected: HashMap<&str, &TensorSpec> = expected.iter().map(|s| (s.name.as_str(), s)).collect();
    let mut weights = Weights::new();
    let mut stored_kind = None;
    for (path, listed) in checkpoint_files(dir)? {
        if !path.is_file() {
            bail!("checkpoint shard {} is listed in {INDEX_FILE} but does not exist", path.display());
        }
        let file = File::open(&path).with_context(|| format!("cannot open {}", path.display()))?;
        // SAFETY: the mapping is read-only and lives until the end of this iteration; a file
        // truncated underneath us by another process could fault, as with any mmap reader.
        let mmap = unsafe { memmap2::Mmap::map(&file) }.with_context(|| format!("cannot map {}", path.display()))?;
        let st = SafeTensors::deserialize(&mmap)
            .map_err(|e| anyhow::anyhow!("{} is not a valid safetensors file: {e}", path.display()))?;
        let mut names: Vec<String> = st.names().into_iter().map(str::to_string).collect();
        names.sort();
        if let Some(listed) = &listed {
            for name in listed {
                if !names.contains(name) {
                    bail!("tensor `{name}` is listed for {} in {INDEX_FILE} but is not in that file", path.display());
                }
            }
        }
        for name in names {
            if ignore(&name) {
                continue;
            }
            let Some(spec) = expected.get(name.as_str()) else {
                bail!("unexpected tensor `{name}` in {}", path.display());
            };
            let view = st.tensor(&name).map_err(|e| anyhow::anyhow!("tensor `{name}` in {}: {e}", path.display()))?;
            let shape: Vec<i64> = view.shape().iter().map(|&d| d as i64).collect();
            if shape != spec.shape {
                bail!("tensor `{name}` in {} has shape {shape:?}, expected {:?}", path.display(), spec.shape);
            }
            let Some(file_kind) = kind_of(view.dtype()) else {
                bail!("tensor `{name}` in {} has unsupported dtype {:?}", path.display(), view.dtype());
            };
            stored_kind.get_or_insert(file_kind);
            let t = Tensor::f_from_data_size(view.data(), &shape, file_kind)
                .and_then(|t| t.f_to_kind(kind))
                .and_then(|t| t.f_to_device(device))
                .with_context(|| format!("cannot load tensor `{name}` from {}", path.display()))?;
            if weights.insert(name.clone(), t).is_some() {
                bail!("tensor `{name}` appears in more than one shard (again in {})", path.display());
            }
        }
    }
    let mut missing: Vec<&str> = expected.keys().copied().filter(|n| !weights.contains_key(*n)).collect();
    if !missing.is_empty() {
        missing.sort();
        let more = if missing.len() > 5 { format!(" and {} more", missing.len() - 5) } else { String::new() };
        bail!("checkpoint in {} is missing tensor(s) {}{more}", dir.display(), missing[..missing.len().min(5)].join(", "));
    }
    Ok(Loaded { weights, stored_kind: stored_kind.unwrap_or(Kind::Float) })
}

/// A tensor's bytes, ready for the safetensors writer.
struct Bytes {
    dtype: Dtype,
    shape: Vec<usize>,
    data: Vec<u8>,
}

impl View for &Bytes {
    fn dtype(&self) -> Dtype {
        self.dtype
    }
    fn shape(&self) -> &[usize] {
        &self.shape
    }
    fn data(&self) -> Cow<'_, [u8]> {
        Cow::Borrowed(&self.data)
    }
    fn data_len(&self) -> usize {
        self.data.len()
    }
}

fn to_bytes(t: &Tensor, kind: Kind) -> Result<Bytes> {
    let t = t.f_to_kind(kind)?.f_to_device(Device::Cpu)?.f_contiguous()?;
    let numel = t.numel();
    let mut data = vec![0u8; numel * kind.elt_size_in_bytes()];
    t.f_copy_data_u8(&mut data, numel)?;
    Ok(Bytes { dtype: dtype_of(kind)?, shape: t.size().iter().map(|&d| d as usize).collect(), data })
}

/// Writes `weights` as `kind` into `dir` (which must exist): one `model.safetensors`, or shards of
/// at most `max_shard_bytes` plus `model.safetensors.index.json`, the layout `transformers` writes.
pub fn save(dir: &Path, weights: &Weights, kind: Kind, max_shard_bytes: usize) -> Result<()> {
    let metadata = Some(HashMap::from([("format".to_string(), "pt".to_string())]));
    // Group tensors into shards in name order.
    let mut shards: Vec<Vec<&str>> = vec![Vec::new()];
    let mut shard_bytes = 0usize;
    let mut total_bytes = 0usize;
    for (name, t) in weights {
        let bytes = t.numel() * kind.elt_size_in_bytes();
        let last = shards.last_mut().expect("at least one shard");
        if !last.is_empty() && shard_bytes + bytes > max_shard_bytes {
            shards.push(Vec::new());
            shard_bytes = 0;
        }
        shards.last_mut().expect("at least one shard").push(name);
        shard_bytes += bytes;
        total_bytes += bytes;
    }
    let n = shards.len();
    let mut weight_map = serde_json::Map::new();
    for (i, names) in shards.iter().enumerate() {
        let file = if n == 1 { SINGLE_FILE.to_string() } else { format!("model-{:05}-of-{n:05}.safetensors", i + 1) };
        let bytes: Vec<(String, Bytes)> = names
            .iter()
            .map(|&name| Ok((name.to_string(), to_bytes(&weights[name], kind).with_context(|| format!("tensor `{name}`"))?)))
            .collect::<Result<_>>()?;
        let path = dir.join(&file);
        safetensors::serialize_to_file(bytes.iter().map(|(n, b)| (n.as_str(), b)), metadata.clone(), &path)
            .map_err(|e| anyhow::anyhow!("cannot write {}: {e}", path.display()))?;
        for &name in names {
            weight_map.insert(name.to_string(), Value::from(file.clone()));
        }
    }
    if n > 1 {
        let index = serde_json::json!({"metadata": {"total_size": total_bytes}, "weight_map": weight_map});
        let path = dir.join(INDEX_FILE);
        std::fs::write(&path, serde_json::to_string_pretty(&index)?).with_context(|| format!("cannot write {}", path.display()))?;
    }
    Ok(())
}

/// Parses a user-facing dtype name (`float32`, `bfloat16`, `float16`, and torch's aliases).
pub fn parse_kind(name: &str) -> Result<Kind> {
    Ok(match name {
        "float32" | "fp32" | "float" => Kind::Float,
        "bfloat16" | "bf16" => Kind::BFloat16,
        "float16" | "fp16" | "half" => Kind::Half,
        other => bail!("unknown dtype `{other}` (expected float32, bfloat16 or float16)"),
    })
}

/// The config.json name of a dtype.
pub fn kind_name(kind: Kind) -> &'static str {
    match kind {
        Kind::BFloat16 => "bfloat16",
        Kind::Half => "float16",
        Kind::Double => "float64",
        _ => "float32",
    }
}

/// Parses `cpu`, `cuda` or `cuda:N`, checking that the CUDA device exists.
pub fn parse_device(name: &str) -> Result<Device> {
    let device = match name {
        "cpu" => return Ok(Device::Cpu),
        "cuda" => 0,
        other => match other.strip_prefix("cuda:").map(str::parse::<usize>) {
            Some(Ok(n)) => n,
            _ => bail!("unknown device `{other}` (expected cpu, cuda or cuda:N)"),
        },
    };
    let count = tch::Cuda::device_count();
    if (device as i64) >= count {
        bail!("device `{name}` is not available: this machine has {count} CUDA device(s)");
    }
    Ok(Device::Cuda(device))
}

//! The ablation file: a base train config, seeds, overrides for every run, and named variants,
//! each a list of `--set` overrides. Parsing rejects unknown keys and duplicate names, and
//! [`Ablation::plan`] resolves and validates every run's config before anything is started, so
//! a typo in the fifth variant fails at once instead of hours in.
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use anyhow::{bail, ensure, Context, Result};
use rlp_trainer::TrainConfig;
use serde::Deserialize;
use toml::Value;

/// A parsed ablation file, its paths resolved.
#[derive(Debug, Clone)]
pub struct Ablation {
    /// The ablation file itself.
    pub file: PathBuf,
    /// The file stem: the default output folder's name and the report's title.
    pub name: String,
    /// The base train config (relative paths in the file are relative to the file's folder).
    pub base: PathBuf,
    /// Output folder: `runs/<variant>/seed-<s>/` and `report/`.
    pub out: PathBuf,
    pub seeds: Vec<u64>,
    /// Overrides applied to every run, before the variant's own.
    pub set: Vec<String>,
    pub variants: Vec<Variant>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Variant {
    pub name: String,
    #[serde(default)]
    pub set: Vec<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawAblation {
    base: PathBuf,
    #[serde(default)]
    out: Option<PathBuf>,
    #[serde(default = "default_seeds")]
    seeds: Vec<u64>,
    #[serde(default)]
    set: Vec<String>,
    // Kept as raw tables so each variant's errors can name the variant.
    #[serde(default)]
    variant: Vec<Value>,
}

fn default_seeds() -> Vec<u64> {
    vec![0]
}

/// Model and data given on the command line; they reach the runs as `rlp train --model/--data`.
#[derive(Debug, Clone, Default)]
pub struct Inputs {
    pub model: Option<PathBuf>,
    pub data: Option<PathBuf>,
}

impl Inputs {
    /// The overrides `rlp train` derives from `--model` / `--data` (after the `--set`s, as it does),
    /// so that validation here resolves exactly the config the run will.
    pub fn sets(&self) -> Vec<String> {
        let mut sets = Vec::new();
        if let Some(m) = &self.model {
            sets.push(format!("model.path={}", toml_string(m)));
        }
        if let Some(d) = &self.data {
            sets.push(format!("data.path={}", toml_string(d)));
        }
        sets
    }
}

fn toml_string(p: &Path) -> String {
    Value::String(p.display().to_string()).to_string()
}

/// One (variant, seed) training run of the grid.
#[derive(Debug, Clone)]
pub struct Run {
    pub variant: String,
    pub seed: u64,
    /// `OUT/runs/<variant>/seed-<seed>`.
    pub dir: PathBuf,
    /// The `--set` arguments in order: the ablation's, the variant's, then the seeds.
    pub sets: Vec<String>,
    /// The resolved, validated config the run trains with.
    pub config: TrainConfig,
}

impl Run {
    pub fn label(&self) -> String {
        format!("{} seed {}", self.variant, self.seed)
    }
}

/// Keys the ablation sets per run itself; a variant setting them would be silently overridden.
const RESERVED: &[&str] = &["train.seed", "data.seed", "train.run_dir"];

fn check_sets(sets: &[String], whose: &str) -> Result<()> {
    for s in sets {
        let Some((key, _)) = s.split_once('=') else { bail!("{whose}: set `{s}`: expected section.key=value") };
        let key = key.trim();
        ensure!(!RESERVED.contains(&key), "{whose}: set `{s}`: `{key}` is set per run by the ablation (use `seeds`)");
    }
    Ok(())
}

/// Variant names become folder names and table rows: keep them plain.
fn check_name(name: &str) -> Result<()> {
    ensure!(!name.is_empty(), "empty variant name");
    ensure!(
        name.chars().all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c)) && !name.starts_with('.'),
        "variant name `{name}`: use letters, digits, `-`, `_` and `.` (it names a folder), not starting with `.`"
    );
    Ok(())
}

impl Ablation {
    /// Reads an ablation file; `out` (from `--out`) replaces the file's `out`.
    pub fn load(path: &Path, out: Option<&Path>) -> Result<Ablation> {
        let text = std::fs::read_to_string(path).with_context(|| format!("cannot read ablation file {}", path.display()))?;
        let dir = path.parent().unwrap_or(Path::new(""));
        let name = path.file_stem().map(|s| s.to_string_lossy().to_string()).unwrap_or_else(|| "ablation".into());
        let mut a = Self::from_toml_str(&text, dir, &name).with_context(|| format!("in ablation file {}", path.display()))?;
        a.file = path.to_path_buf();
        if let Some(o) = out {
            a.out = o.to_path_buf();
        }
        Ok(a)
    }

    /// Parses ablation TOML whose relative paths are relative to `dir`; `name` is the default
    /// output folder's name (`runs/ablations/<name>`, relative to the working directory).
    pub fn from_toml_str(text: &str, dir: &Path, name: &str) -> Result<Ablation> {
        let table = Value::Table(toml::from_str(text).context("not valid TOML")?);
        let raw: RawAblation = deserialize(table)?;
        ensure!(!raw.seeds.is_empty(), "`seeds` is empty: give at least one seed");
        let mut seen = BTreeSet::new();
        for s in &raw.seeds {
            ensure!(seen.insert(*s), "seed {s} is listed twice in `seeds`");
        }
        check_sets(&raw.set, "`set`")?;
        ensure!(!raw.variant.is_empty(), "no [[variant]]: give at least one");
        let mut variants: Vec<Variant> = Vec::new();
        for (i, v) in raw.variant.into_iter().enumerate() {
            let whose = match v.get("name").and_then(Value::as_str) {
                Some(n) => format!("[[variant]] `{n}`"),
                None => format!("[[variant]] #{}", i + 1),
            };
            let v: Variant = deserialize(v).with_context(|| whose.clone())?;
            check_name(&v.name).with_context(|| whose.clone())?;
            ensure!(variants.iter().all(|o| o.name != v.name), "variant name `{}` is used twice", v.name);
            check_sets(&v.set, &whose)?;
            variants.push(v);
        }
        Ok(Ablation {
            file: PathBuf::new(),
            name: name.to_string(),
            base: normalize(&dir.join(raw.base)),
            out: raw.out.map(|o| normalize(&dir.join(o))).unwrap_or_else(|| PathBuf::from("runs/ablations").join(name)),
            seeds: raw.seeds,
            set: raw.set,
            variants,
        })
    }

    pub fn run_dir(&self, variant: &str, seed: u64) -> PathBuf {
        self.out.join("runs").join(variant).join(format!("seed-{seed}"))
    }

    pub fn report_dir(&self) -> PathBuf {
        self.out.join("report")
    }

    fn seed_sets(seed: u64) -> [String; 2] {
        [format!("train.seed={seed}"), format!("data.seed={seed}")]
    }

    /// Every (variant, seed) run, seed-major (all variants of the first seed come first, so an
    /// interrupted grid already compares every variant), each config resolved and validated.
    pub fn plan(&self, inputs: &Inputs) -> Result<Vec<Run>> {
        let mut runs = Vec::new();
        for &seed in &self.seeds {
            for v in &self.variants {
                let sets: Vec<String> = self.set.iter().chain(&v.set).cloned().chain(Self::seed_sets(seed)).collect();
                let config = self.resolve(&sets, inputs).with_context(|| format!("variant `{}`", v.name))?;
                runs.push(Run { variant: v.name.clone(), seed, dir: self.run_dir(&v.name, seed), sets, config });
            }
        }
        Ok(runs)
    }

    /// The base config with the common overrides and the first seed: what variants differ from.
    pub fn base_config(&self, inputs: &Inputs) -> Result<TrainConfig> {
        let sets: Vec<String> = self.set.iter().cloned().chain(Self::seed_sets(self.seeds[0])).collect();
        self.resolve(&sets, inputs).context("the base config with the common `set`")
    }

    fn resolve(&self, sets: &[String], inputs: &Inputs) -> Result<TrainConfig> {
        let all: Vec<String> = sets.iter().cloned().chain(inputs.sets()).collect();
        TrainConfig::load(&self.base, &all)
    }
}

/// `configs/ablations/../cpu-small.toml` → `configs/cpu-small.toml`, for readable messages. Purely
/// lexical: a `..` only cancels a plain name before it, never a leading `..` or the root.
fn normalize(p: &Path) -> PathBuf {
    use std::path::Component;
    let mut out: Vec<Component> = Vec::new();
    for c in p.components() {
        match c {
            Component::CurDir => {}
            Component::ParentDir if matches!(out.last(), Some(Component::Normal(_))) => {
                out.pop();
            }
            // `/..` is `/`.
            Component::ParentDir if matches!(out.last(), Some(Component::RootDir)) => {}
            c => out.push(c),
        }
    }
    if out.is_empty() {
        PathBuf::from(".")
    } else {
        out.iter().collect()
    }
}

/// Deserializes with the failing key's path in the message (`key `x.y`: unknown field ...`).
fn deserialize<T: for<'de> Deserialize<'de>>(v: Value) -> Result<T> {
    serde_path_to_error::deserialize(v).map_err(|e| {
        let path = e.path().to_string();
        anyhow::anyhow!("{}{}", if path == "." { String::new() } else { format!("key `{path}`: ") }, e.into_inner())
    })
}

/// A config as `dotted.key -> value` (arrays are leaves), for showing what a variant changes.
pub fn flatten(cfg: &TrainConfig) -> Result<std::collections::BTreeMap<String, String>> {
    let v = Value::try_from(cfg).context("cannot serialise a resolved config")?;
    Ok(flatten_value(&v))
}

pub fn flatten_value(v: &Value) -> std::collections::BTreeMap<String, String> {
    fn walk(prefix: &str, v: &Value, out: &mut std::collections::BTreeMap<String, String>) {
        match v {
            Value::Table(t) => {
                for (k, v) in t {
                    let key = if prefix.is_empty() { k.clone() } else { format!("{prefix}.{k}") };
                    walk(&key, v, out);
                }
            }
            other => {
                out.insert(prefix.to_string(), other.to_string());
            }
        }
    }
    let mut out = std::collections::BTreeMap::new();
    walk("", v, &mut out);
    out
}

/// `(key, before, after)` for every key whose value differs; a missing side is `None`.
pub fn diff(
    before: &std::collections::BTreeMap<String, String>,
    after: &std::collections::BTreeMap<String, String>,
) -> Vec<(String, Option<String>, Option<String>)> {
    let keys: BTreeSet<&String> = before.keys().chain(after.keys()).collect();
    keys.into_iter()
        .filter(|k| before.get(*k) != after.get(*k))
        .map(|k| (k.clone(), before.get(k).cloned(), after.get(k).cloned()))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Ablation> {
        Ablation::from_toml_str(text, Path::new("cfg/abl"), "demo")
    }

    #[test]
    fn paths_are_relative_to_the_file_and_out_defaults_to_the_stem() {
        let a = parse("base = \"../x.toml\"\n[[variant]]\nname = \"a\"\n").unwrap();
        assert_eq!(a.base, Path::new("cfg/x.toml"));
        assert_eq!(a.out, Path::new("runs/ablations/demo"));
        assert_eq!(a.seeds, vec![0]);
        let a = parse("base = \"/abs.toml\"\nout = \"o\"\n[[variant]]\nname = \"a\"\n").unwrap();
        assert_eq!(a.base, Path::new("/abs.toml"));
        assert_eq!(a.out, Path::new("cfg/abl/o"));
        assert_eq!(normalize(Path::new("../a/./b/../../c")), Path::new("../c"));
        assert_eq!(normalize(Path::new("/a/../../b")), Path::new("/b"));
    }

    #[test]
    fn unknown_keys_duplicates_and_reserved_keys_are_named() {
        let err = |t: &str| format!("{:#}", parse(t).unwrap_err());
        assert!(err("base = \"b\"\nseed = [1]\n[[variant]]\nname = \"a\"\n").contains("seed"));
        let e = err("base = \"b\"\n[[variant]]\nname = \"a\"\n[[variant]]\nname = \"bad\"\nsett = []\n");
        assert!(e.contains("sett") && e.contains("bad"), "{e}");
        assert!(err("base = \"b\"\n[[variant]]\nname = \"a\"\n[[variant]]\nname = \"a\"\n").contains("used twice"));
        assert!(err("base = \"b\"\n[[variant]]\nname = \"a\"\nset = [\"train.seed=3\"]\n").contains("train.seed"));
        assert!(err("base = \"b\"\nseeds = [1, 1]\n[[variant]]\nname = \"a\"\n").contains("twice"));
        assert!(err("base = \"b\"\n[[variant]]\nname = \"a/b\"\n").contains("a/b"));
        assert!(err("base = \"b\"\n").contains("no [[variant]]"));
    }

    #[test]
    fn diff_lists_changed_added_and_removed_keys() {
        let a = flatten_value(&Value::Table(toml::from_str("x = 1\n[s]\ny = \"a\"\nz = [1, 2]\n").unwrap()));
        let b = flatten_value(&Value::Table(toml::from_str("x = 1\n[s]\ny = \"b\"\nw = true\n").unwrap()));
        let d = diff(&a, &b);
        let keys: Vec<&str> = d.iter().map(|(k, _, _)| k.as_str()).collect();
        assert_eq!(keys, vec!["s.w", "s.y", "s.z"]);
        assert_eq!(d[1], ("s.y".into(), Some("\"a\"".into()), Some("\"b\"".into())));
    }
}

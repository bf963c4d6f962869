//! What a finished run left behind, read back: its latest checkpoint's step, `metrics.jsonl` as
//! one step → value series per key, and the wall time `ablate.json` recorded.
use std::collections::BTreeMap;
use std::path::Path;

use anyhow::{Context, Result};
use rlp_trainer::checkpoint;
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// Written by the runner next to each run's outputs.
pub const RECORD_FILE: &str = "ablate.json";
pub const LOG_FILE: &str = "train.log";

/// `RUN/ablate.json`: how the ablation ran this run.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RunRecord {
    pub variant: String,
    pub seed: u64,
    /// `finished`, `failed` or `interrupted`.
    pub status: String,
    pub exit_code: Option<i32>,
    /// Seconds of `rlp train`, summed over the invocations that built the final checkpoint
    /// (a resumed run adds its time to the earlier attempt's).
    pub wall_s: f64,
    pub attempts: u32,
    /// The `rlp train` command line of the last attempt.
    pub command: Vec<String>,
}

impl RunRecord {
    pub fn read(run_dir: &Path) -> Option<RunRecord> {
        let text = std::fs::read_to_string(run_dir.join(RECORD_FILE)).ok()?;
        serde_json::from_str(&text).ok()
    }

    pub fn write(&self, run_dir: &Path) -> Result<()> {
        let path = run_dir.join(RECORD_FILE);
        std::fs::write(&path, serde_json::to_string_pretty(self)? + "\n").with_context(|| format!("cannot write {}", path.display()))
    }
}

/// The step of the latest complete checkpoint of a run, if any (read the way the trainer's own
/// `--resume` reads it).
pub fn latest_checkpoint_step(run_dir: &Path) -> Result<Option<usize>> {
    match checkpoint::latest(run_dir)? {
        Some(ckpt) => Ok(Some(checkpoint::read_state(&ckpt)?.step)),
        None => Ok(None),
    }
}

/// One metric over steps.
pub type Series = BTreeMap<usize, f64>;

/// A run's logged metrics, by key.
#[derive(Debug, Clone, Default)]
pub struct RunMetrics {
    pub series: BTreeMap<String, Series>,
    pub wall_s: Option<f64>,
}

impl RunMetrics {
    pub fn get(&self, key: &str) -> Option<&Series> {
        self.series.get(key).filter(|s| !s.is_empty())
    }

    /// The value at the last step that logged `key` (for eval keys: the last eval line).
    pub fn last(&self, key: &str) -> Option<f64> {
        self.get(key)?.values().next_back().copied()
    }

    /// Mean of the last 10% of the logged values of `key` (at least one).
    pub fn tail_mean(&self, key: &str) -> Option<f64> {
        let s = self.get(key)?;
        let k = s.len().div_ceil(10).max(1);
        Some(s.values().rev().take(k).sum::<f64>() / k as f64)
    }

    pub fn sum(&self, key: &str) -> Option<f64> {
        Some(self.get(key)?.values().sum())
    }
}

/// Parses `metrics.jsonl`: lines of `{"step": N, "key": value, ...}`. A resumed run logs the
/// steps after its checkpoint again, so for each (key, step) the last line wins. Unparsable
/// lines (a crash mid-write) are skipped with a note; non-numbers (`null` for NaN) are dropped.
pub fn parse_metrics(text: &str, origin: &Path) -> BTreeMap<String, Series> {
    let mut series: BTreeMap<String, Series> = BTreeMap::new();
    let mut bad = 0;
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        let Ok(Value::Object(obj)) = serde_json::from_str::<Value>(line) else {
            bad += 1;
            continue;
        };
        let Some(step) = obj.get("step").and_then(Value::as_u64) else {
            bad += 1;
            continue;
        };
        for (k, v) in obj.iter().filter(|(k, _)| k.as_str() != "step") {
            if let Some(x) = v.as_f64().filter(|x| x.is_finite()) {
                series.entry(k.clone()).or_default().insert(step as usize, x);
            }
        }
    }
    if bad > 0 {
        eprintln!("note: skipped {bad} unreadable line(s) of {}", origin.display());
    }
    series
}

pub fn read_run(run_dir: &Path) -> Result<RunMetrics> {
    let path = run_dir.join("metrics.jsonl");
    let text = std::fs::read_to_string(&path).with_context(|| format!("cannot read {}", path.display()))?;
    Ok(RunMetrics { series: parse_metrics(&text, &path), wall_s: RunRecord::read(run_dir).map(|r| r.wall_s) })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resumed_steps_replace_earlier_lines_and_eval_lines_merge() {
        let text = r#"{"step":0,"eval/nll_no_think":5.0}
{"step":1,"reward/mean":1.0,"perf/tokens":10}
{"step":2,"reward/mean":9.0,"perf/tokens":10}
{"step":2,"reward/mean":2.0,"perf/tokens":10}
{"step":2,"eval/nll_no_think":4.0}
{"step":3,"reward/mean":null
{"step":3,"reward/mean":null,"perf/tokens":10}
"#;
        let m = RunMetrics { series: parse_metrics(text, Path::new("m")), wall_s: None };
        assert_eq!(m.get("reward/mean").unwrap().len(), 2);
        assert_eq!(m.last("reward/mean"), Some(2.0));
        assert_eq!(m.last("eval/nll_no_think"), Some(4.0));
        assert_eq!(m.sum("perf/tokens"), Some(30.0));
        assert_eq!(m.tail_mean("reward/mean"), Some(2.0));
        assert_eq!(m.last("thought/length"), None);
    }

    #[test]
    fn tail_mean_takes_the_last_tenth() {
        let s: Series = (1..=20).map(|i| (i, i as f64)).collect();
        let m = RunMetrics { series: [("r".to_string(), s)].into(), wall_s: None };
        assert_eq!(m.tail_mean("r"), Some(19.5));
    }
}

//! The run directory's logs: TensorBoard events, `metrics.jsonl` (one line per logged step),
//! and `rollouts.jsonl` (samples of what the model thinks, to read by eye).
use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::Path;

use anyhow::{Context, Result};
use serde_json::{json, Value};
use tensorboard_rs::summary_writer::SummaryWriter;

pub struct RunLog {
    tb: SummaryWriter,
    metrics: File,
    rollouts: File,
}

fn append(path: &Path) -> Result<File> {
    OpenOptions::new().create(true).append(true).open(path).with_context(|| format!("cannot open {}", path.display()))
}

impl RunLog {
    pub fn open(run_dir: &Path) -> Result<RunLog> {
        let events = run_dir.join("events");
        std::fs::create_dir_all(&events).with_context(|| format!("cannot create {}", events.display()))?;
        Ok(RunLog { tb: SummaryWriter::new(&events), metrics: append(&run_dir.join("metrics.jsonl"))?, rollouts: append(&run_dir.join("rollouts.jsonl"))? })
    }

    pub fn scalars(&mut self, step: usize, metrics: &BTreeMap<String, f64>) -> Result<()> {
        let mut line = serde_json::Map::new();
        line.insert("step".into(), json!(step));
        for (k, v) in metrics {
            self.tb.add_scalar(k, *v as f32, step);
            line.insert(k.clone(), if v.is_finite() { json!(v) } else { Value::Null });
        }
        writeln!(self.metrics, "{}", Value::Object(line)).context("cannot write metrics.jsonl")?;
        self.tb.flush();
        Ok(())
    }

    pub fn rollouts(&mut self, step: usize, records: &[Value]) -> Result<()> {
        for r in records {
            let mut r = r.clone();
            r["step"] = json!(step);
            writeln!(self.rollouts, "{r}").context("cannot write rollouts.jsonl")?;
        }
        Ok(())
    }
}

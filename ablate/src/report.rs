//! `OUT/report/`: `README.md` (one table row per variant: final metrics as mean ± std over
//! seeds, then the plots), `summary.json` (the same numbers for scripts) and the PNGs. Built
//! from the run folders alone, so it can be rebuilt at any time (`--report-only`).
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use serde_json::{json, Value};

use crate::metrics::{read_run, RunMetrics, RunRecord, LOG_FILE};
use crate::plot::{band, draw_png, Line, Panel};
use crate::runner::{state, State};
use crate::spec::{Ablation, Run};

/// A variant's finished runs.
pub struct VariantData {
    pub name: String,
    pub planned: usize,
    pub seeds: Vec<(u64, RunMetrics)>,
}

/// mean ± sample std (n − 1) over seeds; std is 0 with one seed.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Stat {
    pub mean: f64,
    pub std: f64,
    pub n: usize,
}

pub fn stat(values: &[f64]) -> Option<Stat> {
    let n = values.len();
    if n == 0 {
        return None;
    }
    let mean = values.iter().sum::<f64>() / n as f64;
    let var = if n > 1 { values.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / (n - 1) as f64 } else { 0.0 };
    Some(Stat { mean, std: var.sqrt(), n })
}

/// How a table column reduces one seed's run to a number.
enum Reduce {
    /// The last logged value (for eval keys: the last eval line).
    Last,
    /// Mean over the last 10% of logged steps.
    TailMean,
    Sum,
    Wall,
}

struct Column {
    header: &'static str,
    key: &'static str,
    reduce: Reduce,
    format: fn(Stat) -> String,
}

const COLUMNS: &[Column] = &[
    Column { header: "eval/nll_no_think", key: "eval/nll_no_think", reduce: Reduce::Last, format: fmt_stat },
    Column { header: "eval/acc_no_think", key: "eval/acc_no_think", reduce: Reduce::Last, format: fmt_stat },
    Column { header: "eval/nll_think", key: "eval/nll_think", reduce: Reduce::Last, format: fmt_stat },
    Column { header: "eval/acc_think", key: "eval/acc_think", reduce: Reduce::Last, format: fmt_stat },
    Column { header: "eval/thought_length", key: "eval/thought_length", reduce: Reduce::Last, format: fmt_stat },
    Column { header: "reward/mean (last 10%)", key: "reward/mean", reduce: Reduce::TailMean, format: fmt_stat },
    Column { header: "tokens", key: "perf/tokens", reduce: Reduce::Sum, format: fmt_count_stat },
    Column { header: "wall time", key: "wall_s", reduce: Reduce::Wall, format: fmt_duration_stat },
];

impl Column {
    fn value(&self, m: &RunMetrics) -> Option<f64> {
        match self.reduce {
            Reduce::Last => m.last(self.key),
            Reduce::TailMean => m.tail_mean(self.key),
            Reduce::Sum => m.sum(self.key),
            Reduce::Wall => m.wall_s,
        }
    }

    fn stat(&self, v: &VariantData) -> Option<Stat> {
        let values: Vec<f64> = v.seeds.iter().filter_map(|(_, m)| self.value(m)).collect();
        stat(&values)
    }
}

/// Digits by magnitude: 4 significant-ish digits without scientific notation.
fn decimals(x: f64) -> usize {
    match x.abs() {
        a if a >= 1000.0 => 0,
        a if a >= 100.0 => 1,
        a if a >= 10.0 => 2,
        _ => 3,
    }
}

fn fmt_stat(s: Stat) -> String {
    let d = decimals(s.mean);
    format!("{:.d$} ± {:.d$}", s.mean, s.std)
}

fn fmt_count_stat(s: Stat) -> String {
    let (div, unit) = match s.mean.abs() {
        a if a >= 1e9 => (1e9, "G"),
        a if a >= 1e6 => (1e6, "M"),
        a if a >= 1e3 => (1e3, "k"),
        _ => (1.0, ""),
    };
    let d = if div == 1.0 { 0 } else { 2 };
    format!("{:.d$}{unit} ± {:.d$}{unit}", s.mean / div, s.std / div)
}

fn duration_unit(secs: f64) -> (f64, &'static str) {
    match secs {
        s if s >= 2.0 * 3600.0 => (3600.0, "h"),
        s if s >= 120.0 => (60.0, "min"),
        _ => (1.0, "s"),
    }
}

/// `3 seeds`, `1 seed`.
pub fn count(n: usize, what: &str) -> String {
    format!("{n} {what}{}", if n == 1 { "" } else { "s" })
}

pub fn fmt_duration(secs: f64) -> String {
    let (div, unit) = duration_unit(secs);
    format!("{:.1} {unit}", secs / div)
}

fn fmt_duration_stat(s: Stat) -> String {
    let (div, unit) = duration_unit(s.mean);
    format!("{:.1} ± {:.1} {unit}", s.mean / div, s.std / div)
}

/// Reads every finished run of the plan, grouped by variant in the ablation's order.
pub fn collect(ablation: &Ablation, runs: &[Run]) -> Result<Vec<VariantData>> {
    let mut out = Vec::new();
    for v in &ablation.variants {
        let mine: Vec<&Run> = runs.iter().filter(|r| r.variant == v.name).collect();
        let mut seeds = Vec::new();
        for r in &mine {
            if state(r)? == State::Finished {
                seeds.push((r.seed, read_run(&r.dir).with_context(|| format!("reading the outputs of {}", r.label()))?));
            }
        }
        out.push(VariantData { name: v.name.clone(), planned: mine.len(), seeds });
    }
    Ok(out)
}

/// One PNG: its file, alt text, panels (title, y label, metric key), whether the panels share y.
struct PlotSpec {
    file: &'static str,
    alt: &'static str,
    panels: &'static [(&'static str, &'static str, &'static str)],
    share_y: bool,
}

const PLOTS: &[PlotSpec] = &[
    PlotSpec { file: "reward.png", alt: "mean reward vs step", panels: &[("mean reward", "reward/mean", "reward/mean")], share_y: false },
    PlotSpec {
        file: "nll.png",
        alt: "held-out NLL vs step",
        panels: &[("held-out NLL, no thought", "NLL (nats/token)", "eval/nll_no_think"), ("held-out NLL, greedy thought", "NLL (nats/token)", "eval/nll_think")],
        share_y: true,
    },
    PlotSpec { file: "thought_length.png", alt: "thought length vs step", panels: &[("thought length", "tokens", "thought/length")], share_y: false },
    PlotSpec {
        file: "accuracy.png",
        alt: "held-out next-token accuracy vs step",
        panels: &[("accuracy, no thought", "next-token accuracy", "eval/acc_no_think"), ("accuracy, greedy thought", "next-token accuracy", "eval/acc_think")],
        share_y: true,
    },
];

#[derive(Default)]
struct Plots {
    /// (file, alt text) of each PNG drawn.
    drawn: Vec<(String, String)>,
    /// Why each other PNG was not.
    skipped: Vec<String>,
}

/// Draws the plots that have data into `dir`.
fn draw_plots(variants: &[VariantData], dir: &Path) -> Result<Plots> {
    let mut plots = Plots::default();
    for spec in PLOTS {
        let panels: Vec<Panel> = spec
            .panels
            .iter()
            .map(|(title, y_label, key)| Panel {
                title: title.to_string(),
                y_label: y_label.to_string(),
                lines: variants
                    .iter()
                    .enumerate()
                    .filter_map(|(colour, v)| {
                        let series: Vec<_> = v.seeds.iter().filter_map(|(_, m)| m.get(key)).collect();
                        band(&series).map(|band| Line { label: v.name.clone(), colour, band })
                    })
                    .collect(),
            })
            .collect();
        let path = dir.join(spec.file);
        if panels.iter().all(|p| p.lines.is_empty()) {
            // A stale plot from an earlier report would contradict this one.
            let _ = std::fs::remove_file(&path);
            let keys: Vec<String> = spec.panels.iter().map(|(_, _, key)| format!("`{key}`")).collect();
            plots.skipped.push(format!("`{}`: no finished run logged {}", spec.file, keys.join(" or ")));
            continue;
        }
        draw_png(&path, &panels, spec.share_y).with_context(|| format!("cannot draw {}", path.display()))?;
        plots.drawn.push((spec.file.to_string(), spec.alt.to_string()));
    }
    Ok(plots)
}

/// Writes `OUT/report/` from what is in the run folders; returns the README's path.
pub fn write(ablation: &Ablation, runs: &[Run]) -> Result<PathBuf> {
    let dir = ablation.report_dir();
    std::fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let variants = collect(ablation, runs)?;
    let plots = draw_plots(&variants, &dir)?;
    let readme = dir.join("README.md");
    std::fs::write(&readme, readme_text(ablation, runs, &variants, &plots)?).with_context(|| format!("cannot write {}", readme.display()))?;
    let summary = dir.join("summary.json");
    std::fs::write(&summary, serde_json::to_string_pretty(&summary_json(ablation, &variants))? + "\n")
        .with_context(|| format!("cannot write {}", summary.display()))?;
    Ok(readme)
}

fn readme_text(ablation: &Ablation, runs: &[Run], variants: &[VariantData], plots: &Plots) -> Result<String> {
    let finished: usize = variants.iter().map(|v| v.seeds.len()).sum();
    let mut t = String::new();
    writeln!(t, "# Ablation `{}`\n", ablation.name)?;
    writeln!(
        t,
        "Base config `{}`; seeds {}; {} × {} = {} runs, {finished} finished. Written by `rlp ablate`.\n",
        ablation.base.display(),
        ablation.seeds.iter().map(u64::to_string).collect::<Vec<_>>().join(", "),
        count(ablation.variants.len(), "variant"),
        count(ablation.seeds.len(), "seed"),
        runs.len(),
    )?;
    if !ablation.set.is_empty() {
        writeln!(t, "Every run: {}.\n", ablation.set.iter().map(|s| format!("`{s}`")).collect::<Vec<_>>().join(" "))?;
    }
    // Columns no variant has (e.g. eval switched off) would only hold dashes.
    let columns: Vec<&Column> = COLUMNS.iter().filter(|c| variants.iter().any(|v| c.stat(v).is_some())).collect();
    write!(t, "| variant | seeds |")?;
    for c in &columns {
        write!(t, " {} |", c.header)?;
    }
    write!(t, "\n|---|---|")?;
    for _ in &columns {
        write!(t, "---|")?;
    }
    writeln!(t)?;
    for v in variants {
        write!(t, "| {} | {}/{} |", v.name, v.seeds.len(), v.planned)?;
        for c in &columns {
            write!(t, " {} |", c.stat(v).map(c.format).unwrap_or_else(|| "—".into()))?;
        }
        writeln!(t)?;
    }
    writeln!(
        t,
        "\nMean ± sample standard deviation over the finished seeds (± 0 with one seed). `eval/*`: the \
         last held-out evaluation of each run; `reward/mean`: the mean over the last 10% of logged \
         steps; tokens: the sum of `perf/tokens`; wall time: `rlp train`'s, per run. — : not logged \
         by that variant.\n"
    )?;
    writeln!(t, "## Variants\n")?;
    for v in &ablation.variants {
        let sets = if v.set.is_empty() { "the base config".to_string() } else { v.set.iter().map(|s| format!("`{s}`")).collect::<Vec<_>>().join(" ") };
        writeln!(t, "- `{}`: {sets}", v.name)?;
    }
    writeln!(t, "\n## Plots\n\nLine: mean over seeds; band: lowest to highest seed.\n")?;
    for (file, alt) in &plots.drawn {
        writeln!(t, "![{alt}]({file})\n")?;
    }
    for s in &plots.skipped {
        writeln!(t, "- not drawn: {s}")?;
    }
    let unfinished = unfinished_lines(ablation, runs)?;
    if !unfinished.is_empty() {
        writeln!(t, "\n## Runs not finished\n")?;
        for l in unfinished {
            writeln!(t, "- {l}")?;
        }
    }
    Ok(t)
}

fn unfinished_lines(ablation: &Ablation, runs: &[Run]) -> Result<Vec<String>> {
    let mut lines = Vec::new();
    for r in runs {
        let st = state(r)?;
        if st == State::Finished {
            continue;
        }
        let record = RunRecord::read(&r.dir).map(|rec| format!(", last attempt {}", rec.status)).unwrap_or_default();
        // Relative to report/, so the link works wherever OUT is.
        let log = Path::new("..").join(r.dir.strip_prefix(&ablation.out).unwrap_or(&r.dir)).join(LOG_FILE);
        let link = if r.dir.join(LOG_FILE).is_file() { format!(" ([log]({}))", log.display()) } else { String::new() };
        lines.push(format!("`{}` seed {}: {st}{record}{link}", r.variant, r.seed));
    }
    Ok(lines)
}

fn summary_json(ablation: &Ablation, variants: &[VariantData]) -> Value {
    let variants: Vec<Value> = variants
        .iter()
        .map(|v| {
            let metrics: BTreeMap<&str, Value> = COLUMNS
                .iter()
                .filter_map(|c| c.stat(v).map(|s| (c.header, json!({"mean": s.mean, "std": s.std, "n": s.n}))))
                .collect();
            json!({"name": v.name, "seeds_finished": v.seeds.iter().map(|(s, _)| *s).collect::<Vec<_>>(), "planned": v.planned, "metrics": metrics})
        })
        .collect();
    json!({"ablation": ablation.name, "base": ablation.base.display().to_string(), "seeds": ablation.seeds, "variants": variants})
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_uses_the_sample_std() {
        let s = stat(&[1.0, 2.0, 3.0]).unwrap();
        assert_eq!((s.mean, s.std, s.n), (2.0, 1.0, 3));
        assert_eq!(stat(&[5.0]).unwrap().std, 0.0);
        assert!(stat(&[]).is_none());
    }

    #[test]
    fn numbers_are_formatted_by_magnitude() {
        assert_eq!(fmt_stat(Stat { mean: 2.34567, std: 0.01234, n: 2 }), "2.346 ± 0.012");
        assert_eq!(fmt_stat(Stat { mean: -12.5, std: 1.0, n: 2 }), "-12.50 ± 1.00");
        assert_eq!(fmt_count_stat(Stat { mean: 1_234_567.0, std: 10_000.0, n: 2 }), "1.23M ± 0.01M");
        assert_eq!(fmt_duration_stat(Stat { mean: 300.0, std: 30.0, n: 2 }), "5.0 ± 0.5 min");
        assert_eq!(fmt_duration(12.34), "12.3 s");
    }
}

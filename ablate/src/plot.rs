//! PNG line plots: one colour per variant, the line the mean over seeds, a shaded band from the
//! lowest to the highest seed. Text is drawn with a font bundled in the binary
//! (`assets/fonts/DejaVuSans.ttf`), so no system font or fontconfig is needed at run time.
use std::path::Path;
use std::sync::OnceLock;

use anyhow::{anyhow, ensure, Context, Result};
use plotters::prelude::*;
use plotters::style::{register_font, FontStyle};

use crate::metrics::Series;

static FONT: &[u8] = include_bytes!("../../assets/fonts/DejaVuSans.ttf");

/// Tableau 10: distinguishable, and still readable at the band's 20% opacity.
const PALETTE: [RGBColor; 10] = [
    RGBColor(31, 119, 180),
    RGBColor(255, 127, 14),
    RGBColor(44, 160, 44),
    RGBColor(214, 39, 40),
    RGBColor(148, 103, 189),
    RGBColor(140, 86, 75),
    RGBColor(227, 119, 194),
    RGBColor(127, 127, 127),
    RGBColor(188, 189, 34),
    RGBColor(23, 190, 207),
];

pub const SIZE: (u32, u32) = (800, 500);

/// Mean, min and max over seeds at each step some seed logged.
#[derive(Debug, Clone, PartialEq)]
pub struct Band {
    pub x: Vec<f64>,
    pub mean: Vec<f64>,
    pub lo: Vec<f64>,
    pub hi: Vec<f64>,
}

pub fn band(seeds: &[&Series]) -> Option<Band> {
    let steps: std::collections::BTreeSet<usize> = seeds.iter().flat_map(|s| s.keys().copied()).collect();
    if steps.is_empty() {
        return None;
    }
    let mut b = Band { x: vec![], mean: vec![], lo: vec![], hi: vec![] };
    for step in steps {
        let v: Vec<f64> = seeds.iter().filter_map(|s| s.get(&step).copied()).collect();
        b.x.push(step as f64);
        b.mean.push(v.iter().sum::<f64>() / v.len() as f64);
        b.lo.push(v.iter().copied().fold(f64::INFINITY, f64::min));
        b.hi.push(v.iter().copied().fold(f64::NEG_INFINITY, f64::max));
    }
    Some(b)
}

/// One variant's curve.
pub struct Line {
    pub label: String,
    /// Index into the palette: the variant's position in the ablation, the same in every plot.
    pub colour: usize,
    pub band: Band,
}

pub struct Panel {
    pub title: String,
    pub y_label: String,
    pub lines: Vec<Line>,
}

fn register_fonts() -> Result<()> {
    static OK: OnceLock<bool> = OnceLock::new();
    // Every family plotters may ask for maps to the one bundled face.
    let ok = *OK.get_or_init(|| ["sans-serif", "serif", "monospace"].iter().all(|f| register_font(f, FontStyle::Normal, FONT).is_ok()));
    ensure!(ok, "internal: the bundled font (assets/fonts/DejaVuSans.ttf) does not load");
    Ok(())
}

fn range(values: impl Iterator<Item = f64>) -> Option<(f64, f64)> {
    let (lo, hi) = values.filter(|v| v.is_finite()).fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), v| (a.min(v), b.max(v)));
    if lo > hi {
        return None;
    }
    // A flat line (accuracy 0 on a tiny model) still gets a readable axis around it.
    let pad = if hi > lo { 0.05 * (hi - lo) } else { (0.1 * lo.abs()).max(0.05) };
    Some((lo - pad, hi + pad))
}

/// Enough decimals to tell ~8 ticks over `y` apart, and no more (plotters prints every digit).
fn tick_decimals(y: (f64, f64)) -> usize {
    let step = (y.1 - y.0) / 8.0;
    if step <= 0.0 || !step.is_finite() {
        return 2;
    }
    (-step.log10()).ceil().clamp(0.0, 6.0) as usize
}

/// The legend goes in the corner where the fewest points are, so it hides as little as it can.
fn legend_corner(lines: &[Line], x: (i64, i64), y: (f64, f64)) -> SeriesLabelPosition {
    let x = (x.0 as f64, x.1 as f64);
    let corners = [
        (SeriesLabelPosition::UpperRight, true, true),
        (SeriesLabelPosition::LowerRight, true, false),
        (SeriesLabelPosition::UpperLeft, false, true),
        (SeriesLabelPosition::LowerLeft, false, false),
    ];
    let count = |right: bool, upper: bool| -> usize {
        lines
            .iter()
            .flat_map(|l| l.band.x.iter().zip(l.band.lo.iter().zip(&l.band.hi)))
            .filter(|(px, (lo, hi))| {
                let fx = (*px - x.0) / (x.1 - x.0);
                let (flo, fhi) = ((*lo - y.0) / (y.1 - y.0), (*hi - y.0) / (y.1 - y.0));
                let in_x = if right { fx > 0.55 } else { fx < 0.45 };
                let in_y = if upper { fhi > 0.6 } else { flo < 0.4 };
                in_x && in_y
            })
            .count()
    };
    corners.into_iter().min_by_key(|(_, r, u)| count(*r, *u)).map(|(p, _, _)| p).unwrap_or(SeriesLabelPosition::UpperRight)
}

/// Draws `panels` side by side into an 800×500 PNG at `path`; with `share_y` the panels use one
/// y range, so that they compare at a glance.
pub fn draw_png(path: &Path, panels: &[Panel], share_y: bool) -> Result<()> {
    ensure!(!panels.is_empty(), "internal: no panel to draw for {}", path.display());
    register_fonts()?;
    let all = |f: &dyn Fn(&Line) -> Vec<f64>| panels.iter().flat_map(|p| p.lines.iter().flat_map(f)).collect::<Vec<f64>>();
    let xs = all(&|l| l.band.x.clone());
    let shared_y = range(all(&|l| [l.band.lo.clone(), l.band.hi.clone()].concat()).into_iter());
    let Some(shared_y) = shared_y.filter(|_| !xs.is_empty()) else { return Err(anyhow!("internal: nothing to plot in {}", path.display())) };
    // Steps are integers: an integer axis puts its ticks on steps. It spans exactly the logged
    // steps (a lone step gets one step of room either side).
    let x = xs.iter().fold((i64::MAX, i64::MIN), |(a, b), &v| (a.min(v as i64), b.max(v as i64)));
    let x = if x.1 == x.0 { (x.0 - 1, x.1 + 1) } else { x };

    let (w, h) = SIZE;
    let mut buf = vec![0u8; (w * h * 3) as usize];
    {
        let root = BitMapBackend::with_buffer(&mut buf, SIZE).into_drawing_area();
        root.fill(&WHITE).map_err(plot_err)?;
        for (area, panel) in root.split_evenly((1, panels.len())).iter().zip(panels) {
            let y = if share_y {
                shared_y
            } else {
                range(panel.lines.iter().flat_map(|l| l.band.lo.iter().chain(&l.band.hi).copied())).unwrap_or(shared_y)
            };
            let mut chart = ChartBuilder::on(area)
                .caption(&panel.title, ("sans-serif", 18))
                .margin(12)
                .x_label_area_size(40)
                .y_label_area_size(70)
                .build_cartesian_2d(x.0..x.1, y.0..y.1)
                .map_err(plot_err)?;
            chart
                .configure_mesh()
                .x_desc("step")
                .y_desc(panel.y_label.as_str())
                .label_style(("sans-serif", 12))
                .axis_desc_style(("sans-serif", 14))
                .light_line_style(WHITE)
                .bold_line_style(RGBColor(225, 225, 225))
                .x_labels(if panels.len() > 1 { 5 } else { 10 })
                .y_label_formatter(&|v| format!("{v:.d$}", d = tick_decimals(y)))
                .draw()
                .map_err(plot_err)?;
            if panel.lines.is_empty() {
                let at = (x.0 + (x.1 - x.0) / 4, y.0 + 0.5 * (y.1 - y.0));
                chart.draw_series(std::iter::once(Text::new("no variant logs this", at, ("sans-serif", 14)))).map_err(plot_err)?;
                continue;
            }
            for line in &panel.lines {
                let colour = PALETTE[line.colour % PALETTE.len()];
                let b = &line.band;
                let steps: Vec<i64> = b.x.iter().map(|&v| v as i64).collect();
                let points: Vec<(i64, f64)> = steps.iter().copied().zip(b.mean.iter().copied()).collect();
                if b.lo != b.hi && b.x.len() > 1 {
                    let upper = steps.iter().copied().zip(b.hi.iter().copied());
                    let lower = steps.iter().copied().zip(b.lo.iter().copied()).rev();
                    let outline: Vec<(i64, f64)> = upper.chain(lower).collect();
                    chart.draw_series(std::iter::once(Polygon::new(outline, colour.mix(0.18).filled()))).map_err(plot_err)?;
                }
                chart
                    .draw_series(LineSeries::new(points.clone(), colour.stroke_width(2)))
                    .map_err(plot_err)?
                    .label(line.label.as_str())
                    .legend(move |(lx, ly)| PathElement::new(vec![(lx, ly), (lx + 20, ly)], colour.stroke_width(3)));
                // Sparse series (evals) get markers: a lone point has no line to show it.
                if points.len() <= 30 {
                    chart.draw_series(points.iter().map(|&p| Circle::new(p, 3, colour.filled()))).map_err(plot_err)?;
                }
            }
            chart
                .configure_series_labels()
                .position(legend_corner(&panel.lines, x, y))
                .label_font(("sans-serif", 13))
                .background_style(WHITE.mix(0.85))
                .border_style(RGBColor(180, 180, 180))
                .draw()
                .map_err(plot_err)?;
        }
        root.present().map_err(plot_err)?;
    }
    write_png(path, &buf, w, h)
}

fn plot_err<E: std::fmt::Display>(e: E) -> anyhow::Error {
    anyhow!("drawing failed: {e}")
}

fn write_png(path: &Path, rgb: &[u8], w: u32, h: u32) -> Result<()> {
    let file = std::fs::File::create(path).with_context(|| format!("cannot create {}", path.display()))?;
    let mut enc = png::Encoder::new(std::io::BufWriter::new(file), w, h);
    enc.set_color(png::ColorType::RGB);
    enc.set_depth(png::BitDepth::Eight);
    // Flat backgrounds compress to a few tens of KB at the best setting.
    enc.set_compression(png::Compression::Best);
    let mut writer = enc.write_header().with_context(|| format!("cannot write {}", path.display()))?;
    writer.write_image_data(rgb).with_context(|| format!("cannot write {}", path.display()))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ticks_get_as_many_decimals_as_their_spacing_needs() {
        assert_eq!(tick_decimals((-0.05, 0.05)), 2);
        assert_eq!(tick_decimals((3.6, 4.4)), 1);
        assert_eq!(tick_decimals((0.0, 2500.0)), 0);
    }

    #[test]
    fn band_is_mean_min_max_over_seeds() {
        let a: Series = [(1, 1.0), (2, 4.0)].into();
        let b: Series = [(1, 3.0), (2, 2.0), (3, 5.0)].into();
        let band = band(&[&a, &b]).unwrap();
        assert_eq!(band.x, vec![1.0, 2.0, 3.0]);
        assert_eq!(band.mean, vec![2.0, 3.0, 5.0]);
        assert_eq!(band.lo, vec![1.0, 2.0, 5.0]);
        assert_eq!(band.hi, vec![3.0, 4.0, 5.0]);
    }

    #[test]
    fn draws_a_png_with_text_and_a_single_point_series() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("p.png");
        let a: Series = (0..20).map(|i| (i, (i as f64).sqrt())).collect();
        let b: Series = (0..20).map(|i| (i, (i as f64).sqrt() + 0.5)).collect();
        let one: Series = [(10, 1.0)].into();
        let panels = vec![
            Panel { title: "two seeds".into(), y_label: "value".into(), lines: vec![Line { label: "a".into(), colour: 0, band: band(&[&a, &b]).unwrap() }] },
            Panel { title: "one point".into(), y_label: "value".into(), lines: vec![Line { label: "b".into(), colour: 1, band: band(&[&one]).unwrap() }] },
        ];
        draw_png(&path, &panels, true).unwrap();
        let bytes = std::fs::read(&path).unwrap();
        assert!(bytes.starts_with(b"\x89PNG\r\n\x1a\n") && bytes.len() > 1024);
    }
}

//! The run's plots as PNG, drawn with plotters: loss curves, validation
//! AUC per epoch, test ROC curves, confusion matrices and reliability
//! diagrams. Text needs a TrueType font: DejaVu Sans or Liberation Sans
//! from the system (Debian's `fonts-dejavu-core`), or `CXR_PLOT_FONT`.

use std::path::Path;
use std::sync::OnceLock;

use plotters::prelude::*;

use crate::data::Example;
use crate::metrics::roc_curve;
use crate::report::Report;
use crate::trainer::EpochRecord;

const FONTS: [&str; 3] = [
    "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf",
    "/usr/share/fonts/truetype/liberation/LiberationSans-Regular.ttf",
    "/usr/share/fonts/TTF/DejaVuSans.ttf",
];

/// Registers the font once; plotters' ab_glyph backend needs `'static`
/// bytes, so the file is read once and kept for the process.
fn font() -> Result<(), String> {
    static REGISTERED: OnceLock<Result<(), String>> = OnceLock::new();
    REGISTERED
        .get_or_init(|| {
            let candidates = std::env::var("CXR_PLOT_FONT").into_iter().chain(FONTS.iter().map(|s| s.to_string()));
            for path in candidates {
                if let Ok(bytes) = std::fs::read(&path) {
                    let bytes: &'static [u8] = Box::leak(bytes.into_boxed_slice());
                    return plotters::style::register_font("sans-serif", FontStyle::Normal, bytes).map_err(|_| format!("{path} is not a usable font"));
                }
            }
            Err("no TrueType font found (install fonts-dejavu-core or set CXR_PLOT_FONT)".into())
        })
        .clone()
}

type PlotResult = Result<(), String>;

fn err(e: impl std::fmt::Display) -> String {
    e.to_string()
}

const COLOURS: [RGBColor; 6] =
    [RGBColor(31, 119, 180), RGBColor(255, 127, 14), RGBColor(44, 160, 44), RGBColor(214, 39, 40), RGBColor(148, 103, 189), RGBColor(140, 86, 75)];

fn lines(path: &Path, title: &str, y_label: &str, series: &[(String, Vec<(f64, f64)>)], y_range: Option<(f64, f64)>) -> PlotResult {
    let root = BitMapBackend::new(path, (800, 500)).into_drawing_area();
    root.fill(&WHITE).map_err(err)?;
    let xs = series.iter().flat_map(|(_, p)| p.iter().map(|q| q.0));
    let x_max = xs.fold(1.0f64, f64::max);
    let (y_min, y_max) = y_range.unwrap_or_else(|| {
        let ys: Vec<f64> = series.iter().flat_map(|(_, p)| p.iter().map(|q| q.1)).filter(|v| v.is_finite()).collect();
        let (lo, hi) = ys.iter().fold((f64::MAX, f64::MIN), |(a, b), &v| (a.min(v), b.max(v)));
        if lo > hi { (0.0, 1.0) } else { (lo.min(0.0), hi * 1.05 + 1e-9) }
    });
    let mut chart = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 24))
        .margin(15)
        .x_label_area_size(40)
        .y_label_area_size(60)
        .build_cartesian_2d(0.0..x_max, y_min..y_max)
        .map_err(err)?;
    chart
        .configure_mesh()
        .x_desc(if y_range == Some((0.0, 1.0)) && title.starts_with("ROC") { "false positive rate" } else { "epoch" })
        .y_desc(y_label)
        .draw()
        .map_err(err)?;
    for (i, (name, points)) in series.iter().enumerate() {
        let colour = COLOURS[i % COLOURS.len()];
        chart
            .draw_series(LineSeries::new(points.iter().copied().filter(|p| p.1.is_finite()), colour.stroke_width(2)))
            .map_err(err)?
            .label(name.clone())
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], colour.stroke_width(2)));
    }
    chart.configure_series_labels().background_style(WHITE.mix(0.8)).border_style(BLACK).draw().map_err(err)?;
    root.present().map_err(err)
}

fn matrix(path: &Path, title: &str, rows: &[String], columns: &[String], counts: &[Vec<usize>]) -> PlotResult {
    let cell = 90i32;
    let (w, h) = (200 + cell * columns.len() as i32, 120 + cell * rows.len() as i32);
    let root = BitMapBackend::new(path, (w as u32, h as u32)).into_drawing_area();
    root.fill(&WHITE).map_err(err)?;
    root.draw(&Text::new(title.to_owned(), (10, 10), ("sans-serif", 20))).map_err(err)?;
    let max = counts.iter().flatten().copied().max().unwrap_or(1).max(1) as f64;
    for (r, row) in counts.iter().enumerate() {
        root.draw(&Text::new(rows[r].clone(), (10, 90 + cell * r as i32 + cell / 2), ("sans-serif", 14))).map_err(err)?;
        for (c, &n) in row.iter().enumerate() {
            let (x, y) = (190 + cell * c as i32, 80 + cell * r as i32);
            let shade = 1.0 - 0.7 * (n as f64 / max);
            let colour = RGBColor((255.0 * shade) as u8, (255.0 * shade) as u8, 255);
            root.draw(&Rectangle::new([(x, y), (x + cell - 2, y + cell - 2)], colour.filled())).map_err(err)?;
            root.draw(&Text::new(n.to_string(), (x + cell / 2 - 10, y + cell / 2 - 8), ("sans-serif", 18))).map_err(err)?;
        }
    }
    for (c, name) in columns.iter().enumerate() {
        root.draw(&Text::new(name.clone(), (190 + cell * c as i32, 55), ("sans-serif", 13))).map_err(err)?;
    }
    root.present().map_err(err)
}

/// Writes `loss.png`, `val_auc.png`, `roc.png`, `calibration.png` and
/// `confusion.png` into `dir`.
pub fn write_all(dir: &Path, report: &Report, history: &[EpochRecord], (test, test_p): (&[Example], &[Vec<f32>]), labels: &[String]) -> PlotResult {
    font()?;
    let per_epoch = |f: &dyn Fn(&EpochRecord) -> f64| history.iter().map(|r| (r.epoch as f64, f(r))).collect::<Vec<_>>();
    lines(
        &dir.join("loss.png"),
        "Loss per epoch",
        "loss",
        &[("train".into(), per_epoch(&|r| r.train_loss)), ("validation".into(), per_epoch(&|r| r.val_loss))],
        None,
    )?;
    lines(
        &dir.join("val_auc.png"),
        "Validation mean ROC-AUC per epoch",
        "ROC-AUC",
        &[("validation".into(), per_epoch(&|r| r.val_auc.unwrap_or(f64::NAN)))],
        Some((0.0, 1.0)),
    )?;
    let curves: Vec<(String, Vec<(f64, f64)>)> = labels
        .iter()
        .enumerate()
        .map(|(l, label)| {
            let scores: Vec<f32> = test_p.iter().map(|p| p[l]).collect();
            let truth: Vec<bool> = test.iter().map(|e| e.targets[l] > 0.5).collect();
            let auc = crate::metrics::roc_auc(&scores, &truth).map_or("n/a".into(), |a| format!("{a:.3}"));
            (format!("{label} (AUC {auc})"), roc_curve(&scores, &truth))
        })
        .collect();
    lines(&dir.join("roc.png"), "ROC on the test split", "true positive rate", &curves, Some((0.0, 1.0)))?;
    let reliability: Vec<(String, Vec<(f64, f64)>)> = report
        .labels
        .iter()
        .map(|l| (format!("{} (ECE {:.3})", l.label, l.calibration.ece), l.calibration.bins.iter().filter(|b| b.2 > 0).map(|b| (b.0, b.1)).collect()))
        .chain(std::iter::once(("perfect".to_owned(), vec![(0.0, 0.0), (1.0, 1.0)])))
        .collect();
    lines(&dir.join("calibration.png"), "Reliability on the test split (predicted vs observed)", "observed rate", &reliability, Some((0.0, 1.0)))?;
    match &report.confusion {
        Some(m) => matrix(&dir.join("confusion.png"), "Test confusion (rows: truth, columns: predicted)", labels, labels, m)?,
        None => {
            let rows: Vec<String> = report.labels.iter().map(|l| l.label.clone()).collect();
            let counts: Vec<Vec<usize>> =
                report.labels.iter().map(|l| vec![l.test.confusion[0][0], l.test.confusion[0][1], l.test.confusion[1][0], l.test.confusion[1][1]]).collect();
            matrix(
                &dir.join("confusion.png"),
                "Test confusion per label at its threshold",
                &rows,
                &["TN".into(), "FP".into(), "FN".into(), "TP".into()],
                &counts,
            )?
        }
    }
    Ok(())
}

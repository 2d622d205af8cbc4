//! The demo recipe on 400 phantoms, end to end (generate, read, split,
//! both phases, evaluate, write the model): the wall time and held-out
//! ROC-AUC per finding. The test `phantom_training` asserts the AUC; the
//! time is reported here, not asserted.
//!
//!     cargo bench --profile dev -p cxr-training --bench phantom_recipe
//!
//! BENCH_THREADS (default: all cores) bounds the kernels' thread pool.

use std::path::Path;
use std::sync::atomic::AtomicBool;
use std::time::Instant;

use cxr_training::phantoms::{self, FileFormat, Layout, PhantomSettings};
use cxr_training::{sagemaker, settings};

fn main() {
    if let Some(threads) = std::env::var("BENCH_THREADS").ok().filter(|t| t.parse::<usize>().is_ok()) {
        // SAFETY: single-threaded here (no kernel has run yet).
        unsafe { std::env::set_var("RAYON_NUM_THREADS", threads) };
    }
    let dir = tempfile::tempdir().expect("temporary directory");
    let data = dir.path().join("phantoms");
    let started = Instant::now();
    phantoms::write_set(&data, &PhantomSettings { count: 400, ..PhantomSettings::default() }, Layout::Folder, FileFormat::Mixed).expect("phantoms");
    let generated = started.elapsed().as_secs_f64();
    let mut flags: Vec<String> = phantoms::DEMO_RECIPE.iter().chain(&["--name", "phantom-bench"]).map(|s| s.to_string()).collect();
    for (flag, path) in [
        ("--data", data.clone()),
        ("--model-dir", dir.path().join("model")),
        ("--checkpoint-dir", dir.path().join("checkpoints")),
        ("--output-dir", dir.path().join("output")),
    ] {
        flags.extend([flag.to_string(), path.display().to_string()]);
    }
    let settings = settings::resolve(Path::new("/nonexistent"), &flags).expect("settings");
    let summary = sagemaker::run(&settings, &AtomicBool::new(false)).expect("training");
    let threads = std::env::var("RAYON_NUM_THREADS").unwrap_or_else(|_| "all".into());
    println!(
        "400 phantoms, demo recipe, {threads} threads: generated in {generated:.1} s, trained and evaluated in {:.1} s ({} epochs)",
        summary.seconds,
        summary.history.len()
    );
    println!("| finding | test ROC-AUC |");
    println!("|---|---:|");
    for l in &summary.report.labels {
        println!("| {} | {} |", l.label, l.test.auc.map_or("n/a".into(), |a| format!("{a:.3}")));
    }
}

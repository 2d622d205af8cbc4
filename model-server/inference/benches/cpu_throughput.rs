//! CPU throughput and latency of DenseNet-121 and ResNet-50 at 224 x 224,
//! batch 1, 8 and 32, with PyTorch eager (same weights, same threads)
//! measured in the same run when a Python with torch is given.
//!
//!     BENCH_TORCH_PYTHON=/path/to/python cargo bench -p cxr-inference --bench cpu_throughput
//!
//! Settings: BENCH_THREADS (default: all cores; also sets RAYON_NUM_THREADS
//! for candle), BENCH_BATCHES (1,8,32), BENCH_ITERATIONS (10,5,3),
//! BENCH_MODELS (densenet121,resnet50), BENCH_LAYERS (both; `fused` or
//! `candle-nn` for one).

use std::process::Command;
use std::time::Instant;

use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;
use cxr_inference::formula_weights::FormulaWeights;
use cxr_inference::models::{DenseNet121, ResNet50};

fn list(name: &str, default: &str) -> Vec<usize> {
    std::env::var(name).unwrap_or_else(|_| default.into()).split(',').filter_map(|v| v.trim().parse().ok()).collect()
}

struct Row {
    model: String,
    batch: usize,
    latencies_ms: Vec<f64>,
}

impl Row {
    fn percentile(&self, p: f64) -> f64 {
        let mut sorted = self.latencies_ms.clone();
        sorted.sort_by(f64::total_cmp);
        let rank = ((p / 100.0) * (sorted.len() as f64 - 1.0)).round() as usize;
        sorted[rank.min(sorted.len() - 1)]
    }

    fn images_per_second(&self) -> f64 {
        let mean = self.latencies_ms.iter().sum::<f64>() / self.latencies_ms.len() as f64;
        self.batch as f64 * 1000.0 / mean
    }
}

fn main() {
    let threads =
        std::env::var("BENCH_THREADS").ok().and_then(|t| t.parse().ok()).unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
    // candle's CPU kernels size their thread pool from RAYON_NUM_THREADS;
    // set before the first kernel runs.
    // SAFETY: single-threaded at this point (no kernel has run yet).
    unsafe { std::env::set_var("RAYON_NUM_THREADS", threads.to_string()) };
    let batches = list("BENCH_BATCHES", "1,8,32");
    let iterations = list("BENCH_ITERATIONS", "10,5,3");
    let device = Device::Cpu;

    let mut rows = Vec::new();
    let densenet = || {
        DenseNet121::new(1, 18, VarBuilder::from_backend(Box::new(FormulaWeights { stems: vec!["features.conv0.weight".into()] }), DType::F32, device.clone()))
            .expect("densenet")
    };
    let resnet =
        || ResNet50::new(3, 1, Some(256), VarBuilder::from_backend(Box::new(FormulaWeights { stems: vec![] }), DType::F32, device.clone())).expect("resnet");
    // `candle`: the fused CPU layers the server runs; `candle-nn`: the same
    // networks on candle-nn's layers (what training runs; the state before
    // the fused layers). BENCH_LAYERS=fused or =candle-nn keeps one.
    let layers = std::env::var("BENCH_LAYERS").unwrap_or_default();
    let models = std::env::var("BENCH_MODELS").unwrap_or_else(|_| "densenet121,resnet50".into());
    for (name, channels) in [("densenet121", 1usize), ("resnet50", 3)] {
        if !models.split(',').any(|m| m == name) {
            continue;
        }
        for fused in [true, false] {
            if (fused && layers == "candle-nn") || (!fused && layers == "fused") {
                continue;
            }
            let (mut dense, mut res) = (None, None);
            if name == "densenet121" {
                let mut net = densenet();
                if fused {
                    net.prepare_for_cpu_inference().expect("fused");
                }
                dense = Some(net);
            } else {
                let mut net = resnet();
                if fused {
                    net.prepare_for_cpu_inference().expect("fused");
                }
                res = Some(net);
            }
            let label = if fused { format!("candle {name}") } else { format!("candle-nn {name}") };
            for (&batch, &count) in batches.iter().zip(&iterations) {
                let x = Tensor::rand(-1f32, 1f32, (batch, channels, 224, 224), &device).expect("input");
                let run = |x: &Tensor| match (&dense, &res) {
                    (Some(net), _) => net.forward(x),
                    (_, Some(net)) => net.forward(x),
                    _ => unreachable!("one network is built"),
                };
                run(&x).expect("warm-up");
                let latencies_ms = (0..count)
                    .map(|_| {
                        let started = Instant::now();
                        run(&x).expect("forward");
                        started.elapsed().as_secs_f64() * 1000.0
                    })
                    .collect();
                let row = Row { model: label.clone(), batch, latencies_ms };
                eprintln!("{}: batch {batch}: {:.1} images/s", row.model, row.images_per_second());
                rows.push(row);
            }
        }
    }

    let mut torch_version = None;
    if let Ok(python) = std::env::var("BENCH_TORCH_PYTHON") {
        let script = concat!(env!("CARGO_MANIFEST_DIR"), "/../bench_torch.py");
        let join = |v: &[usize]| v.iter().map(usize::to_string).collect::<Vec<_>>().join(",");
        match Command::new(&python)
            .arg(script)
            .args(["--threads", &threads.to_string(), "--batches", &join(&batches), "--iterations", &join(&iterations)])
            .output()
        {
            Ok(output) if output.status.success() => {
                for line in String::from_utf8_lossy(&output.stdout).lines() {
                    let Ok(json) = serde_json::from_str::<serde_json::Value>(line) else { continue };
                    torch_version = json["torch"].as_str().map(str::to_owned);
                    rows.push(Row {
                        model: format!("pytorch {}", json["model"].as_str().unwrap_or("?")),
                        batch: json["batch"].as_u64().unwrap_or(0) as usize,
                        latencies_ms: json["latencies_ms"].as_array().map(|a| a.iter().filter_map(|v| v.as_f64()).collect()).unwrap_or_default(),
                    });
                }
            }
            Ok(output) => eprintln!("PyTorch side failed: {}", String::from_utf8_lossy(&output.stderr)),
            Err(e) => eprintln!("cannot run {python}: {e}"),
        }
    }

    println!("CPU, {threads} threads, 224x224, f32{}", torch_version.map(|v| format!(", PyTorch {v} eager")).unwrap_or_default());
    println!("| model | batch | images/s | p50 ms | p99 ms | runs | candle / PyTorch throughput |");
    println!("|---|---:|---:|---:|---:|---:|---:|");
    for row in &rows {
        let network = row.model.split(' ').nth(1).unwrap_or_default();
        let reference = rows.iter().find(|r| r.model == format!("pytorch {network}") && r.batch == row.batch && row.model.starts_with("candle"));
        let ratio = reference.map(|r| format!("{:.2}", row.images_per_second() / r.images_per_second())).unwrap_or_default();
        println!(
            "| {} | {} | {:.1} | {:.0} | {:.0} | {} | {} |",
            row.model,
            row.batch,
            row.images_per_second(),
            row.percentile(50.0),
            row.percentile(99.0),
            row.latencies_ms.len(),
            ratio
        );
    }
}

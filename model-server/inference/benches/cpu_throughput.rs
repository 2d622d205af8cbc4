//! CPU throughput and latency of DenseNet-121 and ResNet-50 at 224 x 224,
//! batch 1, 8 and 32, with PyTorch eager (same weights, same threads)
//! measured in the same run when a Python with torch is given.
//!
//!     BENCH_TORCH_PYTHON=/path/to/python cargo bench -p cxr-inference --bench cpu_throughput
//!
//! Settings: BENCH_THREADS (default: all cores; also sets RAYON_NUM_THREADS
//! for candle), BENCH_BATCHES (1,8,32), BENCH_ITERATIONS (10,5,3) per
//! round, BENCH_ROUNDS (3), BENCH_MODELS (densenet121,resnet50),
//! BENCH_LAYERS (both; `fused` or `candle-nn` for one).
//!
//! Candle and PyTorch take turns: each round measures every candle variant
//! and then PyTorch (a long-lived Python process answering requests) on the
//! same batch, and the ratio column is the median of the rounds' ratios
//! with their range, so a shared machine's drift hits both sides alike.

use std::io::{BufRead, BufReader, Write};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
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
    /// candle / PyTorch throughput, one per round.
    ratios: Vec<f64>,
}

impl Row {
    fn percentile(&self, p: f64) -> f64 {
        let mut sorted = self.latencies_ms.clone();
        sorted.sort_by(f64::total_cmp);
        let rank = ((p / 100.0) * (sorted.len() as f64 - 1.0)).round() as usize;
        sorted[rank.min(sorted.len() - 1)]
    }

    fn images_per_second(&self) -> f64 {
        images_per_second(self.batch, &self.latencies_ms)
    }

    fn median_ratio(&self) -> Option<f64> {
        let mut sorted = self.ratios.clone();
        sorted.sort_by(f64::total_cmp);
        let n = sorted.len();
        (n > 0).then(|| if n % 2 == 1 { sorted[n / 2] } else { (sorted[n / 2 - 1] + sorted[n / 2]) / 2.0 })
    }
}

enum Network {
    DenseNet(DenseNet121),
    ResNet(ResNet50),
}

impl Network {
    fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        match self {
            Self::DenseNet(net) => net.forward(x),
            Self::ResNet(net) => net.forward(x),
        }
    }
}

/// `model-server/bench_torch.py --serve`: PyTorch measuring on request.
struct Torch {
    _child: Child,
    requests: ChildStdin,
    answers: BufReader<ChildStdout>,
    version: String,
}

impl Torch {
    fn start(python: &str, threads: usize) -> Option<Self> {
        let script = concat!(env!("CARGO_MANIFEST_DIR"), "/../bench_torch.py");
        let mut child = Command::new(python)
            .arg(script)
            .args(["--threads", &threads.to_string(), "--serve"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .map_err(|e| eprintln!("cannot run {python}: {e}"))
            .ok()?;
        let requests = child.stdin.take()?;
        let mut answers = BufReader::new(child.stdout.take()?);
        let mut first = String::new();
        answers.read_line(&mut first).ok()?;
        let Ok(json) = serde_json::from_str::<serde_json::Value>(&first) else {
            eprintln!("PyTorch side failed to start (see its error above)");
            return None;
        };
        let version = json["torch"].as_str().unwrap_or("?").to_owned();
        Some(Self { _child: child, requests, answers, version })
    }

    fn measure(&mut self, model: &str, batch: usize, count: usize) -> Option<Vec<f64>> {
        writeln!(self.requests, "{model} {batch} {count}").ok()?;
        let mut line = String::new();
        self.answers.read_line(&mut line).ok()?;
        let json: serde_json::Value = serde_json::from_str(&line).ok()?;
        Some(json["latencies_ms"].as_array()?.iter().filter_map(|v| v.as_f64()).collect())
    }
}

fn images_per_second(batch: usize, latencies_ms: &[f64]) -> f64 {
    batch as f64 * 1000.0 * latencies_ms.len() as f64 / latencies_ms.iter().sum::<f64>()
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
    let rounds = list("BENCH_ROUNDS", "3").first().copied().unwrap_or(3).max(1);
    let device = Device::Cpu;
    let mut torch = std::env::var("BENCH_TORCH_PYTHON").ok().and_then(|python| Torch::start(&python, threads));

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
    let mut rows = Vec::new();
    for (name, channels) in [("densenet121", 1usize), ("resnet50", 3)] {
        if !models.split(',').any(|m| m == name) {
            continue;
        }
        let mut networks = Vec::new();
        for fused in [true, false] {
            if (fused && layers == "candle-nn") || (!fused && layers == "fused") {
                continue;
            }
            let network = if name == "densenet121" {
                let mut net = densenet();
                if fused {
                    net.prepare_for_cpu_inference().expect("fused");
                }
                Network::DenseNet(net)
            } else {
                let mut net = resnet();
                if fused {
                    net.prepare_for_cpu_inference().expect("fused");
                }
                Network::ResNet(net)
            };
            networks.push((if fused { format!("candle {name}") } else { format!("candle-nn {name}") }, network));
        }
        for (&batch, &count) in batches.iter().zip(&iterations) {
            let x = Tensor::rand(-1f32, 1f32, (batch, channels, 224, 224), &device).expect("input");
            let mut latencies: Vec<Vec<f64>> = vec![Vec::new(); networks.len()];
            let mut ratios: Vec<Vec<f64>> = vec![Vec::new(); networks.len()];
            let mut reference = Vec::new();
            for (_, net) in &networks {
                net.forward(&x).expect("warm-up");
            }
            for _ in 0..rounds {
                let mut this_round = Vec::new();
                for (i, (_, net)) in networks.iter().enumerate() {
                    let measured: Vec<f64> = (0..count)
                        .map(|_| {
                            let started = Instant::now();
                            net.forward(&x).expect("forward");
                            started.elapsed().as_secs_f64() * 1000.0
                        })
                        .collect();
                    latencies[i].extend(&measured);
                    this_round.push(measured);
                }
                if let Some(measured) = torch.as_mut().and_then(|t| t.measure(name, batch, count)) {
                    for (i, candle) in this_round.iter().enumerate() {
                        ratios[i].push(images_per_second(batch, candle) / images_per_second(batch, &measured));
                    }
                    reference.extend(measured);
                }
            }
            for (i, (label, _)) in networks.iter().enumerate() {
                let row = Row { model: label.clone(), batch, latencies_ms: std::mem::take(&mut latencies[i]), ratios: std::mem::take(&mut ratios[i]) };
                eprintln!("{}: batch {batch}: {:.1} images/s", row.model, row.images_per_second());
                rows.push(row);
            }
            if !reference.is_empty() {
                rows.push(Row { model: format!("pytorch {name}"), batch, latencies_ms: reference, ratios: Vec::new() });
            }
        }
    }

    let version = torch.as_ref().map(|t| format!(", PyTorch {} eager", t.version)).unwrap_or_default();
    println!("CPU, {threads} threads, 224x224, f32{version}, {rounds} rounds taken in turn");
    println!("| model | batch | images/s | p50 ms | p99 ms | runs | candle / PyTorch throughput (median of rounds, range) |");
    println!("|---|---:|---:|---:|---:|---:|---:|");
    for row in &rows {
        let ratio = match row.median_ratio() {
            Some(median) if row.ratios.len() > 1 => {
                let (low, high) = row.ratios.iter().fold((f64::MAX, f64::MIN), |(l, h), &r| (l.min(r), h.max(r)));
                format!("{median:.2} ({low:.2}-{high:.2})")
            }
            Some(median) => format!("{median:.2}"),
            None => String::new(),
        };
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

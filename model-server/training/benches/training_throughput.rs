//! Training throughput on CPU: images per second of one training step
//! (forward, loss, backward, AdamW) for ours and PyTorch eager on the same
//! model, batch, input size and threads, in the same run, with the peak
//! resident memory of each process. Formula weights, 224 x 224, f32.
//!
//!     BENCH_TORCH_PYTHON=/path/to/python-with-torch BENCH_THREADS=2 cargo bench -p cxr-training --bench training_throughput
//!
//! Configurations (`unfrozen` = backbone units that learn; the rest runs in
//! evaluation mode without gradients, as the trainer's non-cached path
//! does): ResNet-50 with `layer4` (3 units) and with every unit but the stem
//! (16; candle has no backward for the stem's overlapping max-pool),
//! DenseNet-121 with `denseblock4` + `norm5` (2 units). Settings: BENCH_THREADS (default
//! all cores), BENCH_BATCH (8), BENCH_STEPS (3, after one warm-up step).

use std::path::Path;
use std::process::Command;
use std::time::Instant;

use candle_core::{DType, Device, Tensor};
use candle_nn::var_builder::SimpleBackend;
use cxr_inference::models::formula_for;
use cxr_training::data::LabelKind;
use cxr_training::model::{Model, manifest_for};
use cxr_training::optim::AdamW;
use cxr_training::trainer::{Criterion, logits};
use rand::SeedableRng;

fn peak_rss_mib() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| s.lines().find(|l| l.starts_with("VmHWM:")).and_then(|l| l.split_whitespace().nth(1)?.parse::<f64>().ok()))
        .map_or(f64::NAN, |kb| kb / 1024.0)
}

fn main() {
    let threads =
        std::env::var("BENCH_THREADS").ok().and_then(|t| t.parse().ok()).unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
    // SAFETY: single-threaded here (no kernel has run yet).
    unsafe { std::env::set_var("RAYON_NUM_THREADS", threads.to_string()) };
    let batch: usize = std::env::var("BENCH_BATCH").ok().and_then(|v| v.parse().ok()).unwrap_or(8);
    let steps: usize = std::env::var("BENCH_STEPS").ok().and_then(|v| v.parse().ok()).unwrap_or(3);
    let configs: [(&str, &str, usize, usize); 3] = [("resnet50", "resnet50", 3, 3), ("resnet50", "resnet50", 3, 16), ("densenet121", "densenet121-xrv", 1, 2)];
    let mut rows = Vec::new();
    for (name, architecture, channels, unfrozen) in configs {
        let flags: Vec<String> = ["--architecture", architecture].iter().map(|s| s.to_string()).collect();
        let settings = cxr_training::settings::resolve(Path::new("/nonexistent"), &flags).expect("settings");
        let labels: Vec<String> = (0..2).map(|i| format!("label{i}")).collect();
        let model = Model::new(&settings, manifest_for(&settings, &labels, LabelKind::MultiLabel), &Device::Cpu).expect("model");
        let formula = formula_for(model.manifest.architecture);
        for (n, var) in model.varmap.data().lock().expect("lock").iter() {
            var.set(&formula.get(var.shape().clone(), n, candle_nn::Init::Const(0.0), DType::F32, &Device::Cpu).expect("formula")).expect("set");
        }
        let frozen = model.network.units() - unfrozen;
        let scale = if channels == 1 { 1024.0 } else { 1.5 };
        let n = batch * channels * 224 * 224;
        let x = Tensor::from_vec((0..n).map(|i| (scale * (0.37 * i as f64).sin()) as f32).collect::<Vec<_>>(), (batch, channels, 224, 224), &Device::Cpu)
            .expect("x");
        let targets = Tensor::from_vec((0..batch * 2).map(|i| (i % 3 == 0) as u8 as f32).collect::<Vec<_>>(), (batch, 2), &Device::Cpu).expect("t");
        let criterion = Criterion { kind: LabelKind::MultiLabel, weights: Tensor::new(&[1.0f32, 1.0], &Device::Cpu).expect("w") };
        let mut optimizer = AdamW::new(model.trainable(frozen), 1e-3, 1e-2);
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(0);
        let mut times = Vec::new();
        for step in 0..=steps {
            let started = Instant::now();
            let boundary = model.network.forward_units(&x, 0..frozen, false).expect("frozen").detach();
            let out = logits(&model, &boundary, frozen, true, 0.0, &mut rng).expect("forward");
            let loss = criterion.loss(&out, &targets).expect("loss");
            let grads = loss.backward().expect("backward");
            optimizer.step(&grads).expect("step");
            if step > 0 {
                times.push(started.elapsed().as_secs_f64());
            }
        }
        let mean = times.iter().sum::<f64>() / times.len() as f64;
        rows.push((format!("candle {name}"), unfrozen, batch as f64 / mean, mean * 1000.0, peak_rss_mib()));
    }
    let mut torch_rows = Vec::new();
    if let Ok(python) = std::env::var("BENCH_TORCH_PYTHON") {
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../bench_torch_training.py");
        for (name, _, _, unfrozen) in configs {
            let out = Command::new(&python)
                .arg(&script)
                .args([
                    "--model",
                    name,
                    "--unfrozen",
                    &unfrozen.to_string(),
                    "--threads",
                    &threads.to_string(),
                    "--batch",
                    &batch.to_string(),
                    "--steps",
                    &steps.to_string(),
                ])
                .output()
                .expect("python");
            let text = String::from_utf8_lossy(&out.stdout);
            let v: serde_json::Value = serde_json::from_str(text.trim()).unwrap_or_else(|_| panic!("torch bench: {}", String::from_utf8_lossy(&out.stderr)));
            let mean = v["mean_seconds"].as_f64().unwrap_or(f64::NAN);
            torch_rows.push((format!("pytorch {name}"), unfrozen, batch as f64 / mean, mean * 1000.0, v["peak_rss_mib"].as_f64().unwrap_or(f64::NAN)));
        }
    }
    println!("CPU training step, {threads} threads, batch {batch}, 224x224, f32, {steps} steps after a warm-up");
    println!("| model | units learning | images/s | ms per step | peak RSS MiB (process) | candle / PyTorch |");
    println!("|---|---:|---:|---:|---:|---:|");
    for (i, r) in rows.iter().enumerate() {
        let ratio = torch_rows.get(i).map_or(String::new(), |t| format!("{:.2}", r.2 / t.2));
        println!("| {} | {} | {:.2} | {:.0} | {:.0} | {ratio} |", r.0, r.1, r.2, r.3, r.4);
    }
    for r in &torch_rows {
        println!("| {} | {} | {:.2} | {:.0} | {:.0} | |", r.0, r.1, r.2, r.3, r.4);
    }
}

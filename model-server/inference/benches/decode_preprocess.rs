//! Decoding plus preprocessing of large images, ours against the upstream
//! Python code on the same files in the same run: a 2048 x 2500 12-bit
//! DICOM and a 3000 x 3000 8-bit grey PNG, into the DenseNet-121
//! (TorchXRayVision) input and, for the PNG, the ResNet-50 (ImageNet) input.
//!
//!     BENCH_TORCH_PYTHON=/path/to/python cargo bench -p cxr-inference --bench decode_preprocess
//!
//! The Python needs torch, torchvision, torchxrayvision and pydicom
//! (`model-server/bench_torch_decode.py`). BENCH_RUNS (5) runs per case,
//! after one warm-up; BENCH_THREADS (1) threads on both sides.

use std::io::Cursor;
use std::process::Command;
use std::time::Instant;

use cxr_inference::decode::{Limits, decode};
use cxr_inference::fixtures::dicom_file;
use cxr_inference::preprocess::{imagenet_input, xrv_input};

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn main() {
    let runs: usize = std::env::var("BENCH_RUNS").ok().and_then(|v| v.parse().ok()).unwrap_or(5);
    let threads = std::env::var("BENCH_THREADS").unwrap_or_else(|_| "1".into());
    // SAFETY: single-threaded here (nothing has run yet).
    unsafe { std::env::set_var("RAYON_NUM_THREADS", &threads) };
    let dir = std::env::temp_dir().join(format!("cxr-decode-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temporary directory");
    let dicom = dicom_file(2048, 2500);
    // A texture that compresses like a radiograph does, not like a flat field.
    let png = {
        let side = 3000u32;
        let image = image::GrayImage::from_fn(side, side, |x, y| {
            let (fx, fy) = (x as f32 / side as f32, y as f32 / side as f32);
            let body = 128.0 + 90.0 * ((fx - 0.5) * 3.0).cos() * ((fy - 0.5) * 2.5).cos();
            let texture = 12.0 * ((x as f32 * 0.37).sin() + (y as f32 * 0.23).cos()) + ((x * 7919 + y * 104_729) % 17) as f32;
            image::Luma([(body + texture).clamp(0.0, 255.0) as u8])
        });
        let mut bytes = Vec::new();
        image.write_to(&mut Cursor::new(&mut bytes), image::ImageFormat::Png).expect("png");
        bytes
    };
    let (dicom_path, png_path) = (dir.join("big.dcm"), dir.join("big.png"));
    std::fs::write(&dicom_path, &dicom).expect("write dicom");
    std::fs::write(&png_path, &png).expect("write png");

    let limits = Limits::default();
    let mut rows: Vec<(String, String, f64)> = Vec::new();
    let cases: [(&str, &[u8], &str); 4] = [("dicom", &dicom, "xrv"), ("dicom", &dicom, "imagenet"), ("png", &png, "xrv"), ("png", &png, "imagenet")];
    for (file, bytes, pipeline) in cases {
        let run = || {
            let decoded = decode(bytes, &limits).expect("decode");
            match pipeline {
                "xrv" => xrv_input(&decoded.pixels, 224).0.values.len(),
                _ => imagenet_input(&decoded.pixels, 256, 224).0.len(),
            }
        };
        run();
        let latencies: Vec<f64> = (0..runs)
            .map(|_| {
                let started = Instant::now();
                std::hint::black_box(run());
                started.elapsed().as_secs_f64() * 1000.0
            })
            .collect();
        rows.push((format!("ours {file}"), pipeline.to_owned(), median(latencies)));
    }
    if let Ok(python) = std::env::var("BENCH_TORCH_PYTHON") {
        let script = concat!(env!("CARGO_MANIFEST_DIR"), "/../bench_torch_decode.py");
        let output = Command::new(&python)
            .arg(script)
            .args(["--dicom", &dicom_path.display().to_string(), "--png", &png_path.display().to_string()])
            .args(["--runs", &runs.to_string(), "--threads", &threads])
            .output()
            .expect("python");
        if !output.status.success() {
            eprintln!("Python side failed: {}", String::from_utf8_lossy(&output.stderr));
        }
        for line in String::from_utf8_lossy(&output.stdout).lines() {
            let Ok(json) = serde_json::from_str::<serde_json::Value>(line) else { continue };
            let latencies: Vec<f64> = json["latencies_ms"].as_array().map(|a| a.iter().filter_map(|v| v.as_f64()).collect()).unwrap_or_default();
            if !latencies.is_empty() {
                rows.push((
                    format!("upstream {}", json["file"].as_str().unwrap_or("?")),
                    json["pipeline"].as_str().unwrap_or("?").to_owned(),
                    median(latencies),
                ));
            }
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
    println!(
        "Decode + preprocess, {threads} thread(s), median of {runs}: DICOM 2048x2500 12-bit ({} MB), PNG 3000x3000 8-bit grey ({} MB)",
        dicom.len() / 1_000_000,
        png.len() / 1_000_000
    );
    println!("| file | into | ours ms | upstream ms | upstream / ours |");
    println!("|---|---|---:|---:|---:|");
    for (name, pipeline, ms) in rows.iter().filter(|r| r.0.starts_with("ours")) {
        let file = name.trim_start_matches("ours ");
        let upstream = rows.iter().find(|r| r.0 == format!("upstream {file}") && &r.1 == pipeline).map(|r| r.2);
        println!(
            "| {file} | {} | {ms:.1} | {} | {} |",
            if pipeline == "xrv" { "DenseNet-121 (XRV)" } else { "ResNet-50 (ImageNet)" },
            upstream.map_or("".into(), |u| format!("{u:.1}")),
            upstream.map_or("".into(), |u| format!("{:.2}", u / ms))
        );
    }
}

//! Numerical parity with the upstream PyTorch models: the same formula
//! weights and formula images as `model-server/parity/make_fixtures.py`,
//! compared with the outputs it committed in `model-server/parity/expected/`.
//! No Python or PyTorch needed here.

use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;
use cxr_inference::fixtures::{grey_image, rgb_image};
use cxr_inference::formula_weights::FormulaWeights;
use cxr_inference::models::{DenseNet121, ResNet50, calibrate, sigmoid};
use cxr_inference::preprocess::{imagenet_input, xrv_input};
use serde_json::Value;

/// The bar: 1e-4 relative to each value, in f32 on CPU (measured: inputs
/// bit-identical, logits within 4.1e-5, calibrated outputs within 1.5e-7).
const RELATIVE: f64 = 1e-4;

fn expected(name: &str) -> Value {
    let path = format!("{}/../parity/expected/{name}", env!("CARGO_MANIFEST_DIR"));
    serde_json::from_str(&std::fs::read_to_string(&path).expect("expected outputs")).expect("JSON")
}

fn floats(value: &Value) -> Vec<f64> {
    value.as_array().expect("array").iter().map(|v| v.as_f64().unwrap_or(f64::NAN)).collect()
}

fn assert_close(what: &str, ours: &[f64], theirs: &[f64]) {
    assert_eq!(ours.len(), theirs.len(), "{what}: length");
    let worst = ours.iter().zip(theirs).map(|(a, b)| (a - b).abs() / b.abs().max(1e-12)).fold(0.0f64, f64::max);
    eprintln!("{what}: largest relative difference {worst:.2e}");
    for (i, (a, b)) in ours.iter().zip(theirs).enumerate() {
        let tolerance = RELATIVE * b.abs().max(1e-9);
        assert!((a - b).abs() <= tolerance, "{what}[{i}]: ours {a}, PyTorch {b} (|diff| {} > {tolerance})", (a - b).abs());
    }
}

#[test]
fn densenet121_matches_torchxrayvision() {
    let expected = expected("densenet121_xrv.json");
    let device = Device::Cpu;
    let weights = FormulaWeights { stems: vec!["features.conv0.weight".into()] };
    let vb = VarBuilder::from_backend(Box::new(weights), DType::F32, device.clone());
    let mut model = DenseNet121::new(1, 18, vb).expect("model");
    let thresholds: Vec<Option<f32>> = expected["op_threshs"].as_array().expect("thresholds").iter().map(|t| t.as_f64().map(|t| t as f32)).collect();

    // candle-nn's layers (training), then the fused CPU layers (serving).
    for (pass, (case, pixels)) in [("grey_600x520_u8", grey_image()), ("rgb_200x300_u8", rgb_image())].into_iter().cycle().take(4).enumerate() {
        if pass == 2 {
            model.prepare_for_cpu_inference().expect("fused layers");
        }
        let case_name = case;
        let case = &*format!("{case}{}", if pass >= 2 { " (fused)" } else { "" });
        let want = &expected["cases"][case_name];
        // Preprocessing first: the model input itself.
        let (input, _) = xrv_input(&pixels, 224);
        let values: Vec<f64> = input.values.iter().map(|&v| f64::from(v)).collect();
        let picks: Vec<usize> = want["input"]["indices"].as_array().expect("indices").iter().map(|i| i.as_u64().expect("index") as usize).collect();
        let sampled: Vec<f64> = picks.iter().map(|&i| values[i]).collect();
        assert_close(&format!("{case} input samples"), &sampled, &floats(&want["input"]["values"]));
        assert_close(&format!("{case} input sum"), &[values.iter().map(|v| v.abs()).sum()], &[want["input"]["abs_sum"].as_f64().expect("abs sum")]);

        let x = Tensor::from_vec(input.values.clone(), (1, 1, 224, 224), &device).expect("tensor");
        let logits: Vec<f32> = model.forward(&x).expect("forward").squeeze(0).expect("squeeze").to_vec1().expect("logits");
        assert_close(&format!("{case} logits"), &logits.iter().map(|&v| f64::from(v)).collect::<Vec<_>>(), &floats(&want["logits"]));
        let calibrated: Vec<f64> = logits.iter().zip(&thresholds).map(|(&l, &t)| f64::from(calibrate(sigmoid(l), t))).collect();
        assert_close(&format!("{case} calibrated"), &calibrated, &floats(&want["calibrated"]));
    }
}

fn resnet_case(file: &str) {
    let expected = expected(file);
    let device = Device::Cpu;
    let classes = expected["classes"].as_u64().expect("classes") as usize;
    let hidden = expected["hidden"].as_u64().expect("hidden") as usize;
    let vb = VarBuilder::from_backend(Box::new(FormulaWeights { stems: vec![] }), DType::F32, device.clone());
    let mut model = ResNet50::new(3, classes, Some(hidden), vb).expect("model");
    // candle-nn's layers (training), then the fused CPU layers (serving).
    for (pass, (case, pixels)) in [("grey_600x520_u8", grey_image()), ("rgb_200x300_u8", rgb_image())].into_iter().cycle().take(4).enumerate() {
        if pass == 2 {
            model.prepare_for_cpu_inference().expect("fused layers");
        }
        let want = &expected["cases"][case];
        let case = &*format!("{case}{}", if pass >= 2 { " (fused)" } else { "" });
        let (input, _) = imagenet_input(&pixels, 256, 224);
        let values: Vec<f64> = input.iter().map(|&v| f64::from(v)).collect();
        let picks: Vec<usize> = want["input"]["indices"].as_array().expect("indices").iter().map(|i| i.as_u64().expect("index") as usize).collect();
        let sampled: Vec<f64> = picks.iter().map(|&i| values[i]).collect();
        assert_close(&format!("{file} {case} input samples"), &sampled, &floats(&want["input"]["values"]));
        assert_close(&format!("{file} {case} input sum"), &[values.iter().map(|v| v.abs()).sum()], &[want["input"]["abs_sum"].as_f64().expect("abs sum")]);

        let x = Tensor::from_vec(input, (1, 3, 224, 224), &device).expect("tensor");
        let logits = model.forward(&x).expect("forward");
        let probabilities = if classes == 1 { candle_nn::ops::sigmoid(&logits) } else { candle_nn::ops::softmax(&logits, 1) }.expect("probabilities");
        let as_f64 = |t: &Tensor| t.squeeze(0).and_then(|t| t.to_vec1::<f32>()).expect("values").into_iter().map(f64::from).collect::<Vec<_>>();
        assert_close(&format!("{file} {case} logits"), &as_f64(&logits), &floats(&want["logits"]));
        assert_close(&format!("{file} {case} probabilities"), &as_f64(&probabilities), &floats(&want["probabilities"]));
    }
}

#[test]
fn resnet50_pneumonia_head_matches_torchvision() {
    resnet_case("resnet50_pneumonia.json");
}

#[test]
fn resnet50_covid_pneumonia_normal_head_matches_torchvision() {
    resnet_case("resnet50_covid3.json");
}

#[test]
fn half_precision_stays_close_to_f32() {
    use cxr_inference::decode::{Decoded, Format};
    use cxr_inference::models::{Architecture, Classifier, ModelManifest, Output, Preprocessing};
    let manifest = ModelManifest {
        name: "resnet50-covid3-generated".into(),
        version: "0".into(),
        architecture: Architecture::Resnet50 { hidden: 256 },
        labels: vec!["COVID-19".into(), "Pneumonia".into(), "Normal".into()],
        preprocessing: Preprocessing::Imagenet224,
        output: Output::Softmax,
        thresholds: vec![],
        trained: false,
        weights: "model.safetensors".into(),
        provenance: None,
        base_weights: None,
    };
    let image = Decoded { format: Format::Png, pixels: grey_image(), bit_depth: 8 };
    let run = |dtype| {
        let model = Classifier::with_formula_weights(manifest.clone(), &Device::Cpu, dtype).expect("model");
        let input = model.preprocess(&image);
        model.predict(&[input.values.as_slice()]).expect("predict").remove(0)
    };
    let reference = run(DType::F32);
    // bf16 is GPU-only: candle 0.11 has no bf16 matmul on CPU.
    let worst = run(DType::F16).iter().zip(&reference).map(|(a, b)| (a - b).abs()).fold(0.0f32, f32::max);
    eprintln!("F16: largest probability difference from f32 {worst:.2e}");
    assert!(worst < 1e-3, "f16 drifts {worst}");
}

/// The fused CPU layers on a batch (strided channel prefixes, one GEMM per
/// image) against candle-nn's layers on the same batch.
#[test]
fn fused_layers_match_on_a_batch() {
    let device = Device::Cpu;
    let grey = xrv_input(&grey_image(), 224).0.values;
    let rgb = xrv_input(&rgb_image(), 224).0.values;
    let batch = Tensor::from_vec([grey.clone(), rgb, grey].concat(), (3, 1, 224, 224), &device).expect("batch");
    let vb = VarBuilder::from_backend(Box::new(FormulaWeights { stems: vec!["features.conv0.weight".into()] }), DType::F32, device.clone());
    let mut densenet = DenseNet121::new(1, 18, vb).expect("model");
    let plain: Vec<f32> = densenet.forward(&batch).and_then(|t| t.flatten_all()?.to_vec1()).expect("plain");
    densenet.prepare_for_cpu_inference().expect("fused");
    let fused: Vec<f32> = densenet.forward(&batch).and_then(|t| t.flatten_all()?.to_vec1()).expect("fused");
    let f64s = |v: &[f32]| v.iter().map(|&x| f64::from(x)).collect::<Vec<_>>();
    assert_close("densenet121 batch of 3, fused vs candle-nn", &f64s(&fused), &f64s(&plain));

    let (a, _) = imagenet_input(&grey_image(), 256, 224);
    let (b, _) = imagenet_input(&rgb_image(), 256, 224);
    let batch = Tensor::from_vec([a, b].concat(), (2, 3, 224, 224), &device).expect("batch");
    let vb = VarBuilder::from_backend(Box::new(FormulaWeights { stems: vec![] }), DType::F32, device.clone());
    let mut resnet = ResNet50::new(3, 3, Some(256), vb).expect("model");
    let plain: Vec<f32> = resnet.forward(&batch).and_then(|t| t.flatten_all()?.to_vec1()).expect("plain");
    resnet.prepare_for_cpu_inference().expect("fused");
    let fused: Vec<f32> = resnet.forward(&batch).and_then(|t| t.flatten_all()?.to_vec1()).expect("fused");
    assert_close("resnet50 batch of 2, fused vs candle-nn", &f64s(&fused), &f64s(&plain));
}

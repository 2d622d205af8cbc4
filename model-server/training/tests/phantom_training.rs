//! Training end to end on synthetic phantoms, CPU only: the readers, the
//! split by patient, both phases, checkpoints and resume, evaluation, the
//! model directory the server loads, and a held-out ROC-AUC of at least
//! 0.95 on a phantom finding. The time this takes is reported by the
//! `phantom_recipe` benchmark, not asserted here.

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};

use candle_core::{DType, Device};
use cxr_inference::decode::{Limits, decode};
use cxr_inference::models::Classifier;
use cxr_training::data::{self, LabelKind};
use cxr_training::model::{Model, manifest_for};
use cxr_training::phantoms::{self, FileFormat, Layout, PhantomSettings};
use cxr_training::trainer::{self, Criterion};
use cxr_training::{TrainError, evaluation, sagemaker, settings};

fn settings_for(data: &Path, out: &Path, extra: &[&str]) -> cxr_training::TrainSettings {
    let mut flags: Vec<String> = vec![
        "--data".into(),
        data.display().to_string(),
        "--model-dir".into(),
        out.join("model").display().to_string(),
        "--checkpoint-dir".into(),
        out.join("checkpoints").display().to_string(),
        "--output-dir".into(),
        out.join("output").display().to_string(),
    ];
    flags.extend(extra.iter().map(|s| s.to_string()));
    settings::resolve(Path::new("/nonexistent"), &flags).expect("settings")
}

#[test]
fn a_model_trained_on_phantoms_finds_effusions_and_the_server_loads_it() {
    let dir = tempfile::tempdir().expect("dir");
    let data = dir.path().join("phantoms");
    let written =
        phantoms::write_set(&data, &PhantomSettings { count: 400, ..PhantomSettings::default() }, Layout::Folder, FileFormat::Mixed).expect("phantoms");
    assert_eq!(written.images, 400);
    // The demo recipe on the demo model's phantoms: this retrains it.
    let recipe: Vec<&str> = phantoms::DEMO_RECIPE.iter().copied().chain(["--name", "phantom-test"]).collect();
    let settings = settings_for(&data, dir.path(), &recipe);
    let summary = sagemaker::run(&settings, &AtomicBool::new(false)).expect("training");
    for l in &summary.report.labels {
        println!("{}: test AUC {:?}, threshold {:.3}, F1 {:.3}, ECE {:.3}", l.label, l.test.auc, l.validation.threshold, l.test.f1, l.calibration.ece);
    }
    println!("trained in {:.0} s, {} epochs", summary.seconds, summary.history.len());
    // Effusion changes a large region, which the frozen random backbone's
    // pooled features see (nodules and small opacities much less).
    let effusion = summary.report.labels.iter().find(|l| l.label == "Effusion").expect("label");
    let auc = effusion.test.auc.expect("both classes in the test split");
    assert!(auc >= 0.95, "held-out ROC-AUC for Effusion {auc:.3} < 0.95");

    // The model directory: what the server loads, unchanged.
    let model_dir = dir.path().join("model");
    for file in ["model.json", "model.safetensors", "metrics.json", "history.json"] {
        assert!(model_dir.join(file).exists(), "{file} missing");
    }
    let classifier = Classifier::load(&model_dir, &Device::Cpu, DType::F32).expect("the server's loader");
    assert!(classifier.manifest.trained);
    assert_eq!(classifier.manifest.labels, phantoms::FINDINGS);
    assert_eq!(classifier.manifest.thresholds.len(), 4);
    let provenance = classifier.manifest.provenance.clone().expect("provenance");
    assert!(provenance.synthetic_data && provenance.notice.is_some() && provenance.data_digest.len() == 64);
    let bytes = phantoms::generate(&PhantomSettings { count: 1, seed: 99, ..PhantomSettings::default() })[0].png().expect("png");
    let decoded = decode(&bytes, &Limits::default()).expect("decode");
    let input = classifier.preprocess(&decoded);
    let probabilities = classifier.predict(&[&input.values]).expect("predict");
    assert_eq!(probabilities[0].len(), 4);

    // The pipeline's evaluate step: the written model, run as the server
    // runs it, on the same test split, agrees with the trainer's figures.
    let served = evaluation::evaluate(&model_dir, &data, evaluation::Split::Test, 16).expect("evaluate");
    assert_eq!(served.images, summary.report.images["test"]);
    let served_effusion = served.labels.iter().find(|l| l.label == "Effusion").and_then(|l| l.metrics.auc).expect("auc");
    assert!((served_effusion - auc).abs() < 1e-3, "served {served_effusion:.4} vs trained {auc:.4}");
    assert!(served.synthetic_data);
}

#[test]
fn a_stopped_run_resumes_from_its_checkpoint_and_the_coco_layout_reads() {
    let dir = tempfile::tempdir().expect("dir");
    let data = dir.path().join("coco");
    phantoms::write_set(&data, &PhantomSettings { count: 24, size: 128, ..PhantomSettings::default() }, Layout::Coco, FileFormat::Dicom).expect("phantoms");
    let settings = settings_for(
        &data,
        dir.path(),
        &["--epochs-frozen", "3", "--epochs-unfrozen", "1", "--batch-size", "4", "--calibration-images", "8", "--validation-fraction", "0.3"],
    );
    let dataset = data::read_dir(&data, LabelKind::MultiLabel).expect("COCO phantoms");
    assert!(dataset.synthetic);
    assert_eq!(dataset.labels, phantoms::FINDINGS);
    let splits = dataset.split(0.3, 0.2, settings.seed);
    // No patient in two splits.
    let patients = |e: &[data::Example]| e.iter().map(|x| x.group.clone()).collect::<std::collections::BTreeSet<_>>();
    assert!(patients(&splits.train).is_disjoint(&patients(&splits.validation)));
    assert!(patients(&splits.train).is_disjoint(&patients(&splits.test)));

    let device = Device::Cpu;
    let model = Model::new(&settings, manifest_for(&settings, &dataset.labels, LabelKind::MultiLabel), &device).expect("model");
    let criterion = Criterion::new(LabelKind::MultiLabel, &splits.train, 4, true, &device).expect("criterion");
    // Stop during the second epoch, as SIGTERM would.
    let stop = AtomicBool::new(false);
    let mut seen = 0;
    let first = trainer::train(&model, &settings, &criterion, &splits.train, &splits.validation, "run", &stop, &mut |_| {
        seen += 1;
        stop.store(true, Ordering::Relaxed);
    });
    assert!(matches!(first, Err(TrainError::Stopped)), "{:?}", first.err());
    assert_eq!(seen, 1);
    assert!(settings.checkpoint_dir.join("checkpoint.json").exists());

    // A new process: a fresh model, the same run key; it carries on.
    let model = Model::new(&settings, manifest_for(&settings, &dataset.labels, LabelKind::MultiLabel), &device).expect("model");
    let stop = AtomicBool::new(false);
    let mut epochs = Vec::new();
    let done = trainer::train(&model, &settings, &criterion, &splits.train, &splits.validation, "run", &stop, &mut |r| epochs.push(r.epoch)).expect("resumed");
    assert_eq!(epochs.first(), Some(&2), "the resumed run starts at the interrupted epoch");
    assert_eq!(done.progress.history.len(), 4, "3 frozen + 1 unfrozen epochs in all");
    assert!(done.progress.finished);
    // Another run's checkpoint is not resumed.
    let mut other = Vec::new();
    trainer::train(&model, &settings, &criterion, &splits.train, &splits.validation, "another run", &stop, &mut |r| other.push(r.epoch)).expect("fresh");
    assert_eq!(other.first(), Some(&1));
}

#[test]
fn phantoms_are_reproducible_and_each_finding_has_a_box() {
    let settings = PhantomSettings { count: 40, size: 96, ..PhantomSettings::default() };
    let (a, b) = (phantoms::generate(&settings), phantoms::generate(&settings));
    assert!(a.iter().zip(&b).all(|(x, y)| x.pixels == y.pixels && x.boxes == y.boxes));
    assert!(a.iter().any(|p| p.finding.is_none()));
    for p in a.iter().filter(|p| p.finding.is_some()) {
        let b = p.boxes.first().expect("a box per finding");
        assert!(b.bbox[2] > 0.0 && b.bbox[3] > 0.0 && b.bbox[0] + b.bbox[2] <= 97.0 && b.bbox[1] + b.bbox[3] <= 97.0, "{b:?}");
    }
    let dicom = a[0].dicom().expect("dicom");
    let decoded = decode(&dicom, &Limits::default()).expect("decodes");
    assert_eq!((decoded.pixels.width, decoded.bit_depth), (96, 12));
}

//! After training: thresholds chosen on validation, metrics on the test
//! split, plots, and the model directory the server loads unchanged
//! (`model.json` with thresholds and provenance, `model.safetensors`).

use std::collections::BTreeMap;
use std::path::Path;

use cxr_inference::models::{BaseWeights, ModelManifest, Provenance};
use serde::Serialize;

use crate::TrainError;
use crate::data::{Example, LabelKind};
use crate::metrics::{self, Binary, Calibration, THRESHOLD_RULE};
use crate::trainer::EpochRecord;

#[derive(Clone, Debug, Serialize)]
pub struct LabelReport {
    pub label: String,
    pub validation: Binary,
    pub test: Binary,
    pub calibration: Calibration,
}

#[derive(Clone, Debug, Serialize)]
pub struct Report {
    pub labels: Vec<LabelReport>,
    pub test_mean_auc: Option<f64>,
    pub validation_mean_auc: Option<f64>,
    /// Exclusive classes: rows true, columns predicted.
    pub confusion: Option<Vec<Vec<usize>>>,
    pub test_accuracy: Option<f64>,
    pub images: BTreeMap<String, usize>,
    pub best_epoch: Option<usize>,
}

fn column(probabilities: &[Vec<f32>], examples: &[Example], label: usize) -> (Vec<f32>, Vec<bool>) {
    (probabilities.iter().map(|p| p[label]).collect(), examples.iter().map(|e| e.targets[label] > 0.5).collect())
}

/// Metrics per label (thresholds from validation) and overall.
pub fn evaluate(
    labels: &[String],
    kind: LabelKind,
    (validation, validation_p): (&[Example], &[Vec<f32>]),
    (test, test_p): (&[Example], &[Vec<f32>]),
    train_images: usize,
    best_epoch: Option<usize>,
) -> Report {
    let mut reports = Vec::new();
    for (l, label) in labels.iter().enumerate() {
        let (vs, vt) = column(validation_p, validation, l);
        let (ts, tt) = column(test_p, test, l);
        let threshold = match kind {
            LabelKind::MultiLabel => metrics::youden_threshold(&vs, &vt),
            LabelKind::Exclusive => 0.5,
        };
        reports.push(LabelReport {
            label: label.clone(),
            validation: metrics::binary(&vs, &vt, threshold),
            test: metrics::binary(&ts, &tt, threshold),
            calibration: metrics::calibration(&ts, &tt),
        });
    }
    let (confusion, test_accuracy) = exclusive_confusion(kind, test, test_p, labels.len()).unzip();
    Report {
        test_mean_auc: mean_auc(reports.iter().map(|r| r.test.auc)),
        validation_mean_auc: mean_auc(reports.iter().map(|r| r.validation.auc)),
        labels: reports,
        confusion,
        test_accuracy,
        images: BTreeMap::from([("train".into(), train_images), ("validation".into(), validation.len()), ("test".into(), test.len())]),
        best_epoch,
    }
}

/// The mean of the labels' ROC-AUCs that exist (a label without both
/// classes has none).
pub fn mean_auc(aucs: impl Iterator<Item = Option<f64>>) -> Option<f64> {
    let v: Vec<f64> = aucs.flatten().collect();
    (!v.is_empty()).then(|| v.iter().sum::<f64>() / v.len() as f64)
}

/// Exclusive classes only: the confusion matrix (rows true, columns
/// predicted) and the accuracy.
pub fn exclusive_confusion(kind: LabelKind, examples: &[Example], probabilities: &[Vec<f32>], labels: usize) -> Option<(Vec<Vec<usize>>, f64)> {
    (kind == LabelKind::Exclusive).then(|| {
        let truth: Vec<usize> = examples.iter().map(|e| e.targets.iter().position(|&t| t > 0.5).unwrap_or(0)).collect();
        let m = metrics::confusion_matrix(probabilities, &truth, labels);
        let correct: usize = (0..labels).map(|i| m[i][i]).sum();
        (m, correct as f64 / examples.len().max(1) as f64)
    })
}

/// The code's revision: `GIT_REVISION` (set by the image build), else
/// `git rev-parse HEAD` when run from a checkout.
pub fn code_revision() -> Option<String> {
    if let Ok(r) = std::env::var("GIT_REVISION") {
        return Some(r);
    }
    let out = std::process::Command::new("git").args(["rev-parse", "HEAD"]).output().ok()?;
    out.status.success().then(|| String::from_utf8_lossy(&out.stdout).trim().to_owned())
}

pub struct Outputs<'a> {
    pub manifest: ModelManifest,
    pub report: &'a Report,
    pub history: &'a [EpochRecord],
    pub hyperparameters: serde_json::Value,
    pub data_digest: String,
    pub synthetic: bool,
}

/// Fills in the manifest's thresholds and provenance.
pub fn finish_manifest(out: &Outputs, kind: LabelKind, trained_only: Option<BaseWeights>) -> ModelManifest {
    let mut manifest = out.manifest.clone();
    if kind == LabelKind::MultiLabel {
        manifest.thresholds = out.report.labels.iter().map(|l| Some(l.validation.threshold)).collect();
    }
    if trained_only.is_some() {
        manifest.base_weights = trained_only;
    }
    let now = time::OffsetDateTime::now_utc().format(&time::format_description::well_known::Rfc3339).unwrap_or_default();
    manifest.provenance = Some(Provenance {
        synthetic_data: out.synthetic,
        data_digest: out.data_digest.clone(),
        code_revision: code_revision(),
        trained_at: now,
        hyperparameters: out.hyperparameters.clone(),
        metrics: serde_json::json!({
            "test_mean_auc": out.report.test_mean_auc,
            "validation_mean_auc": out.report.validation_mean_auc,
            "test_accuracy": out.report.test_accuracy,
            "per_label": out.report.labels.iter().map(|l| serde_json::json!({
                "label": l.label, "threshold": l.validation.threshold, "test_auc": l.test.auc,
                "test_precision": l.test.precision, "test_recall": l.test.recall, "test_f1": l.test.f1, "test_ece": l.calibration.ece,
            })).collect::<Vec<_>>(),
            "images": out.report.images,
            "best_epoch": out.report.best_epoch,
        }),
        threshold_rule: (kind == LabelKind::MultiLabel)
            .then(|| format!("{THRESHOLD_RULE}; served probabilities are rescaled so that each threshold lands at 0.5 (op_norm)")),
        notice: out.synthetic.then(|| "Trained on synthetic phantoms, not radiographs: not for clinical use.".to_owned()),
    });
    manifest
}

pub fn write_json(path: &Path, value: &impl Serialize) -> Result<(), TrainError> {
    let text = serde_json::to_string_pretty(value).map_err(|e| TrainError::Model(e.to_string()))?;
    std::fs::write(path, text).map_err(|e| TrainError::Io(path.to_owned(), e))
}

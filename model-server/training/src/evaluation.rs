//! `model-server evaluate`: a model directory judged as the server runs it
//! (its loader, decoder, preprocessing and served probabilities), on the
//! held-out split of a dataset, re-drawn from the seed and fractions the
//! manifest records. A separate step so that a pipeline's metrics come from
//! the artefact that ships, not from the trainer's in-memory copy.

use std::path::Path;

use candle_core::{DType, Device};
use cxr_inference::decode::{Limits, decode};
use cxr_inference::models::{Classifier, Output};
use serde::Serialize;

use crate::TrainError;
use crate::data::{self, Example, LabelKind, read_error};
use crate::metrics::{self, Binary, Calibration};
use crate::report;

/// Which examples to judge the model on.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum Split {
    /// The held-out test split of the training run (the default).
    Test,
    Validation,
    /// Every image (data the model never saw, such as a new export).
    All,
}

#[derive(Clone, Debug, Serialize)]
pub struct LabelEvaluation {
    pub label: String,
    /// At the served operating point (0.5 on calibrated sigmoid outputs,
    /// where the manifest's threshold lands).
    pub metrics: Binary,
    pub calibration: Calibration,
}

#[derive(Clone, Debug, Serialize)]
pub struct Evaluation {
    pub model: String,
    pub split: Split,
    pub images: usize,
    pub labels: Vec<LabelEvaluation>,
    pub mean_auc: Option<f64>,
    /// Exclusive classes: rows true, columns predicted.
    pub confusion: Option<Vec<Vec<usize>>>,
    pub accuracy: Option<f64>,
    /// The test mean ROC-AUC the training run recorded; on the test split
    /// the two agree unless the served model differs from the trained one.
    pub recorded_test_mean_auc: Option<f64>,
    pub synthetic_data: bool,
}

/// Reads the model and the data, predicts, and measures.
pub fn evaluate(model_dir: &Path, data_dir: &Path, split: Split, batch: usize) -> Result<Evaluation, TrainError> {
    let device = Device::cuda_if_available(0)?;
    let classifier = Classifier::load(model_dir, &device, DType::F32).map_err(|e| TrainError::Model(format!("{}: {e}", model_dir.display())))?;
    let manifest = &classifier.manifest;
    let kind = if manifest.output == Output::Softmax { LabelKind::Exclusive } else { LabelKind::MultiLabel };
    let dataset = data::read_dir(data_dir, kind)?;
    if dataset.labels != manifest.labels {
        return Err(TrainError::Settings(format!("the data's labels {:?} are not the model's {:?}", dataset.labels, manifest.labels)));
    }
    let provenance = manifest.provenance.as_ref();
    let recorded = |key: &str| provenance.and_then(|p| p.hyperparameters.get(key)).cloned();
    let examples: Vec<Example> = match split {
        Split::All => dataset.examples.iter().chain(&dataset.test).cloned().collect(),
        Split::Test | Split::Validation => {
            let (Some(validation), Some(test), Some(seed)) = (
                recorded("validation_fraction").and_then(|v| v.as_f64()),
                recorded("test_fraction").and_then(|v| v.as_f64()),
                recorded("seed").and_then(|v| v.as_u64()),
            ) else {
                return Err(TrainError::Settings("the manifest records no split (a model not trained here): use --split all".into()));
            };
            let splits = dataset.split(validation, test, seed);
            if split == Split::Test { splits.test } else { splits.validation }
        }
    };
    if examples.is_empty() {
        return Err(TrainError::Settings(format!("no images in the {split:?} split")));
    }
    let mut probabilities = Vec::with_capacity(examples.len());
    for chunk in examples.chunks(batch.max(1)) {
        let mut inputs = Vec::with_capacity(chunk.len());
        for e in chunk {
            let bytes = std::fs::read(&e.path).map_err(|err| read_error(&e.path, err))?;
            let decoded = decode(&bytes, &Limits::default()).map_err(|err| read_error(&e.path, err))?;
            inputs.push(classifier.preprocess(&decoded));
        }
        let views: Vec<&[f32]> = inputs.iter().map(|i| i.values.as_slice()).collect();
        probabilities.extend(classifier.predict(&views).map_err(|e| TrainError::Model(e.to_string()))?);
    }
    let labels: Vec<LabelEvaluation> = manifest
        .labels
        .iter()
        .enumerate()
        .map(|(l, label)| {
            let scores: Vec<f32> = probabilities.iter().map(|p| p[l]).collect();
            let truth: Vec<bool> = examples.iter().map(|e| e.targets[l] > 0.5).collect();
            LabelEvaluation { label: label.clone(), metrics: metrics::binary(&scores, &truth, 0.5), calibration: metrics::calibration(&scores, &truth) }
        })
        .collect();
    let mean_auc = report::mean_auc(labels.iter().map(|l| l.metrics.auc));
    let (confusion, accuracy) = report::exclusive_confusion(kind, &examples, &probabilities, manifest.labels.len()).unzip();
    Ok(Evaluation {
        model: format!("{} {}", manifest.name, manifest.version),
        split,
        images: examples.len(),
        labels,
        mean_auc,
        confusion,
        accuracy,
        recorded_test_mean_auc: provenance.and_then(|p| p.metrics.get("test_mean_auc")).and_then(|v| v.as_f64()),
        synthetic_data: provenance.is_some_and(|p| p.synthetic_data),
    })
}

//! A whole training run under SageMaker's training contract (the same run
//! locally with flags):
//! - settings from `/opt/ml/input/config/hyperparameters.json` when it
//!   exists (flags given on the command line win);
//! - data from the `training` channel (`/opt/ml/input/data/training`), or a
//!   directory or `s3://` prefix;
//! - the model to `/opt/ml/model` (`model.json`, `model.safetensors`,
//!   `metrics.json`, `history.json`, `plots/`), which SageMaker uploads as
//!   `model.tar.gz` and the server loads unchanged;
//! - checkpoints in `/opt/ml/checkpoints` (SageMaker syncs it with S3 and
//!   restores it when a spot job restarts), written after every epoch and
//!   when SIGTERM asks the job to stop;
//! - a failure's reason in `/opt/ml/output/failure`;
//! - one metric line per epoch, e.g.
//!   `epoch=3 phase=frozen train_loss=0.41230 val_loss=0.38120 val_auc=0.97120 lr=0.001000 images_per_second=41.2`,
//!   for metric definitions such as `val_auc=([0-9.]+)`.

use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;

use candle_core::Device;
use sha2::{Digest, Sha256};

use crate::data::{self, Dataset};
use crate::model::{Model, manifest_for};
use crate::report::{self, Outputs};
use crate::settings::TrainSettings;
use crate::trainer::{self, Criterion, EpochRecord, Source};
use crate::{TrainError, plots, tracking};

pub const HYPERPARAMETERS: &str = "/opt/ml/input/config/hyperparameters.json";

/// The metric line of an epoch.
pub fn metric_line(r: &EpochRecord) -> String {
    format!(
        "epoch={} phase={} train_loss={:.5} val_loss={:.5} val_auc={:.5} lr={:.6} images_per_second={:.1}",
        r.epoch,
        r.phase,
        r.train_loss,
        r.val_loss,
        r.val_auc.unwrap_or(f64::NAN),
        r.learning_rate,
        r.images_per_second
    )
}

/// Writes the failure reason where SageMaker reads it (best effort: the
/// error is printed too).
pub fn write_failure(output_dir: &Path, reason: &str) {
    if std::fs::create_dir_all(output_dir).is_ok() {
        let _ = std::fs::write(output_dir.join("failure"), reason);
    }
}

/// What a finished run reports.
#[derive(Debug)]
pub struct Summary {
    pub report: report::Report,
    pub model_dir: PathBuf,
    pub seconds: f64,
    pub history: Vec<EpochRecord>,
}

fn block_on<F: std::future::Future>(future: F) -> Result<F::Output, TrainError> {
    match tokio::runtime::Handle::try_current() {
        Ok(handle) => Ok(handle.block_on(future)),
        Err(_) => Ok(tokio::runtime::Builder::new_current_thread().enable_all().build().map_err(|e| TrainError::Settings(e.to_string()))?.block_on(future)),
    }
}

/// The local directory of the data (an `s3://` prefix is copied next to
/// the checkpoints first, so a restarted job finds it there).
fn data_root(settings: &TrainSettings) -> Result<PathBuf, TrainError> {
    if settings.data.starts_with("s3://") {
        let dir = settings.checkpoint_dir.join("data");
        let fetched = block_on(data::s3::fetch_prefix(&settings.data, &dir))??;
        tracing::info!(uri = %settings.data, fetched, dir = %dir.display(), "training data copied from S3");
        Ok(dir)
    } else {
        Ok(PathBuf::from(&settings.data))
    }
}

/// Settings as recorded (paths left out: they do not change the result).
fn recorded_settings(settings: &TrainSettings) -> serde_json::Value {
    let mut value = serde_json::to_value(settings).unwrap_or_default();
    if let Some(map) = value.as_object_mut() {
        for key in ["data", "model_dir", "checkpoint_dir", "output_dir", "mlflow_uri", "base_model"] {
            map.remove(key);
        }
    }
    value
}

/// Trains, evaluates and writes the model directory.
pub fn run(settings: &TrainSettings, stop: &AtomicBool) -> Result<Summary, TrainError> {
    let started = std::time::Instant::now();
    let root = data_root(settings)?;
    let kind = settings.outputs.label_kind();
    let dataset: Dataset = data::read_dir(&root, kind)?;
    let splits = dataset.split(settings.validation_fraction, settings.test_fraction, settings.seed);
    if splits.train.len() < 2 || splits.validation.is_empty() {
        return Err(TrainError::Settings(format!("too few images: {} to train on, {} to validate with", splits.train.len(), splits.validation.len())));
    }
    for (name, part) in [("train", &splits.train), ("validation", &splits.validation), ("test", &splits.test)] {
        tracing::info!(split = name, images = part.len(), counts = ?data::class_counts(&dataset.labels, part), "split");
    }
    let digest = dataset.digest(&root)?;
    let hyperparameters = recorded_settings(settings);
    let run_key = hex::encode(Sha256::digest(format!("{digest}{hyperparameters}")));
    let device = Device::cuda_if_available(0)?;
    let model = Model::new(settings, manifest_for(settings, &dataset.labels, kind), &device)?;
    if settings.store_trained_only && model.generated_base.is_none() {
        return Err(TrainError::Settings("store-trained-only needs generated base weights (no --base-model)".into()));
    }
    tracing::info!(labels = ?dataset.labels, fresh = model.fresh.len(), synthetic = dataset.synthetic, ?device, "model ready");
    let criterion = Criterion::new(kind, &splits.train, dataset.labels.len(), settings.class_weights, &device)?;
    let mut tracker = match &settings.mlflow_uri {
        Some(uri) => Some(tracking::MlflowRun::start(uri, &settings.mlflow_experiment, &settings.name, &hyperparameters)?),
        None => None,
    };
    let trained = trainer::train(&model, settings, &criterion, &splits.train, &splits.validation, &run_key, stop, &mut |record| {
        println!("{}", metric_line(record));
        if let Some(t) = tracker.as_mut() {
            t.log_epoch(record);
        }
    })?;
    // Evaluation with the kept weights, at the last phase's boundary.
    let frozen = trained.last_frozen;
    let validation_source = Source { examples: &splits.validation, augment: false, cache: Vec::new() };
    let test_source = Source { examples: &splits.test, augment: false, cache: Vec::new() };
    let (_, validation_p) = trainer::evaluate(&model, settings, &criterion, &validation_source, frozen)?;
    let (_, test_p) = trainer::evaluate(&model, settings, &criterion, &test_source, frozen)?;
    let report =
        report::evaluate(&dataset.labels, kind, (&splits.validation, &validation_p), (&splits.test, &test_p), splits.train.len(), trained.progress.best_epoch);
    // The model directory.
    let dir = &settings.model_dir;
    std::fs::create_dir_all(dir.join("plots")).map_err(|e| TrainError::Io(dir.clone(), e))?;
    let outputs = Outputs {
        manifest: model.manifest.clone(),
        report: &report,
        history: &trained.progress.history,
        hyperparameters,
        data_digest: digest,
        synthetic: dataset.synthetic,
    };
    let manifest = report::finish_manifest(&outputs, kind, if settings.store_trained_only { model.generated_base } else { None });
    let only = settings.store_trained_only.then(|| model.changed_prefixes(frozen));
    model.save(&dir.join(&manifest.weights), only.as_ref())?;
    report::write_json(&dir.join("model.json"), &manifest)?;
    report::write_json(&dir.join("metrics.json"), &report)?;
    report::write_json(&dir.join("history.json"), &trained.progress.history)?;
    if let Err(e) = plots::write_all(&dir.join("plots"), &report, outputs.history, (&splits.test, &test_p), &dataset.labels) {
        tracing::warn!(error = %e, "plots not written");
    }
    if let Some(t) = tracker.as_mut() {
        t.finish(dir, &report, settings.registered_model.as_deref());
    }
    Ok(Summary { report, model_dir: dir.clone(), seconds: started.elapsed().as_secs_f64(), history: trained.progress.history })
}

//! A training run's settings: flags locally, SageMaker's
//! `hyperparameters.json` in a training job (its values are strings; each
//! key becomes the flag of the same name, `_` or `-` alike), parsed by the
//! same clap definition so both read the same names and defaults.

use std::path::PathBuf;

use serde::Serialize;

use crate::data::LabelKind;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum ArchitectureChoice {
    /// TorchXRayVision's DenseNet-121 (1 channel, its preprocessing).
    Densenet121Xrv,
    /// torchvision's ResNet-50 with the transfer-learning head.
    Resnet50,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum Outputs {
    /// Independent findings (sigmoid); a NORMAL folder means none.
    Sigmoid,
    /// One class per image (softmax), NORMAL a class like the others.
    Softmax,
}

impl Outputs {
    pub fn label_kind(self) -> LabelKind {
        match self {
            Outputs::Sigmoid => LabelKind::MultiLabel,
            Outputs::Softmax => LabelKind::Exclusive,
        }
    }
}

#[derive(Clone, Debug, Serialize, clap::Args)]
pub struct TrainSettings {
    /// Training data: a local directory or `s3://bucket/prefix`, in the
    /// folder-per-class or COCO layout. Default: SageMaker's `training`
    /// channel.
    #[arg(long, env = "SM_CHANNEL_TRAINING", default_value = "/opt/ml/input/data/training")]
    pub data: String,
    /// Where the model directory is written (`model.json`,
    /// `model.safetensors`, metrics, plots).
    #[arg(long, env = "SM_MODEL_DIR", default_value = "/opt/ml/model")]
    pub model_dir: PathBuf,
    /// Checkpoints, resumed from when a run restarts (spot training).
    #[arg(long, default_value = "/opt/ml/checkpoints")]
    pub checkpoint_dir: PathBuf,
    /// Where a failure's reason is written for SageMaker.
    #[arg(long, default_value = "/opt/ml/output")]
    pub output_dir: PathBuf,
    #[arg(long, value_enum, default_value = "densenet121-xrv")]
    pub architecture: ArchitectureChoice,
    #[arg(long, value_enum, default_value = "sigmoid")]
    pub outputs: Outputs,
    /// A model directory to start from (converted ImageNet or
    /// TorchXRayVision weights); parameters it lacks, or whose shape
    /// differs (a new head), start fresh. Default: generated weights.
    #[arg(long)]
    pub base_model: Option<PathBuf>,
    /// The ResNet-50 head's hidden width.
    #[arg(long, default_value_t = 256)]
    pub hidden: usize,
    #[arg(long, default_value_t = 0.5)]
    pub dropout: f64,
    /// Epochs with the whole backbone frozen (only the head learns).
    #[arg(long, default_value_t = 8)]
    pub epochs_frozen: usize,
    /// Epochs with the last `unfreeze_units` backbone units learning too.
    #[arg(long, default_value_t = 4)]
    pub epochs_unfrozen: usize,
    /// Backbone units unfrozen in the second phase (DenseNet-121: 9 units,
    /// `norm5` last, `denseblock4` before it; ResNet-50: 17, each
    /// bottleneck one).
    #[arg(long, default_value_t = 1)]
    pub unfreeze_units: usize,
    #[arg(long, default_value_t = 16)]
    pub batch_size: usize,
    #[arg(long, default_value_t = 1e-3)]
    pub learning_rate: f64,
    #[arg(long, default_value_t = 1e-4)]
    pub learning_rate_unfrozen: f64,
    #[arg(long, default_value_t = 1e-2)]
    pub weight_decay: f64,
    /// Reduce-on-plateau: epochs without a better validation loss before
    /// the rate is multiplied by `plateau_factor`.
    #[arg(long, default_value_t = 2)]
    pub plateau_patience: usize,
    #[arg(long, default_value_t = 0.1)]
    pub plateau_factor: f64,
    #[arg(long, default_value_t = 1e-6)]
    pub min_learning_rate: f64,
    /// Early stopping: epochs without a better validation loss (in one
    /// phase) before the phase ends.
    #[arg(long, default_value_t = 4)]
    pub early_stopping_patience: usize,
    /// Weigh classes by their frequencies (positive weights neg/pos for
    /// sigmoid outputs, n / (classes x n_c) for softmax).
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    pub class_weights: bool,
    #[arg(long, default_value_t = 0.2)]
    pub validation_fraction: f64,
    /// Share of patients held out for testing when the data has no test
    /// split of its own.
    #[arg(long, default_value_t = 0.2)]
    pub test_fraction: f64,
    #[arg(long, default_value_t = 42)]
    pub seed: u64,
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    pub augment: bool,
    /// Largest rotation, degrees either way.
    #[arg(long, default_value_t = 5.0)]
    pub rotation_degrees: f64,
    /// Largest relative scale change.
    #[arg(long, default_value_t = 0.08)]
    pub scale: f64,
    /// Largest shift, as a share of the side.
    #[arg(long, default_value_t = 0.05)]
    pub shift: f64,
    /// Largest brightness shift, as a share of the input range.
    #[arg(long, default_value_t = 0.05)]
    pub brightness: f64,
    /// Largest relative contrast change.
    #[arg(long, default_value_t = 0.1)]
    pub contrast: f64,
    /// Horizontal flips (off by default: they swap anatomical sides, and
    /// the heart's side is a finding).
    #[arg(long, default_value_t = false, action = clap::ArgAction::Set)]
    pub flip: bool,
    /// Frozen units' outputs are computed once per image (one augmented
    /// view) and kept in memory when they fit in this many MiB; otherwise
    /// every batch runs the whole network on freshly augmented images.
    #[arg(long, default_value_t = 4096)]
    pub cache_limit_mib: usize,
    /// Images whose batch statistics replace generated weights' running
    /// statistics before training (not used with a base model).
    #[arg(long, default_value_t = 32)]
    pub calibration_images: usize,
    /// Write only the parameters training changed, over generated base
    /// weights (`base_weights: generated` in the manifest): the small
    /// committed demo model. Only with generated base weights.
    #[arg(long, default_value_t = false, action = clap::ArgAction::Set)]
    pub store_trained_only: bool,
    /// The model's name in `model.json` and the registry.
    #[arg(long, default_value = "cxr-trained")]
    pub name: String,
    #[arg(long, default_value = "1")]
    pub version: String,
    /// MLflow tracking server (`http://host:port`); unset: no tracking.
    #[arg(long, env = "MLFLOW_TRACKING_URI")]
    pub mlflow_uri: Option<String>,
    #[arg(long, default_value = "cxr-training")]
    pub mlflow_experiment: String,
    /// Register the model under this name in MLflow's registry.
    #[arg(long)]
    pub registered_model: Option<String>,
}

/// `model-server train`'s own parser: a later flag overrides an earlier
/// one, so command-line flags win over hyperparameters.json's.
#[derive(Debug, clap::Parser)]
#[command(name = "train", args_override_self = true)]
struct TrainCli {
    #[command(flatten)]
    settings: TrainSettings,
}

/// The settings of `model-server train <flags>`: SageMaker's
/// hyperparameters (when `hyperparameters` exists) under the flags.
pub fn resolve(hyperparameters: &std::path::Path, flags: &[String]) -> Result<TrainSettings, String> {
    let mut args = vec!["train".to_owned()];
    if let Ok(json) = std::fs::read_to_string(hyperparameters) {
        args.extend(hyperparameters_to_args(&json)?);
    }
    args.extend(flags.iter().cloned());
    <TrainCli as clap::Parser>::try_parse_from(args).map(|c| c.settings).map_err(|e| e.to_string())
}

/// Turns SageMaker's hyperparameters (a JSON object of strings, or of
/// numbers and booleans when written by hand) into flags for
/// [`TrainSettings`].
pub fn hyperparameters_to_args(json: &str) -> Result<Vec<String>, String> {
    let value: serde_json::Value = serde_json::from_str(json).map_err(|e| format!("hyperparameters.json: {e}"))?;
    let object = value.as_object().ok_or("hyperparameters.json: not a JSON object")?;
    let mut args = Vec::new();
    for (key, value) in object {
        // SageMaker adds its own `sagemaker_*` entries for framework
        // containers; they are not ours.
        if key.starts_with("sagemaker_") {
            continue;
        }
        let text = match value {
            serde_json::Value::String(s) => s.clone(),
            serde_json::Value::Number(n) => n.to_string(),
            serde_json::Value::Bool(b) => b.to_string(),
            other => return Err(format!("hyperparameter {key}: {other} is not a string, number or boolean")),
        };
        args.push(format!("--{}", key.replace('_', "-")));
        args.push(text);
    }
    Ok(args)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hyperparameters_become_flags_and_flags_win() {
        let dir = tempfile::tempdir().expect("dir");
        let path = dir.path().join("hyperparameters.json");
        std::fs::write(&path, r#"{"epochs_frozen": "3", "learning-rate": 0.01, "augment": "false", "sagemaker_program": "x", "architecture": "resnet50"}"#)
            .expect("write");
        let s = resolve(&path, &["--epochs-frozen".into(), "5".into()]).expect("settings");
        assert_eq!(s.epochs_frozen, 5);
        assert_eq!(s.learning_rate, 0.01);
        assert!(!s.augment);
        assert_eq!(s.architecture, ArchitectureChoice::Resnet50);
        let bad = dir.path().join("bad.json");
        std::fs::write(&bad, r#"{"epochs_frozen": "many"}"#).expect("write");
        assert!(resolve(&bad, &[]).unwrap_err().contains("epochs-frozen"));
    }
}

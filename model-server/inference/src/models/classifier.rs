//! A loaded model as the server uses it: the manifest that describes it,
//! the network, and its preprocessing, behind one type.

use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;
use serde::{Deserialize, Serialize};

use super::{DenseNet121, ResNet50, calibrate, sigmoid};
use crate::decode::Decoded;
use crate::explain;
use crate::formula_weights::FormulaWeights;
use crate::preprocess::{CropWindow, imagenet_input, xrv_input};

/// `model.json`, beside the weights: everything the server needs to serve a
/// model without a code change.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ModelManifest {
    pub name: String,
    pub version: String,
    pub architecture: Architecture,
    /// Output labels, in output order.
    pub labels: Vec<String>,
    pub preprocessing: Preprocessing,
    pub output: Output,
    /// Per-label operating points (TorchXRayVision's `op_threshs`; `null`
    /// for an uncalibrated label). Used with [`Output::SigmoidCalibrated`].
    #[serde(default)]
    pub thresholds: Vec<Option<f32>>,
    /// Whether the weights were trained (false for generated test weights:
    /// the server says so in every answer).
    pub trained: bool,
    /// The safetensors file, relative to the manifest.
    #[serde(default = "default_weights")]
    pub weights: String,
    /// Where a model trained by `model-server train` came from (absent for
    /// converted or generated weights).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub provenance: Option<Provenance>,
    /// Where parameters absent from the weights file come from: with
    /// `generated`, the file holds only what training changed and the rest
    /// is the formula's (the small committed demo model).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub base_weights: Option<BaseWeights>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum BaseWeights {
    /// [`crate::formula_weights::FormulaWeights`] for every parameter the
    /// file lacks.
    Generated,
    /// [`crate::formula_weights::SeededWeights`] with this seed.
    Seeded(u64),
}

impl BaseWeights {
    /// The generator of the parameters a weights file lacks.
    pub fn backend(self, architecture: Architecture) -> Box<dyn candle_nn::var_builder::SimpleBackend> {
        match self {
            BaseWeights::Generated => Box::new(formula_for(architecture)),
            BaseWeights::Seeded(seed) => Box::new(crate::formula_weights::SeededWeights { seed }),
        }
    }
}

/// How a model was trained: enough to reproduce it and to judge it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Provenance {
    /// Trained on generated phantoms, not radiographs: not for clinical use.
    pub synthetic_data: bool,
    /// SHA-256 over the training data (each image's path, bytes and labels).
    pub data_digest: String,
    /// The code's git revision, when known.
    pub code_revision: Option<String>,
    pub trained_at: String,
    /// The settings the run used.
    pub hyperparameters: serde_json::Value,
    /// Validation and test metrics of the kept checkpoint.
    pub metrics: serde_json::Value,
    /// How each label's operating threshold was chosen.
    pub threshold_rule: Option<String>,
    /// A warning every reader should see (synthetic data).
    pub notice: Option<String>,
}

fn default_weights() -> String {
    "model.safetensors".into()
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", tag = "kind")]
pub enum Architecture {
    /// TorchXRayVision's DenseNet-121 (1 input channel).
    Densenet121Xrv,
    /// torchvision ResNet-50 with the transfer-learning head of this width.
    Resnet50 { hidden: usize },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Preprocessing {
    /// TorchXRayVision: [-1024, 1024], centre crop, skimage resize to 224.
    Xrv224,
    /// torchvision ImageNet evaluation: resize 256, crop 224, mean/std.
    Imagenet224,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Output {
    /// Independent labels: sigmoid of each logit.
    Sigmoid,
    /// Sigmoid, then each label's operating point moved to 0.5 (op_norm).
    SigmoidCalibrated,
    /// Mutually exclusive classes: softmax.
    Softmax,
}

#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    #[error("cannot read the model manifest {path}: {reason}")]
    Manifest { path: String, reason: String },
    #[error("the manifest is inconsistent: {0}")]
    Inconsistent(String),
    #[error("loading the weights: {0}")]
    Weights(candle_core::Error),
    #[error("inference failed: {0}")]
    Inference(#[from] candle_core::Error),
}

/// One of the architectures, built from a manifest; what training drives.
#[derive(Debug)]
pub enum Network {
    DenseNet(DenseNet121),
    ResNet(ResNet50),
}

impl Network {
    /// The network `manifest` describes, its parameters from `vb`.
    pub fn new(manifest: &ModelManifest, vb: VarBuilder) -> Result<Self, ModelError> {
        let classes = manifest.labels.len();
        if classes == 0 {
            return Err(ModelError::Inconsistent("no labels".into()));
        }
        Ok(match manifest.architecture {
            Architecture::Densenet121Xrv => Network::DenseNet(DenseNet121::new(1, classes, vb).map_err(ModelError::Weights)?),
            Architecture::Resnet50 { hidden } => Network::ResNet(ResNet50::new(3, classes, Some(hidden), vb).map_err(ModelError::Weights)?),
        })
    }

    /// Fused CPU layers for serving (see `fused_cpu`); training never
    /// calls this, since its weights change.
    pub fn prepare_for_cpu_inference(&mut self) -> candle_core::Result<()> {
        match self {
            Network::DenseNet(net) => net.prepare_for_cpu_inference(),
            Network::ResNet(net) => net.prepare_for_cpu_inference(),
        }
    }

    /// Backbone units (see `forward_units`).
    pub fn units(&self) -> usize {
        match self {
            Network::DenseNet(net) => net.units(),
            Network::ResNet(net) => net.units(),
        }
    }

    /// Runs backbone units `range`; `train` puts their batch norms in
    /// training mode.
    pub fn forward_units(&self, x: &Tensor, range: std::ops::Range<usize>, train: bool) -> candle_core::Result<Tensor> {
        match self {
            Network::DenseNet(net) => net.forward_units(x, range, train),
            Network::ResNet(net) => net.forward_units(x, range, train),
        }
    }

    /// Parameter-name prefixes of a backbone unit.
    pub fn unit_prefixes(&self, unit: usize) -> Vec<String> {
        match self {
            Network::DenseNet(net) => net.unit_prefixes(unit),
            Network::ResNet(net) => net.unit_prefixes(unit),
        }
    }

    /// The parameter-name prefix of the classification head.
    pub fn head_prefix(&self) -> &'static str {
        match self {
            Network::DenseNet(_) => "classifier.",
            Network::ResNet(_) => "fc.",
        }
    }

    /// Logits from the last unit's feature maps, `dropout` applied where
    /// the head has it.
    pub fn classify_with_dropout(&self, maps: &Tensor, dropout: &dyn Fn(&Tensor) -> candle_core::Result<Tensor>) -> candle_core::Result<Tensor> {
        match self {
            Network::DenseNet(net) => net.classify_with_dropout(maps, dropout),
            Network::ResNet(net) => net.classify_with_dropout(maps, dropout),
        }
    }
}

/// A model ready to run.
pub struct Classifier {
    pub manifest: ModelManifest,
    network: Network,
    device: Device,
    dtype: DType,
}

/// The formula weights of an architecture (its stem sees [-1024, 1024]
/// input for TorchXRayVision, so it is scaled down; see `formula_weights`).
pub fn formula_for(architecture: Architecture) -> FormulaWeights {
    let stems = match architecture {
        Architecture::Densenet121Xrv => vec!["features.conv0.weight".to_owned()],
        Architecture::Resnet50 { .. } => vec![],
    };
    FormulaWeights { stems }
}

/// A label's Grad-CAM in the original image's frame, and its boxes.
#[derive(Clone, Debug)]
pub struct Explanation {
    pub label: usize,
    pub heatmap: explain::Heatmap,
    pub boxes: Vec<explain::CamBox>,
}

/// One preprocessed image and where its input came from.
#[derive(Clone, Debug)]
pub struct ModelInput {
    pub values: Vec<f32>,
    pub window: CropWindow,
}

impl Classifier {
    /// Reads `model.json` in `dir` and the weights it names.
    /// `dtype`: F32, or F16/BF16 where the device supports them (weights
    /// are converted on load; inputs are cast; outputs come back as f32).
    pub fn load(dir: &Path, device: &Device, dtype: DType) -> Result<Self, ModelError> {
        let path = dir.join("model.json");
        let manifest: ModelManifest = std::fs::read_to_string(&path)
            .map_err(|e| e.to_string())
            .and_then(|text| serde_json::from_str(&text).map_err(|e| e.to_string()))
            .map_err(|reason| ModelError::Manifest { path: path.display().to_string(), reason })?;
        let weights: PathBuf = dir.join(&manifest.weights);
        // SAFETY of the mmap: the weights file is not modified while the
        // server runs (model directories are read-only artefacts).
        let vb = match manifest.base_weights {
            None => unsafe { VarBuilder::from_mmaped_safetensors(&[weights], dtype, device) }.map_err(ModelError::Weights)?,
            Some(base) => {
                let file = unsafe { candle_core::safetensors::MmapedSafetensors::new(&weights) }.map_err(ModelError::Weights)?;
                let overlay = crate::formula_weights::OverGenerated { file, base: base.backend(manifest.architecture) };
                VarBuilder::from_backend(Box::new(overlay), dtype, device.clone())
            }
        };
        Self::build(manifest, vb, device, dtype)
    }

    /// A model with generated (untrained) weights, for tests and local runs
    /// without the real checkpoint.
    pub fn with_formula_weights(manifest: ModelManifest, device: &Device, dtype: DType) -> Result<Self, ModelError> {
        let vb = VarBuilder::from_backend(Box::new(formula_for(manifest.architecture)), dtype, device.clone());
        Self::build(manifest, vb, device, dtype)
    }

    /// Writes a model directory (`model.json` + `model.safetensors`) with
    /// generated weights: a real model directory for local runs and tests,
    /// loaded through the same [`Classifier::load`] path as trained weights.
    pub fn write_generated(dir: &Path, manifest: &ModelManifest) -> Result<(), ModelError> {
        let recording =
            crate::formula_weights::RecordingFormulaWeights { formula: std::sync::Arc::new(formula_for(manifest.architecture)), recorded: Default::default() };
        let vb = VarBuilder::from_backend(Box::new(recording.clone()), DType::F32, Device::Cpu);
        Self::build(manifest.clone(), vb, &Device::Cpu, DType::F32)?;
        let tensors = recording.recorded.lock().map(|t| t.clone()).map_err(|_| ModelError::Inconsistent("weights lock poisoned".into()))?;
        let io = |e: std::io::Error| ModelError::Manifest { path: dir.display().to_string(), reason: e.to_string() };
        std::fs::create_dir_all(dir).map_err(io)?;
        candle_core::safetensors::save(&tensors, dir.join(&manifest.weights)).map_err(ModelError::Weights)?;
        let json = serde_json::to_string_pretty(manifest).map_err(|e| ModelError::Inconsistent(e.to_string()))?;
        std::fs::write(dir.join("model.json"), json).map_err(io)?;
        Ok(())
    }

    /// [`Classifier::write_generated`] into `dir` unless a complete model is
    /// already there; safe when several processes (test binaries) race:
    /// each writes aside and renames, the first rename wins.
    pub fn write_generated_once(dir: &Path, manifest: &ModelManifest) -> Result<(), ModelError> {
        if dir.join("model.json").exists() {
            return Ok(());
        }
        let partial = dir.with_extension(format!("partial-{}", std::process::id()));
        Self::write_generated(&partial, manifest)?;
        if std::fs::rename(&partial, dir).is_err() {
            // Another process got there first; its copy is the same.
            let _ = std::fs::remove_dir_all(&partial);
        }
        Ok(())
    }

    fn build(manifest: ModelManifest, vb: VarBuilder, device: &Device, dtype: DType) -> Result<Self, ModelError> {
        let classes = manifest.labels.len();
        if classes == 0 {
            return Err(ModelError::Inconsistent("no labels".into()));
        }
        if manifest.output == Output::SigmoidCalibrated && manifest.thresholds.len() != classes {
            return Err(ModelError::Inconsistent(format!("{} thresholds for {classes} labels", manifest.thresholds.len())));
        }
        let mut network = Network::new(&manifest, vb)?;
        if matches!(device, Device::Cpu) && dtype == DType::F32 {
            network.prepare_for_cpu_inference().map_err(ModelError::Weights)?;
        }
        Ok(Self { manifest, network, device: device.clone(), dtype })
    }

    pub fn dtype(&self) -> DType {
        self.dtype
    }

    /// Channels and side of one input.
    pub fn input_shape(&self) -> (usize, usize) {
        match self.manifest.preprocessing {
            Preprocessing::Xrv224 => (1, 224),
            Preprocessing::Imagenet224 => (3, 224),
        }
    }

    pub fn preprocess(&self, image: &Decoded) -> ModelInput {
        let (values, window) = match self.manifest.preprocessing {
            Preprocessing::Xrv224 => {
                let (plane, window) = xrv_input(&image.pixels, 224);
                (plane.values, window)
            }
            Preprocessing::Imagenet224 => imagenet_input(&image.pixels, 256, 224),
        };
        ModelInput { values, window }
    }

    /// Probabilities per label for each input, one forward pass for all.
    pub fn predict(&self, inputs: &[&[f32]]) -> Result<Vec<Vec<f32>>, ModelError> {
        let (channels, side) = self.input_shape();
        let mut flat = Vec::with_capacity(inputs.len() * channels * side * side);
        for input in inputs {
            flat.extend_from_slice(input);
        }
        let x = Tensor::from_vec(flat, (inputs.len(), channels, side, side), &self.device)?.to_dtype(self.dtype)?;
        let logits = match &self.network {
            Network::DenseNet(net) => net.forward(&x)?,
            Network::ResNet(net) => net.forward(&x)?,
        };
        let logits: Vec<Vec<f32>> = logits.to_dtype(DType::F32)?.to_vec2()?;
        Ok(logits.into_iter().map(|row| self.probabilities(&row)).collect())
    }

    /// Grad-CAM for `label` on one preprocessed image, placed in the
    /// original image's frame (`width x height`), with CAM-derived boxes.
    pub fn explain(&self, input: &ModelInput, label: usize, width: usize, height: usize) -> Result<Explanation, ModelError> {
        let (channels, side) = self.input_shape();
        let x = Tensor::from_vec(input.values.clone(), (1, channels, side, side), &self.device)?.to_dtype(self.dtype)?;
        let maps = match &self.network {
            Network::DenseNet(net) => net.feature_maps(&x)?,
            Network::ResNet(net) => net.feature_maps(&x)?,
        }
        .squeeze(0)?;
        let (k, grid_h, grid_w) = maps.dims3()?;
        let pooled = maps.mean((1, 2))?;
        let weights = match &self.network {
            Network::DenseNet(net) => net.score_gradient(&pooled, label)?,
            Network::ResNet(net) => net.score_gradient(&pooled, label)?,
        };
        let weights: Vec<f32> = weights.to_dtype(DType::F32)?.to_vec1()?;
        let maps: Vec<f32> = maps.to_dtype(DType::F32)?.flatten_all()?.to_vec1()?;
        let grid = grid_h.max(grid_w);
        let cam = explain::cam(&maps, k, &weights);
        let heatmap = explain::to_original(&cam, grid, input.window, width, height);
        let boxes = explain::boxes(&heatmap);
        Ok(Explanation { label, heatmap, boxes })
    }

    fn probabilities(&self, logits: &[f32]) -> Vec<f32> {
        match self.manifest.output {
            Output::Sigmoid => logits.iter().map(|&l| sigmoid(l)).collect(),
            Output::SigmoidCalibrated => logits.iter().zip(&self.manifest.thresholds).map(|(&l, &t)| calibrate(sigmoid(l), t)).collect(),
            Output::Softmax => {
                let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
                let exps: Vec<f32> = logits.iter().map(|&l| (l - max).exp()).collect();
                let total: f32 = exps.iter().sum();
                exps.into_iter().map(|e| e / total).collect()
            }
        }
    }
}

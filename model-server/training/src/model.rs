//! The network being trained: built from the same architecture code the
//! server runs (`cxr_inference::models::Network`), its parameters held as
//! candle `Var`s in a `VarMap` (batch-norm running statistics included, so
//! training mode updates them in place), started from a base model or from
//! seeded random weights (`cxr_inference::formula_weights::SeededWeights`),
//! with fresh seeded values for a new head.

use std::collections::{BTreeSet, HashMap};
use std::path::Path;

use candle_core::{DType, Device, Tensor, Var};
use candle_nn::{VarBuilder, VarMap};
use cxr_inference::models::{Architecture, BaseWeights, ModelManifest, Network, Output, Preprocessing};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::TrainError;
use crate::data::LabelKind;
use crate::settings::{ArchitectureChoice, TrainSettings};

pub struct Model {
    /// The manifest the trained model will carry (thresholds and
    /// provenance are filled in at the end).
    pub manifest: ModelManifest,
    pub varmap: VarMap,
    pub network: Network,
    pub device: Device,
    /// Parameters that started fresh rather than from the base.
    pub fresh: Vec<String>,
    /// The generator of the starting weights when there is no base model
    /// (seeded random weights): the stored-trained-only file rests on it.
    pub generated_base: Option<BaseWeights>,
}

/// The manifest of a model with `labels`, before training.
pub fn manifest_for(settings: &TrainSettings, labels: &[String], kind: LabelKind) -> ModelManifest {
    let (architecture, preprocessing) = match settings.architecture {
        ArchitectureChoice::Densenet121Xrv => (Architecture::Densenet121Xrv, Preprocessing::Xrv224),
        ArchitectureChoice::Resnet50 => (Architecture::Resnet50 { hidden: settings.hidden }, Preprocessing::Imagenet224),
    };
    ModelManifest {
        name: settings.name.clone(),
        version: settings.version.clone(),
        architecture,
        labels: labels.to_vec(),
        preprocessing,
        output: match kind {
            LabelKind::MultiLabel => Output::SigmoidCalibrated,
            LabelKind::Exclusive => Output::Softmax,
        },
        thresholds: Vec::new(),
        trained: true,
        weights: "model.safetensors".into(),
        provenance: None,
        base_weights: None,
    }
}

fn is_running_statistic(name: &str) -> bool {
    name.ends_with(".running_mean") || name.ends_with(".running_var")
}

impl Model {
    pub fn new(settings: &TrainSettings, manifest: ModelManifest, device: &Device) -> Result<Self, TrainError> {
        let varmap = VarMap::new();
        let vb = VarBuilder::from_varmap(&varmap, DType::F32, device);
        let network = Network::new(&manifest, vb).map_err(|e| TrainError::Model(e.to_string()))?;
        let head = network.head_prefix();
        // The base: a model directory's weights (only its head is dropped
        // when its labels differ), or the generated weights.
        let (base, base_labels, underlying): (Option<HashMap<String, Tensor>>, Vec<String>, Option<BaseWeights>) = match &settings.base_model {
            Some(dir) => {
                let text = std::fs::read_to_string(dir.join("model.json")).map_err(|e| TrainError::Model(format!("{}: {e}", dir.display())))?;
                let base_manifest: ModelManifest = serde_json::from_str(&text).map_err(|e| TrainError::Model(format!("{}: {e}", dir.display())))?;
                if base_manifest.architecture != manifest.architecture
                    && !matches!((base_manifest.architecture, manifest.architecture), (Architecture::Resnet50 { .. }, Architecture::Resnet50 { .. }))
                {
                    return Err(TrainError::Model(format!("the base model is {:?}, training {:?}", base_manifest.architecture, manifest.architecture)));
                }
                let tensors = candle_core::safetensors::load(dir.join(&base_manifest.weights), device)?;
                (Some(tensors), base_manifest.labels, base_manifest.base_weights)
            }
            None => (None, Vec::new(), Some(BaseWeights::Seeded(settings.seed))),
        };
        let generator = underlying.map(|b| b.backend(manifest.architecture));
        let keep_head = base.is_some() && base_labels == manifest.labels;
        let mut rng = ChaCha8Rng::seed_from_u64(settings.seed);
        let mut fresh = Vec::new();
        let vars = varmap.data().lock().map_err(|_| TrainError::Model("parameters lock poisoned".into()))?;
        let mut names: Vec<&String> = vars.keys().collect();
        names.sort();
        // A bias's bound comes from its layer's weight.
        let fan_in = |name: &str| -> Option<usize> {
            let weight = vars.get(&format!("{}.weight", name.strip_suffix(".bias")?))?;
            let dims = weight.dims();
            (dims.len() > 1).then(|| dims[1..].iter().product())
        };
        for name in names {
            let var = &vars[name];
            let shape = var.shape().clone();
            let from_base = base.as_ref().and_then(|b| b.get(name)).filter(|t| t.shape() == &shape && (keep_head || !name.starts_with(head)));
            let value = match from_base {
                Some(t) => t.to_dtype(DType::F32)?,
                None if !name.starts_with(head)
                    && let Some(generator) = &generator =>
                {
                    generator.get(shape.clone(), name, candle_nn::Init::Const(0.0), DType::F32, device)?
                }
                None => {
                    fresh.push(name.clone());
                    fresh_value(name, shape.dims(), fan_in(name), &mut rng, device)?
                }
            };
            var.set(&value)?;
        }
        drop(vars);
        Ok(Self { manifest, varmap, network, device: device.clone(), fresh, generated_base: if settings.base_model.is_none() { underlying } else { None } })
    }

    /// The parameters that learn when the first `frozen` backbone units
    /// are frozen: the later units' and the head's, never the running
    /// statistics.
    pub fn trainable(&self, frozen: usize) -> Vec<(String, Var)> {
        let mut prefixes: Vec<String> = (frozen..self.network.units()).flat_map(|u| self.network.unit_prefixes(u)).collect();
        prefixes.push(self.network.head_prefix().to_owned());
        let mut out: Vec<(String, Var)> = self
            .varmap
            .data()
            .lock()
            .map(|vars| {
                vars.iter()
                    .filter(|(name, _)| !is_running_statistic(name) && prefixes.iter().any(|p| name.starts_with(p.as_str())))
                    .map(|(n, v)| (n.clone(), v.clone()))
                    .collect()
            })
            .unwrap_or_default();
        out.sort_by(|a, b| a.0.cmp(&b.0));
        out
    }

    /// Parameter-name prefixes training can change when `frozen` units stay
    /// frozen (the stored-trained-only file holds these, and every running
    /// statistic: calibration re-estimates them all).
    pub fn changed_prefixes(&self, frozen: usize) -> BTreeSet<String> {
        let mut prefixes: BTreeSet<String> = (frozen..self.network.units()).flat_map(|u| self.network.unit_prefixes(u)).collect();
        prefixes.insert(self.network.head_prefix().to_owned());
        prefixes
    }

    /// Whether `name` is in the stored-trained-only file.
    pub fn is_changed(name: &str, prefixes: &BTreeSet<String>) -> bool {
        is_running_statistic(name) || prefixes.iter().any(|p| name.starts_with(p.as_str()))
    }

    /// Re-estimates every batch norm's running statistics from `batch` (one
    /// forward pass in training mode): generated weights come with
    /// running statistics that match no data, which leaves the frozen
    /// backbone's features saturated and alike for every image. Real base
    /// weights keep theirs.
    ///
    /// candle's batch norm folds a batch into its running statistics with
    /// momentum 0.1 (`new = 0.9 old + 0.1 batch`) and has no cumulative
    /// mode, so the batch's own statistics are recovered from old and new.
    pub fn calibrate_batch_norm(&self, batch: &Tensor) -> Result<(), TrainError> {
        const MOMENTUM: f64 = 0.1;
        let before = self.snapshot()?;
        self.network.forward_units(batch, 0..self.network.units(), true)?;
        let vars = self.varmap.data().lock().map_err(|_| TrainError::Model("parameters lock poisoned".into()))?;
        for (name, var) in vars.iter().filter(|(n, _)| is_running_statistic(n)) {
            let old = &before[name];
            let batch_statistic = ((var.as_tensor() - (old * (1.0 - MOMENTUM))?)? / MOMENTUM)?;
            var.set(&batch_statistic)?;
        }
        Ok(())
    }

    /// A deep copy of every parameter (`Var::set` writes in place).
    pub fn snapshot(&self) -> Result<HashMap<String, Tensor>, TrainError> {
        let vars = self.varmap.data().lock().map_err(|_| TrainError::Model("parameters lock poisoned".into()))?;
        let mut out = HashMap::new();
        for (name, var) in vars.iter() {
            out.insert(name.clone(), var.as_tensor().copy()?);
        }
        Ok(out)
    }

    pub fn restore(&self, tensors: &HashMap<String, Tensor>) -> Result<(), TrainError> {
        let vars = self.varmap.data().lock().map_err(|_| TrainError::Model("parameters lock poisoned".into()))?;
        for (name, var) in vars.iter() {
            if let Some(t) = tensors.get(name) {
                var.set(t)?;
            }
        }
        Ok(())
    }

    /// Writes `model.safetensors` (all parameters, or with `only` those
    /// under the given prefixes).
    pub fn save(&self, path: &Path, only: Option<&BTreeSet<String>>) -> Result<(), TrainError> {
        let tensors: HashMap<String, Tensor> =
            self.snapshot()?.into_iter().filter(|(name, _)| only.is_none_or(|prefixes| Self::is_changed(name, prefixes))).collect();
        candle_core::safetensors::save(&tensors, path)?;
        Ok(())
    }
}

/// PyTorch's defaults for a new layer, from the seeded stream: weights and
/// biases uniform in +-1/sqrt(fan_in) (`Linear`'s `kaiming_uniform_(a=5^0.5)`
/// bound); batch norm weight 1, bias 0, running mean 0, variance 1.
fn fresh_value(name: &str, dims: &[usize], bias_fan_in: Option<usize>, rng: &mut ChaCha8Rng, device: &Device) -> Result<Tensor, TrainError> {
    let n: usize = dims.iter().product();
    let values: Vec<f32> = if name.ends_with(".running_var") {
        vec![1.0; n]
    } else if name.ends_with(".running_mean") || (dims.len() == 1 && name.ends_with(".bias") && (name.contains("norm") || name.contains("bn"))) {
        vec![0.0; n]
    } else if dims.len() == 1 && name.ends_with(".weight") {
        // A 1-D weight is a batch norm's scale.
        vec![1.0; n]
    } else {
        let fan_in = bias_fan_in.unwrap_or_else(|| if dims.len() > 1 { dims[1..].iter().product::<usize>() } else { dims[0] });
        let bound = 1.0 / (fan_in.max(1) as f64).sqrt();
        (0..n).map(|_| rng.random_range(-bound..bound) as f32).collect()
    };
    Ok(Tensor::from_vec(values, dims, device)?)
}

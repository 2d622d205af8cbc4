//! Deterministic weights from a formula, for parity tests and benchmarks:
//! `model-server/parity/make_fixtures.py` computes the same numbers in
//! Python, loads them into the upstream PyTorch models, and commits only the
//! expected outputs (a few hundred bytes instead of 28 MB of weights).
//!
//! For the i-th element (row-major) of the parameter named `name`, with
//! `k = (sum of the name's bytes mod 97) / 10`:
//! - `*.running_var`: `0.75 + 0.25 sin(1.1 i + k)`
//! - `*.running_mean`: `0.1 sin(1.3 i + k)`
//! - batch-norm `weight` (1-D, under a norm/bn name): `1 + 0.1 sin(0.5 i + k)`
//! - `bias`: `0.05 sin(0.9 i + k)`
//! - other weights (conv, linear): `a sin(0.7 i + k)` with
//!   `a = 2 / sqrt(fan_in)` (He-like, since sin has variance 1/2), and
//!   divided by 1024 for the stem convolution that sees [-1024, 1024] input.
//!
//! Computed in f64, rounded to f32.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use candle_core::{DType, Device, Result, Shape, Tensor};
use candle_nn::var_builder::SimpleBackend;

pub struct FormulaWeights {
    /// Names of stem convolutions (scaled down by 1024).
    pub stems: Vec<String>,
}

pub fn value(name: &str, shape: &[usize], i: usize) -> f64 {
    let k = f64::from(name.bytes().map(u32::from).sum::<u32>() % 97) / 10.0;
    let i = i as f64;
    let last = name.rsplit('.').next().unwrap_or(name);
    let is_norm = name.split('.').any(|part| part.starts_with("norm") || part.starts_with("bn")) || name.contains("downsample.1");
    match last {
        "running_var" => 0.75 + 0.25 * (1.1 * i + k).sin(),
        "running_mean" => 0.1 * (1.3 * i + k).sin(),
        "bias" => 0.05 * (0.9 * i + k).sin(),
        "weight" if is_norm && shape.len() == 1 => 1.0 + 0.1 * (0.5 * i + k).sin(),
        _ => {
            let fan_in: usize = shape.iter().skip(1).product::<usize>().max(1);
            2.0 / (fan_in as f64).sqrt() * (0.7 * i + k).sin()
        }
    }
}

/// Formula weights that also remember every tensor handed out, so a model
/// built from them can be saved as a safetensors file.
#[derive(Clone)]
pub struct RecordingFormulaWeights {
    pub formula: Arc<FormulaWeights>,
    pub recorded: Arc<Mutex<HashMap<String, Tensor>>>,
}

impl SimpleBackend for RecordingFormulaWeights {
    fn get(&self, shape: Shape, name: &str, init: candle_nn::Init, dtype: DType, device: &Device) -> Result<Tensor> {
        let tensor = self.formula.get(shape, name, init, dtype, device)?;
        if let Ok(mut recorded) = self.recorded.lock() {
            recorded.insert(name.to_owned(), tensor.clone());
        }
        Ok(tensor)
    }

    fn get_unchecked(&self, name: &str, dtype: DType, device: &Device) -> Result<Tensor> {
        self.formula.get_unchecked(name, dtype, device)
    }

    fn contains_tensor(&self, _: &str) -> bool {
        true
    }
}

impl SimpleBackend for FormulaWeights {
    fn get(&self, shape: Shape, name: &str, _: candle_nn::Init, dtype: DType, device: &Device) -> Result<Tensor> {
        let dims = shape.dims().to_vec();
        let scale = if self.stems.iter().any(|s| s == name) { 1.0 / 1024.0 } else { 1.0 };
        let values: Vec<f32> = (0..shape.elem_count()).map(|i| (value(name, &dims, i) * scale) as f32).collect();
        Tensor::from_vec(values, shape, device)?.to_dtype(dtype)
    }

    fn get_unchecked(&self, name: &str, _: DType, _: &Device) -> Result<Tensor> {
        candle_core::bail!("formula weights need the shape of {name}")
    }

    fn contains_tensor(&self, _: &str) -> bool {
        true
    }
}

/// A weights file over generated weights: a parameter the file holds
/// comes from it, any other from `base` (manifests with `base_weights`).
pub struct OverGenerated {
    pub file: candle_core::safetensors::MmapedSafetensors,
    pub base: Box<dyn SimpleBackend>,
}

impl SimpleBackend for OverGenerated {
    fn get(&self, shape: Shape, name: &str, init: candle_nn::Init, dtype: DType, device: &Device) -> Result<Tensor> {
        if self.file.get(name).is_ok() {
            let tensor = self.file.load(name, device)?.to_dtype(dtype)?;
            if tensor.shape() != &shape {
                candle_core::bail!("{name} has shape {:?} in the weights file, the model needs {shape:?}", tensor.shape())
            }
            Ok(tensor)
        } else {
            self.base.get(shape, name, init, dtype, device)
        }
    }

    fn get_unchecked(&self, name: &str, dtype: DType, device: &Device) -> Result<Tensor> {
        self.file.load(name, device)?.to_dtype(dtype)
    }

    fn contains_tensor(&self, _: &str) -> bool {
        true
    }
}

/// Seeded random weights as PyTorch initialises a new network
/// (`kaiming_normal_` for convolutions and linear layers: normal with
/// standard deviation sqrt(2 / fan_in); batch norm weight 1, bias 0,
/// running mean 0, variance 1; other biases 0). Each parameter's stream is
/// seeded from the seed and its name, so the values do not depend on the
/// order parameters are asked for.
///
/// Why not the formula: `a sin(0.7 i + k)` over a weight's flattened
/// elements makes every output channel a mix of the same two patterns
/// (sin(x + y) = sin x cos y + cos x sin y), so each layer has rank 2 and a
/// frozen formula backbone hands a head about two numbers per image.
/// Training from generated weights starts here instead.
pub struct SeededWeights {
    pub seed: u64,
}

impl SimpleBackend for SeededWeights {
    fn get(&self, shape: Shape, name: &str, _: candle_nn::Init, dtype: DType, device: &Device) -> Result<Tensor> {
        use rand::SeedableRng;
        use rand_distr::Distribution;
        let dims = shape.dims().to_vec();
        let n = shape.elem_count();
        let last = name.rsplit('.').next().unwrap_or(name);
        let values: Vec<f32> = match last {
            "running_var" => vec![1.0; n],
            "weight" if dims.len() == 1 => vec![1.0; n],
            "running_mean" | "bias" => vec![0.0; n],
            _ => {
                let fan_in: usize = dims.iter().skip(1).product::<usize>().max(1);
                let name_hash = name.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3));
                let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(self.seed ^ name_hash);
                let normal = rand_distr::Normal::new(0.0f32, (2.0 / fan_in as f32).sqrt()).map_err(|e| candle_core::Error::Msg(e.to_string()))?;
                (0..n).map(|_| normal.sample(&mut rng)).collect()
            }
        };
        Tensor::from_vec(values, shape, device)?.to_dtype(dtype)
    }

    fn get_unchecked(&self, name: &str, _: DType, _: &Device) -> Result<Tensor> {
        candle_core::bail!("seeded weights need the shape of {name}")
    }

    fn contains_tensor(&self, _: &str) -> bool {
        true
    }
}

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

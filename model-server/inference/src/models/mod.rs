//! The architectures, one module each, and what all classifiers share.

pub mod classifier;
pub mod densenet;
mod fused_cpu;
pub mod resnet;

pub use classifier::{
    Architecture, BaseWeights, Classifier, Explanation, ModelError, ModelInput, ModelManifest, Network, Output, Preprocessing, Provenance, formula_for,
};
pub use densenet::DenseNet121;
pub use resnet::ResNet50;

/// TorchXRayVision's `op_norm`: sigmoid outputs rescaled so that each
/// label's operating point lands at 0.5 (below it: `p / (2 t)`; above:
/// `1 - (1 - p) / (2 (1 - t))`). A label without a threshold answers 0.5,
/// as upstream does for its NaN thresholds.
pub fn calibrate(probability: f32, threshold: Option<f32>) -> f32 {
    match threshold {
        None => 0.5,
        Some(t) if probability < t => probability / (t * 2.0),
        Some(t) => 1.0 - ((1.0 - probability) / ((1.0 - t) * 2.0)),
    }
}

/// The stem's `MaxPool2d(3, stride 2, padding 1)`: torchvision pads with
/// -inf; repeating the edge gives the same maximum.
pub(crate) fn stem_max_pool(y: &candle_core::Tensor) -> candle_core::Result<candle_core::Tensor> {
    use candle_core::D;
    y.pad_with_same(D::Minus1, 1, 1)?.pad_with_same(D::Minus2, 1, 1)?.max_pool2d_with_stride(3, 2)
}

pub fn sigmoid(x: f32) -> f32 {
    1.0 / (1.0 + (-x).exp())
}

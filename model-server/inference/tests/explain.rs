//! The analytic Grad-CAM weights equal what autograd computes: the mean
//! gradient of the label's logit over each feature map.

use candle_core::{DType, Device, Tensor, Var};
use candle_nn::VarBuilder;
use cxr_inference::formula_weights::FormulaWeights;
use cxr_inference::models::{DenseNet121, ResNet50};

fn check(
    channels: usize,
    classify: impl Fn(&Tensor) -> candle_core::Result<Tensor>,
    analytic: impl Fn(&Tensor, usize) -> candle_core::Result<Tensor>,
    labels: usize,
) {
    let device = Device::Cpu;
    // Feature maps with both signs after the head's ReLU matter: use a
    // spread of positive values (post-ReLU maps are non-negative).
    let maps = Var::from_tensor(&Tensor::rand(0f32, 2f32, (1, channels, 7, 7), &device).expect("maps")).expect("var");
    let pooled = maps.as_tensor().mean((2, 3)).expect("pool").squeeze(0).expect("squeeze");
    for label in 0..labels {
        let logit = classify(maps.as_tensor()).expect("logits").get(0).expect("row").get(label).expect("logit");
        let grads = logit.backward().expect("backward");
        let autograd: Vec<f32> = grads.get(maps.as_tensor()).expect("grad").mean((2, 3)).expect("mean").squeeze(0).expect("squeeze").to_vec1().expect("vec");
        let ours: Vec<f32> = (analytic(&pooled, label).expect("analytic") / 49.0).expect("scale").to_vec1().expect("vec");
        let worst = autograd.iter().zip(&ours).map(|(a, b)| (a - b).abs()).fold(0.0f32, f32::max);
        let scale = autograd.iter().fold(0.0f32, |m, v| m.max(v.abs()));
        assert!(worst <= 1e-5 * scale.max(1e-6), "label {label}: largest difference {worst} (scale {scale})");
    }
}

#[test]
fn densenet_cam_weights_are_the_logit_gradient() {
    let vb = VarBuilder::from_backend(Box::new(FormulaWeights { stems: vec![] }), DType::F32, Device::Cpu);
    let model = DenseNet121::new(1, 18, vb).expect("model");
    check(1024, |maps| model.classify(maps), |pooled, label| model.score_gradient(pooled, label), 18);
}

#[test]
fn resnet_mlp_head_cam_weights_are_the_logit_gradient() {
    let vb = VarBuilder::from_backend(Box::new(FormulaWeights { stems: vec![] }), DType::F32, Device::Cpu);
    let model = ResNet50::new(3, 3, Some(256), vb).expect("model");
    check(2048, |maps| model.classify(maps), |pooled, label| model.score_gradient(pooled, label), 3);
}

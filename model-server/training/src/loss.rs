//! The losses, as PyTorch computes them, with class weights.

use candle_core::{D, Result, Tensor};

/// `BCEWithLogitsLoss(pos_weight)`, mean over every element:
/// `(1 - y) x + (1 + (w - 1) y) (log(1 + e^-|x|) + max(-x, 0))`.
pub fn bce_with_logits(logits: &Tensor, targets: &Tensor, pos_weight: &Tensor) -> Result<Tensor> {
    let softplus_neg = (logits.abs()?.neg()?.exp()? + 1.0)?.log()?.add(&logits.neg()?.relu()?)?;
    let weight = (targets.broadcast_mul(&(pos_weight - 1.0)?)? + 1.0)?;
    let loss = ((targets.ones_like()? - targets)? * logits)?.add(&(weight * softplus_neg)?)?;
    loss.mean_all()
}

/// `CrossEntropyLoss(weight)` on one-hot targets: the weighted mean
/// `sum_i w_{y_i} nll_i / sum_i w_{y_i}`.
pub fn cross_entropy(logits: &Tensor, one_hot: &Tensor, class_weight: &Tensor) -> Result<Tensor> {
    let log_p = candle_nn::ops::log_softmax(logits, D::Minus1)?;
    let per_image_weight = one_hot.broadcast_mul(class_weight)?.sum(D::Minus1)?;
    let nll = (one_hot * log_p)?.sum(D::Minus1)?.neg()?;
    (nll * &per_image_weight)?.sum_all()? / per_image_weight.sum_all()?.to_scalar::<f32>()? as f64
}

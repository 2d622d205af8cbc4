//! Chest X-ray models in candle, their exact preprocessing, image decoding
//! and explanations. The model server (`cxr-model-server`) serves them.
//!
//! - [`models`]: DenseNet-121 (TorchXRayVision) and ResNet-50 (torchvision
//!   names, transfer-learning heads).
//! - [`preprocess`]: the pipelines the models were trained with.
//! - [`decode`]: PNG, JPEG and DICOM with limits checked before decoding.
//! - [`explain`]: Grad-CAM heatmaps (PNG overlays) and CAM-derived boxes.
//! - [`formula_weights`]: deterministic weights for parity tests.

pub mod decode;
pub mod explain;
pub mod fixtures;
pub mod formula_weights;
pub mod models;
pub mod preprocess;

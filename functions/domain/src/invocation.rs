//! The model server's answer to `POST /invocations`: written once, here, so
//! the server that serialises it (`model-server/server`) and the client that
//! reads it (`functions/infer`'s endpoint, through SageMaker or locally) can
//! never drift apart. Fields older servers did not send are optional on the
//! way in (`#[serde(default)]`).

use std::collections::BTreeMap;

use base64::Engine as _;
use serde::{Deserialize, Serialize};

/// Where every label's output turns positive (see [`Finding::threshold`]).
pub const DECISION_THRESHOLD: f32 = 0.5;

/// The answer to one image.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct InvocationResponse {
    pub model: ModelInfo,
    pub image: ImageInfo,
    /// Every label, in the model's output order.
    pub findings: Vec<Finding>,
    /// CAM-derived boxes for the explained label (empty unless asked).
    #[serde(default)]
    pub boxes: Vec<CamBox>,
    /// Grad-CAM overlay for the explained label (null unless asked).
    #[serde(default)]
    pub heatmap: Option<Heatmap>,
    /// An 8-bit PNG of the image for display (null unless asked with
    /// `preview=1`): DICOM rendered with its window, long side <= 1024.
    #[serde(default)]
    pub preview: Option<Preview>,
    /// Images in the device batch this one ran in.
    #[serde(default)]
    pub batch_size: usize,
    /// Milliseconds per stage (`decode`, `queue`, `inference`, `total`).
    #[serde(default)]
    pub timings_ms: BTreeMap<String, f64>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelInfo {
    pub name: String,
    pub version: String,
    /// False when the weights are generated, not trained: the
    /// probabilities then mean nothing clinically (older servers do not say).
    #[serde(default)]
    pub trained: Option<bool>,
}

/// The decoded file's format.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ImageFormat {
    Png,
    Jpeg,
    Dicom,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ImageInfo {
    pub format: ImageFormat,
    pub width: usize,
    pub height: usize,
    pub bit_depth: u16,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Finding {
    pub label: String,
    pub probability: f32,
    /// Positive at or above this. Calibrated outputs put every label's
    /// operating point at 0.5 (TorchXRayVision's `op_threshs`), and plain
    /// sigmoid outputs are read at 0.5 too (older servers do not say).
    #[serde(default)]
    pub threshold: Option<f32>,
}

/// A box in original-image pixels, `[x_min, y_min]` from the top-left,
/// with its CAM score (not a probability).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CamBox {
    pub label: String,
    pub x_min: f32,
    pub y_min: f32,
    pub width: f32,
    pub height: f32,
    pub score: f32,
}

/// An RGBA PNG the size of `width x height`, to be stretched over the
/// whole original image (one heatmap pixel = `scale` original pixels).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Heatmap {
    pub label: String,
    pub width: usize,
    pub height: usize,
    pub scale: f64,
    pub png_base64: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Preview {
    pub width: u32,
    pub height: u32,
    pub png_base64: String,
}

/// Base64 PNG as carried in the answer (`heatmap`, `preview`).
pub fn encode_png(png: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(png)
}

/// The PNG bytes of a `png_base64` field.
pub fn decode_png(png_base64: &str) -> Result<Vec<u8>, base64::DecodeError> {
    base64::engine::general_purpose::STANDARD.decode(png_base64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_older_servers_answer_still_reads() {
        let answer: InvocationResponse = serde_json::from_value(serde_json::json!({
            "model": {"name": "m", "version": "1"},
            "image": {"format": "dicom", "width": 4, "height": 2, "bit_depth": 12},
            "findings": [{"label": "Effusion", "probability": 0.25}]
        }))
        .unwrap();
        assert_eq!(answer.model.trained, None);
        assert_eq!(answer.findings[0].threshold, None);
        assert!(answer.boxes.is_empty() && answer.heatmap.is_none() && answer.preview.is_none());
    }

    #[test]
    fn pngs_round_trip_through_base64() {
        assert_eq!(decode_png(&encode_png(b"\x89PNG")).unwrap(), b"\x89PNG");
    }
}

//! What reading an uploaded image told us.

use crate::Sha256Digest;

/// The facts of an uploaded image, from its headers: what `imaging`
/// describes and the studies table records.
#[derive(Clone, Debug, PartialEq)]
pub struct ImageFacts {
    pub byte_size: u64,
    pub sha256: Sha256Digest,
    pub width: u32,
    pub height: u32,
    pub bit_depth: u8,
    pub modality: Option<String>,
    /// De-identified DICOM attributes (a JSON object), for DICOM uploads.
    pub dicom: Option<serde_json::Value>,
}

//! The S3 key layout of the images bucket, spelled here only. Keys carry
//! random study ids and content digests: nothing that identifies a patient
//! or an owner.

use crate::{MediaType, Sha256Digest, StudyId};

/// Where a study's original image is uploaded.
pub fn image_key(study: StudyId, media_type: MediaType) -> String {
    format!("studies/{study}/original.{}", media_type.file_extension())
}

/// The browser-viewable preview of an image, by content (any study with
/// this content shows it).
pub fn preview_key(sha256: &Sha256Digest) -> String {
    format!("previews/{}.png", sha256.to_hex())
}

/// The Grad-CAM heatmap of an image by one model version, by content.
/// Model names and versions are reduced to key-safe characters.
pub fn heatmap_key(sha256: &Sha256Digest, model_name: &str, model_version: &str) -> String {
    let clean = |s: &str| s.chars().map(|c| if c.is_ascii_alphanumeric() || "-_.".contains(c) { c } else { '_' }).collect::<String>();
    format!("heatmaps/{}/{}/{}.png", sha256.to_hex(), clean(model_name), clean(model_version))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_carry_only_ids_and_digests() {
        let id: StudyId = "2f1b8a3c-0000-4000-8000-000000000001".parse().expect("id");
        assert_eq!(image_key(id, MediaType::Dicom), "studies/2f1b8a3c-0000-4000-8000-000000000001/original.dcm");
        let digest = Sha256Digest::of(b"x");
        assert_eq!(preview_key(&digest), format!("previews/{}.png", digest.to_hex()));
        assert_eq!(heatmap_key(&digest, "dense net/121", "1.0"), format!("heatmaps/{}/dense_net_121/1.0.png", digest.to_hex()));
    }
}

//! The COCO detection format as pycocotools reads it: `bbox` is
//! `[x_min, y_min, width, height]` in pixels from the top-left corner,
//! `area` and `iscrowd` are present, ids are positive integers, category
//! ids start at 1 (the VinBigData class id + 1).

use cxr_platform::domain::LabelSets;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CocoFile {
    pub info: Info,
    pub licenses: Vec<License>,
    pub images: Vec<Image>,
    pub annotations: Vec<Annotation>,
    pub categories: Vec<Category>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Info {
    pub description: String,
    pub version: String,
    pub year: i32,
    pub contributor: String,
    pub url: String,
    /// The newest source change included (RFC 3339): data-derived, so
    /// exporting the same data twice gives the same file.
    pub date_created: String,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct License {
    pub id: i64,
    pub name: String,
    pub url: String,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Image {
    /// The study's data-lake row id: an internal number, not a patient
    /// identifier.
    pub id: i64,
    /// Relative to the export root, named by `id` only.
    pub file_name: String,
    pub width: i64,
    pub height: i64,
    pub license: i64,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Annotation {
    pub id: i64,
    pub image_id: i64,
    pub category_id: i64,
    /// `[x_min, y_min, width, height]`, top-left origin, pixels.
    pub bbox: [f64; 4],
    pub area: f64,
    pub iscrowd: u8,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Category {
    pub id: i64,
    pub name: String,
    pub supercategory: String,
}

/// A model box in COCO's results format (what `COCO.loadRes` reads).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Detection {
    pub image_id: i64,
    pub category_id: i64,
    pub bbox: [f64; 4],
    pub score: f64,
}

/// The license every exported image is listed under.
pub fn licenses() -> Vec<License> {
    vec![License { id: 1, name: "Internal use only; see the data sharing agreement".into(), url: String::new() }]
}

/// The VinBigData categories, ids 1..=14 in class-id order.
pub fn categories() -> Vec<Category> {
    LabelSets::builtin()
        .vinbigdata()
        .labels
        .iter()
        .enumerate()
        .map(|(position, name)| Category { id: position as i64 + 1, name: name.clone(), supercategory: "finding".into() })
        .collect()
}

/// The category of a label: a VinBigData name as is, or a TorchXRayVision
/// output with a VinBigData counterpart (labels without one have no
/// category and are not exported).
pub fn category_id(label: &str) -> Option<i64> {
    let vinbigdata = LabelSets::builtin().vinbigdata();
    let name = match label {
        "Effusion" => "Pleural effusion",
        "Fibrosis" => "Pulmonary fibrosis",
        "Pleural_Thickening" => "Pleural thickening",
        "Nodule" | "Mass" => "Nodule/Mass",
        other => other,
    };
    vinbigdata.position(name).map(|p| p as i64 + 1)
}

/// Which split a study belongs to: decided by a hash of its public id, so
/// it never changes between exports.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Split {
    /// No split asked for: one file with everything.
    All,
    Train,
    Val,
}

impl Split {
    pub fn of(public_id: &uuid::Uuid, validation_percent: u8) -> Self {
        if validation_percent == 0 {
            return Self::All;
        }
        let digest = Sha256::digest(public_id.as_bytes());
        let bucket = u16::from_be_bytes([digest[0], digest[1]]) % 100;
        if bucket < u16::from(validation_percent) { Self::Val } else { Self::Train }
    }

    pub fn name(self) -> &'static str {
        match self {
            Self::All => "all",
            Self::Train => "train",
            Self::Val => "val",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn categories_are_the_vinbigdata_classes_from_one() {
        let categories = categories();
        assert_eq!(categories.len(), 14);
        assert_eq!((categories[0].id, categories[0].name.as_str()), (1, "Aortic enlargement"));
        assert_eq!((categories[13].id, categories[13].name.as_str()), (14, "Pulmonary fibrosis"));
    }

    #[test]
    fn model_labels_map_to_categories() {
        assert_eq!(category_id("Cardiomegaly"), Some(4));
        assert_eq!(category_id("Effusion"), Some(11));
        assert_eq!(category_id("Mass"), category_id("Nodule/Mass"));
        assert_eq!(category_id("Hernia"), None);
    }

    #[test]
    fn split_is_stable_and_near_the_asked_share() {
        let ids: Vec<uuid::Uuid> = (0..2000u128).map(uuid::Uuid::from_u128).collect();
        let val = ids.iter().filter(|id| Split::of(id, 20) == Split::Val).count();
        assert!((300..500).contains(&val), "{val} of 2000 in validation");
        assert!(ids.iter().all(|id| Split::of(id, 20) == Split::of(id, 20)));
        assert!(ids.iter().all(|id| Split::of(id, 0) == Split::All));
        assert!(ids.iter().all(|id| Split::of(id, 100) == Split::Val));
    }
}

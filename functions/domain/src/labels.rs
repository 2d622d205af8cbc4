use std::sync::OnceLock;

use serde::{Deserialize, Serialize};

/// A named, ordered list of labels: the output order of a model or the
/// class ids of a dataset.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct LabelSet {
    pub name: String,
    pub description: String,
    pub labels: Vec<String>,
}

impl LabelSet {
    /// The position of `label` in the set (the dataset's class id).
    pub fn position(&self, label: &str) -> Option<usize> {
        self.labels.iter().position(|l| l == label)
    }

    pub fn contains(&self, label: &str) -> bool {
        self.position(label).is_some()
    }
}

/// Every label set the platform knows, from `data/label_sets.json` (the one
/// place they are written down).
#[derive(Clone, Debug, Deserialize)]
pub struct LabelSets {
    label_sets: Vec<LabelSet>,
}

#[derive(Debug, thiserror::Error)]
pub enum LabelSetError {
    #[error("label set file is not valid JSON: {0}")]
    Json(#[from] serde_json::Error),
    #[error("label set {0:?} is defined twice")]
    DuplicateSet(String),
    #[error("label set {set:?} lists {label:?} twice")]
    DuplicateLabel { set: String, label: String },
    #[error("label set {0:?} is empty")]
    Empty(String),
}

const BUILTIN_JSON: &str = include_str!("../data/label_sets.json");

pub const VINBIGDATA: &str = "vinbigdata";
pub const TORCHXRAYVISION_ALL: &str = "torchxrayvision-all";

impl LabelSets {
    pub fn parse(json: &str) -> Result<Self, LabelSetError> {
        let sets: Self = serde_json::from_str(json)?;
        let mut seen = std::collections::HashSet::new();
        for set in &sets.label_sets {
            if !seen.insert(set.name.as_str()) {
                return Err(LabelSetError::DuplicateSet(set.name.clone()));
            }
            if set.labels.is_empty() {
                return Err(LabelSetError::Empty(set.name.clone()));
            }
            let mut labels = std::collections::HashSet::new();
            for label in &set.labels {
                if !labels.insert(label.as_str()) {
                    return Err(LabelSetError::DuplicateLabel { set: set.name.clone(), label: label.clone() });
                }
            }
        }
        Ok(sets)
    }

    /// The label sets compiled into this build.
    pub fn builtin() -> &'static Self {
        static SETS: OnceLock<LabelSets> = OnceLock::new();
        // The file is part of the source tree and checked by a unit test, so
        // failing here is a build defect, not an input error.
        SETS.get_or_init(|| Self::parse(BUILTIN_JSON).expect("data/label_sets.json is valid"))
    }

    pub fn get(&self, name: &str) -> Option<&LabelSet> {
        self.label_sets.iter().find(|s| s.name == name)
    }

    pub fn iter(&self) -> impl Iterator<Item = &LabelSet> {
        self.label_sets.iter()
    }

    pub fn vinbigdata(&self) -> &LabelSet {
        self.get(VINBIGDATA).expect("vinbigdata label set is built in")
    }

    pub fn torchxrayvision_all(&self) -> &LabelSet {
        self.get(TORCHXRAYVISION_ALL).expect("torchxrayvision-all label set is built in")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builtin_sets_match_the_published_lists() {
        let sets = LabelSets::parse(BUILTIN_JSON).expect("valid file");
        let vin = sets.vinbigdata();
        assert_eq!(vin.labels.len(), 14);
        assert_eq!(vin.position("Aortic enlargement"), Some(0));
        assert_eq!(vin.position("Pulmonary fibrosis"), Some(13));
        let txv = sets.torchxrayvision_all();
        assert_eq!(txv.labels.len(), 18);
        assert_eq!(txv.labels[0], "Atelectasis");
        assert_eq!(txv.labels[8], "Pneumonia");
        assert_eq!(txv.labels[17], "Enlarged Cardiomediastinum");
    }

    #[test]
    fn rejects_duplicates() {
        let dup = r#"{"label_sets":[{"name":"a","description":"","labels":["x","x"]}]}"#;
        assert!(matches!(LabelSets::parse(dup), Err(LabelSetError::DuplicateLabel { .. })));
    }
}

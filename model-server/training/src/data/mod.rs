//! Training data: one reader per source layout, all giving a [`Dataset`]
//! (labelled image files with a patient or study group), then a seeded
//! split by group and the loading of images into model inputs.
//!
//! - [`folder`]: a folder per class (`train/NORMAL`, `train/PNEUMONIA`,
//!   ...), the public pneumonia and COVID-19 datasets' layout;
//! - [`coco`]: the COCO data mart `coco-export` writes (image-level labels
//!   from the radiologists' boxes);
//! - [`s3`]: an S3 prefix holding either, copied to a local directory first.

pub mod coco;
pub mod folder;
pub mod s3;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use rand::SeedableRng;
use rand::seq::SliceRandom;
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// How labels relate.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum LabelKind {
    /// Independent findings, any number per image (sigmoid outputs); an
    /// image with none is normal.
    MultiLabel,
    /// Exactly one class per image (softmax outputs).
    Exclusive,
}

#[derive(Clone, Debug, PartialEq)]
pub struct Example {
    pub path: PathBuf,
    /// One value per label: 0 or 1 (multi-label), or one-hot (exclusive).
    pub targets: Vec<f32>,
    /// Patient (or, where unknown, study): a group never straddles splits.
    pub group: String,
}

#[derive(Clone, Debug)]
pub struct Dataset {
    pub labels: Vec<String>,
    pub kind: LabelKind,
    /// Training and validation examples (split by [`Dataset::split`]).
    pub examples: Vec<Example>,
    /// The source's own held-out test split, when it has one.
    pub test: Vec<Example>,
    /// Generated phantoms (the source carries [`crate::phantoms::MARKER`]).
    pub synthetic: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum DataError {
    #[error("reading {path}: {reason}")]
    Read { path: PathBuf, reason: String },
    #[error("{0}")]
    Layout(String),
    #[error("S3: {0}")]
    S3(String),
}

pub(crate) fn read_error(path: &Path, reason: impl ToString) -> DataError {
    DataError::Read { path: path.to_owned(), reason: reason.to_string() }
}

/// Image files a reader takes, by extension.
pub fn is_image(path: &Path) -> bool {
    path.extension().and_then(|e| e.to_str()).is_some_and(|e| matches!(e.to_ascii_lowercase().as_str(), "png" | "jpg" | "jpeg" | "dcm" | "dicom"))
}

/// Reads a local directory in whichever layout it has: COCO when it holds
/// `annotations/instances_*.json`, else folder per class.
pub fn read_dir(root: &Path, kind: LabelKind) -> Result<Dataset, DataError> {
    let mut dataset = if coco::is_coco(root) { coco::read(root, kind)? } else { folder::read(root, kind)? };
    dataset.synthetic = root.join(crate::phantoms::MARKER).exists();
    if dataset.examples.is_empty() {
        return Err(DataError::Layout(format!("no labelled images under {}", root.display())));
    }
    Ok(dataset)
}

/// The three parts a run uses.
#[derive(Clone, Debug)]
pub struct Splits {
    pub train: Vec<Example>,
    pub validation: Vec<Example>,
    pub test: Vec<Example>,
}

impl Dataset {
    /// Splits by group with `seed`: `validation` of the groups (and `test`
    /// of them too when the source has no test split of its own). The same
    /// seed and data give the same split.
    pub fn split(&self, validation: f64, test: f64, seed: u64) -> Splits {
        let mut groups: Vec<&str> = self.examples.iter().map(|e| e.group.as_str()).collect::<BTreeSet<_>>().into_iter().collect();
        groups.shuffle(&mut ChaCha8Rng::seed_from_u64(seed));
        let n = groups.len() as f64;
        let n_test = if self.test.is_empty() { (n * test).round() as usize } else { 0 };
        let n_validation = ((n * validation).round() as usize).max(1).min(groups.len().saturating_sub(n_test + 1));
        let test_groups: BTreeSet<&str> = groups[..n_test].iter().copied().collect();
        let validation_groups: BTreeSet<&str> = groups[n_test..n_test + n_validation].iter().copied().collect();
        let mut splits = Splits { train: Vec::new(), validation: Vec::new(), test: self.test.clone() };
        for e in &self.examples {
            if test_groups.contains(e.group.as_str()) {
                splits.test.push(e.clone());
            } else if validation_groups.contains(e.group.as_str()) {
                splits.validation.push(e.clone());
            } else {
                splits.train.push(e.clone());
            }
        }
        splits
    }

    /// SHA-256 over every example's path (relative to `root`), bytes and
    /// targets, in a fixed order: the manifest's data digest.
    pub fn digest(&self, root: &Path) -> Result<String, DataError> {
        let mut hasher = Sha256::new();
        let mut all: Vec<&Example> = self.examples.iter().chain(&self.test).collect();
        all.sort_by(|a, b| a.path.cmp(&b.path));
        for e in all {
            let relative = e.path.strip_prefix(root).unwrap_or(&e.path);
            hasher.update(relative.to_string_lossy().as_bytes());
            hasher.update(std::fs::read(&e.path).map_err(|err| read_error(&e.path, err))?);
            for t in &e.targets {
                hasher.update(t.to_le_bytes());
            }
        }
        Ok(hex::encode(hasher.finalize()))
    }
}

/// Images per label (exclusive: per class) and normal images, for the log
/// and the class weights.
pub fn class_counts(labels: &[String], examples: &[Example]) -> BTreeMap<String, usize> {
    let mut counts: BTreeMap<String, usize> = labels.iter().map(|l| (l.clone(), 0)).collect();
    let mut normal = 0;
    for e in examples {
        let mut any = false;
        for (label, &t) in labels.iter().zip(&e.targets) {
            if t > 0.5 {
                any = true;
                *counts.entry(label.clone()).or_default() += 1;
            }
        }
        if !any {
            normal += 1;
        }
    }
    if normal > 0 {
        counts.insert("(no finding)".into(), normal);
    }
    counts
}

/// The patient key of a file name: what comes before the first `_`
/// (`person1_bacteria_1.jpeg` -> `person1`, `p0003_s2.png` -> `p0003`), or
/// the stem when there is none.
pub fn group_of(path: &Path) -> String {
    let stem = path.file_stem().and_then(|s| s.to_str()).unwrap_or_default();
    stem.split('_').next().unwrap_or(stem).to_owned()
}

//! The COCO data mart (`coco-export`'s layout, which pycocotools reads):
//! `annotations/instances_<split>.json` and the image files they name.
//! An image's labels are the categories of its annotations (a radiologist's
//! box or image-level label); an image without annotations is normal.
//! `instances_test.json`, when present, is held out; every other split
//! file is pooled and re-split. Images are grouped by their `patient_id`
//! when the file has one (the phantoms do), else by image (study): the
//! mart's ids are studies, and it carries no patient identifier.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use super::{DataError, Dataset, Example, LabelKind, read_error};

#[derive(Deserialize)]
struct File {
    images: Vec<Image>,
    #[serde(default)]
    annotations: Vec<Annotation>,
    categories: Vec<Category>,
}

#[derive(Deserialize)]
struct Image {
    id: i64,
    file_name: String,
    #[serde(default)]
    patient_id: Option<String>,
}

#[derive(Deserialize)]
struct Annotation {
    image_id: i64,
    category_id: i64,
}

#[derive(Deserialize)]
struct Category {
    id: i64,
    name: String,
}

fn split_files(root: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(root.join("annotations"))
        .map(|entries| {
            entries
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| p.file_name().and_then(|n| n.to_str()).is_some_and(|n| n.starts_with("instances_") && n.ends_with(".json")))
                .collect()
        })
        .unwrap_or_default();
    files.sort();
    files
}

pub fn is_coco(root: &Path) -> bool {
    !split_files(root).is_empty()
}

pub fn read(root: &Path, kind: LabelKind) -> Result<Dataset, DataError> {
    let mut parsed = Vec::new();
    for path in split_files(root) {
        let text = std::fs::read_to_string(&path).map_err(|e| read_error(&path, e))?;
        let file: File = serde_json::from_str(&text).map_err(|e| read_error(&path, e))?;
        let held_out = path.file_name().is_some_and(|n| n == "instances_test.json");
        parsed.push((held_out, file));
    }
    // Labels: every category of every file, in id order.
    let mut categories: BTreeMap<i64, String> = BTreeMap::new();
    for (_, file) in &parsed {
        for c in &file.categories {
            categories.insert(c.id, c.name.clone());
        }
    }
    let labels: Vec<String> = categories.values().cloned().collect();
    let index: BTreeMap<i64, usize> = categories.keys().enumerate().map(|(i, &id)| (id, i)).collect();
    let mut dataset = Dataset { labels, kind, examples: Vec::new(), test: Vec::new(), synthetic: false };
    for (held_out, file) in parsed {
        let mut targets: BTreeMap<i64, Vec<f32>> = BTreeMap::new();
        for a in &file.annotations {
            let Some(&label) = index.get(&a.category_id) else {
                return Err(DataError::Layout(format!("annotation of image {} has unknown category {}", a.image_id, a.category_id)));
            };
            targets.entry(a.image_id).or_insert_with(|| vec![0.0; dataset.labels.len()])[label] = 1.0;
        }
        for image in file.images {
            let t = targets.remove(&image.id).unwrap_or_else(|| vec![0.0; dataset.labels.len()]);
            if kind == LabelKind::Exclusive && t.iter().filter(|&&v| v > 0.5).count() != 1 {
                // A softmax head needs exactly one class per image.
                continue;
            }
            let example = Example { path: root.join(&image.file_name), targets: t, group: image.patient_id.unwrap_or_else(|| format!("study-{}", image.id)) };
            if held_out { dataset.test.push(example) } else { dataset.examples.push(example) }
        }
    }
    Ok(dataset)
}

//! A folder per class: `<root>/<class>/<image>`, or the public datasets'
//! `<root>/{train,val,test}/<class>/<image>` (train and val are pooled and
//! re-split by patient, as their val folders are tiny; test stays held
//! out). Multi-label: the classes are the labels and a `NORMAL` folder
//! (any case) holds images with none. Exclusive: every folder is a class.

use std::path::{Path, PathBuf};

use super::{DataError, Dataset, Example, LabelKind, group_of, is_image, read_error};

fn subdirs(dir: &Path) -> Result<Vec<PathBuf>, DataError> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(|e| read_error(dir, e))? {
        let path = entry.map_err(|e| read_error(dir, e))?.path();
        if path.is_dir() {
            out.push(path);
        }
    }
    out.sort();
    Ok(out)
}

fn name(path: &Path) -> String {
    path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default()
}

pub fn is_normal(class: &str) -> bool {
    class.eq_ignore_ascii_case("normal")
}

pub fn read(root: &Path, kind: LabelKind) -> Result<Dataset, DataError> {
    let split_dirs = ["train", "val", "test"].map(|s| root.join(s));
    let (pooled, test): (Vec<PathBuf>, Option<PathBuf>) = if split_dirs[0].is_dir() {
        (split_dirs[..2].iter().filter(|d| d.is_dir()).cloned().collect(), split_dirs[2].is_dir().then(|| split_dirs[2].clone()))
    } else {
        (vec![root.to_owned()], None)
    };
    let mut classes: Vec<String> = Vec::new();
    for dir in pooled.iter().chain(&test) {
        for class in subdirs(dir)? {
            let class = name(&class);
            if !classes.contains(&class) {
                classes.push(class);
            }
        }
    }
    classes.sort();
    let labels: Vec<String> = match kind {
        LabelKind::MultiLabel => classes.iter().filter(|c| !is_normal(c)).cloned().collect(),
        LabelKind::Exclusive => classes.clone(),
    };
    if labels.is_empty() {
        return Err(DataError::Layout(format!("no class folders under {} (expected <class>/<image> or train/<class>/<image>)", root.display())));
    }
    let collect = |dirs: &[PathBuf]| -> Result<Vec<Example>, DataError> {
        let mut out = Vec::new();
        for dir in dirs {
            for class_dir in subdirs(dir)? {
                let class = name(&class_dir);
                let targets: Vec<f32> = labels.iter().map(|l| f32::from(u8::from(*l == class))).collect();
                let mut files: Vec<PathBuf> = std::fs::read_dir(&class_dir)
                    .map_err(|e| read_error(&class_dir, e))?
                    .filter_map(|e| e.ok().map(|e| e.path()))
                    .filter(|p| p.is_file() && is_image(p))
                    .collect();
                files.sort();
                out.extend(files.into_iter().map(|path| Example { group: group_of(&path), path, targets: targets.clone() }));
            }
        }
        Ok(out)
    };
    let (examples, test) = (collect(&pooled)?, collect(test.as_slice())?);
    Ok(Dataset { labels, kind, examples, test, synthetic: false })
}

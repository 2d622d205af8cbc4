//! Where an export goes: an S3 prefix (the cloud data mart) or a local
//! directory (the on-premise data mart). Paths are relative to the export
//! root and use `/`.

use std::path::{Path, PathBuf};

use cxr_platform::storage::s3::{ObjectKey, ObjectStore, S3Error};

/// Largest object an export reads back (fragments, manifests).
const READ_LIMIT: u64 = 64 * 1024 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum MartError {
    #[error("data mart (S3): {0}")]
    S3(#[from] S3Error),
    #[error("data mart ({path}): {source}")]
    Io { path: String, source: std::io::Error },
    #[error("data mart path {0:?} is not a plain relative path")]
    BadPath(String),
}

/// `COCO_DESTINATION`: `s3://bucket/prefix`, or a directory (`file:///abs`
/// or a plain path).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Destination {
    S3 { bucket: String, prefix: String },
    Local(PathBuf),
}

impl Destination {
    pub fn parse(value: &str) -> Result<Self, String> {
        if let Some(rest) = value.strip_prefix("s3://") {
            let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
            if bucket.len() < 3 {
                return Err(format!("{value:?} has no bucket name"));
            }
            return Ok(Self::S3 { bucket: bucket.to_owned(), prefix: prefix.trim_matches('/').to_owned() });
        }
        if value.contains("://") && !value.starts_with("file://") {
            return Err(format!("{value:?}: only s3:// and file:// destinations are supported"));
        }
        let path = value.strip_prefix("file://").unwrap_or(value);
        if path.is_empty() {
            return Err("the destination is empty".into());
        }
        Ok(Self::Local(PathBuf::from(path)))
    }
}

/// An open destination.
#[derive(Clone, Debug)]
pub enum DataMart {
    S3 { store: ObjectStore, prefix: String },
    Local { root: PathBuf },
}

impl DataMart {
    pub fn describe(&self) -> String {
        match self {
            Self::S3 { store, prefix } => format!("s3://{}/{prefix}", store.bucket()),
            Self::Local { root } => root.display().to_string(),
        }
    }

    /// Writes a file whole. Local files are written beside and renamed, so
    /// a reader (or a crash) never sees half a file; S3 PUTs are atomic.
    pub async fn put(&self, path: &str, bytes: Vec<u8>, content_type: &str) -> Result<(), MartError> {
        check(path)?;
        match self {
            Self::S3 { store, prefix } => {
                store.put(&self.key(prefix, path)?, bytes, content_type).await?;
            }
            Self::Local { root } => {
                let target = root.join(path);
                let dir = target.parent().unwrap_or(root);
                tokio::fs::create_dir_all(dir).await.map_err(|e| io(dir, e))?;
                let partial = target.with_extension("partial");
                tokio::fs::write(&partial, bytes).await.map_err(|e| io(&partial, e))?;
                tokio::fs::rename(&partial, &target).await.map_err(|e| io(&target, e))?;
            }
        }
        Ok(())
    }

    /// Reads a file, `None` if there is none.
    pub async fn get(&self, path: &str) -> Result<Option<Vec<u8>>, MartError> {
        check(path)?;
        match self {
            Self::S3 { store, prefix } => match store.get(&self.key(prefix, path)?, READ_LIMIT).await {
                Ok(object) => Ok(Some(object.bytes.to_vec())),
                Err(S3Error::NotFound { .. }) => Ok(None),
                Err(e) => Err(e.into()),
            },
            Self::Local { root } => match tokio::fs::read(root.join(path)).await {
                Ok(bytes) => Ok(Some(bytes)),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
                Err(e) => Err(io(&root.join(path), e)),
            },
        }
    }

    /// Removes a file; a missing file is not an error (so retries are safe).
    pub async fn delete(&self, path: &str) -> Result<(), MartError> {
        check(path)?;
        match self {
            Self::S3 { store, prefix } => Ok(store.delete(&self.key(prefix, path)?).await?),
            Self::Local { root } => match tokio::fs::remove_file(root.join(path)).await {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(io(&root.join(path), e)),
                _ => Ok(()),
            },
        }
    }

    /// The files directly in folder `dir` (relative paths, sorted).
    pub async fn list(&self, dir: &str) -> Result<Vec<String>, MartError> {
        check(dir)?;
        let mut paths = match self {
            Self::S3 { store, prefix } => {
                let full = join(prefix, &format!("{dir}/"));
                let strip = join(prefix, "");
                store.list(&full).await?.into_iter().filter_map(|o| o.key.strip_prefix(&strip).map(|k| k.trim_start_matches('/').to_owned())).collect()
            }
            Self::Local { root } => {
                let folder = root.join(dir);
                let mut entries = match tokio::fs::read_dir(&folder).await {
                    Ok(entries) => entries,
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
                    Err(e) => return Err(io(&folder, e)),
                };
                let mut paths = Vec::new();
                while let Some(entry) = entries.next_entry().await.map_err(|e| io(&folder, e))? {
                    let name = entry.file_name().to_string_lossy().into_owned();
                    if !name.ends_with(".partial") {
                        paths.push(format!("{dir}/{name}"));
                    }
                }
                paths
            }
        };
        paths.sort();
        Ok(paths)
    }

    fn key(&self, prefix: &str, path: &str) -> Result<ObjectKey, MartError> {
        Ok(ObjectKey::new(join(prefix, path)).map_err(S3Error::from)?)
    }
}

fn join(prefix: &str, path: &str) -> String {
    if prefix.is_empty() { path.to_owned() } else { format!("{prefix}/{path}") }
}

/// Only paths the export itself builds: relative, no `..`, no empty parts.
fn check(path: &str) -> Result<(), MartError> {
    let ok = !path.is_empty() && path.split('/').all(|part| !part.is_empty() && part != "." && part != "..");
    if ok { Ok(()) } else { Err(MartError::BadPath(path.to_owned())) }
}

fn io(path: &Path, source: std::io::Error) -> MartError {
    MartError::Io { path: path.display().to_string(), source }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn destinations_parse() {
        assert_eq!(Destination::parse("s3://mart-bucket/coco/v1/").expect("s3"), Destination::S3 { bucket: "mart-bucket".into(), prefix: "coco/v1".into() });
        assert_eq!(Destination::parse("s3://mart-bucket").expect("s3"), Destination::S3 { bucket: "mart-bucket".into(), prefix: String::new() });
        assert_eq!(Destination::parse("file:///srv/mart").expect("file"), Destination::Local("/srv/mart".into()));
        assert_eq!(Destination::parse("./mart").expect("path"), Destination::Local("./mart".into()));
        assert!(Destination::parse("https://example.com/x").is_err());
        assert!(Destination::parse("s3://").is_err());
        assert!(Destination::parse("").is_err());
    }

    #[tokio::test]
    async fn local_files_round_trip_and_paths_are_checked() {
        let dir = tempfile::tempdir().expect("temp dir");
        let mart = DataMart::Local { root: dir.path().to_owned() };
        mart.put("fragments/1.json", b"{}".to_vec(), "application/json").await.expect("put");
        mart.put("fragments/2.json", b"[]".to_vec(), "application/json").await.expect("put");
        assert_eq!(mart.list("fragments").await.expect("list"), ["fragments/1.json", "fragments/2.json"]);
        assert_eq!(mart.get("fragments/2.json").await.expect("get").as_deref(), Some(&b"[]"[..]));
        mart.delete("fragments/2.json").await.expect("delete");
        mart.delete("fragments/2.json").await.expect("delete again");
        assert_eq!(mart.get("fragments/2.json").await.expect("get"), None);
        assert!(mart.list("nothing-here").await.expect("list").is_empty());
        assert!(matches!(mart.put("../escape", vec![], "x").await, Err(MartError::BadPath(_))));
    }
}

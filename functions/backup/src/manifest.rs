//! The manifest: written last, so a backup folder without one is
//! incomplete. It lists every part with its row count, id range and SHA-256,
//! which a restore checks before loading anything.

use std::collections::BTreeMap;

use cxr_platform::jobs::Window;
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

pub const FORMAT: &str = "cxr-backup/1";

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PartEntry {
    pub key: String,
    pub rows: u64,
    pub bytes: u64,
    pub sha256: String,
    pub min_id: Option<i64>,
    pub max_id: Option<i64>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TableEntry {
    pub rows: u64,
    pub parts: Vec<PartEntry>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    pub format: String,
    pub job_run_id: i64,
    pub resumed_from: Option<i64>,
    #[serde(with = "time::serde::rfc3339::option")]
    pub watermark_from: Option<OffsetDateTime>,
    #[serde(with = "time::serde::rfc3339")]
    pub watermark_to: OffsetDateTime,
    pub chunk_studies: u32,
    pub tables: BTreeMap<String, TableEntry>,
}

impl Manifest {
    pub fn new(job_run_id: i64, resumed_from: Option<i64>, window: Window, chunk_studies: u32, tables: BTreeMap<String, TableEntry>) -> Self {
        Self { format: FORMAT.to_owned(), job_run_id, resumed_from, watermark_from: window.from, watermark_to: window.to, chunk_studies, tables }
    }

    pub fn to_json(&self) -> Result<Vec<u8>, serde_json::Error> {
        serde_json::to_vec_pretty(self)
    }

    /// Reads a manifest back: JSON of this format only (fuzzed:
    /// `fuzz/targets`, `backup_manifest`).
    pub fn from_json(bytes: &[u8]) -> Result<Self, String> {
        let manifest: Self = serde_json::from_slice(bytes).map_err(|e| e.to_string())?;
        if manifest.format != FORMAT {
            return Err(format!("format {:?}", manifest.format));
        }
        Ok(manifest)
    }
}

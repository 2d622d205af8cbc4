//! Restore: loads every backup under a prefix, oldest first, into an empty
//! database. Each part's SHA-256 is checked against its manifest before
//! anything is loaded; a folder without a manifest (a run that never
//! finished) is skipped and reported.

use std::collections::BTreeMap;

use cxr_platform::storage::postgres::Database;
use cxr_platform::storage::s3::{ObjectKey, ObjectStore, S3Error};
use sha2::{Digest, Sha256};

use crate::manifest::{FORMAT, Manifest, PartEntry};
use crate::tables::{self, TableData, TableDataError};

/// The triggers that restamp `updated_at`: off while restoring, so restored
/// rows keep their backed-up timestamps.
const TOUCH_TRIGGERS: [(&str, &str); 3] =
    [("inference_runs", "inference_runs_touch_study"), ("annotations", "annotations_touch_study"), ("studies", "studies_touch_updated_at")];

/// Parts are Parquet of a few MiB; anything far larger is not ours.
const MAX_PART_BYTES: u64 = 2 << 30;

#[derive(Debug, thiserror::Error)]
pub enum RestoreError {
    #[error("the target database already holds {0} studies; restore needs an empty one")]
    NotEmpty(i64),
    #[error("no manifest under {0}")]
    NothingToRestore(String),
    #[error("manifest {key} is not a {FORMAT} manifest: {reason}")]
    BadManifest { key: String, reason: String },
    #[error("part {key} fails its checksum (manifest {expected}, object {actual})")]
    Checksum { key: String, expected: String, actual: String },
    #[error(transparent)]
    Storage(#[from] S3Error),
    #[error(transparent)]
    Data(#[from] TableDataError),
    #[error("loading: {0}")]
    Load(#[from] sqlx::Error),
    #[error(transparent)]
    Database(#[from] cxr_platform::storage::postgres::DbError),
}

#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct RestoreReport {
    pub backups: Vec<String>,
    pub rows: BTreeMap<String, u64>,
}

/// Every manifest under `prefix`, oldest window first.
pub async fn manifests(store: &ObjectStore, prefix: &str) -> Result<Vec<(String, Manifest)>, RestoreError> {
    let mut found = Vec::new();
    for object in store.list(prefix).await? {
        if !object.key.ends_with("/manifest.json") {
            continue;
        }
        let key = ObjectKey::new(object.key.clone()).map_err(S3Error::from)?;
        let bytes = store.get(&key, 64 << 20).await?.bytes;
        let bad = |reason: String| RestoreError::BadManifest { key: object.key.clone(), reason };
        let manifest = Manifest::from_json(&bytes).map_err(bad)?;
        found.push((object.key, manifest));
    }
    found.sort_by_key(|(_, m)| m.watermark_to);
    Ok(found)
}

/// Downloads one part and checks it against its manifest entry.
pub async fn fetch_part(store: &ObjectStore, part: &PartEntry) -> Result<bytes::Bytes, RestoreError> {
    let key = ObjectKey::new(part.key.clone()).map_err(S3Error::from)?;
    let bytes = store.get(&key, MAX_PART_BYTES).await?.bytes;
    let actual = hex::encode(Sha256::digest(&bytes));
    if actual != part.sha256 {
        return Err(RestoreError::Checksum { key: part.key.clone(), expected: part.sha256.clone(), actual });
    }
    Ok(bytes)
}

/// Checks every part of every manifest, one part in memory at a time.
/// `visit` sees each verified part's rows (e.g. to collect study ids).
pub async fn verify_all(store: &ObjectStore, manifests: &[(String, Manifest)], mut visit: impl FnMut(&TableData)) -> Result<u64, RestoreError> {
    let mut parts = 0;
    for (_, manifest) in manifests {
        for table in tables::ALL {
            for part in manifest.tables.get(table.name).map(|e| e.parts.as_slice()).unwrap_or_default() {
                let data = TableData::from_parquet(table, fetch_part(store, part).await?)?;
                visit(&data);
                parts += 1;
            }
        }
    }
    Ok(parts)
}

pub async fn restore(db: &Database, store: &ObjectStore, prefix: &str) -> Result<RestoreReport, RestoreError> {
    let studies: i64 = sqlx::query_scalar("SELECT count(*) FROM studies").fetch_one(db.pool()).await?;
    if studies > 0 {
        return Err(RestoreError::NotEmpty(studies));
    }
    let manifests = manifests(store, prefix).await?;
    if manifests.is_empty() {
        return Err(RestoreError::NothingToRestore(prefix.to_owned()));
    }
    // Every checksum first, so a damaged backup loads nothing; then the
    // parts again, one at a time, so memory stays at one part however large
    // the backups are.
    verify_all(store, &manifests, |_| ()).await?;
    let mut report = RestoreReport::default();
    for (key, manifest) in manifests {
        let mut tx = db.begin().await?;
        // Only the touch triggers are disabled, inside this transaction:
        // foreign keys stay enforced.
        for (table, trigger) in TOUCH_TRIGGERS {
            sqlx::query(&format!("ALTER TABLE {table} DISABLE TRIGGER {trigger}")).execute(&mut *tx).await?;
        }
        let mut study_ids: Vec<i64> = Vec::new();
        for table in tables::ALL {
            if table.name == tables::INFERENCE_RUNS.name {
                // A later backup carries a study's children whole: replace them.
                sqlx::query("DELETE FROM inference_runs WHERE study_id = ANY($1)").bind(&study_ids).execute(&mut *tx).await?;
                sqlx::query("DELETE FROM annotations WHERE study_id = ANY($1)").bind(&study_ids).execute(&mut *tx).await?;
                sqlx::query("DELETE FROM annotation_revisions WHERE study_id = ANY($1)").bind(&study_ids).execute(&mut *tx).await?;
            }
            for part in manifest.tables.get(table.name).map(|e| e.parts.as_slice()).unwrap_or_default() {
                let data = TableData::from_parquet(table, fetch_part(store, part).await?)?;
                if table.name == tables::STUDIES.name {
                    study_ids.extend(data.ids());
                }
                data.upsert(&mut tx).await?;
                *report.rows.entry(table.name.to_owned()).or_default() += data.len() as u64;
            }
        }
        for (table, trigger) in TOUCH_TRIGGERS {
            sqlx::query(&format!("ALTER TABLE {table} ENABLE TRIGGER {trigger}")).execute(&mut *tx).await?;
        }
        tx.commit().await?;
        tracing::info!(manifest = %key, "backup restored");
        report.backups.push(key);
    }
    // New rows must not collide with restored ids.
    for table in ["studies", "inference_runs", "findings", "annotations", "annotation_revisions"] {
        sqlx::query(&format!("SELECT setval(pg_get_serial_sequence('{table}', 'id'), COALESCE((SELECT max(id) FROM {table}), 0) + 1, false)"))
            .execute(db.pool())
            .await?;
    }
    Ok(report)
}

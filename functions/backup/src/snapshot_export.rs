//! Optional RDS snapshot export: after a backup, start an export of the
//! newest automated RDS snapshot to S3 (Parquet, written by AWS).
//!
//! What it is for: an analytics copy (Athena, Glue, Redshift Spectrum can
//! query it directly). What it is not: a restorable backup. AWS cannot load
//! a snapshot export back into a database, the export is asynchronous and
//! can lag hours, and it covers whole snapshots rather than changes. The
//! restorable backup is the job's own Parquet backup with its manifest.
//!
//! There is no local stand-in for the RDS control plane, so this runs only
//! in AWS; the parts that decide what to do are pure functions, tested here.

use aws_sdk_rds::types::DbSnapshot;

use cxr_platform::config::{ConfigError, Env};

/// `RDS_EXPORT_*` settings; the export is off unless the instance is named.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SnapshotExportSettings {
    /// `RDS_EXPORT_DB_INSTANCE`: the instance whose snapshots are exported.
    pub db_instance: String,
    /// `RDS_EXPORT_BUCKET` and `RDS_EXPORT_PREFIX` (default `rds-snapshot-exports`).
    pub bucket: String,
    pub prefix: String,
    /// `RDS_EXPORT_IAM_ROLE_ARN`: the role RDS assumes to write to the bucket.
    pub iam_role_arn: String,
    /// `RDS_EXPORT_KMS_KEY_ID`: the key the export is encrypted with (required by RDS).
    pub kms_key_id: String,
}

impl SnapshotExportSettings {
    /// `None` when `RDS_EXPORT_DB_INSTANCE` is unset (the default: off).
    pub fn from_env(env: &Env) -> Result<Option<Self>, ConfigError> {
        let Some(db_instance) = env.get("RDS_EXPORT_DB_INSTANCE") else { return Ok(None) };
        Ok(Some(Self {
            db_instance,
            bucket: env.required("RDS_EXPORT_BUCKET", "bucket for RDS snapshot exports")?,
            prefix: env.get("RDS_EXPORT_PREFIX").unwrap_or_else(|| "rds-snapshot-exports".into()),
            iam_role_arn: env.required("RDS_EXPORT_IAM_ROLE_ARN", "role RDS assumes to write the export")?,
            kms_key_id: env.required("RDS_EXPORT_KMS_KEY_ID", "KMS key the export is encrypted with")?,
        }))
    }
}

#[derive(Debug, thiserror::Error)]
pub enum SnapshotExportError {
    #[error("RDS has no available automated snapshot of {0} yet")]
    NoSnapshot(String),
    #[error("RDS: {0}")]
    Rds(String),
}

#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct SnapshotExportReport {
    pub snapshot_arn: String,
    pub export_task: String,
    /// False when the same snapshot's export had been started before.
    pub started: bool,
}

/// The newest available snapshot with an ARN.
pub fn newest_available(snapshots: &[DbSnapshot]) -> Option<&DbSnapshot> {
    snapshots
        .iter()
        .filter(|s| s.status() == Some("available") && s.db_snapshot_arn().is_some())
        .max_by_key(|s| s.snapshot_create_time().map(|t| (t.secs(), t.subsec_nanos())))
}

/// One export per snapshot: the task id is derived from the snapshot id,
/// so a retried or repeated run finds the task exists instead of starting
/// a second one. RDS allows letters, digits and hyphens, 60 characters.
pub fn export_task_id(snapshot_identifier: &str) -> String {
    let cleaned: String = snapshot_identifier.chars().map(|c| if c.is_ascii_alphanumeric() { c.to_ascii_lowercase() } else { '-' }).collect();
    let mut id = format!("cxr-{}", cleaned.trim_matches('-'));
    id.truncate(60);
    id.trim_end_matches('-').to_owned()
}

pub async fn start_snapshot_export(rds: &aws_sdk_rds::Client, settings: &SnapshotExportSettings) -> Result<SnapshotExportReport, SnapshotExportError> {
    let snapshots = rds
        .describe_db_snapshots()
        .db_instance_identifier(&settings.db_instance)
        .snapshot_type("automated")
        .into_paginator()
        .items()
        .send()
        .collect::<Result<Vec<_>, _>>()
        .await
        .map_err(|e| SnapshotExportError::Rds(aws_sdk_rds::error::DisplayErrorContext(e).to_string()))?;
    let snapshot = newest_available(&snapshots).ok_or_else(|| SnapshotExportError::NoSnapshot(settings.db_instance.clone()))?;
    let arn = snapshot.db_snapshot_arn().unwrap_or_default().to_owned();
    let task = export_task_id(snapshot.db_snapshot_identifier().unwrap_or(&arn));
    let started = rds
        .start_export_task()
        .export_task_identifier(&task)
        .source_arn(&arn)
        .s3_bucket_name(&settings.bucket)
        .s3_prefix(&settings.prefix)
        .iam_role_arn(&settings.iam_role_arn)
        .kms_key_id(&settings.kms_key_id)
        .send()
        .await;
    match started {
        Ok(_) => Ok(SnapshotExportReport { snapshot_arn: arn, export_task: task, started: true }),
        Err(e) if e.as_service_error().is_some_and(|e| e.is_export_task_already_exists_fault()) => {
            Ok(SnapshotExportReport { snapshot_arn: arn, export_task: task, started: false })
        }
        Err(e) => Err(SnapshotExportError::Rds(aws_sdk_rds::error::DisplayErrorContext(e).to_string())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use aws_sdk_rds::primitives::DateTime;

    fn snapshot(id: &str, status: &str, secs: i64) -> DbSnapshot {
        DbSnapshot::builder()
            .db_snapshot_identifier(id)
            .db_snapshot_arn(format!("arn:aws:rds:eu-west-1:123456789012:snapshot:{id}"))
            .status(status)
            .snapshot_create_time(DateTime::from_secs(secs))
            .build()
    }

    #[test]
    fn picks_the_newest_available_snapshot() {
        let snapshots = [
            snapshot("rds:cxr-2026-11-20", "available", 100),
            snapshot("rds:cxr-2026-11-22", "creating", 300),
            snapshot("rds:cxr-2026-11-21", "available", 200),
        ];
        assert_eq!(newest_available(&snapshots).and_then(|s| s.db_snapshot_identifier()), Some("rds:cxr-2026-11-21"));
        assert!(newest_available(&[]).is_none());
    }

    #[test]
    fn task_ids_are_valid_and_stable() {
        assert_eq!(export_task_id("rds:cxr-db-2026-11-22-03-10"), "cxr-rds-cxr-db-2026-11-22-03-10");
        let long = export_task_id(&"x".repeat(100));
        assert!(long.len() <= 60 && long.starts_with("cxr-"));
    }

    #[test]
    fn off_unless_an_instance_is_named() {
        let env = |pairs: &[(&str, &str)]| Env::from_map(pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect());
        assert_eq!(SnapshotExportSettings::from_env(&env(&[])).expect("off"), None);
        assert!(matches!(
            SnapshotExportSettings::from_env(&env(&[("RDS_EXPORT_DB_INSTANCE", "cxr")])),
            Err(ConfigError::Missing { name: "RDS_EXPORT_BUCKET", .. })
        ));
    }
}

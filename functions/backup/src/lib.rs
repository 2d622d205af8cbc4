//! The `backup` scheduled job: incremental Parquet backups of the RDS data
//! lake in S3 ([`export`]), and their restore ([`restore`]).

pub mod export;
pub mod manifest;
pub mod purge;
pub mod restore;
pub mod snapshot_export;
pub mod tables;

use cxr_platform::config::{ConfigError, Env};

/// The job's own settings (besides `DATABASE_URL` and the AWS chain).
#[derive(Clone, Debug)]
pub struct BackupSettings {
    pub bucket: String,
    pub prefix: String,
    pub chunk_studies: u32,
    /// `BACKUP_PURGE_AFTER_DAYS`: purge studies older than this many days
    /// after each complete backup (off when unset).
    pub purge_after: Option<std::time::Duration>,
}

impl BackupSettings {
    pub fn from_env(env: &Env) -> Result<Self, ConfigError> {
        let bucket = env.required("BACKUP_BUCKET", "S3 bucket that receives the Parquet backups")?;
        let prefix = env.get("BACKUP_PREFIX").unwrap_or_else(|| "rds-backups".into());
        let chunk_studies = env.parsed_or("BACKUP_CHUNK_STUDIES", 2000u32)?;
        if chunk_studies == 0 {
            return Err(ConfigError::Malformed { name: "BACKUP_CHUNK_STUDIES", reason: "must be at least 1".into() });
        }
        let purge_after = match env.get("BACKUP_PURGE_AFTER_DAYS") {
            None => None,
            Some(_) => {
                let days = env.parsed_or("BACKUP_PURGE_AFTER_DAYS", 0u32)?;
                if days == 0 {
                    return Err(ConfigError::Malformed { name: "BACKUP_PURGE_AFTER_DAYS", reason: "must be at least 1 (unset it to turn purging off)".into() });
                }
                Some(std::time::Duration::from_secs(u64::from(days) * 86_400))
            }
        };
        Ok(Self { bucket, prefix: prefix.trim_matches('/').to_owned(), chunk_studies, purge_after })
    }
}

use cxr_platform::aws::load_sdk_config;
use cxr_platform::config::{PostgresSettings, S3Settings};
use cxr_platform::jobs::scheduled::{JobSettings, ScheduledRun};
use cxr_platform::storage::postgres::Database;
use cxr_platform::storage::s3::ObjectStore;

/// Everything a backup or restore needs, built once per process (a Lambda
/// container reuses it across invocations).
pub struct BackupJob {
    pub db: Database,
    pub store: ObjectStore,
    pub settings: BackupSettings,
    pub job: JobSettings,
    /// Set when `RDS_EXPORT_DB_INSTANCE` is: start an RDS snapshot export
    /// after each complete backup.
    pub snapshot_export: Option<(aws_sdk_rds::Client, snapshot_export::SnapshotExportSettings)>,
}

impl BackupJob {
    pub async fn from_env(env: &Env) -> anyhow::Result<Self> {
        let settings = BackupSettings::from_env(env)?;
        let job = JobSettings::from_env(env)?;
        let postgres = PostgresSettings::from_env(env)?;
        let force_path_style = S3Settings::force_path_style(env)?;
        let sdk = load_sdk_config().await?;
        let store = ObjectStore::new(&sdk, &S3Settings { images_bucket: settings.bucket.clone(), force_path_style, presign_endpoint: None });
        let db = Database::connect(&postgres).await?;
        let snapshot_export = snapshot_export::SnapshotExportSettings::from_env(env)?.map(|settings| (aws_sdk_rds::Client::new(&sdk), settings));
        Ok(Self { db, store, settings, job, snapshot_export })
    }

    pub async fn backup(&self, run: ScheduledRun) -> Result<export::BackupReport, export::BackupError> {
        let options = export::BackupOptions {
            prefix: self.settings.prefix.clone(),
            chunk_studies: self.settings.chunk_studies,
            dry_run: run.dry_run,
            time_budget: Some(run.time_budget),
        };
        export::run_backup(&self.db, &self.store, &options).await
    }

    /// What the schedule runs: the backup, then (when configured, and only
    /// after a complete real backup) the retention purge.
    pub async fn scheduled(&self, run: ScheduledRun) -> Result<ScheduledReport, ScheduledError> {
        // Boxed: the nested async state machines are otherwise too deep for
        // the compiler's layout query.
        let backup = Box::pin(self.backup(run)).await?;
        let purge = match self.settings.purge_after {
            Some(retention) if backup.complete && !run.dry_run => Some(Box::pin(self.purge(retention, false)).await?),
            _ => None,
        };
        let snapshot_export = match &self.snapshot_export {
            Some((rds, settings)) if backup.complete && !run.dry_run => Some(snapshot_export::start_snapshot_export(rds, settings).await?),
            _ => None,
        };
        Ok(ScheduledReport { backup, purge, snapshot_export })
    }

    pub async fn purge(&self, retention: std::time::Duration, dry_run: bool) -> Result<purge::PurgeReport, purge::PurgeError> {
        let options = purge::PurgeOptions { retention, dry_run };
        purge::run_purge(&self.db, &self.store, &self.settings.prefix, &options).await
    }

    pub async fn restore(&self) -> Result<restore::RestoreReport, restore::RestoreError> {
        restore::restore(&self.db, &self.store, &self.settings.prefix).await
    }
}

/// What a scheduled invocation did.
#[derive(Debug, serde::Serialize)]
pub struct ScheduledReport {
    pub backup: export::BackupReport,
    /// Present when a purge ran (configured, backup complete, not a dry run).
    pub purge: Option<purge::PurgeReport>,
    /// Present when an RDS snapshot export was requested (configured).
    pub snapshot_export: Option<snapshot_export::SnapshotExportReport>,
}

#[derive(Debug, thiserror::Error)]
pub enum ScheduledError {
    #[error(transparent)]
    Backup(#[from] export::BackupError),
    #[error(transparent)]
    Purge(#[from] purge::PurgeError),
    #[error("RDS snapshot export: {0}")]
    SnapshotExport(#[from] snapshot_export::SnapshotExportError),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn settings_name_missing_and_malformed_variables() {
        let env = |pairs: &[(&str, &str)]| Env::from_map(pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect());
        assert!(matches!(BackupSettings::from_env(&env(&[])), Err(ConfigError::Missing { name: "BACKUP_BUCKET", .. })));
        let bad = env(&[("BACKUP_BUCKET", "b"), ("BACKUP_CHUNK_STUDIES", "0")]);
        assert!(matches!(BackupSettings::from_env(&bad), Err(ConfigError::Malformed { name: "BACKUP_CHUNK_STUDIES", .. })));
        let ok = BackupSettings::from_env(&env(&[("BACKUP_BUCKET", "b"), ("BACKUP_PREFIX", "/x/y/")])).expect("valid");
        assert_eq!((ok.prefix.as_str(), ok.chunk_studies, ok.purge_after), ("x/y", 2000, None));
        let purge = BackupSettings::from_env(&env(&[("BACKUP_BUCKET", "b"), ("BACKUP_PURGE_AFTER_DAYS", "365")])).expect("valid");
        assert_eq!(purge.purge_after, Some(std::time::Duration::from_secs(365 * 86_400)));
        let off = env(&[("BACKUP_BUCKET", "b"), ("BACKUP_PURGE_AFTER_DAYS", "0")]);
        assert!(matches!(BackupSettings::from_env(&off), Err(ConfigError::Malformed { name: "BACKUP_PURGE_AFTER_DAYS", .. })));
    }
}

//! The `backup` scheduled job: incremental Parquet backups of the RDS data
//! lake in S3 ([`export`]), and their restore ([`restore`]).

pub mod export;
pub mod manifest;
pub mod restore;
pub mod tables;

use cxr_platform::config::{ConfigError, Env};

/// The job's own settings (besides `DATABASE_URL` and the AWS chain).
#[derive(Clone, Debug)]
pub struct BackupSettings {
    pub bucket: String,
    pub prefix: String,
    pub chunk_studies: u32,
}

impl BackupSettings {
    pub fn from_env(env: &Env) -> Result<Self, ConfigError> {
        let bucket = env.required("BACKUP_BUCKET", "S3 bucket that receives the Parquet backups")?;
        let prefix = env.get("BACKUP_PREFIX").unwrap_or_else(|| "rds-backups".into());
        let chunk_studies = env.parsed_or("BACKUP_CHUNK_STUDIES", 2000u32)?;
        if chunk_studies == 0 {
            return Err(ConfigError::Malformed { name: "BACKUP_CHUNK_STUDIES", reason: "must be at least 1".into() });
        }
        Ok(Self { bucket, prefix: prefix.trim_matches('/').to_owned(), chunk_studies })
    }
}

use cxr_platform::aws::load_sdk_config;
use cxr_platform::jobs::scheduled::{JobSettings, ScheduledRun};
use cxr_platform::config::{PostgresSettings, S3Settings};
use cxr_platform::storage::postgres::Database;
use cxr_platform::storage::s3::ObjectStore;

/// Everything a backup or restore needs, built once per process (a Lambda
/// container reuses it across invocations).
pub struct BackupJob {
    pub db: Database,
    pub store: ObjectStore,
    pub settings: BackupSettings,
    pub job: JobSettings,
}

impl BackupJob {
    pub async fn from_env(env: &Env) -> anyhow::Result<Self> {
        let settings = BackupSettings::from_env(env)?;
        let job = JobSettings::from_env(env)?;
        let postgres = PostgresSettings::from_env(env)?;
        let force_path_style = env.flag_or("S3_FORCE_PATH_STYLE", false)?;
        let sdk = load_sdk_config().await?;
        let store = ObjectStore::new(&sdk, &S3Settings { images_bucket: settings.bucket.clone(), force_path_style });
        let db = Database::connect(&postgres).await?;
        Ok(Self { db, store, settings, job })
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

    pub async fn restore(&self) -> Result<restore::RestoreReport, restore::RestoreError> {
        restore::restore(&self.db, &self.store, &self.settings.prefix).await
    }
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
        assert_eq!((ok.prefix.as_str(), ok.chunk_studies), ("x/y", 2000));
    }
}

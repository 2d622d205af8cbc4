//! The `warehouse` scheduled job: the RDS data lake, transformed into one
//! DocumentDB document per study ([`document`]), loaded incrementally by
//! watermark ([`load`]).

pub mod document;
pub mod load;

use cxr_platform::config::{ConfigError, DocumentDbSettings, Env, PostgresSettings};
use cxr_platform::jobs::scheduled::{JobSettings, ScheduledRun};
use cxr_platform::storage::documentdb::{DocumentCollection, Warehouse};
use cxr_platform::storage::postgres::Database;

use crate::document::StudyDocument;

/// The job's own settings (besides `DATABASE_URL` and `DOCUMENTDB_*`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WarehouseSettings {
    /// `WAREHOUSE_COLLECTION`: the collection of study documents.
    pub collection: String,
    /// `WAREHOUSE_CHUNK_STUDIES`: studies per chunk.
    pub chunk_studies: u32,
}

impl WarehouseSettings {
    pub fn from_env(env: &Env) -> Result<Self, ConfigError> {
        let collection = env.get("WAREHOUSE_COLLECTION").unwrap_or_else(|| "studies".into());
        if collection.is_empty() || collection.contains('$') || collection.starts_with("system.") {
            return Err(ConfigError::Malformed { name: "WAREHOUSE_COLLECTION", reason: format!("{collection:?} is not a usable collection name") });
        }
        let chunk_studies = env.parsed_or("WAREHOUSE_CHUNK_STUDIES", 500u32)?;
        if chunk_studies == 0 {
            return Err(ConfigError::Malformed { name: "WAREHOUSE_CHUNK_STUDIES", reason: "must be at least 1".into() });
        }
        Ok(Self { collection, chunk_studies })
    }
}

/// Everything a run needs, built once per process.
pub struct WarehouseJob {
    pub db: Database,
    pub collection: DocumentCollection<StudyDocument>,
    pub settings: WarehouseSettings,
    pub job: JobSettings,
}

impl WarehouseJob {
    pub async fn from_env(env: &Env) -> anyhow::Result<Self> {
        let settings = WarehouseSettings::from_env(env)?;
        let job = JobSettings::from_env(env)?;
        let db = Database::connect(&PostgresSettings::from_env(env)?).await?;
        let warehouse = Warehouse::connect(&DocumentDbSettings::from_env(env)?).await?;
        Ok(Self { db, collection: warehouse.collection(&settings.collection), settings, job })
    }

    pub async fn run(&self, run: ScheduledRun) -> Result<load::LoadReport, load::LoadError> {
        let options = load::LoadOptions { chunk_studies: self.settings.chunk_studies, dry_run: run.dry_run, time_budget: Some(run.time_budget) };
        load::run_load(&self.db, &self.collection, &options).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn settings_have_defaults_and_reject_bad_values() {
        let env = |pairs: &[(&str, &str)]| Env::from_map(pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect());
        assert_eq!(WarehouseSettings::from_env(&env(&[])).expect("defaults"), WarehouseSettings { collection: "studies".into(), chunk_studies: 500 });
        assert!(WarehouseSettings::from_env(&env(&[("WAREHOUSE_CHUNK_STUDIES", "0")])).is_err());
        assert!(WarehouseSettings::from_env(&env(&[("WAREHOUSE_COLLECTION", "a$b")])).is_err());
    }
}

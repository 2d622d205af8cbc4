//! Operator commands for the data lake: apply migrations, provision the
//! bucket and table a fresh environment needs, and check that every store
//! answers. Configuration comes from the same variables the functions use.

use anyhow::Context;
use clap::{Parser, Subcommand};
use cxr_platform::aws::load_sdk_config;
use cxr_platform::config::{DocumentDbSettings, DynamoSettings, Env, PostgresSettings, S3Settings};
use cxr_platform::storage::documentdb::Warehouse;
use cxr_platform::storage::dynamodb::DynamoTable;
use cxr_platform::storage::postgres::Database;
use cxr_platform::storage::s3::ObjectStore;

#[derive(Debug, Parser)]
#[command(name = "cxr-admin", about = "Operate the chest X-ray platform's data lake")]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Apply pending PostgreSQL migrations and sync the built-in label sets.
    Migrate,
    /// Migrate, and create the images bucket (and BACKUP_BUCKET and the
    /// bucket of an s3:// COCO_DESTINATION if set) and the results table if
    /// they do not exist (in AWS the SAM template creates those).
    Provision,
    /// Check that PostgreSQL, S3, DynamoDB and DocumentDB answer.
    Check,
}

pub async fn run(cli: Cli) -> anyhow::Result<()> {
    let env = Env::process();
    match cli.command {
        Command::Migrate => migrate(&env).await,
        Command::Provision => provision(&env).await,
        Command::Check => check(&env).await,
    }
}

async fn migrate(env: &Env) -> anyhow::Result<()> {
    let db = Database::connect(&PostgresSettings::from_env(env)?).await.context("connecting to PostgreSQL")?;
    db.migrate().await.context("migrating PostgreSQL")?;
    println!("postgres: migrations applied, label sets synced");
    Ok(())
}

async fn provision(env: &Env) -> anyhow::Result<()> {
    // Read every setting first, so a missing variable fails before any change.
    let s3 = S3Settings::from_env(env)?;
    let dynamo = DynamoSettings::from_env(env)?;
    let sdk = load_sdk_config().await?;
    migrate(env).await?;
    // The jobs' buckets are optional here: only those jobs require them.
    let backup_bucket = env.get("BACKUP_BUCKET");
    let mart_bucket = env
        .get("COCO_DESTINATION")
        .and_then(|d| d.strip_prefix("s3://").map(|rest| rest.split('/').next().unwrap_or_default().to_owned()))
        .filter(|b| !b.is_empty());
    for bucket in std::iter::once(s3.images_bucket.clone()).chain(backup_bucket).chain(mart_bucket) {
        let store = ObjectStore::new(&sdk, &S3Settings { images_bucket: bucket, ..s3.clone() });
        store.create_bucket_if_absent().await.with_context(|| format!("creating bucket {}", store.bucket()))?;
        println!("s3: bucket {} ready", store.bucket());
    }
    let table = DynamoTable::new(&sdk, &dynamo);
    table.create_if_absent().await.with_context(|| format!("creating table {}", table.name()))?;
    println!("dynamodb: table {} ready", table.name());
    Ok(())
}

async fn check(env: &Env) -> anyhow::Result<()> {
    let postgres = PostgresSettings::from_env(env)?;
    let s3 = S3Settings::from_env(env)?;
    let dynamo = DynamoSettings::from_env(env)?;
    let documentdb = DocumentDbSettings::from_env(env)?;
    let sdk = load_sdk_config().await?;

    let mut failures = Vec::new();
    let mut report = |service: &str, outcome: anyhow::Result<String>| match outcome {
        Ok(detail) => println!("{service:<11} healthy  {detail}"),
        Err(err) => {
            println!("{service:<11} FAILING  {err:#}");
            failures.push(service.to_owned());
        }
    };

    report(
        "postgres",
        async {
            let db = Database::connect(&postgres).await?;
            db.ping().await?;
            let version = db.applied_migration_version().await?;
            Ok(format!("schema version {}", version.map_or("none (run cxr-admin migrate)".into(), |v| v.to_string())))
        }
        .await,
    );
    report(
        "s3",
        async {
            let store = ObjectStore::new(&sdk, &s3);
            store.check_bucket().await?;
            Ok(format!("bucket {}", store.bucket()))
        }
        .await,
    );
    report(
        "dynamodb",
        async {
            let table = DynamoTable::new(&sdk, &dynamo);
            table.check_table().await?;
            Ok(format!("table {}", table.name()))
        }
        .await,
    );
    report(
        "documentdb",
        async {
            let warehouse = Warehouse::connect(&documentdb).await?;
            Ok(format!("database {}", warehouse.database_name()))
        }
        .await,
    );

    if failures.is_empty() { Ok(()) } else { anyhow::bail!("unhealthy: {}", failures.join(", ")) }
}

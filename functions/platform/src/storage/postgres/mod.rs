//! PostgreSQL on Amazon RDS: the system of record.
//!
//! Every query is parameterized (`sqlx::query(..).bind(..)`); no SQL is ever
//! built from values. Schema changes are versioned migrations under
//! `functions/platform/migrations`, applied by `cxr-admin migrate`.

mod iam;
pub mod idempotency;
pub mod job_runs;
pub mod studies;

use sqlx::migrate::Migrator;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{PgPool, Postgres, Transaction};
use std::str::FromStr;

use crate::config::{PostgresLogin, PostgresSettings};
use crate::domain::LabelSets;

pub static MIGRATOR: Migrator = sqlx::migrate!("./migrations");

#[derive(Debug, thiserror::Error)]
pub enum DbError {
    #[error("PostgreSQL is unreachable: {0}")]
    Unavailable(String),
    #[error("a row with the same unique key exists ({constraint})")]
    UniqueViolation { constraint: String },
    #[error("a referenced row does not exist ({constraint})")]
    ForeignKeyViolation { constraint: String },
    #[error("a value is outside what the schema allows ({constraint})")]
    CheckViolation { constraint: String },
    #[error("PostgreSQL refused the login: {0}")]
    LoginRefused(String),
    #[error("no such row")]
    NotFound,
    #[error("DATABASE_URL is invalid: {0}")]
    InvalidUrl(String),
    #[error("migration failed: {0}")]
    Migration(String),
    #[error("database error: {0}")]
    Other(String),
}

impl From<sqlx::Error> for DbError {
    fn from(err: sqlx::Error) -> Self {
        match &err {
            sqlx::Error::RowNotFound => Self::NotFound,
            sqlx::Error::Io(_) | sqlx::Error::PoolTimedOut | sqlx::Error::PoolClosed | sqlx::Error::Tls(_) => Self::Unavailable(err.to_string()),
            sqlx::Error::Database(db) => {
                let constraint = db.constraint().unwrap_or("unnamed").to_owned();
                match db.code().as_deref() {
                    Some("23505") => Self::UniqueViolation { constraint },
                    Some("23503") => Self::ForeignKeyViolation { constraint },
                    Some("23514") => Self::CheckViolation { constraint },
                    // invalid_authorization_specification, invalid_password, invalid_catalog_name
                    Some("28000" | "28P01" | "3D000") => Self::LoginRefused(err.to_string()),
                    // admin_shutdown, cannot_connect_now, too_many_connections
                    Some("57P01" | "57P03" | "53300") => Self::Unavailable(err.to_string()),
                    _ => Self::Other(err.to_string()),
                }
            }
            _ => Self::Other(err.to_string()),
        }
    }
}

/// A pool of connections to the data lake database.
#[derive(Clone, Debug)]
pub struct Database {
    pool: PgPool,
}

impl Database {
    /// Opens the pool and one connection, so a wrong address or password
    /// fails here, within `connect_timeout`. With IAM authentication the
    /// pool's login is renewed before each token expires (tokens last 15
    /// minutes and are checked only when a connection opens).
    pub async fn connect(settings: &PostgresSettings) -> Result<Self, DbError> {
        let pool_options = PgPoolOptions::new().max_connections(settings.max_connections).acquire_timeout(settings.connect_timeout);
        match &settings.login {
            PostgresLogin::Url(url) => {
                let options = PgConnectOptions::from_str(url.expose()).map_err(|e| DbError::InvalidUrl(e.to_string()))?;
                Ok(Self { pool: pool_options.connect_with(options).await? })
            }
            PostgresLogin::Iam { host, port, database, user } => {
                let sdk = crate::aws::load_sdk_config().await.map_err(|e| DbError::InvalidUrl(e.to_string()))?;
                let login = iam::IamLogin::new(sdk, host, *port, database, user)?;
                let pool = pool_options.connect_with(login.options().await?).await?;
                login.renew_in_background(pool.clone());
                Ok(Self { pool })
            }
        }
    }

    pub fn from_pool(pool: PgPool) -> Self {
        Self { pool }
    }

    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    pub async fn begin(&self) -> Result<Transaction<'static, Postgres>, DbError> {
        Ok(self.pool.begin().await?)
    }

    pub async fn ping(&self) -> Result<(), DbError> {
        sqlx::query("SELECT 1").execute(&self.pool).await?;
        Ok(())
    }

    /// The newest migration applied, or `None` on a database never migrated.
    pub async fn applied_migration_version(&self) -> Result<Option<i64>, DbError> {
        let exists: bool = sqlx::query_scalar("SELECT to_regclass('_sqlx_migrations') IS NOT NULL").fetch_one(&self.pool).await?;
        if !exists {
            return Ok(None);
        }
        Ok(sqlx::query_scalar("SELECT max(version) FROM _sqlx_migrations WHERE success").fetch_one(&self.pool).await?)
    }

    /// Applies pending migrations (each in its own transaction; a lock keeps
    /// concurrent runners apart) and then syncs the built-in label sets.
    pub async fn migrate(&self) -> Result<(), DbError> {
        MIGRATOR.run(&self.pool).await.map_err(|e| DbError::Migration(e.to_string()))?;
        self.sync_label_sets(LabelSets::builtin()).await
    }

    /// Makes the `label_sets`/`labels` tables hold exactly these sets' labels
    /// (adding new ones, renumbering moved ones; positions are checked for
    /// uniqueness at commit). Labels that annotations still use are kept.
    pub async fn sync_label_sets(&self, sets: &LabelSets) -> Result<(), DbError> {
        let mut tx = self.begin().await?;
        for set in sets.iter() {
            sqlx::query(
                "INSERT INTO label_sets (name, description) VALUES ($1, $2)
                 ON CONFLICT (name) DO UPDATE SET description = EXCLUDED.description",
            )
            .bind(&set.name)
            .bind(&set.description)
            .execute(&mut *tx)
            .await?;
            let positions: Vec<i16> = (0..set.labels.len()).map(|i| i as i16).collect();
            sqlx::query(
                "DELETE FROM labels l WHERE l.label_set = $1 AND NOT (l.name = ANY($2))
                   AND NOT EXISTS (SELECT 1 FROM annotations a WHERE a.label_set = l.label_set AND a.label = l.name)",
            )
            .bind(&set.name)
            .bind(&set.labels)
            .execute(&mut *tx)
            .await?;
            sqlx::query(
                "INSERT INTO labels (label_set, position, name)
                 SELECT $1, p, n FROM UNNEST($2::smallint[], $3::text[]) AS t(p, n)
                 ON CONFLICT (label_set, name) DO UPDATE SET position = EXCLUDED.position",
            )
            .bind(&set.name)
            .bind(&positions)
            .bind(&set.labels)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(())
    }
}

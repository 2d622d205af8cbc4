//! DocumentDB (MongoDB wire protocol): the warehouse of study documents.
//!
//! Only operations Amazon DocumentDB supports are used (it implements the
//! MongoDB 5.0 API): bulk upserts go through the `update` command with many
//! statements rather than MongoDB 8's `bulkWrite` command.

use std::time::Duration;

use futures::TryStreamExt;
use mongodb::bson::{self, Bson, Document, doc};
use mongodb::error::{ErrorKind, WriteFailure};
use mongodb::options::{ClientOptions, Credential, IndexOptions, Tls, TlsOptions};
use mongodb::{Client, Collection, Database, IndexModel};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::config::{DocumentDbLogin, DocumentDbSettings};
use crate::secrets::JsonSecret;

/// The Amazon RDS certificate authorities, which sign DocumentDB's server
/// certificates (`functions/platform/certs/README.md`).
const RDS_CA_BUNDLE: &str = include_str!("../../certs/rds-ca-bundle.pem");

const DUPLICATE_KEY: i32 = 11000;

#[derive(Debug, thiserror::Error)]
pub enum WarehouseError {
    #[error("DocumentDB is unreachable: {0}")]
    Unavailable(String),
    #[error("a document with the same unique key exists: {0}")]
    Duplicate(String),
    #[error("document does not match its type: {0}")]
    Serialization(String),
    #[error("{failed} of {attempted} upserts failed; first error: {first}")]
    PartialWrite { attempted: usize, failed: usize, first: String },
    #[error("DocumentDB connection string is invalid: {0}")]
    InvalidUri(String),
    #[error("DocumentDB request failed: {0}")]
    Other(String),
}

impl From<mongodb::error::Error> for WarehouseError {
    fn from(err: mongodb::error::Error) -> Self {
        let message = err.to_string();
        match err.kind.as_ref() {
            ErrorKind::ServerSelection { .. } | ErrorKind::Io(_) | ErrorKind::ConnectionPoolCleared { .. } | ErrorKind::DnsResolve { .. } => {
                Self::Unavailable(message)
            }
            ErrorKind::Write(WriteFailure::WriteError(e)) if e.code == DUPLICATE_KEY => Self::Duplicate(message),
            ErrorKind::Command(e) if e.code == DUPLICATE_KEY => Self::Duplicate(message),
            ErrorKind::BsonSerialization(_) | ErrorKind::BsonDeserialization(_) => Self::Serialization(message),
            _ => Self::Other(message),
        }
    }
}

/// What a bulk upsert did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct UpsertCounts {
    /// Documents that did not exist and were inserted.
    pub inserted: u64,
    /// Documents that existed (whether or not their content changed).
    pub matched: u64,
    /// Existing documents whose content changed.
    pub modified: u64,
}

/// The warehouse database.
#[derive(Clone, Debug)]
pub struct Warehouse {
    client: Client,
    database: Database,
}

impl Warehouse {
    /// Connects and checks the server answers, so a wrong address fails here
    /// rather than at the first write.
    pub async fn connect(settings: &DocumentDbSettings) -> Result<Self, WarehouseError> {
        let mut options = match &settings.login {
            DocumentDbLogin::Uri(uri) => ClientOptions::parse(uri.expose()).await.map_err(|e| WarehouseError::InvalidUri(e.to_string()))?,
            DocumentDbLogin::SecretArn(arn) => Self::options_from_secret(arn).await?,
        };
        // The driver's default is 30 s, far too long for a health check or a
        // Lambda that should fail fast and be retried.
        options.server_selection_timeout.get_or_insert(Duration::from_secs(10));
        options.connect_timeout.get_or_insert(Duration::from_secs(5));
        options.app_name.get_or_insert_with(|| "cxr-platform".to_owned());
        let client = Client::with_options(options).map_err(|e| WarehouseError::InvalidUri(e.to_string()))?;
        let warehouse = Self { database: client.database(&settings.database), client };
        warehouse.ping().await?;
        Ok(warehouse)
    }

    /// Amazon DocumentDB's connection, from the cluster's secret: TLS against
    /// the bundled RDS CAs, the replica set `rs0`, reads from secondaries,
    /// and no retryable writes (DocumentDB has none).
    async fn options_from_secret(arn: &str) -> Result<ClientOptions, WarehouseError> {
        let sdk = crate::aws::load_sdk_config().await.map_err(|e| WarehouseError::InvalidUri(e.to_string()))?;
        let secret = JsonSecret::read(&sdk, arn).await.map_err(|e| WarehouseError::Unavailable(e.to_string()))?;
        let field = |key| secret.get(key).map_err(|e| WarehouseError::InvalidUri(e.to_string()));
        let (host, port) = (field("host")?, field("port")?);
        let uri = format!("mongodb://{}:{}/?replicaSet=rs0&readPreference=secondaryPreferred&retryWrites=false", host.expose(), port.expose());
        let mut options = ClientOptions::parse(&uri).await.map_err(|e| WarehouseError::InvalidUri(e.to_string()))?;
        options.credential =
            Some(Credential::builder().username(field("username")?.expose().to_owned()).password(field("password")?.expose().to_owned()).build());
        // The driver reads CAs from a file only.
        let ca_file = std::env::temp_dir().join("cxr-rds-ca-bundle.pem");
        std::fs::write(&ca_file, RDS_CA_BUNDLE).map_err(|e| WarehouseError::Other(format!("writing the CA bundle to {}: {e}", ca_file.display())))?;
        options.tls = Some(Tls::Enabled(TlsOptions::builder().ca_file_path(ca_file).build()));
        Ok(options)
    }

    pub async fn ping(&self) -> Result<(), WarehouseError> {
        self.database.run_command(doc! { "ping": 1 }).await?;
        Ok(())
    }

    pub fn database_name(&self) -> &str {
        self.database.name()
    }

    pub fn collection<T: Send + Sync>(&self, name: &str) -> DocumentCollection<T> {
        DocumentCollection { inner: self.database.collection(name), database: self.database.clone() }
    }

    pub fn client(&self) -> &Client {
        &self.client
    }
}

/// A typed collection whose documents are keyed by `_id`.
#[derive(Clone, Debug)]
pub struct DocumentCollection<T: Send + Sync> {
    inner: Collection<T>,
    database: Database,
}

/// Statements per `update` command: far below the server's 100,000 and,
/// for study documents of a few KiB, well under the 16 MiB command limit.
const UPSERT_BATCH: usize = 500;

impl<T> DocumentCollection<T>
where
    T: Serialize + DeserializeOwned + Send + Sync,
{
    pub fn name(&self) -> &str {
        self.inner.name()
    }

    /// Creates an index if it does not exist (same keys and options: no-op).
    pub async fn ensure_index(&self, name: &str, keys: Document, unique: bool) -> Result<(), WarehouseError> {
        let options = IndexOptions::builder().name(name.to_owned()).unique(unique).build();
        self.inner.create_index(IndexModel::builder().keys(keys).options(options).build()).await?;
        Ok(())
    }

    /// Inserts a new document; [`WarehouseError::Duplicate`] if its `_id` or
    /// another unique key exists.
    pub async fn insert(&self, document: &T) -> Result<(), WarehouseError> {
        self.inner.insert_one(document).await?;
        Ok(())
    }

    /// Replaces the document with this `_id`, or inserts it. Running it twice
    /// leaves the same collection.
    pub async fn upsert(&self, id: impl Into<Bson>, document: &T) -> Result<UpsertCounts, WarehouseError> {
        let result = self.inner.replace_one(doc! { "_id": id.into() }, document).upsert(true).await?;
        Ok(UpsertCounts { inserted: u64::from(result.upserted_id.is_some()), matched: result.matched_count, modified: result.modified_count })
    }

    /// Replaces or inserts many documents, a few hundred per round trip.
    /// Statements are unordered: one bad document does not stop the others,
    /// and any failure is reported (never swallowed) after the rest are
    /// written.
    pub async fn upsert_many<I>(&self, documents: &[(I, T)]) -> Result<UpsertCounts, WarehouseError>
    where
        I: Into<Bson> + Clone,
    {
        let mut counts = UpsertCounts::default();
        let mut failures: Vec<String> = Vec::new();
        for chunk in documents.chunks(UPSERT_BATCH) {
            let updates = chunk
                .iter()
                .map(|(id, document)| {
                    let replacement = bson::to_document(document).map_err(|e| WarehouseError::Serialization(e.to_string()))?;
                    Ok(doc! { "q": { "_id": id.clone().into() }, "u": replacement, "upsert": true })
                })
                .collect::<Result<Vec<Document>, WarehouseError>>()?;
            let reply = self.database.run_command(doc! { "update": self.inner.name(), "updates": updates, "ordered": false }).await?;
            let number = |field: &str| reply.get(field).and_then(bson_as_u64).unwrap_or(0);
            let inserted = reply.get_array("upserted").map(|a| a.len() as u64).unwrap_or(0);
            counts.inserted += inserted;
            // `n` counts matched plus upserted statements.
            counts.matched += number("n").saturating_sub(inserted);
            counts.modified += number("nModified");
            if let Ok(errors) = reply.get_array("writeErrors") {
                failures.extend(errors.iter().map(|e| e.to_string()));
            }
        }
        match failures.first() {
            None => Ok(counts),
            Some(first) => Err(WarehouseError::PartialWrite { attempted: documents.len(), failed: failures.len(), first: first.clone() }),
        }
    }

    pub async fn get(&self, id: impl Into<Bson>) -> Result<Option<T>, WarehouseError> {
        Ok(self.inner.find_one(doc! { "_id": id.into() }).await?)
    }

    /// Documents matching `filter`, in `sort` order, at most `limit`.
    pub async fn find(&self, filter: Document, sort: Option<Document>, limit: Option<i64>) -> Result<Vec<T>, WarehouseError> {
        let mut find = self.inner.find(filter);
        if let Some(sort) = sort {
            find = find.sort(sort);
        }
        if let Some(limit) = limit {
            find = find.limit(limit);
        }
        Ok(find.await?.try_collect().await?)
    }

    pub async fn count(&self, filter: Document) -> Result<u64, WarehouseError> {
        Ok(self.inner.count_documents(filter).await?)
    }
}

fn bson_as_u64(value: &Bson) -> Option<u64> {
    match value {
        Bson::Int32(n) => u64::try_from(*n).ok(),
        Bson::Int64(n) => u64::try_from(*n).ok(),
        Bson::Double(n) if *n >= 0.0 => Some(*n as u64),
        _ => None,
    }
}

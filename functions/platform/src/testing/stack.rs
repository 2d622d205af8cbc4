//! The running local stack (`infra/local/dev.sh up`), found from the
//! environment or `.stack/env`, and fresh resources on it.

use std::collections::HashMap;
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::path::PathBuf;
use std::sync::OnceLock;
use std::time::Duration;

use aws_config::{BehaviorVersion, Region, SdkConfig};
use aws_sdk_s3::config::{Credentials, SharedCredentialsProvider};

use crate::config::{DocumentDbSettings, Env, PostgresSettings};
use crate::storage::documentdb::Warehouse;
use crate::storage::dynamodb::DynamoTable;
use crate::storage::postgres::Database;

use super::unique_name;
use crate::storage::s3::ObjectStore;

const HOW_TO_START: &str = "the local stack is not running. Start it with `infra/local/dev.sh up` \
     (or run the whole suite with `infra/local/dev.sh test`, which starts it for the run)";

/// The variables that point at the running local stack.
pub struct LocalStack {
    vars: HashMap<String, String>,
}

impl LocalStack {
    /// The stack, checked to be listening; panics with how to start it
    /// otherwise.
    pub fn get() -> &'static LocalStack {
        static STACK: OnceLock<LocalStack> = OnceLock::new();
        STACK.get_or_init(|| {
            let stack = Self::discover().unwrap_or_else(|| panic!("{HOW_TO_START}"));
            stack.assert_listening();
            stack
        })
    }

    fn discover() -> Option<Self> {
        const NAMES: [&str; 10] = [
            "AWS_REGION",
            "AWS_ACCESS_KEY_ID",
            "AWS_SECRET_ACCESS_KEY",
            "AWS_ENDPOINT_URL_S3",
            "AWS_ENDPOINT_URL_DYNAMODB",
            "DATABASE_URL",
            "DOCUMENTDB_URI",
            "IMAGES_BUCKET",
            "RESULTS_TABLE",
            "S3_FORCE_PATH_STYLE",
        ];
        let mut vars: HashMap<String, String> = read_env_file(&Self::env_file()).unwrap_or_default();
        for name in NAMES {
            if let Ok(value) = std::env::var(name) {
                vars.insert(name.to_owned(), value);
            }
        }
        NAMES.iter().all(|n| vars.contains_key(*n)).then_some(Self { vars })
    }

    fn env_file() -> PathBuf {
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../.stack/env")
    }

    fn assert_listening(&self) {
        for name in ["AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT_URL_DYNAMODB", "DATABASE_URL", "DOCUMENTDB_URI"] {
            let addr = host_port(&self.vars[name]).unwrap_or_else(|| panic!("{name} has no host:port"));
            let listening = addr
                .to_socket_addrs()
                .ok()
                .and_then(|mut a| a.next())
                .is_some_and(|a: SocketAddr| TcpStream::connect_timeout(&a, Duration::from_secs(2)).is_ok());
            assert!(listening, "nothing listens at {addr} ({name}): {HOW_TO_START}");
        }
    }

    pub fn var(&self, name: &str) -> &str {
        self.vars.get(name).map(String::as_str).unwrap_or_else(|| panic!("{name} is not set"))
    }

    /// The stack's variables as a settings source, with `overrides` applied.
    pub fn env(&self, overrides: &[(&str, &str)]) -> Env {
        let mut vars = self.vars.clone();
        vars.extend(overrides.iter().map(|(k, v)| (k.to_string(), v.to_string())));
        Env::from_map(vars)
    }

    /// The variables as `(name, value)` pairs, for starting a binary.
    pub fn vars(&self) -> impl Iterator<Item = (&str, &str)> {
        self.vars.iter().map(|(k, v)| (k.as_str(), v.as_str()))
    }

    /// `program` with a clean environment holding only `PATH` and the
    /// stack's variables, killed when dropped: for tests that run a job's
    /// binary (and kill it halfway).
    pub fn command(&self, program: impl AsRef<std::ffi::OsStr>) -> tokio::process::Command {
        let mut command = tokio::process::Command::new(program);
        command.env_clear().env("PATH", std::env::var("PATH").unwrap_or_default());
        command.envs(self.vars());
        command.env("AWS_EC2_METADATA_DISABLED", "true").env("RUST_LOG", "warn").kill_on_drop(true);
        command
    }

    pub fn sdk_config(&self) -> SdkConfig {
        let credentials = Credentials::new(self.var("AWS_ACCESS_KEY_ID"), self.var("AWS_SECRET_ACCESS_KEY"), None, None, "local-stack");
        SdkConfig::builder()
            .behavior_version(BehaviorVersion::latest())
            .region(Region::new(self.var("AWS_REGION").to_owned()))
            .credentials_provider(SharedCredentialsProvider::new(credentials))
            .build()
    }

    /// The stack's region and credentials with every service at `endpoint`
    /// (e.g. a model server on a random port for the SageMaker runtime).
    pub fn sdk_config_at(&self, endpoint: &str) -> SdkConfig {
        self.sdk_config().into_builder().endpoint_url(endpoint).build()
    }

    pub fn s3_client(&self) -> aws_sdk_s3::Client {
        self.s3_client_at(self.var("AWS_ENDPOINT_URL_S3"))
    }

    /// An S3 client for another endpoint, e.g. `closed_port()` for outages.
    pub fn s3_client_at(&self, endpoint: &str) -> aws_sdk_s3::Client {
        let config = aws_sdk_s3::config::Builder::from(&self.sdk_config()).endpoint_url(endpoint).force_path_style(true).build();
        aws_sdk_s3::Client::from_conf(config)
    }

    pub fn dynamodb_client(&self) -> aws_sdk_dynamodb::Client {
        let config = aws_sdk_dynamodb::config::Builder::from(&self.sdk_config()).endpoint_url(self.var("AWS_ENDPOINT_URL_DYNAMODB")).build();
        aws_sdk_dynamodb::Client::from_conf(config)
    }

    /// A new, migrated database of its own.
    pub async fn fresh_database(&self) -> Database {
        let url = self.fresh_database_url().await;
        let db = Database::connect(&self.postgres_settings(&url)).await.expect("connect to fresh database");
        db.migrate().await.expect("migrate fresh database");
        db
    }

    /// The URL of a new, empty (unmigrated) database of its own.
    pub async fn fresh_database_url(&self) -> String {
        let admin = Database::connect(&self.postgres_settings(self.var("DATABASE_URL"))).await.expect("connect to the local PostgreSQL");
        let name = unique_name("test_");
        // CREATE DATABASE takes no parameters; the name is generated here
        // (letters, digits, underscores), never taken from input.
        sqlx::query(&format!("CREATE DATABASE {name}")).execute(admin.pool()).await.expect("create test database");
        admin.pool().close().await;
        replace_database(self.var("DATABASE_URL"), &name)
    }

    /// A new, migrated database of its own and its URL, for tests that
    /// start a binary on it.
    pub async fn fresh_migrated_database(&self) -> (String, Database) {
        let url = self.fresh_database_url().await;
        let db = Database::connect(&self.postgres_settings(&url)).await.expect("connect to fresh database");
        db.migrate().await.expect("migrate fresh database");
        (url, db)
    }

    pub fn postgres_settings(&self, url: &str) -> PostgresSettings {
        PostgresSettings::from_url(url, 4, Duration::from_secs(10))
    }

    /// A new, empty bucket of its own.
    pub async fn fresh_bucket(&self) -> ObjectStore {
        let store = ObjectStore::from_client(self.s3_client(), unique_name("test-").replace('_', "-"));
        store.create_bucket_if_absent().await.expect("create test bucket");
        store
    }

    /// A new, active table of its own.
    pub async fn fresh_table(&self) -> DynamoTable {
        let table = DynamoTable::from_client(self.dynamodb_client(), unique_name("test_"));
        table.create_if_absent().await.expect("create test table");
        table
    }

    /// A warehouse database of its own (created on first write).
    pub async fn fresh_warehouse(&self) -> Warehouse {
        let settings = DocumentDbSettings::from_uri(self.var("DOCUMENTDB_URI"), &unique_name("test_"));
        Warehouse::connect(&settings).await.expect("connect to the local DocumentDB stand-in")
    }
}

/// An address where nothing listens: for "server unreachable" tests.
pub fn closed_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind an ephemeral port");
    let port = listener.local_addr().expect("local address").port();
    drop(listener);
    port
}

/// An address that accepts connections and never answers: for "server
/// hangs" tests. The listener and what it accepted live as long as the
/// process.
pub fn silent_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind an ephemeral port");
    let port = listener.local_addr().expect("local address").port();
    // Accepting (and keeping) the connections never ends, so they stay open.
    std::thread::spawn(move || listener.incoming().map_while(Result::ok).collect::<Vec<_>>());
    port
}

fn read_env_file(path: &std::path::Path) -> Option<HashMap<String, String>> {
    let text = std::fs::read_to_string(path).ok()?;
    Some(
        text.lines()
            .filter_map(|line| line.trim().strip_prefix("export ").or(Some(line.trim())))
            .filter(|line| !line.starts_with('#'))
            .filter_map(|line| line.split_once('='))
            .map(|(k, v)| (k.trim().to_owned(), v.trim().to_owned()))
            .collect(),
    )
}

/// `host:port` of a URL such as `http://127.0.0.1:59000` or
/// `postgres://user:pw@127.0.0.1:55432/db`.
fn host_port(url: &str) -> Option<String> {
    let rest = url.split_once("://")?.1;
    let authority = rest.split(['/', '?']).next()?;
    Some(authority.rsplit_once('@').map_or(authority, |(_, hp)| hp).to_owned())
}

fn replace_database(url: &str, database: &str) -> String {
    let (base, query) = url.split_once('?').map_or((url, None), |(b, q)| (b, Some(q)));
    let (prefix, _) = base.rsplit_once('/').expect("DATABASE_URL has a database path");
    match query {
        Some(q) => format!("{prefix}/{database}?{q}"),
        None => format!("{prefix}/{database}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_urls() {
        assert_eq!(host_port("http://127.0.0.1:59000").as_deref(), Some("127.0.0.1:59000"));
        assert_eq!(host_port("postgres://u:p@127.0.0.1:55432/cxr").as_deref(), Some("127.0.0.1:55432"));
        assert_eq!(host_port("mongodb://127.0.0.1:57017/?directConnection=true").as_deref(), Some("127.0.0.1:57017"));
        assert_eq!(replace_database("postgres://u:p@h:1/cxr?sslmode=disable", "t"), "postgres://u:p@h:1/t?sslmode=disable");
    }
}

//! Test helpers for integration tests that run against the local stack
//! (`infra/local/dev.sh up`). Each helper hands out a fresh, uniquely named
//! resource (database, bucket, table, warehouse database), so tests run in
//! parallel without seeing each other's data.
//!
//! Endpoints come from the process environment (set by
//! `infra/local/dev.sh test`) or else from `.stack/env`, which `dev.sh up`
//! writes, so a plain `cargo test` works once the stack is up.

use std::collections::HashMap;
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::path::PathBuf;
use std::sync::OnceLock;
use std::time::Duration;

use aws_config::{BehaviorVersion, Region, SdkConfig};
use aws_sdk_s3::config::{Credentials, SharedCredentialsProvider};

use crate::config::{DocumentDbSettings, Env, PostgresSettings, Secret};
use crate::storage::documentdb::Warehouse;
use crate::storage::dynamodb::DynamoTable;
use crate::storage::postgres::Database;
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
        PostgresSettings { url: Secret::new(url.to_owned()), max_connections: 4, connect_timeout: Duration::from_secs(10) }
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
        let settings = DocumentDbSettings { uri: Secret::new(self.var("DOCUMENTDB_URI").to_owned()), database: unique_name("test_") };
        Warehouse::connect(&settings).await.expect("connect to the local DocumentDB stand-in")
    }
}

/// The largest value of `field` (a number) in any job run's checkpoint.
pub async fn job_checkpoint(db: &Database, field: &str) -> i64 {
    sqlx::query_scalar("SELECT COALESCE(max((checkpoint->>$1)::bigint), 0) FROM job_runs").bind(field).fetch_one(db.pool()).await.expect("checkpoint")
}

/// Kills `child` with SIGKILL once a job run's checkpoint `field` reaches
/// `at_least` (failing if the job finishes first or makes no progress for
/// a minute); returns the checkpoint it was killed at.
pub async fn kill_at_checkpoint(db: &Database, child: &mut tokio::process::Child, field: &str, at_least: i64) -> i64 {
    let started = std::time::Instant::now();
    while job_checkpoint(db, field).await < at_least {
        assert!(started.elapsed() < Duration::from_secs(60), "the job made no progress");
        assert!(child.try_wait().expect("poll").is_none(), "the job finished before it could be killed");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    child.kill().await.expect("SIGKILL");
    job_checkpoint(db, field).await
}

/// `prefix` plus 16 random hex digits: valid as a database, bucket (after
/// `_` -> `-`) and table name.
pub fn unique_name(prefix: &str) -> String {
    format!("{prefix}{}", &uuid::Uuid::new_v4().simple().to_string()[..16])
}

/// An address where nothing listens: for "server unreachable" tests.
pub fn closed_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind an ephemeral port");
    let port = listener.local_addr().expect("local address").port();
    drop(listener);
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

/// Generated data-lake content for job tests and benchmarks: `studies`
/// studies (every 10th without any inference, every 4th with annotations),
/// each of the others with one inference run of `findings_per_study`
/// findings. Set-based SQL, so 10,000 studies take about a second.
pub async fn seed(db: &Database, studies: i64, findings_per_study: i64) -> Result<(), crate::storage::postgres::DbError> {
    let mut tx = db.begin().await?;
    let first: i64 = sqlx::query_scalar("SELECT COALESCE(max(id), 0) FROM studies").fetch_one(&mut *tx).await?;
    sqlx::query(
        "INSERT INTO studies (owner, status, s3_bucket, s3_key, media_type, byte_size, sha256, width, height,
                              bit_depth, modality, dicom, created_at, updated_at)
         SELECT 'owner-' || (g % 7), CASE WHEN g % 10 = 0 THEN 'uploaded' ELSE 'done' END::study_status,
                'cxr-images', 'studies/seed-' || ($1 + g) || '/original.png', 'image/png', 100000 + g,
                md5(g::text) || md5((g + 1)::text), 2048 + g % 100, 2000, 16, 'DX',
                CASE WHEN g % 3 = 0 THEN jsonb_build_object('Modality', 'DX', 'Rows', 2000) END,
                now() - make_interval(secs => $2 - g), now() - make_interval(secs => $2 - g)
           FROM generate_series(1, $2) AS g",
    )
    .bind(first)
    .bind(studies)
    .execute(&mut *tx)
    .await?;
    sqlx::query(
        "INSERT INTO inference_runs (study_id, model_name, model_version, thresholds, timings_ms, model_trained)
         SELECT id, 'densenet121-res224-all', '1', '{\"Cardiomegaly\": 0.5}', jsonb_build_object('infer', id % 50), id % 2 = 0
           FROM studies WHERE id > $1 AND status = 'done'",
    )
    .bind(first)
    .execute(&mut *tx)
    .await?;
    sqlx::query(
        "INSERT INTO findings (inference_run_id, label, probability, x_min, y_min, width, height, source)
         SELECT r.id, l.name, ((r.id * 7 + f) % 100) / 100.0,
                CASE WHEN f % 2 = 0 THEN 10 * f END, CASE WHEN f % 2 = 0 THEN 20 END,
                CASE WHEN f % 2 = 0 THEN 100 END, CASE WHEN f % 2 = 0 THEN 50 + f END,
                CASE WHEN f % 2 = 0 THEN 'cam' ELSE 'model' END::finding_source
           FROM inference_runs r JOIN studies s ON s.id = r.study_id
          CROSS JOIN generate_series(1, $2) AS f
           JOIN labels l ON l.label_set = 'torchxrayvision-all' AND l.position = f % 18
          WHERE s.id > $1",
    )
    .bind(first)
    .bind(findings_per_study)
    .execute(&mut *tx)
    .await?;
    sqlx::query(
        "INSERT INTO annotations (study_id, label_set, label, x_min, y_min, width, height, author)
         SELECT s.id, 'vinbigdata', l.name, 5, 6, 70, 80, 'radiologist-' || (s.id % 3)
           FROM studies s JOIN labels l ON l.label_set = 'vinbigdata' AND l.position = s.id % 14
          WHERE s.id > $1 AND s.id % 4 = 0",
    )
    .bind(first)
    .execute(&mut *tx)
    .await?;
    sqlx::query(
        "INSERT INTO annotation_revisions (annotation_id, study_id, change, label_set, label, x_min, y_min, width, height, changed_by, changed_at)
         SELECT a.id, a.study_id, 'created', a.label_set, a.label, a.x_min, a.y_min, a.width, a.height, a.author, a.created_at
           FROM annotations a WHERE a.study_id > $1",
    )
    .bind(first)
    .execute(&mut *tx)
    .await?;
    sqlx::query(
        "UPDATE studies s SET (priority, priority_label) =
                (SELECT COALESCE(max(top.probability), 0), max(top.label)
                   FROM (SELECT f.probability, f.label FROM inference_runs r JOIN findings f ON f.inference_run_id = r.id
                          WHERE r.study_id = s.id AND f.source = 'model' AND f.probability >= 0.5
                          ORDER BY f.probability DESC, f.label LIMIT 1) top)
          WHERE s.id > $1 AND s.status = 'done'",
    )
    .bind(first)
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(())
}

/// Row count and an order-independent digest of a table's full contents,
/// for comparing a restored database with its source.
pub async fn table_fingerprint(db: &Database, table: &str, order_by: &str) -> (i64, String) {
    // Table and column names come from the test, never from input.
    sqlx::query_as(&format!("SELECT count(*), md5(COALESCE(string_agg(t::text, '|' ORDER BY {order_by}), '')) FROM {table} t"))
        .fetch_one(db.pool())
        .await
        .expect("fingerprint")
}

/// DICOM and image fixtures for de-identification and export tests.
mod fixtures {
    use dicom_core::value::DataSetSequence;
    use dicom_core::{DataElement, PrimitiveValue, Tag, VR};
    use dicom_dictionary_std::tags;
    use dicom_object::InMemDicomObject;
    use dicom_object::meta::FileMetaTableBuilder;
    use img_parts::Bytes;

    /// A small Part 10 file full of identifiers.
    pub fn identifiable_dicom(burned_in: bool) -> Vec<u8> {
        let nested = InMemDicomObject::from_element_iter([
            DataElement::new(tags::REFERENCED_SOP_INSTANCE_UID, VR::UI, PrimitiveValue::from("1.2.3.4.5")),
            DataElement::new(tags::PERSON_NAME, VR::PN, PrimitiveValue::from("Doe^Nested")),
        ]);
        let mut object = InMemDicomObject::from_element_iter([
            DataElement::new(tags::SOP_CLASS_UID, VR::UI, PrimitiveValue::from("1.2.840.10008.5.1.4.1.1.1.1")),
            DataElement::new(tags::SOP_INSTANCE_UID, VR::UI, PrimitiveValue::from("1.2.826.0.1.3680043.2.1125.1")),
            DataElement::new(tags::STUDY_INSTANCE_UID, VR::UI, PrimitiveValue::from("1.2.826.0.1.3680043.2.1125.2")),
            DataElement::new(tags::STUDY_DATE, VR::DA, PrimitiveValue::from("20240131")),
            DataElement::new(tags::ACCESSION_NUMBER, VR::SH, PrimitiveValue::from("ACC123")),
            DataElement::new(tags::MODALITY, VR::CS, PrimitiveValue::from("DX")),
            DataElement::new(tags::INSTITUTION_NAME, VR::LO, PrimitiveValue::from("St Example Hospital")),
            DataElement::new(tags::PATIENT_NAME, VR::PN, PrimitiveValue::from("Doe^Jane")),
            DataElement::new(tags::PATIENT_ID, VR::LO, PrimitiveValue::from("MRN-0042")),
            DataElement::new(tags::PATIENT_BIRTH_DATE, VR::DA, PrimitiveValue::from("19700101")),
            DataElement::new(tags::PATIENT_ADDRESS, VR::LO, PrimitiveValue::from("1 Example Road")),
            DataElement::new(tags::ROWS, VR::US, PrimitiveValue::from(2_u16)),
            DataElement::new(tags::COLUMNS, VR::US, PrimitiveValue::from(2_u16)),
            DataElement::new(tags::PIXEL_DATA, VR::OW, dicom_core::dicom_value!(U16, [1, 2, 3, 4])),
            DataElement::new(Tag(0x0009, 0x0010), VR::LO, PrimitiveValue::from("VENDOR")),
            DataElement::new(Tag(0x0009, 0x1001), VR::LO, PrimitiveValue::from("private patient id")),
            DataElement::new(Tag(0x6000, 0x3000), VR::OW, dicom_core::dicom_value!(U16, [0, 1])),
        ]);
        object.put(DataElement::new(tags::REFERENCED_IMAGE_SEQUENCE, VR::SQ, DataSetSequence::from(vec![nested])));
        if burned_in {
            object.put(DataElement::new(tags::BURNED_IN_ANNOTATION, VR::CS, PrimitiveValue::from("YES")));
        }
        let meta = FileMetaTableBuilder::new()
            .media_storage_sop_class_uid("1.2.840.10008.5.1.4.1.1.1.1")
            .media_storage_sop_instance_uid("1.2.826.0.1.3680043.2.1125.1")
            .transfer_syntax("1.2.840.10008.1.2.1")
            .source_application_entity_title("HOSPITAL_PACS");
        let file = object.with_meta(meta).expect("meta");
        let mut bytes = Vec::new();
        file.write_all(&mut bytes).expect("write");
        bytes
    }

    /// A 1x1 grey PNG.
    pub const TINY_PNG: &[u8] = &[
        0x89, 0x50, 0x4E, 0x47, 0x0D, 0x0A, 0x1A, 0x0A, 0x00, 0x00, 0x00, 0x0D, 0x49, 0x48, 0x44, 0x52, 0x00, 0x00, 0x00, 0x01, 0x00, 0x00, 0x00, 0x01, 0x08,
        0x00, 0x00, 0x00, 0x00, 0x3A, 0x7E, 0x9B, 0x55, 0x00, 0x00, 0x00, 0x0A, 0x49, 0x44, 0x41, 0x54, 0x08, 0xD7, 0x63, 0x60, 0x00, 0x00, 0x00, 0x02, 0x00,
        0x01, 0xE2, 0x21, 0xBC, 0x33, 0x00, 0x00, 0x00, 0x00, 0x49, 0x45, 0x4E, 0x44, 0xAE, 0x42, 0x60, 0x82,
    ];

    /// [`TINY_PNG`] with a tEXt chunk carrying `text`.
    pub fn png_with_text(text: &str) -> Vec<u8> {
        let mut png = img_parts::png::Png::from_bytes(Bytes::from_static(TINY_PNG)).expect("png");
        let chunk = img_parts::png::PngChunk::new(*b"tEXt", Bytes::from(format!("Comment\0{text}").into_bytes()));
        png.chunks_mut().insert(1, chunk);
        png.encoder().bytes().to_vec()
    }
}

pub use fixtures::{TINY_PNG, identifiable_dicom, png_with_text};

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

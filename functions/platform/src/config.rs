//! Typed settings, read once at start-up from environment variables.
//!
//! Each binary composes the sections it needs (a job that never touches
//! DynamoDB does not require its variables). A missing or malformed variable
//! fails start-up with an error that names it.

use std::collections::HashMap;
use std::fmt;
use std::str::FromStr;
use std::time::Duration;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ConfigError {
    #[error("environment variable {name} is not set ({hint})")]
    Missing { name: &'static str, hint: &'static str },
    #[error("environment variable {name} is malformed: {reason}")]
    Malformed { name: &'static str, reason: String },
}

type Lookup = Box<dyn Fn(&str) -> Option<String> + Send + Sync>;

/// Where settings come from: the process environment in production, a map
/// in tests (mutating the process environment is unsound with threads).
pub struct Env {
    lookup: Lookup,
}

impl Env {
    pub fn process() -> Self {
        Self { lookup: Box::new(|name| std::env::var(name).ok()) }
    }

    pub fn from_map(map: HashMap<String, String>) -> Self {
        Self { lookup: Box::new(move |name| map.get(name).cloned()) }
    }

    /// The raw value; empty strings count as unset.
    pub fn get(&self, name: &str) -> Option<String> {
        (self.lookup)(name).filter(|v| !v.trim().is_empty())
    }

    pub fn required(&self, name: &'static str, hint: &'static str) -> Result<String, ConfigError> {
        self.get(name).ok_or(ConfigError::Missing { name, hint })
    }

    pub fn parsed_or<T>(&self, name: &'static str, default: T) -> Result<T, ConfigError>
    where
        T: FromStr,
        T::Err: fmt::Display,
    {
        match self.get(name) {
            None => Ok(default),
            Some(raw) => raw.trim().parse().map_err(|e: T::Err| ConfigError::Malformed { name, reason: e.to_string() }),
        }
    }

    pub fn flag_or(&self, name: &'static str, default: bool) -> Result<bool, ConfigError> {
        match self.get(name).map(|v| v.trim().to_ascii_lowercase()) {
            None => Ok(default),
            Some(v) if ["1", "true", "yes", "on"].contains(&v.as_str()) => Ok(true),
            Some(v) if ["0", "false", "no", "off"].contains(&v.as_str()) => Ok(false),
            Some(v) => Err(ConfigError::Malformed { name, reason: format!("{v:?} is not a boolean (true/false)") }),
        }
    }

    /// A Secrets Manager secret's ARN, if `name` is set (then it must be one).
    pub fn secret_arn(&self, name: &'static str) -> Result<Option<String>, ConfigError> {
        match self.get(name) {
            Some(arn) if !arn.starts_with("arn:") => Err(ConfigError::Malformed { name, reason: "not an ARN".into() }),
            arn => Ok(arn),
        }
    }

    pub fn seconds_or(&self, name: &'static str, default: Duration) -> Result<Duration, ConfigError> {
        let secs: f64 = self.parsed_or(name, default.as_secs_f64())?;
        Duration::try_from_secs_f64(secs).map_err(|e| ConfigError::Malformed { name, reason: e.to_string() })
    }
}

/// A secret that must not end up in logs.
#[derive(Clone)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: String) -> Self {
        Self(value)
    }
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(***)")
    }
}

/// PostgreSQL (Amazon RDS): the system of record.
#[derive(Clone, Debug)]
pub struct PostgresSettings {
    pub login: PostgresLogin,
    pub max_connections: u32,
    pub connect_timeout: Duration,
}

/// How to log in to PostgreSQL.
#[derive(Clone, Debug)]
pub enum PostgresLogin {
    /// `DATABASE_URL`: `postgres://user:password@host:port/db?sslmode=...`
    /// (the local stack, operators' tools).
    Url(Secret),
    /// `DATABASE_AUTH=iam` with `DATABASE_HOST`, `DATABASE_PORT`,
    /// `DATABASE_NAME`, `DATABASE_USER`: RDS (Proxy) IAM authentication, a
    /// fresh 15-minute token for every new connection and TLS verified
    /// against the public roots (in AWS: no password anywhere).
    Iam { host: String, port: u16, database: String, user: String },
}

impl PostgresSettings {
    pub fn from_env(env: &Env) -> Result<Self, ConfigError> {
        let login = match env.get("DATABASE_AUTH").map(|v| v.trim().to_ascii_lowercase()) {
            Some(auth) if auth == "iam" => PostgresLogin::Iam {
                host: env.required("DATABASE_HOST", "the RDS Proxy (or instance) endpoint")?,
                port: env.parsed_or("DATABASE_PORT", 5432u16)?,
                database: env.required("DATABASE_NAME", "the database name")?,
                user: env.required("DATABASE_USER", "the database user IAM logs in as")?,
            },
            Some(auth) if auth != "password" => {
                return Err(ConfigError::Malformed { name: "DATABASE_AUTH", reason: format!("{auth:?} is neither \"iam\" nor \"password\"") });
            }
            _ => {
                let url = env.required("DATABASE_URL", "postgres://user:password@host:5432/database")?;
                if !(url.starts_with("postgres://") || url.starts_with("postgresql://")) {
                    return Err(ConfigError::Malformed { name: "DATABASE_URL", reason: "must start with postgres:// or postgresql://".into() });
                }
                PostgresLogin::Url(Secret::new(url))
            }
        };
        let max_connections = env.parsed_or("DATABASE_MAX_CONNECTIONS", 5u32)?;
        if max_connections == 0 {
            return Err(ConfigError::Malformed { name: "DATABASE_MAX_CONNECTIONS", reason: "must be at least 1".into() });
        }
        Ok(Self { login, max_connections, connect_timeout: env.seconds_or("DATABASE_CONNECT_TIMEOUT_SECS", Duration::from_secs(5))? })
    }

    /// Settings that log in with a connection URL.
    pub fn from_url(url: &str, max_connections: u32, connect_timeout: Duration) -> Self {
        Self { login: PostgresLogin::Url(Secret::new(url.to_owned())), max_connections, connect_timeout }
    }
}

/// S3: the images bucket.
#[derive(Clone, Debug)]
pub struct S3Settings {
    pub images_bucket: String,
    /// Path-style addressing (`endpoint/bucket/key`), which S3-compatible
    /// servers need; AWS itself uses virtual-hosted style.
    pub force_path_style: bool,
    /// `S3_PRESIGN_ENDPOINT_URL`: where clients of presigned URLs reach S3
    /// when that is not where this process does (locally, the CORS front
    /// nginx puts before the S3 stand-in for browsers). Unset in AWS.
    pub presign_endpoint: Option<String>,
}

impl S3Settings {
    pub fn from_env(env: &Env) -> Result<Self, ConfigError> {
        let images_bucket = env.required("IMAGES_BUCKET", "name of the S3 bucket holding uploaded images")?;
        validate_bucket_name("IMAGES_BUCKET", &images_bucket)?;
        let presign_endpoint = env.get("S3_PRESIGN_ENDPOINT_URL").filter(|v| !v.is_empty());
        if let Some(url) = &presign_endpoint
            && !(url.starts_with("http://") || url.starts_with("https://"))
        {
            return Err(ConfigError::Malformed { name: "S3_PRESIGN_ENDPOINT_URL", reason: "not an http(s) URL".into() });
        }
        Ok(Self { images_bucket, force_path_style: Self::force_path_style(env)?, presign_endpoint })
    }

    /// `S3_FORCE_PATH_STYLE`, read here only (also for processes that need
    /// an S3 client but no images bucket).
    pub fn force_path_style(env: &Env) -> Result<bool, ConfigError> {
        env.flag_or("S3_FORCE_PATH_STYLE", false)
    }
}

/// S3's bucket naming rules (the subset that matters for a typo).
fn validate_bucket_name(name: &'static str, bucket: &str) -> Result<(), ConfigError> {
    let ok_chars = bucket.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.');
    let ok_ends = bucket.bytes().next().is_some_and(|b| b.is_ascii_alphanumeric()) && bucket.bytes().last().is_some_and(|b| b.is_ascii_alphanumeric());
    if (3..=63).contains(&bucket.len()) && ok_chars && ok_ends {
        Ok(())
    } else {
        Err(ConfigError::Malformed { name, reason: format!("{bucket:?} is not a valid bucket name (3-63 of a-z 0-9 . -)") })
    }
}

/// DynamoDB: hot copy of results and the result cache.
#[derive(Clone, Debug)]
pub struct DynamoSettings {
    pub results_table: String,
    /// How long one DynamoDB call attempt may take before the SDK gives up
    /// on it (and retries, up to its standard three attempts). Without it a
    /// server that accepts the connection and never answers holds the
    /// caller until Lambda's own timeout; with it the API's reads fall back
    /// to PostgreSQL within a few seconds.
    pub attempt_timeout: Duration,
}

impl DynamoSettings {
    pub fn from_env(env: &Env) -> Result<Self, ConfigError> {
        let results_table = env.required("RESULTS_TABLE", "name of the DynamoDB results table")?;
        let ok = (3..=255).contains(&results_table.len()) && results_table.bytes().all(|b| b.is_ascii_alphanumeric() || b"_-.".contains(&b));
        if !ok {
            return Err(ConfigError::Malformed {
                name: "RESULTS_TABLE",
                reason: format!("{results_table:?} is not a valid table name (3-255 of A-Z a-z 0-9 _ - .)"),
            });
        }
        let attempt_timeout = env.seconds_or("DYNAMODB_ATTEMPT_TIMEOUT_SECS", Duration::from_secs(1))?;
        if attempt_timeout.is_zero() {
            return Err(ConfigError::Malformed { name: "DYNAMODB_ATTEMPT_TIMEOUT_SECS", reason: "must be more than 0".into() });
        }
        Ok(Self { results_table, attempt_timeout })
    }
}

/// DocumentDB (MongoDB wire protocol): the warehouse.
#[derive(Clone, Debug)]
pub struct DocumentDbSettings {
    pub login: DocumentDbLogin,
    pub database: String,
}

/// How to reach DocumentDB.
#[derive(Clone, Debug)]
pub enum DocumentDbLogin {
    /// `DOCUMENTDB_URI`: `mongodb://user:password@host:27017/?tls=true&...`.
    Uri(Secret),
    /// `DOCUMENTDB_SECRET_ARN`: the cluster's Secrets Manager secret
    /// (`username`, `password`, `host`, `port`), read at start; TLS against
    /// the RDS CA bundle compiled into the binary.
    SecretArn(String),
}

impl DocumentDbSettings {
    pub fn from_env(env: &Env) -> Result<Self, ConfigError> {
        let login = match env.secret_arn("DOCUMENTDB_SECRET_ARN")? {
            Some(arn) => DocumentDbLogin::SecretArn(arn),
            None => {
                let uri = env.required("DOCUMENTDB_URI", "mongodb://user:password@host:27017/?tls=true (or DOCUMENTDB_SECRET_ARN)")?;
                if !(uri.starts_with("mongodb://") || uri.starts_with("mongodb+srv://")) {
                    return Err(ConfigError::Malformed { name: "DOCUMENTDB_URI", reason: "must start with mongodb://".into() });
                }
                DocumentDbLogin::Uri(Secret::new(uri))
            }
        };
        let database = env.get("DOCUMENTDB_DATABASE").unwrap_or_else(|| "cxr_warehouse".into());
        if database.is_empty() || database.len() > 63 || database.contains(['/', '\\', '.', ' ', '"', '$']) {
            return Err(ConfigError::Malformed { name: "DOCUMENTDB_DATABASE", reason: format!("{database:?} is not a valid database name") });
        }
        Ok(Self { login, database })
    }

    /// Settings that connect with a connection string.
    pub fn from_uri(uri: &str, database: &str) -> Self {
        Self { login: DocumentDbLogin::Uri(Secret::new(uri.to_owned())), database: database.to_owned() }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> Env {
        Env::from_map(pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect())
    }

    #[test]
    fn missing_variables_are_named() {
        let err = PostgresSettings::from_env(&env(&[])).unwrap_err();
        assert!(matches!(err, ConfigError::Missing { name: "DATABASE_URL", .. }));
        assert!(err.to_string().contains("DATABASE_URL"));
        let err = S3Settings::from_env(&env(&[("IMAGES_BUCKET", "  ")])).unwrap_err();
        assert!(matches!(err, ConfigError::Missing { name: "IMAGES_BUCKET", .. }));
    }

    #[test]
    fn malformed_variables_are_named() {
        let e = env(&[("DATABASE_URL", "postgres://x@y/z"), ("DATABASE_MAX_CONNECTIONS", "many")]);
        let err = PostgresSettings::from_env(&e).unwrap_err();
        assert!(matches!(err, ConfigError::Malformed { name: "DATABASE_MAX_CONNECTIONS", .. }), "{err}");
        let err = S3Settings::from_env(&env(&[("IMAGES_BUCKET", "My_Bucket")])).unwrap_err();
        assert!(matches!(err, ConfigError::Malformed { name: "IMAGES_BUCKET", .. }));
        let e = env(&[("IMAGES_BUCKET", "images"), ("S3_FORCE_PATH_STYLE", "perhaps")]);
        assert!(matches!(S3Settings::from_env(&e), Err(ConfigError::Malformed { name: "S3_FORCE_PATH_STYLE", .. })));
        let e = env(&[("DATABASE_URL", "postgres://x@y/z"), ("DATABASE_CONNECT_TIMEOUT_SECS", "-1")]);
        assert!(matches!(PostgresSettings::from_env(&e), Err(ConfigError::Malformed { name: "DATABASE_CONNECT_TIMEOUT_SECS", .. })));
        for timeout in ["0", "-1", "soon"] {
            let e = env(&[("RESULTS_TABLE", "results"), ("DYNAMODB_ATTEMPT_TIMEOUT_SECS", timeout)]);
            assert!(matches!(DynamoSettings::from_env(&e), Err(ConfigError::Malformed { name: "DYNAMODB_ATTEMPT_TIMEOUT_SECS", .. })), "{timeout}");
        }
    }

    #[test]
    fn defaults_apply_and_secrets_stay_out_of_debug_output() {
        let s = PostgresSettings::from_env(&env(&[("DATABASE_URL", "postgres://u:hunter2@h/db")])).expect("valid");
        assert_eq!(s.max_connections, 5);
        assert_eq!(s.connect_timeout, Duration::from_secs(5));
        assert!(!format!("{s:?}").contains("hunter2"));
        let d = DocumentDbSettings::from_env(&env(&[("DOCUMENTDB_URI", "mongodb://h:1")])).expect("valid");
        assert_eq!(d.database, "cxr_warehouse");
        let t = DynamoSettings::from_env(&env(&[("RESULTS_TABLE", "results")])).expect("valid");
        assert_eq!(t.attempt_timeout, Duration::from_secs(1));
        let t = DynamoSettings::from_env(&env(&[("RESULTS_TABLE", "results"), ("DYNAMODB_ATTEMPT_TIMEOUT_SECS", "0.25")])).expect("valid");
        assert_eq!(t.attempt_timeout, Duration::from_millis(250));
    }

    #[test]
    fn in_aws_the_logins_name_no_password() {
        let e = env(&[("DATABASE_AUTH", "iam"), ("DATABASE_HOST", "proxy.example"), ("DATABASE_NAME", "cxr"), ("DATABASE_USER", "cxr")]);
        let s = PostgresSettings::from_env(&e).expect("valid");
        assert!(matches!(s.login, PostgresLogin::Iam { ref host, port: 5432, .. } if host == "proxy.example"));
        let e = env(&[("DATABASE_AUTH", "iam"), ("DATABASE_NAME", "cxr"), ("DATABASE_USER", "cxr")]);
        assert!(matches!(PostgresSettings::from_env(&e), Err(ConfigError::Missing { name: "DATABASE_HOST", .. })));
        let e = env(&[("DATABASE_AUTH", "kerberos"), ("DATABASE_URL", "postgres://x@y/z")]);
        assert!(matches!(PostgresSettings::from_env(&e), Err(ConfigError::Malformed { name: "DATABASE_AUTH", .. })));
        let arn = "arn:aws:secretsmanager:eu-west-1:123456789012:secret:cxr/dev/documentdb-AbCdEf";
        let d = DocumentDbSettings::from_env(&env(&[("DOCUMENTDB_SECRET_ARN", arn)])).expect("valid");
        assert!(matches!(d.login, DocumentDbLogin::SecretArn(ref a) if a == arn));
        let err = DocumentDbSettings::from_env(&env(&[("DOCUMENTDB_SECRET_ARN", "cxr/dev/documentdb")])).unwrap_err();
        assert!(matches!(err, ConfigError::Malformed { name: "DOCUMENTDB_SECRET_ARN", .. }));
    }
}

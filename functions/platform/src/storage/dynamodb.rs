//! DynamoDB: the hot copy of study results and the result cache.
//!
//! Tables have a string partition key `pk` and a string sort key `sk`;
//! items are any serde type that carries both.
//!
//! An item is stored as its keys, its numeric `version` when it has one
//! (the attribute conditional puts compare), and the whole item as one JSON
//! string attribute `doc`. Items are only ever read whole by key, so
//! DynamoDB need not see their fields. One string instead of a map per
//! finding took about a fifth off the CPU time of a hot-copy read on both
//! sides (the SDK's parse into `AttributeValue` maps and serde_dynamo's
//! walk of them; the server's per-attribute work), measured with
//! `benches/api-load`. Items written one attribute per field (before the
//! `doc` attribute) are still read.

use std::time::Duration;

use aws_config::SdkConfig;
use aws_sdk_dynamodb::config::http::HttpResponse;
use aws_sdk_dynamodb::config::timeout::TimeoutConfig;
use aws_sdk_dynamodb::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_dynamodb::types::{AttributeDefinition, AttributeValue, BillingMode, KeySchemaElement, KeyType, ReturnValue, ScalarAttributeType, TableStatus};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::Serialize;
use serde::de::DeserializeOwned;

use super::SdkFailure;
use crate::config::DynamoSettings;

pub const PARTITION_KEY: &str = "pk";
pub const SORT_KEY: &str = "sk";
/// The attribute holding the whole item as JSON.
pub const DOCUMENT: &str = "doc";
/// The numeric attribute [`PutCondition`]s compare.
pub const VERSION: &str = "version";

#[derive(Debug, thiserror::Error)]
pub enum DynamoError {
    #[error("the write's condition does not hold (the item exists or was changed meanwhile)")]
    ConditionFailed,
    #[error("table {0} does not exist")]
    TableNotFound(String),
    #[error("DynamoDB is unreachable: {0}")]
    Unavailable(String),
    #[error("DynamoDB is throttling requests: {0}")]
    Throttled(String),
    #[error("item does not match its type: {0}")]
    Serialization(String),
    #[error("page token is not one this table issued")]
    BadPageToken,
    #[error("table {table} did not become active within {waited:?}")]
    NotActive { table: String, waited: Duration },
    #[error("DynamoDB answered {status} {code}: {message}")]
    Service { status: u16, code: String, message: String },
    #[error("DynamoDB request failed: {0}")]
    Other(String),
}

impl DynamoError {
    fn from_failure(failure: SdkFailure, table: &str) -> Self {
        match failure {
            SdkFailure::Unreachable(m) => Self::Unavailable(m),
            SdkFailure::Service { status, code, message } => match code.as_deref() {
                Some("ConditionalCheckFailedException") => Self::ConditionFailed,
                Some("ResourceNotFoundException") => Self::TableNotFound(table.to_owned()),
                Some("ProvisionedThroughputExceededException" | "ThrottlingException" | "RequestLimitExceeded") => Self::Throttled(message),
                _ => Self::Service { status, code: code.unwrap_or_default(), message },
            },
            SdkFailure::Other(m) => Self::Other(m),
        }
    }
}

/// What a conditional put requires of the item already stored.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PutCondition {
    /// No item with this key exists.
    Absent,
    /// The stored item's numeric `version` attribute equals this value
    /// (optimistic concurrency: the new item carries the next version).
    VersionIs(u64),
    /// No item exists, or the stored item's `version` is lower than this
    /// (a newer copy is never replaced by an older one).
    AbsentOrOlderThan(u64),
}

/// How to read a partition.
#[derive(Clone, Debug, Default)]
pub struct QueryOptions {
    /// Only items whose sort key starts with this.
    pub sort_key_prefix: Option<String>,
    /// At most this many items (DynamoDB may return fewer per page).
    pub limit: Option<u32>,
    /// Descending sort-key order (newest first for time-ordered keys).
    pub descending: bool,
    /// Continue after the page this token came from.
    pub page_token: Option<String>,
}

#[derive(Clone, Debug)]
pub struct Page<T> {
    pub items: Vec<T>,
    /// Present when there may be more items.
    pub next_page_token: Option<String>,
}

/// One DynamoDB table with `pk`/`sk` string keys.
#[derive(Clone, Debug)]
pub struct DynamoTable {
    client: aws_sdk_dynamodb::Client,
    name: String,
}

fn key(pk: &str, sk: &str) -> std::collections::HashMap<String, AttributeValue> {
    [(PARTITION_KEY.to_owned(), AttributeValue::S(pk.to_owned())), (SORT_KEY.to_owned(), AttributeValue::S(sk.to_owned()))].into()
}

/// An item that does not convert to or from what is stored.
fn invalid(reason: impl std::fmt::Display) -> DynamoError {
    DynamoError::Serialization(reason.to_string())
}

/// An item as stored: keys, `version` if it has one, and `doc`.
fn encode<T: Serialize>(item: &T) -> Result<std::collections::HashMap<String, AttributeValue>, DynamoError> {
    /// What DynamoDB must see of an item beside its document.
    #[derive(serde::Deserialize)]
    struct Attributes {
        pk: String,
        sk: String,
        version: Option<serde_json::Number>,
    }
    // Serialised once, as the document; the attributes are read back from it.
    let document = serde_json::to_string(item).map_err(invalid)?;
    let attributes: Attributes = serde_json::from_str(&document).map_err(invalid)?;
    let mut stored = key(&attributes.pk, &attributes.sk);
    if let Some(version) = attributes.version {
        let version = version.as_u64().ok_or_else(|| invalid(format!("`{VERSION}` is not a whole number")))?;
        stored.insert(VERSION.to_owned(), AttributeValue::N(version.to_string()));
    }
    stored.insert(DOCUMENT.to_owned(), AttributeValue::S(document));
    Ok(stored)
}

/// The item back from what [`encode`] stored, or from one attribute per
/// field as items were stored before `doc`.
fn decode<T: DeserializeOwned>(mut stored: std::collections::HashMap<String, AttributeValue>) -> Result<T, DynamoError> {
    match stored.remove(DOCUMENT) {
        Some(AttributeValue::S(json)) => serde_json::from_str(&json).map_err(invalid),
        Some(_) => Err(invalid(format!("`{DOCUMENT}` is not a string"))),
        None => serde_dynamo::from_item(stored).map_err(invalid),
    }
}

impl DynamoTable {
    pub fn new(sdk: &SdkConfig, settings: &DynamoSettings) -> Self {
        let timeouts = TimeoutConfig::builder().operation_attempt_timeout(settings.attempt_timeout).build();
        let config = aws_sdk_dynamodb::config::Builder::from(sdk).timeout_config(timeouts).build();
        Self::from_client(aws_sdk_dynamodb::Client::from_conf(config), settings.results_table.clone())
    }

    pub fn from_client(client: aws_sdk_dynamodb::Client, name: impl Into<String>) -> Self {
        Self { client, name: name.into() }
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    fn sdk_error<E>(&self, err: SdkError<E, HttpResponse>) -> DynamoError
    where
        E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
    {
        DynamoError::from_failure(SdkFailure::from_sdk(err), &self.name)
    }

    /// Reads one item, strongly consistent (a result just written is seen).
    pub async fn get<T: DeserializeOwned>(&self, pk: &str, sk: &str) -> Result<Option<T>, DynamoError> {
        let out = self.client.get_item().table_name(&self.name).set_key(Some(key(pk, sk))).consistent_read(true).send().await.map_err(|e| self.sdk_error(e))?;
        out.item.map(decode).transpose()
    }

    /// Writes an item, replacing any item with the same key.
    pub async fn put<T: Serialize>(&self, item: &T) -> Result<(), DynamoError> {
        self.put_inner(item, None).await
    }

    /// Writes an item only if `condition` holds; otherwise
    /// [`DynamoError::ConditionFailed`] and nothing is written.
    pub async fn put_if<T: Serialize>(&self, item: &T, condition: PutCondition) -> Result<(), DynamoError> {
        self.put_inner(item, Some(condition)).await
    }

    async fn put_inner<T: Serialize>(&self, item: &T, condition: Option<PutCondition>) -> Result<(), DynamoError> {
        let mut request = self.client.put_item().table_name(&self.name).set_item(Some(encode(item)?));
        request = match condition {
            None => request,
            Some(PutCondition::Absent) => request.condition_expression("attribute_not_exists(#pk)").expression_attribute_names("#pk", PARTITION_KEY),
            Some(PutCondition::VersionIs(v)) => request
                .condition_expression("#version = :expected")
                .expression_attribute_names("#version", VERSION)
                .expression_attribute_values(":expected", AttributeValue::N(v.to_string())),
            Some(PutCondition::AbsentOrOlderThan(v)) => request
                .condition_expression("attribute_not_exists(#pk) OR #version < :new")
                .expression_attribute_names("#pk", PARTITION_KEY)
                .expression_attribute_names("#version", VERSION)
                .expression_attribute_values(":new", AttributeValue::N(v.to_string())),
        };
        request.send().await.map_err(|e| self.sdk_error(e))?;
        Ok(())
    }

    /// Deletes one item; returns whether it existed.
    pub async fn delete(&self, pk: &str, sk: &str) -> Result<bool, DynamoError> {
        let out = self
            .client
            .delete_item()
            .table_name(&self.name)
            .set_key(Some(key(pk, sk)))
            .return_values(ReturnValue::AllOld)
            .send()
            .await
            .map_err(|e| self.sdk_error(e))?;
        Ok(out.attributes.is_some_and(|a| !a.is_empty()))
    }

    /// Reads one page of a partition in sort-key order.
    pub async fn query<T: DeserializeOwned>(&self, pk: &str, options: &QueryOptions) -> Result<Page<T>, DynamoError> {
        let mut request = self
            .client
            .query()
            .table_name(&self.name)
            .expression_attribute_names("#pk", PARTITION_KEY)
            .expression_attribute_values(":pk", AttributeValue::S(pk.to_owned()))
            .scan_index_forward(!options.descending)
            .consistent_read(true);
        request = match &options.sort_key_prefix {
            Some(prefix) => request
                .key_condition_expression("#pk = :pk AND begins_with(#sk, :prefix)")
                .expression_attribute_names("#sk", SORT_KEY)
                .expression_attribute_values(":prefix", AttributeValue::S(prefix.clone())),
            None => request.key_condition_expression("#pk = :pk"),
        };
        if let Some(limit) = options.limit {
            request = request.limit(i32::try_from(limit.max(1)).unwrap_or(i32::MAX));
        }
        if let Some(token) = &options.page_token {
            request = request.set_exclusive_start_key(Some(decode_page_token(token, pk)?));
        }
        let out = request.send().await.map_err(|e| self.sdk_error(e))?;
        let items = out.items.unwrap_or_default().into_iter().map(decode).collect::<Result<_, _>>()?;
        let next_page_token = out.last_evaluated_key.filter(|k| !k.is_empty()).and_then(|k| encode_page_token(&k));
        Ok(Page { items, next_page_token })
    }

    /// Creates the table (on-demand billing) if it does not exist and waits
    /// until it is active. In AWS the SAM template owns the table; this is
    /// for provisioning a fresh local stack.
    pub async fn create_if_absent(&self) -> Result<(), DynamoError> {
        let attribute = |name: &str| AttributeDefinition::builder().attribute_name(name).attribute_type(ScalarAttributeType::S).build();
        let schema = |name: &str, kind| KeySchemaElement::builder().attribute_name(name).key_type(kind).build();
        let created = self
            .client
            .create_table()
            .table_name(&self.name)
            .billing_mode(BillingMode::PayPerRequest)
            .attribute_definitions(attribute(PARTITION_KEY).map_err(|e| DynamoError::Other(e.to_string()))?)
            .attribute_definitions(attribute(SORT_KEY).map_err(|e| DynamoError::Other(e.to_string()))?)
            .key_schema(schema(PARTITION_KEY, KeyType::Hash).map_err(|e| DynamoError::Other(e.to_string()))?)
            .key_schema(schema(SORT_KEY, KeyType::Range).map_err(|e| DynamoError::Other(e.to_string()))?)
            .send()
            .await;
        match created {
            Ok(_) => {}
            Err(err) => match SdkFailure::from_sdk(err) {
                SdkFailure::Service { code: Some(code), .. } if code == "ResourceInUseException" => {}
                failure => return Err(DynamoError::from_failure(failure, &self.name)),
            },
        }
        self.wait_until_active(Duration::from_secs(30)).await
    }

    /// Checks the table exists and is active.
    pub async fn check_table(&self) -> Result<(), DynamoError> {
        match self.status().await? {
            Some(TableStatus::Active) => Ok(()),
            _ => Err(DynamoError::NotActive { table: self.name.clone(), waited: Duration::ZERO }),
        }
    }

    async fn status(&self) -> Result<Option<TableStatus>, DynamoError> {
        let out = self.client.describe_table().table_name(&self.name).send().await.map_err(|e| self.sdk_error(e))?;
        Ok(out.table.and_then(|t| t.table_status))
    }

    async fn wait_until_active(&self, timeout: Duration) -> Result<(), DynamoError> {
        let started = std::time::Instant::now();
        loop {
            if self.status().await? == Some(TableStatus::Active) {
                return Ok(());
            }
            if started.elapsed() > timeout {
                return Err(DynamoError::NotActive { table: self.name.clone(), waited: timeout });
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

// A page token is the last evaluated key, pk and sk, as URL-safe base64 of
// JSON, so it can travel in a query string.
fn encode_page_token(last: &std::collections::HashMap<String, AttributeValue>) -> Option<String> {
    let pk = last.get(PARTITION_KEY)?.as_s().ok()?;
    let sk = last.get(SORT_KEY)?.as_s().ok()?;
    let json = serde_json::to_vec(&[pk, sk]).ok()?;
    Some(URL_SAFE_NO_PAD.encode(json))
}

fn decode_page_token(token: &str, pk: &str) -> Result<std::collections::HashMap<String, AttributeValue>, DynamoError> {
    let json = URL_SAFE_NO_PAD.decode(token).map_err(|_| DynamoError::BadPageToken)?;
    let [token_pk, sk]: [String; 2] = serde_json::from_slice(&json).map_err(|_| DynamoError::BadPageToken)?;
    // A token from another partition would silently skip items.
    if token_pk != pk {
        return Err(DynamoError::BadPageToken);
    }
    Ok(key(&token_pk, &sk))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn page_tokens_round_trip_and_are_bound_to_their_partition() {
        let token = encode_page_token(&key("OWNER#a", "STUDY#2026")).expect("token");
        assert_eq!(decode_page_token(&token, "OWNER#a").expect("decodes"), key("OWNER#a", "STUDY#2026"));
        assert!(matches!(decode_page_token(&token, "OWNER#b"), Err(DynamoError::BadPageToken)));
        assert!(matches!(decode_page_token("%%%", "OWNER#a"), Err(DynamoError::BadPageToken)));
    }

    #[derive(Debug, PartialEq, serde::Serialize, serde::Deserialize)]
    struct Copy {
        pk: String,
        sk: String,
        version: u64,
        findings: Vec<(String, f32)>,
    }

    fn copy() -> Copy {
        Copy { pk: "study#1".into(), sk: "snapshot".into(), version: 7, findings: vec![("Effusion".into(), 0.1 + 0.2), ("Mass".into(), f32::MIN_POSITIVE)] }
    }

    #[test]
    fn items_are_stored_as_keys_version_and_one_document() {
        let stored = encode(&copy()).expect("encodes");
        let mut names: Vec<&str> = stored.keys().map(String::as_str).collect();
        names.sort_unstable();
        assert_eq!(names, [DOCUMENT, PARTITION_KEY, SORT_KEY, VERSION]);
        assert_eq!(stored[VERSION], AttributeValue::N("7".into()));
        assert_eq!(decode::<Copy>(stored).expect("decodes"), copy(), "floats round-trip exactly");
    }

    #[test]
    fn items_stored_one_attribute_per_field_are_still_read() {
        let legacy: std::collections::HashMap<String, AttributeValue> = serde_dynamo::to_item(copy()).expect("legacy item");
        assert!(!legacy.contains_key(DOCUMENT));
        assert_eq!(decode::<Copy>(legacy).expect("decodes"), copy());
    }

    #[test]
    fn items_without_string_keys_or_with_a_fractional_version_are_refused() {
        #[derive(serde::Serialize)]
        struct NoSortKey {
            pk: String,
        }
        #[derive(serde::Serialize)]
        struct Fractional {
            pk: String,
            sk: String,
            version: f64,
        }
        assert!(matches!(encode(&NoSortKey { pk: "p".into() }), Err(DynamoError::Serialization(m)) if m.contains("`sk`")));
        assert!(matches!(encode(&Fractional { pk: "p".into(), sk: "s".into(), version: 1.5 }), Err(DynamoError::Serialization(m)) if m.contains("version")));
        let mut wrong = encode(&copy()).expect("encodes");
        wrong.insert(DOCUMENT.into(), AttributeValue::N("1".into()));
        assert!(matches!(decode::<Copy>(wrong), Err(DynamoError::Serialization(_))));
    }
}

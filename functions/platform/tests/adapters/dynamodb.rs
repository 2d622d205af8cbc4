//! The DynamoDB adapter against the local DynamoDB server (dynalite).

use std::time::{Duration, Instant};

use aws_sdk_dynamodb::config::retry::RetryConfig;
use cxr_platform::config::DynamoSettings;
use cxr_platform::storage::dynamodb::{DynamoError, DynamoTable, PutCondition, QueryOptions};
use cxr_platform::testing::{LocalStack, closed_port, silent_port};
use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
struct Result_ {
    pk: String,
    sk: String,
    version: u64,
    status: String,
    probabilities: Vec<f32>,
    heatmap_key: Option<String>,
}

fn item(pk: &str, sk: &str, version: u64, status: &str) -> Result_ {
    Result_ { pk: pk.into(), sk: sk.into(), version, status: status.into(), probabilities: vec![0.25, 0.5], heatmap_key: None }
}

#[tokio::test]
async fn put_get_delete_round_trip_typed_items() {
    let table = LocalStack::get().fresh_table().await;
    table.check_table().await.expect("table is active");
    let stored = item("STUDY#1", "RESULT", 1, "done");
    table.put(&stored).await.expect("put");
    assert_eq!(table.get::<Result_>("STUDY#1", "RESULT").await.expect("get"), Some(stored.clone()));
    assert_eq!(table.get::<Result_>("STUDY#1", "OTHER").await.expect("get"), None);

    // A plain put replaces.
    let replaced = Result_ { heatmap_key: Some("heatmaps/1.png".into()), ..stored };
    table.put(&replaced).await.expect("put");
    assert_eq!(table.get::<Result_>("STUDY#1", "RESULT").await.expect("get"), Some(replaced));

    assert!(table.delete("STUDY#1", "RESULT").await.expect("delete"), "existed");
    assert!(!table.delete("STUDY#1", "RESULT").await.expect("delete"), "gone");
}

#[tokio::test]
async fn conditional_puts_detect_conflicts() {
    let table = LocalStack::get().fresh_table().await;
    let first = item("CACHE#abc", "MODEL#densenet@1", 1, "done");
    table.put_if(&first, PutCondition::Absent).await.expect("first write");
    let second = item("CACHE#abc", "MODEL#densenet@1", 1, "other");
    assert!(matches!(table.put_if(&second, PutCondition::Absent).await, Err(DynamoError::ConditionFailed)));
    assert_eq!(table.get::<Result_>("CACHE#abc", "MODEL#densenet@1").await.expect("get"), Some(first));

    // Optimistic concurrency: only the writer that read version 1 wins.
    let update = item("CACHE#abc", "MODEL#densenet@1", 2, "updated");
    table.put_if(&update, PutCondition::VersionIs(1)).await.expect("version 1 -> 2");
    let stale = item("CACHE#abc", "MODEL#densenet@1", 2, "stale");
    assert!(matches!(table.put_if(&stale, PutCondition::VersionIs(1)).await, Err(DynamoError::ConditionFailed)));
    assert_eq!(table.get::<Result_>("CACHE#abc", "MODEL#densenet@1").await.expect("get"), Some(update));
}

#[tokio::test]
async fn query_pages_through_a_partition_in_order() {
    let table = LocalStack::get().fresh_table().await;
    for day in 1..=5 {
        table.put(&item("OWNER#alice", &format!("STUDY#2026-11-0{day}"), 1, "done")).await.expect("put");
    }
    table.put(&item("OWNER#alice", "PROFILE", 1, "x")).await.expect("put");
    table.put(&item("OWNER#bob", "STUDY#2026-11-01", 1, "done")).await.expect("put");

    let mut options = QueryOptions { sort_key_prefix: Some("STUDY#".into()), limit: Some(2), descending: true, page_token: None };
    let mut seen = Vec::new();
    loop {
        let page = table.query::<Result_>("OWNER#alice", &options).await.expect("query");
        assert!(page.items.len() <= 2);
        seen.extend(page.items.into_iter().map(|i| i.sk));
        match page.next_page_token {
            Some(token) => options.page_token = Some(token),
            None => break,
        }
    }
    let expected: Vec<String> = (1..=5).rev().map(|d| format!("STUDY#2026-11-0{d}")).collect();
    assert_eq!(seen, expected, "newest first, all pages, no other partition or prefix");

    // A token from one partition is refused on another.
    let first = table.query::<Result_>("OWNER#alice", &QueryOptions { limit: Some(1), ..Default::default() }).await.expect("query");
    let token = first.next_page_token.expect("more items");
    let wrong = QueryOptions { page_token: Some(token), ..Default::default() };
    assert!(matches!(table.query::<Result_>("OWNER#bob", &wrong).await, Err(DynamoError::BadPageToken)));
}

#[tokio::test]
async fn items_stored_one_attribute_per_field_are_read_and_replaced_by_newer_versions() {
    let stack = LocalStack::get();
    let table = stack.fresh_table().await;
    // As items were written before the `doc` attribute.
    let legacy = item("STUDY#9", "snapshot", 3, "done");
    let attributes: std::collections::HashMap<String, aws_sdk_dynamodb::types::AttributeValue> = serde_dynamo::to_item(&legacy).expect("attributes");
    stack.dynamodb_client().put_item().table_name(table.name()).set_item(Some(attributes)).send().await.expect("raw put");
    assert_eq!(table.get::<Result_>("STUDY#9", "snapshot").await.expect("get"), Some(legacy.clone()));

    // Conditions compare the same top-level `version` in both layouts.
    let older = item("STUDY#9", "snapshot", 2, "older");
    assert!(matches!(table.put_if(&older, PutCondition::AbsentOrOlderThan(2)).await, Err(DynamoError::ConditionFailed)));
    let newer = item("STUDY#9", "snapshot", 4, "newer");
    table.put_if(&newer, PutCondition::AbsentOrOlderThan(4)).await.expect("newer replaces");
    assert_eq!(table.get::<Result_>("STUDY#9", "snapshot").await.expect("get"), Some(newer));
}

#[tokio::test]
async fn items_of_the_wrong_shape_are_a_typed_error() {
    let table = LocalStack::get().fresh_table().await;
    #[derive(Serialize)]
    struct Other {
        pk: String,
        sk: String,
        status: u32,
    }
    table.put(&Other { pk: "p".into(), sk: "s".into(), status: 7 }).await.expect("put");
    assert!(matches!(table.get::<Result_>("p", "s").await, Err(DynamoError::Serialization(_))));
}

#[tokio::test]
async fn missing_table_and_unreachable_server_are_clear_errors() {
    let stack = LocalStack::get();
    let missing = DynamoTable::from_client(stack.dynamodb_client(), "no_such_table");
    match missing.get::<Result_>("a", "b").await {
        Err(e @ DynamoError::TableNotFound(_)) => assert!(e.to_string().contains("no_such_table")),
        other => panic!("expected TableNotFound, got {other:?}"),
    }

    let config = aws_sdk_dynamodb::config::Builder::from(&stack.sdk_config()).endpoint_url(format!("http://127.0.0.1:{}", closed_port())).build();
    let down = DynamoTable::from_client(aws_sdk_dynamodb::Client::from_conf(config), "results");
    match down.put(&item("a", "b", 1, "x")).await {
        Err(e @ DynamoError::Unavailable(_)) => assert!(e.to_string().contains("unreachable")),
        other => panic!("expected Unavailable, got {other:?}"),
    }
}

#[tokio::test]
async fn a_server_that_never_answers_is_unavailable_after_the_attempt_timeouts() {
    let stack = LocalStack::get();
    let settings = DynamoSettings { results_table: "results".into(), attempt_timeout: Duration::from_millis(200) };
    // Standard retries, as `aws_config::defaults` gives the functions (the
    // stack's test configuration has none).
    let sdk = stack.sdk_config_at(&format!("http://127.0.0.1:{}", silent_port())).into_builder().retry_config(RetryConfig::standard()).build();
    let hung = DynamoTable::new(&sdk, &settings);
    let started = Instant::now();
    match hung.get::<Result_>("a", "b").await {
        Err(e @ DynamoError::Unavailable(_)) => assert!(e.to_string().contains("timeout"), "{e}"),
        other => panic!("expected Unavailable, got {other:?}"),
    }
    // Three attempts of 200 ms each (timeouts are retried) and the backoff
    // between them; without the attempt timeout the call never returns.
    let took = started.elapsed();
    assert!((Duration::from_millis(600)..Duration::from_secs(10)).contains(&took), "took {took:?}");
}

//! The DocumentDB adapter against the local MongoDB-wire server (SecantusDB).

use std::time::{Duration, Instant};

use cxr_platform::config::DocumentDbSettings;
use cxr_platform::storage::documentdb::{UpsertCounts, Warehouse, WarehouseError};
use cxr_platform::testing::{LocalStack, closed_port};
use mongodb::bson::doc;
use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
struct StudyDoc {
    #[serde(rename = "_id")]
    id: String,
    owner: String,
    labels: Vec<String>,
    accession: Option<String>,
    revision: i32,
}

fn study(id: &str, labels: &[&str], revision: i32) -> StudyDoc {
    StudyDoc { id: id.into(), owner: "alice".into(), labels: labels.iter().map(|l| l.to_string()).collect(), accession: Some(format!("ACC-{id}")), revision }
}

#[tokio::test]
async fn upserts_are_idempotent() {
    let warehouse = LocalStack::get().fresh_warehouse().await;
    let studies = warehouse.collection::<StudyDoc>("studies");
    let a = study("a", &["Cardiomegaly"], 1);
    assert_eq!(studies.upsert("a", &a).await.expect("insert"), UpsertCounts { inserted: 1, matched: 0, modified: 0 });
    assert_eq!(studies.upsert("a", &a).await.expect("again"), UpsertCounts { inserted: 0, matched: 1, modified: 0 });
    let a2 = study("a", &["Cardiomegaly", "Effusion"], 2);
    assert_eq!(studies.upsert("a", &a2).await.expect("replace"), UpsertCounts { inserted: 0, matched: 1, modified: 1 });
    assert_eq!(studies.count(doc! {}).await.expect("count"), 1);
    assert_eq!(studies.get("a").await.expect("get"), Some(a2));
    assert_eq!(studies.get("zzz").await.expect("get"), None);
}

#[tokio::test]
async fn bulk_upserts_span_batches_and_rerun_to_the_same_collection() {
    let warehouse = LocalStack::get().fresh_warehouse().await;
    let studies = warehouse.collection::<StudyDoc>("studies");
    let docs: Vec<(String, StudyDoc)> =
        (0..1203).map(|i| (format!("s{i:05}"), study(&format!("s{i:05}"), if i % 3 == 0 { &["Nodule"] } else { &["ILD"] }, 1))).collect();
    let first = studies.upsert_many(&docs).await.expect("bulk");
    assert_eq!(first, UpsertCounts { inserted: 1203, matched: 0, modified: 0 });
    let again = studies.upsert_many(&docs).await.expect("rerun");
    assert_eq!(again, UpsertCounts { inserted: 0, matched: 1203, modified: 0 });
    assert_eq!(studies.count(doc! {}).await.expect("count"), 1203);

    // Changing some documents modifies exactly those.
    let changed: Vec<(String, StudyDoc)> = docs[..10].iter().map(|(id, d)| (id.clone(), StudyDoc { revision: 2, ..d.clone() })).collect();
    assert_eq!(studies.upsert_many(&changed).await.expect("bulk"), UpsertCounts { inserted: 0, matched: 10, modified: 10 });

    studies.ensure_index("labels", doc! { "labels": 1 }, false).await.expect("index");
    studies.ensure_index("labels", doc! { "labels": 1 }, false).await.expect("same index again is a no-op");
    let nodules = studies.find(doc! { "labels": "Nodule" }, Some(doc! { "_id": -1 }), Some(3)).await.expect("find");
    let ids: Vec<&str> = nodules.iter().map(|d| d.id.as_str()).collect();
    assert_eq!(ids, ["s01200", "s01197", "s01194"]);
    assert_eq!(studies.count(doc! { "labels": "Nodule" }).await.expect("count"), 401);
}

#[tokio::test]
async fn unique_indexes_reject_duplicates() {
    let warehouse = LocalStack::get().fresh_warehouse().await;
    let studies = warehouse.collection::<StudyDoc>("studies");
    studies.ensure_index("accession_unique", doc! { "accession": 1 }, true).await.expect("index");
    studies.insert(&study("a", &[], 1)).await.expect("insert");
    assert!(matches!(studies.insert(&study("a", &[], 1)).await, Err(WarehouseError::Duplicate(_))), "same _id");
    let mut clash = study("b", &[], 1);
    clash.accession = Some("ACC-a".into());
    assert!(matches!(studies.insert(&clash).await, Err(WarehouseError::Duplicate(_))), "same unique key");

    // In a bulk upsert the clash is reported, not swallowed, and the other
    // documents are still written.
    let batch = vec![("b".to_owned(), clash), ("c".to_owned(), study("c", &[], 1))];
    match studies.upsert_many(&batch).await {
        Err(WarehouseError::PartialWrite { attempted: 2, failed: 1, .. }) => {}
        other => panic!("expected a partial write, got {other:?}"),
    }
    assert!(studies.get("c").await.expect("get").is_some());
}

#[tokio::test]
async fn unreachable_server_fails_fast_with_a_clear_error() {
    let settings =
        DocumentDbSettings::from_uri(&format!("mongodb://127.0.0.1:{}/?directConnection=true&serverSelectionTimeoutMS=1000", closed_port()), "warehouse");
    let started = Instant::now();
    match Warehouse::connect(&settings).await {
        Err(e @ WarehouseError::Unavailable(_)) => assert!(e.to_string().contains("unreachable")),
        other => panic!("expected Unavailable, got {other:?}"),
    }
    assert!(started.elapsed() < Duration::from_secs(10));

    let bad = DocumentDbSettings::from_uri("mongodb://", "warehouse");
    assert!(matches!(Warehouse::connect(&bad).await, Err(WarehouseError::InvalidUri(_))));
}

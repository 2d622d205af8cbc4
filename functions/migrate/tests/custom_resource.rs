//! The migrations custom resource against the local PostgreSQL, with a
//! local server standing in for CloudFormation's presigned response URL.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::routing::put;
use cxr_migrate::{CustomResourceRequest, PHYSICAL_ID, answer_cloudformation};
use cxr_platform::config::Env;
use cxr_platform::testing::{LocalStack, closed_port, http::serve};
use serde_json::{Value, json};

type Answers = Arc<Mutex<Vec<(Option<String>, Value)>>>;

/// A stand-in for the response URL: keeps each answer and its content type.
async fn response_url() -> (String, Answers) {
    let answers = Answers::default();
    let app = Router::new()
        .route(
            "/response",
            put(|State(answers): State<Answers>, headers: HeaderMap, body: Bytes| async move {
                let content_type = headers.get("content-type").and_then(|v| v.to_str().ok()).map(str::to_owned);
                answers.lock().expect("answers").push((content_type, serde_json::from_slice(&body).unwrap_or(Value::Null)));
            }),
        )
        .with_state(answers.clone());
    (format!("{}/response", serve(app).await), answers)
}

fn request(kind: &str, url: &str) -> CustomResourceRequest {
    let mut request = json!({
        "RequestType": kind,
        "ResponseURL": url,
        "StackId": "arn:aws:cloudformation:us-east-1:123456789012:stack/cxr-platform-dev/1",
        "RequestId": "request-1",
        "ResourceType": "Custom::Migrations",
        "LogicalResourceId": "Migrations",
        "ResourceProperties": {"ServiceToken": "arn:aws:lambda:us-east-1:123456789012:function:cxr-migrate-dev", "CodeVersion": "3"},
    });
    if kind != "Create" {
        request["PhysicalResourceId"] = json!(PHYSICAL_ID);
        request["OldResourceProperties"] = json!({"CodeVersion": "2"});
    }
    serde_json::from_value(request).expect("a CloudFormation request")
}

fn env(pairs: &[(&str, String)]) -> Env {
    Env::from_map(pairs.iter().map(|(k, v)| (k.to_string(), v.clone())).collect::<HashMap<_, _>>())
}

#[tokio::test]
async fn creates_and_updates_migrate_and_answer_success_with_the_schema_version() {
    let stack = LocalStack::get();
    let url = stack.fresh_database_url().await;
    let (response, answers) = response_url().await;
    for kind in ["Create", "Update", "Update"] {
        answer_cloudformation(request(kind, &response), &env(&[("DATABASE_URL", url.clone())])).await.expect("answer delivered");
    }
    let answers = answers.lock().expect("answers").clone();
    assert_eq!(answers.len(), 3);
    for (content_type, answer) in &answers {
        assert_eq!(content_type, &None, "the presigned URL is signed without a content type");
        assert_eq!(answer["Status"], "SUCCESS", "{answer}");
        assert_eq!(answer["PhysicalResourceId"], PHYSICAL_ID);
        assert_eq!(answer["RequestId"], "request-1");
        assert_eq!(answer["LogicalResourceId"], "Migrations");
    }
    // Idempotent: the second and third runs leave the version the first set.
    let version = &answers[0].1["Data"]["SchemaVersion"];
    assert!(version.as_str().is_some_and(|v| v.parse::<i64>().is_ok_and(|v| v > 0)), "{version}");
    assert!(answers.iter().all(|(_, a)| &a["Data"]["SchemaVersion"] == version));
    let db = cxr_platform::storage::postgres::Database::connect(&stack.postgres_settings(&url)).await.expect("connect");
    assert_eq!(db.applied_migration_version().await.expect("version").map(|v| v.to_string()).as_deref(), version.as_str());
}

#[tokio::test]
async fn a_failure_fails_the_deploy_with_its_reason_and_a_delete_touches_nothing() {
    let (response, answers) = response_url().await;
    let unreachable = format!("postgres://cxr:x@127.0.0.1:{}/cxr", closed_port());
    let settings = [("DATABASE_URL", unreachable), ("DATABASE_CONNECT_TIMEOUT_SECS", "2".to_owned())];
    answer_cloudformation(request("Create", &response), &env(&settings)).await.expect("answer delivered");
    // No settings at all: still an answer, naming what is missing.
    answer_cloudformation(request("Update", &response), &env(&[])).await.expect("answer delivered");
    // A delete never connects (the database is retained with the stack).
    answer_cloudformation(request("Delete", &response), &env(&[])).await.expect("answer delivered");
    let answers = answers.lock().expect("answers").clone();
    assert_eq!(answers[0].1["Status"], "FAILED");
    assert!(answers[0].1["Reason"].as_str().is_some_and(|r| r.contains("PostgreSQL")), "{}", answers[0].1);
    assert_eq!(answers[1].1["Status"], "FAILED");
    assert!(answers[1].1["Reason"].as_str().is_some_and(|r| r.contains("DATABASE_URL")), "{}", answers[1].1);
    assert_eq!(answers[2].1["Status"], "SUCCESS");
}

#[tokio::test]
async fn an_answer_cloudformation_refuses_is_the_function_error() {
    let gone = format!("http://127.0.0.1:{}/response", closed_port());
    assert!(answer_cloudformation(request("Delete", &gone), &env(&[])).await.is_err());
}

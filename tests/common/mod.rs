//! The platform as the end-to-end tests drive it: the API and the
//! S3-triggered `infer` function on shared storage, as in AWS, the relay
//! standing in for S3's notifications (s3s-fs sends none), the real model
//! server (CPU, generated DenseNet-121 weights), all in this process on
//! random ports against the local stack.
#![allow(dead_code)]

use std::time::{Duration, Instant};

use cxr_api::app::{AppState, router};
use cxr_api::config::ApiSettings;
use cxr_infer::local_relay::LocalRelay;
use cxr_infer::{InferHandler, InferSettings};
use cxr_platform::domain::Owner;
use cxr_platform::storage::postgres::Database;
use cxr_platform::storage::results::ResultStore;
use cxr_platform::testing::{LocalStack, call, serve};
use serde_json::json;

pub const ALICE: &str = "e2e-alice-token-0123456789";
pub const BOB: &str = "e2e-bob-token-0123456789ab";

pub fn runtime_client(endpoint: &str) -> aws_sdk_sagemakerruntime::Client {
    aws_sdk_sagemakerruntime::Client::new(&LocalStack::get().sdk_config_at(endpoint))
}

/// The API and the S3-triggered `infer` function on shared storage, as in
/// AWS, the relay standing in for S3's notifications (s3s-fs sends none).
pub struct Platform {
    /// The API's base URL, `/v1` included.
    pub api: String,
    /// The model server's base URL.
    pub endpoint: String,
    pub db: Database,
    stop: tokio::sync::oneshot::Sender<()>,
    relay: tokio::task::JoinHandle<()>,
}

impl Platform {
    pub async fn start() -> Self {
        let stack = LocalStack::get();
        let model_dir = std::path::PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("generated-densenet121-xrv");
        let endpoint = cxr_model_server::in_process::serve_generated("densenet121-xrv", &model_dir).await.expect("model server");
        let db = stack.fresh_database().await;
        let images = stack.fresh_bucket().await;
        let results = ResultStore::new(stack.fresh_table().await);
        let tokens = [(ALICE, "alice"), (BOB, "bob")].into_iter().map(|(t, o)| (t.to_owned(), Owner::new(o).expect("owner"))).collect();
        let state = AppState::new(db.clone(), images.clone(), results.clone(), runtime_client(&endpoint), ApiSettings::for_tests(tokens, "cxr-e2e"));
        let api = format!("{}/v1", serve(router(state)).await);
        let handler = InferHandler::new(db.clone(), results, stack.s3_client(), runtime_client(&endpoint), InferSettings::for_endpoint("cxr-e2e"));
        let relay_images = images.clone();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let relay = tokio::spawn(async move {
            LocalRelay::new(&handler, relay_images)
                .run(Duration::from_millis(200), async {
                    let _ = stopped.await;
                })
                .await;
        });
        Self { api, endpoint, db, stop, relay }
    }

    pub async fn stop(self) {
        let _ = self.stop.send(());
        self.relay.await.expect("relay stopped");
    }

    /// `POST /v1/studies` for this PNG: the study's id and the answer.
    pub async fn create_png_study(&self, image: &[u8]) -> (String, serde_json::Value) {
        let body = json!({"content_type": "image/png", "content_length": image.len()});
        let (status, created) = call(reqwest::Method::POST, &format!("{}/studies", self.api), Some(ALICE), Some(body)).await;
        assert_eq!(status, 201, "{created}");
        (created["id"].as_str().expect("id").to_owned(), created)
    }

    /// Polls until the study is `done` (panics if it fails or takes 2 minutes).
    pub async fn wait_done(&self, id: &str) -> serde_json::Value {
        let study = self.wait_finished(id).await;
        assert_eq!(study["status"], "done", "the study failed: {study}");
        study
    }

    /// Polls until the study is `done` or `failed` (panics after 2 minutes).
    pub async fn wait_finished(&self, id: &str) -> serde_json::Value {
        let started = Instant::now();
        loop {
            let (status, study) = call(reqwest::Method::GET, &format!("{}/studies/{id}", self.api), Some(ALICE), None).await;
            assert_eq!(status, 200, "{study}");
            if matches!(study["status"].as_str(), Some("done" | "failed")) {
                return study;
            }
            assert!(started.elapsed() < Duration::from_secs(120), "no result after 2 minutes: {study}");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// `POST /v1/studies` for this file and its upload through the URL.
    pub async fn upload(&self, media_type: &str, image: &[u8]) -> (String, serde_json::Value) {
        let body = json!({"content_type": media_type, "content_length": image.len()});
        let (status, created) = call(reqwest::Method::POST, &format!("{}/studies", self.api), Some(ALICE), Some(body)).await;
        assert_eq!(status, 201, "{created}");
        let answer = put(&created["upload"], image.to_vec()).await;
        assert!(answer.status().is_success(), "{}", answer.text().await.unwrap_or_default());
        (created["id"].as_str().expect("id").to_owned(), created)
    }
}

/// PUT to a presigned URL with exactly the signed headers.
pub async fn put(upload: &serde_json::Value, body: Vec<u8>) -> reqwest::Response {
    try_put(&reqwest::Client::new(), upload, body).await.expect("PUT")
}

/// [`put`] through `client`, for callers that retry when no answer comes.
pub async fn try_put(client: &reqwest::Client, upload: &serde_json::Value, body: Vec<u8>) -> reqwest::Result<reqwest::Response> {
    let mut put = client.put(upload["url"].as_str().expect("url"));
    for header in upload["headers"].as_array().expect("headers") {
        put = put.header(header[0].as_str().expect("name"), header[1].as_str().expect("value"));
    }
    put.body(body).send().await
}

pub fn sample_image() -> Vec<u8> {
    std::fs::read(concat!(env!("CARGO_MANIFEST_DIR"), "/../events/images/synthetic-chest.png")).expect("sample image")
}

//! Local stand-in for S3 event notifications (s3s-fs sends none).
//!
//! In AWS, S3 invokes the `infer` Lambda with an ObjectCreated event when an
//! upload completes. Locally, `infer relay` does that job: every interval it
//! asks PostgreSQL for studies still waiting for their image or their
//! inference, asks S3 (HEAD, through the real SDK) whether the image is
//! there (s3s-fs writes to a temporary file and renames it, so an object
//! HEAD sees is complete), and hands the same handler the same event S3
//! would send. An
//! attempt that fails (endpoint down, study in flight elsewhere) is
//! delivered again after `retry_after`, as Lambda retries an asynchronous
//! invocation.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use aws_lambda_events::s3::S3Event;
use cxr_platform::domain::StudyStatus;
use cxr_platform::storage::s3::{ObjectKey, ObjectMeta, ObjectStore};
use percent_encoding::{AsciiSet, NON_ALPHANUMERIC};
use serde::Serialize;

use crate::s3_event::InferHandler;

/// What S3 leaves unescaped in event keys.
const KEY_ESCAPES: &AsciiSet = &NON_ALPHANUMERIC.remove(b'/').remove(b'-').remove(b'_').remove(b'.').remove(b'~');

/// The ObjectCreated event S3 sends for a PUT of this object.
pub fn object_created_event(bucket: &str, key: &str, object: &ObjectMeta) -> Result<S3Event, serde_json::Error> {
    let now = time::OffsetDateTime::now_utc().format(&time::format_description::well_known::Rfc3339).unwrap_or_default();
    serde_json::from_value(serde_json::json!({
        "Records": [{
            "eventVersion": "2.1",
            "eventSource": "aws:s3",
            "awsRegion": std::env::var("AWS_REGION").unwrap_or_else(|_| "us-east-1".into()),
            "eventTime": now,
            "eventName": "ObjectCreated:Put",
            "userIdentity": { "principalId": "local" },
            "requestParameters": { "sourceIPAddress": "127.0.0.1" },
            "responseElements": {},
            "s3": {
                "s3SchemaVersion": "1.0",
                "configurationId": "local-relay",
                "bucket": { "name": bucket, "ownerIdentity": { "principalId": "local" }, "arn": format!("arn:aws:s3:::{bucket}") },
                "object": {
                    "key": percent_encoding::utf8_percent_encode(key, KEY_ESCAPES).to_string(),
                    "size": object.size,
                    "eTag": object.e_tag.clone().unwrap_or_default().trim_matches('"'),
                    "sequencer": format!("{:016X}", now_nanos()),
                }
            }
        }]
    }))
}

fn now_nanos() -> u128 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos()).unwrap_or(0)
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct SweepReport {
    /// Events handed to the handler.
    pub delivered: u64,
    /// Of those, the ones the handler failed (delivered again later).
    pub retrying: u64,
}

pub struct LocalRelay<'a> {
    pub handler: &'a InferHandler,
    pub images: ObjectStore,
    /// Only studies changed this recently are looked at (abandoned ones
    /// are left alone).
    pub window: Duration,
    pub retry_after: Duration,
    attempts: HashMap<ObjectKey, Instant>,
}

impl<'a> LocalRelay<'a> {
    pub fn new(handler: &'a InferHandler, images: ObjectStore) -> Self {
        Self { handler, images, window: Duration::from_secs(3600), retry_after: Duration::from_secs(5), attempts: HashMap::new() }
    }

    /// One pass: delivers an event for every upload that arrived and for
    /// every earlier failed attempt that is due again.
    pub async fn sweep(&mut self) -> anyhow::Result<SweepReport> {
        let mut report = SweepReport::default();
        let waiting = self.handler.inference.db.awaiting_inference(self.window, 500).await?;
        for study in waiting {
            if study.s3_bucket != self.images.bucket() {
                continue;
            }
            if study.status != StudyStatus::Created && self.attempts.get(&study.s3_key).is_some_and(|at| at.elapsed() < self.retry_after) {
                continue;
            }
            let Some(object) = self.images.head(&study.s3_key).await? else { continue };
            let event = object_created_event(&study.s3_bucket, study.s3_key.as_str(), &object)?;
            self.attempts.insert(study.s3_key.clone(), Instant::now());
            report.delivered += 1;
            match self.handler.handle(&event).await {
                Ok(outcome) => tracing::info!(key = %study.s3_key, ?outcome, "S3 event delivered"),
                Err(err) => {
                    report.retrying += 1;
                    tracing::warn!(key = %study.s3_key, error = %err, "S3 event failed; delivering again later");
                }
            }
        }
        self.attempts.retain(|_, at| at.elapsed() < self.window);
        Ok(report)
    }

    /// Sweeps every `interval` until `stop` resolves.
    pub async fn run(mut self, interval: Duration, stop: impl std::future::Future<Output = ()>) {
        tokio::pin!(stop);
        loop {
            if let Err(err) = self.sweep().await {
                tracing::warn!(error = %err, "relay pass failed; trying again");
            }
            tokio::select! {
                () = &mut stop => return,
                () = tokio::time::sleep(interval) => {}
            }
        }
    }
}

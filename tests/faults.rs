//! The fault suite: during a load of distinct uploads through the running
//! local stack (its API, relay and model server, as `dev.sh up` starts
//! them), stop and restart one service at a time: PostgreSQL, the S3
//! stand-in, the DynamoDB stand-in, the model server. Afterwards every
//! upload is a study that is `done` (or `failed` with a reason, for the one
//! bad image of each round), nothing is lost or duplicated in PostgreSQL,
//! DynamoDB's hot copies agree with PostgreSQL, no API answer was a 5xx
//! other than a 503 with `Retry-After`, and the API process is the one
//! that was running before (it came back without a restart).
//!
//! It stops services the other tests share, so it is `#[ignore]`d and run
//! alone by the test command after everything else (`fault_tests` in
//! `infra/local/lib/tests.sh`). By hand, with the stack up:
//! `cargo nextest run -p cxr-end-to-end --test faults --run-ignored only --no-capture`
//! (the API's address and the suite's owner and token come from `.stack/env`).

mod common;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use cxr_platform::domain::{Owner, StudyId};
use cxr_platform::storage::dynamodb::DynamoTable;
use cxr_platform::storage::postgres::Database;
use cxr_platform::storage::results::{ResultStore, StudySnapshot};
use cxr_platform::testing::LocalStack;
use reqwest::StatusCode;
use serde_json::{Value, json};

/// Uploads per round: a new distinct image every `PACE`, from before the
/// fault until after the service is back, so uploads are in every stage
/// (being created, being uploaded, waiting for inference) while it is down.
/// At least `MIN_GOOD` good images, and one that cannot be read, sent while
/// the service is down.
const PACE: Duration = Duration::from_millis(400);
const MIN_GOOD: usize = 9;
/// The fault comes after this many uploads have started, and lasts this long
/// (plus the service's own stop and restart time).
const FAULT_AFTER: usize = 3;
// Longer than the API's wait for a PostgreSQL connection (5 s), so requests
// meet the outage instead of waiting it out.
const OUTAGE: Duration = Duration::from_secs(8);
/// Bounds: one upload's retries, and a round's wait for its results.
const UPLOAD_DEADLINE: Duration = Duration::from_secs(180);
const RESULTS_DEADLINE: Duration = Duration::from_secs(300);

const FAULTS: [&str; 4] = ["postgres", "s3", "dynamodb", "model"];

struct Target {
    api: String,
    token: String,
    owner: Owner,
    http: reqwest::Client,
}

/// What the API and S3 answered during a round.
#[derive(Default)]
struct Tally {
    /// API answers 503 (each with `Retry-After`, or it is also counted below).
    answers_503: u32,
    /// API answers that break the contract: a 5xx other than 503 with
    /// `Retry-After`.
    undocumented_5xx: Vec<String>,
    /// Requests that got no answer at all (the connection refused or cut).
    api_unanswered: u32,
    /// Presigned PUTs that failed while the S3 stand-in (or its CORS front) was down.
    put_retries: u32,
}

/// One row of the matrix.
struct Round {
    fault: &'static str,
    /// Good uploads (the bad image is one more).
    good: usize,
    /// Uploads (good or bad) that began while the service was down.
    started_while_down: usize,
    done: usize,
    failed_with_reason: usize,
    lost: Vec<String>,
    duplicated: i64,
    stale_hot_copies_before_reads: usize,
    stale_hot_copies_after_reads: usize,
    answers_503: u32,
    undocumented_5xx: Vec<String>,
    unanswered: u32,
    put_retries: u32,
    outage: Duration,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[ignore = "stops the shared stack's services: run alone, by fault_tests in infra/local/lib/tests.sh"]
async fn nothing_is_lost_when_a_service_stops_and_comes_back() {
    let stack = LocalStack::get();
    let target = Arc::new(Target {
        api: format!("http://{}/v1", stack.var("API_ADDR")),
        token: stack.var("CXR_FAULTS_TOKEN").to_owned(),
        owner: Owner::new(stack.var("CXR_FAULTS_OWNER")).expect("owner"),
        http: reqwest::Client::builder().timeout(Duration::from_secs(30)).build().expect("client"),
    });
    let api_before = api_pid();
    assert!(get_with_retries(&target, &Mutex::default(), "/health").await.is_some(), "the API answers before the suite");
    // Connected once: the pool reconnects after PostgreSQL's restart.
    let db = Database::connect(&stack.postgres_settings(stack.var("DATABASE_URL"))).await.expect("PostgreSQL");
    let results = ResultStore::new(DynamoTable::from_client(stack.dynamodb_client(), stack.var("RESULTS_TABLE")));

    let mut rounds = Vec::new();
    for (number, fault) in FAULTS.into_iter().enumerate() {
        rounds.push(round(&target, &db, &results, number, fault).await);
        assert_eq!(api_pid(), api_before, "the API process changed during the {fault} round: it was restarted");
    }

    let matrix = matrix(&rounds);
    println!("{matrix}");
    let _ = std::fs::write(stack_dir().join("faults.md"), &matrix);
    for round in &rounds {
        let fault = round.fault;
        assert!(round.lost.is_empty(), "{fault}: lost {:?}", round.lost);
        assert_eq!(round.duplicated, 0, "{fault}: duplicated rows in PostgreSQL");
        assert_eq!(round.done, round.good, "{fault}: not every good upload is done");
        assert!(round.started_while_down > 0, "{fault}: no upload started while the service was down");
        assert_eq!(round.failed_with_reason, 1, "{fault}: the bad image is not failed with a reason");
        assert_eq!(round.stale_hot_copies_after_reads, 0, "{fault}: DynamoDB disagrees with PostgreSQL");
        assert!(round.undocumented_5xx.is_empty(), "{fault}: 5xx answers other than 503 with Retry-After: {:?}", round.undocumented_5xx);
    }
}

/// One round: the load, the fault in its middle, then the checks.
async fn round(target: &Arc<Target>, db: &Database, results: &ResultStore, number: usize, fault: &'static str) -> Round {
    let started = Instant::now();
    let tally = Arc::new(Mutex::new(Tally::default()));
    let nonce = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos()).unwrap_or(0);
    let down = Arc::new(AtomicBool::new(false));
    let mut uploads = Vec::new();
    let mut fault_task = None;
    let mut started_while_down = 0;
    let mut bad_sent = false;
    loop {
        let i = uploads.len();
        // The bad image goes in while the service is down.
        let bad = !bad_sent && down.load(Ordering::SeqCst);
        bad_sent |= bad;
        started_while_down += usize::from(down.load(Ordering::SeqCst));
        let image = if bad { unreadable_png() } else { distinct_png(nonce, number, i) };
        let key = format!("faults-{nonce}-{number}-{i}");
        let (target, tally) = (target.clone(), tally.clone());
        uploads.push((bad, tokio::spawn(async move { upload(&target, &tally, image, &key).await })));
        if uploads.len() == FAULT_AFTER {
            let down = down.clone();
            fault_task = Some(tokio::spawn(async move {
                let since = Instant::now();
                dev_sh("stop", fault).await;
                down.store(true, Ordering::SeqCst);
                tokio::time::sleep(OUTAGE).await;
                dev_sh("start", fault).await;
                down.store(false, Ordering::SeqCst);
                since.elapsed()
            }));
        }
        let fault_over = fault_task.as_ref().is_some_and(|task| task.is_finished());
        if fault_over && bad_sent && uploads.len() > MIN_GOOD {
            break;
        }
        tokio::time::sleep(PACE).await;
    }
    let outage = fault_task.expect("the fault ran").await.expect("fault task");
    let good = uploads.iter().filter(|(bad, _)| !bad).count();
    let mut ids = Vec::new();
    let mut lost = Vec::new();
    for (_, upload) in uploads {
        match upload.await.expect("upload task") {
            Ok(id) => ids.push(id),
            Err(why) => lost.push(why),
        }
    }

    let finished = wait_finished(db, &target.owner, &ids).await;
    let mut done = 0;
    let mut failed_with_reason = 0;
    for id in &ids {
        match finished.get(id) {
            Some(study) if study.status == cxr_platform::domain::StudyStatus::Done => done += 1,
            Some(study) if study.status == cxr_platform::domain::StudyStatus::Failed && study.failure.as_deref().is_some_and(|r| !r.is_empty()) => {
                failed_with_reason += 1
            }
            Some(study) => lost.push(format!("study {id} ended {:?} ({:?})", study.status, study.failure)),
            None => lost.push(format!("study {id} is not in PostgreSQL")),
        }
    }
    let duplicated = duplicates(db, &target.owner, started, ids.len()).await;
    let stale_hot_copies_before_reads = stale_hot_copies(db, results, &finished).await;
    // The API's reads repair a missing hot copy from PostgreSQL (read-through).
    for id in &ids {
        let _ = get_with_retries(target, &tally, &format!("/studies/{id}")).await;
    }
    let stale_hot_copies_after_reads = stale_hot_copies(db, results, &finished).await;
    let tally = std::mem::take(&mut *tally.lock().expect("tally"));
    Round {
        fault,
        good,
        started_while_down,
        done,
        failed_with_reason,
        lost,
        duplicated,
        stale_hot_copies_before_reads,
        stale_hot_copies_after_reads,
        answers_503: tally.answers_503,
        undocumented_5xx: tally.undocumented_5xx,
        unanswered: tally.api_unanswered,
        put_retries: tally.put_retries,
        outage,
    }
}

/// A client as the web app is one: create the study (an `Idempotency-Key`
/// so a retry cannot make a second one; 503 waits `Retry-After`; 409 means
/// the first try is still being handled), then PUT the image (a 412 on a
/// retry means the first PUT was stored). The study's id, or why it was lost.
async fn upload(target: &Target, tally: &Mutex<Tally>, image: Vec<u8>, key: &str) -> Result<String, String> {
    let deadline = Instant::now() + UPLOAD_DEADLINE;
    let body = json!({"content_type": "image/png", "content_length": image.len()});
    let created = loop {
        if Instant::now() > deadline {
            return Err(format!("{key}: no study after {UPLOAD_DEADLINE:?}"));
        }
        let request = target.http.post(format!("{}/studies", target.api)).bearer_auth(&target.token).header("Idempotency-Key", key).json(&body);
        match answer(tally, "POST /studies", request).await {
            Some((StatusCode::CREATED, created)) => break created,
            Some((status, _)) if status == StatusCode::SERVICE_UNAVAILABLE || status == StatusCode::CONFLICT => {}
            Some((status, problem)) => return Err(format!("{key}: POST /studies answered {status}: {problem}")),
            None => tokio::time::sleep(Duration::from_millis(500)).await,
        }
    };
    let id = created["id"].as_str().ok_or_else(|| format!("{key}: no id in {created}"))?.to_owned();
    loop {
        if Instant::now() > deadline {
            return Err(format!("{key}: image not stored after {UPLOAD_DEADLINE:?}"));
        }
        match common::try_put(&target.http, &created["upload"], image.clone()).await {
            Ok(answer) if answer.status().is_success() || answer.status() == StatusCode::PRECONDITION_FAILED => return Ok(id),
            Ok(answer) if answer.status().is_client_error() => return Err(format!("{key}: PUT answered {}", answer.status())),
            _ => {
                tally.lock().expect("tally").put_retries += 1;
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
        }
    }
}

/// Sends `request`, counts its answer, and waits what a 503's
/// `Retry-After` asks (at most 5 s). `None`: no answer.
async fn answer(tally: &Mutex<Tally>, what: &str, request: reqwest::RequestBuilder) -> Option<(StatusCode, Value)> {
    let Ok(response) = request.send().await else {
        tally.lock().expect("tally").api_unanswered += 1;
        return None;
    };
    let status = response.status();
    let retry_after = response.headers().get("retry-after").and_then(|v| v.to_str().ok()).and_then(|v| v.parse::<u64>().ok());
    let body = response.json::<Value>().await.unwrap_or(Value::Null);
    {
        let mut tally = tally.lock().expect("tally");
        tally.answers_503 += u32::from(status == StatusCode::SERVICE_UNAVAILABLE);
        if status.is_server_error() && !(status == StatusCode::SERVICE_UNAVAILABLE && retry_after.is_some()) {
            tally.undocumented_5xx.push(format!("{what}: {status} {body}"));
        }
    }
    if status == StatusCode::SERVICE_UNAVAILABLE {
        tokio::time::sleep(Duration::from_secs(retry_after.unwrap_or(1).min(5))).await;
    } else if status == StatusCode::CONFLICT {
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    Some((status, body))
}

async fn get_with_retries(target: &Target, tally: &Mutex<Tally>, path: &str) -> Option<Value> {
    for _ in 0..20 {
        match answer(tally, &format!("GET {path}"), target.http.get(format!("{}{path}", target.api)).bearer_auth(&target.token)).await {
            Some((StatusCode::OK, body)) => return Some(body),
            Some((status, _)) if status != StatusCode::SERVICE_UNAVAILABLE => return None,
            _ => tokio::time::sleep(Duration::from_millis(500)).await,
        }
    }
    None
}

/// Waits until every study is `done` or `failed` (read from PostgreSQL, so
/// no API read repairs anything before the hot copies are compared).
async fn wait_finished(db: &Database, owner: &Owner, ids: &[String]) -> BTreeMap<String, cxr_platform::storage::postgres::studies::StudyRecord> {
    let started = Instant::now();
    loop {
        let mut finished = BTreeMap::new();
        for id in ids {
            let Ok(study_id) = id.parse::<StudyId>() else { continue };
            if let Ok(Some(study)) = db.find_study(owner, study_id).await {
                finished.insert(id.clone(), study);
            }
        }
        let all = finished.len() == ids.len()
            && finished.values().all(|s| matches!(s.status, cxr_platform::domain::StudyStatus::Done | cxr_platform::domain::StudyStatus::Failed));
        if all || started.elapsed() > RESULTS_DEADLINE {
            return finished;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// Rows beyond one study per upload and one inference run per study, for
/// this owner's studies created since the round began.
async fn duplicates(db: &Database, owner: &Owner, since: Instant, uploads: usize) -> i64 {
    let seconds = since.elapsed().as_secs_f64() + 1.0;
    let (studies, runs, with_runs): (i64, i64, i64) = sqlx::query_as(
        "SELECT count(DISTINCT s.id), count(r.id), count(DISTINCT r.study_id)
           FROM studies s LEFT JOIN inference_runs r ON r.study_id = s.id
          WHERE s.owner = $1 AND s.created_at > now() - make_interval(secs => $2)",
    )
    .bind(owner.as_str())
    .bind(seconds)
    .fetch_one(db.pool())
    .await
    .expect("count rows");
    (studies - uploads as i64).max(0) + (runs - with_runs)
}

/// Studies whose DynamoDB hot copy is missing or differs from what
/// PostgreSQL holds.
async fn stale_hot_copies(db: &Database, results: &ResultStore, studies: &BTreeMap<String, cxr_platform::storage::postgres::studies::StudyRecord>) -> usize {
    let mut stale = 0;
    for study in studies.values() {
        let Ok((stored, _)) = StudySnapshot::read(db, study).await else {
            stale += 1;
            continue;
        };
        if results.snapshot(study.id).await.ok().flatten().as_ref() != Some(&stored) {
            stale += 1;
        }
    }
    stale
}

/// `infra/local/dev.sh stop|start SERVICE`, which waits until a started
/// service is healthy.
async fn dev_sh(action: &str, service: &str) {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/../infra/local/dev.sh");
    let status = tokio::process::Command::new("bash").arg(script).arg(action).arg(service).status().await.expect("run dev.sh");
    assert!(status.success(), "dev.sh {action} {service} failed");
}

/// The stack's folder (dev.sh's `CXR_STACK_DIR`, `.stack` by default).
fn stack_dir() -> std::path::PathBuf {
    std::env::var_os("CXR_STACK_DIR").map_or_else(|| concat!(env!("CARGO_MANIFEST_DIR"), "/../.stack").into(), Into::into)
}

fn api_pid() -> Option<String> {
    std::fs::read_to_string(stack_dir().join("run/api.pid")).ok().map(|p| p.trim().to_owned())
}

/// A grey chest-sized PNG no earlier upload has had (so the result cache
/// cannot answer and the model is called).
fn distinct_png(nonce: u128, round: usize, index: usize) -> Vec<u8> {
    let seed = (nonce as u64) ^ ((round as u64) << 40) ^ ((index as u64) << 32);
    let picture = image::GrayImage::from_fn(160, 160, |x, y| {
        let wave = ((x * 7 + y * 3) as u64).wrapping_mul(seed | 1) >> 24;
        image::Luma([(wave % 200) as u8 + 20])
    });
    let mut png = std::io::Cursor::new(Vec::new());
    picture.write_to(&mut png, image::ImageFormat::Png).expect("encode PNG");
    png.into_inner()
}

/// A PNG signature followed by nothing an image decoder can read.
fn unreadable_png() -> Vec<u8> {
    let mut bytes = b"\x89PNG\r\n\x1a\n".to_vec();
    bytes.extend(std::iter::repeat_n(0x5a, 120));
    bytes
}

fn matrix(rounds: &[Round]) -> String {
    let mut out = String::from(
        "| fault | outage | uploads (good + 1 bad) | begun while down | done | failed (bad image, with reason) | lost | duplicated | API 503 (Retry-After) | other 5xx | unanswered | PUT retries | hot copies stale before reads / after |\n|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|\n",
    );
    for r in rounds {
        out.push_str(&format!(
            "| {} | {:.1} s | {} + 1 | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} / {} |\n",
            r.fault,
            r.outage.as_secs_f64(),
            r.good,
            r.started_while_down,
            r.done,
            r.failed_with_reason,
            r.lost.len(),
            r.duplicated,
            r.answers_503,
            r.undocumented_5xx.len(),
            r.unanswered,
            r.put_retries,
            r.stale_hot_copies_before_reads,
            r.stale_hot_copies_after_reads
        ));
    }
    out
}

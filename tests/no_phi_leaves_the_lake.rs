//! No PHI leaves the lake. DICOM files carrying a patient's name, id, birth
//! date, address and institution go in through both ways in (upload and
//! `POST /v1/predict`); then every log line this run wrote (the API, the
//! `infer` handler and relay, the model server, the warehouse load and the
//! COCO export all run in this process, logging as in Lambda: JSON lines),
//! every API answer, every warehouse document, every file of the COCO mart
//! and the model server's metrics are searched for those values: none may
//! be there. (The original in S3 and PostgreSQL's `dicom` column are the
//! lake itself; `imaging` keeps no identifying attribute in the latter.)

mod common;

use std::io::Write;
use std::sync::{Arc, Mutex};

use common::{ALICE, Platform};
use cxr_coco_export::deidentify::UidKey;
use cxr_coco_export::export::{ExportOptions, run_export};
use cxr_coco_export::mart::DataMart;
use cxr_platform::testing::{LocalStack, call, identifiable_dicom_image};
use cxr_warehouse::document::StudyDocument;
use cxr_warehouse::load::{LoadOptions, run_load};
use serde_json::{Value, json};

/// What `identifiable_dicom` carries that identifies its patient.
const PHI: [&str; 7] = ["Doe^Jane", "Jane", "MRN-0042", "19700101", "1 Example Road", "St Example Hospital", "private patient id"];

/// Everything the process logs, kept for the search.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0.lock().map_err(|_| std::io::Error::other("poisoned"))?.extend_from_slice(bytes);
        Ok(bytes.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn hits(place: &str, text: &str, found: &mut Vec<String>) {
    for value in PHI {
        if text.contains(value) {
            found.push(format!("{value:?} in {place}"));
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_patient_identifier_appears_in_logs_answers_warehouse_mart_or_metrics() {
    let logs = Captured::default();
    let writer = logs.clone();
    tracing_subscriber::fmt()
        .json()
        .flatten_event(true)
        .with_current_span(true)
        .with_env_filter("debug,hyper=info,h2=info,aws_smithy_runtime=info,aws_smithy_runtime_api=info,aws_sdk_s3=info,sqlx=info,mongodb=info,rustls=info")
        .with_writer(move || writer.clone())
        .init();

    let platform = Platform::start().await;
    let api = platform.api.clone();
    let dicom = identifiable_dicom_image(256, 256);
    assert!(PHI.iter().all(|v| String::from_utf8_lossy(&dicom).contains(v)), "the fixture carries every identifier");

    // Both ways in: an upload, and a synchronous prediction.
    let (id, created) = platform.upload("application/dicom", &dicom).await;
    let mut answers = vec![created, platform.wait_finished(&id).await];
    let predicted = reqwest::Client::new().post(format!("{api}/predict")).bearer_auth(ALICE).body(dicom.clone()).send().await.expect("predict");
    answers.push(predicted.json().await.unwrap_or(Value::Null));
    let (status, annotation) =
        call(reqwest::Method::POST, &format!("{api}/studies/{id}/annotations"), Some(ALICE), Some(json!({"label": "Cardiomegaly"}))).await;
    assert_eq!(status, 201, "{annotation}");
    answers.push(annotation);
    for path in [format!("/studies/{id}"), "/studies".into(), format!("/studies/{id}/annotations"), format!("/studies/{id}/annotations/history")] {
        let (status, answer) = call(reqwest::Method::GET, &format!("{api}{path}"), Some(ALICE), None).await;
        assert_eq!(status, 200, "{path}: {answer}");
        answers.push(answer);
    }

    // The warehouse and the data mart, loaded from this lake.
    let stack = LocalStack::get();
    let warehouse = stack.fresh_warehouse().await.collection::<StudyDocument>("studies");
    run_load(&platform.db, &warehouse, &LoadOptions { chunk_studies: 100, dry_run: false, time_budget: None }).await.expect("warehouse load");
    let documents = warehouse.find(mongodb::bson::Document::new(), None, None).await.expect("documents");
    assert_eq!(documents.len(), 2, "both studies warehoused");
    let mart_dir = tempfile::tempdir().expect("temp dir");
    let mart = DataMart::Local { root: mart_dir.path().to_owned() };
    let options =
        ExportOptions { chunk_studies: 100, validation_percent: 0, include_model_boxes: true, model_score_threshold: 0.0, dry_run: false, time_budget: None };
    let report = run_export(&platform.db, &stack.s3_client(), &mart, &UidKey::new("phi-test-secret"), &options).await.expect("export");
    assert_eq!(report.exported, 1, "the annotated study is in the mart: {report:?}; the study: {}", answers[1]);
    let metrics = reqwest::get(format!("{}/metrics", platform.endpoint)).await.expect("metrics").text().await.expect("metrics text");
    platform.stop().await;

    let mut found = Vec::new();
    for (n, answer) in answers.iter().enumerate() {
        hits(&format!("API answer {n}"), &answer.to_string(), &mut found);
    }
    for document in &documents {
        hits("a warehouse document", &serde_json::to_string(document).expect("json"), &mut found);
    }
    let mut files = 0;
    for entry in walk(mart_dir.path()) {
        files += 1;
        hits(&entry.display().to_string(), &String::from_utf8_lossy(&std::fs::read(&entry).expect("mart file")), &mut found);
    }
    hits("the model server's metrics", &metrics, &mut found);
    let logged = String::from_utf8_lossy(&logs.0.lock().expect("logs")).into_owned();
    for line in logged.lines() {
        hits(&format!("log line {line}"), line, &mut found);
    }
    assert!(files >= 3, "images, annotations and the manifest exported");
    assert!(logged.lines().count() > 20, "the run logged (debug level for our crates)");
    assert!(found.is_empty(), "PHI left the lake:\n{}", found.join("\n"));
}

fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).expect("read dir") {
        let path = entry.expect("entry").path();
        if path.is_dir() { out.extend(walk(&path)) } else { out.push(path) }
    }
    out
}

//! The COCO export against the real local PostgreSQL and S3 server, checked
//! with pycocotools.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use cxr_coco_export::coco::CocoFile;
use cxr_coco_export::deidentify::UidKey;
use cxr_coco_export::export::{ExportOptions, ExportReport, run_export};
use cxr_coco_export::mart::DataMart;
use cxr_platform::storage::postgres::Database;
use cxr_platform::storage::s3::{ObjectKey, ObjectStore};
use cxr_platform::testing::{LocalStack, identifiable_dicom, kill_at_checkpoint, png_with_text, seed};

const SECRET: &str = "test-deidentify-secret";

fn options() -> ExportOptions {
    ExportOptions { chunk_studies: 7, validation_percent: 0, include_model_boxes: false, model_score_threshold: 0.5, dry_run: false, time_budget: None }
}

/// `studies` seeded studies (every 4th annotated) whose images are in a
/// bucket of their own: PNGs with a patient name in a text chunk, one
/// annotated study turned into an identifiable DICOM file, and one
/// annotated study whose image is missing. Returns the missing study's id.
async fn lake_with_images(db: &Database, studies: i64) -> (ObjectStore, i64) {
    let stack = LocalStack::get();
    seed(db, studies, 2).await.expect("seed");
    let store = stack.fresh_bucket().await;
    sqlx::query("UPDATE studies SET s3_bucket = $1").bind(store.bucket()).execute(db.pool()).await.expect("bucket");
    let annotated: Vec<i64> = sqlx::query_scalar("SELECT DISTINCT study_id FROM annotations ORDER BY study_id").fetch_all(db.pool()).await.expect("annotated");
    let (dicom, missing) = (annotated[0], annotated[1]);
    sqlx::query("UPDATE studies SET media_type = 'application/dicom', s3_key = replace(s3_key, '.png', '.dcm') WHERE id = $1")
        .bind(dicom)
        .execute(db.pool())
        .await
        .expect("make one study DICOM");
    let objects: Vec<(i64, String)> = sqlx::query_as("SELECT id, s3_key FROM studies").fetch_all(db.pool()).await.expect("keys");
    for (id, key) in objects {
        let body = match id {
            _ if id == missing => continue,
            _ if id == dicom => identifiable_dicom(false),
            _ => png_with_text("Patient Doe^Jane MRN-0042"),
        };
        // As the infer handler records it on reading the upload.
        sqlx::query("UPDATE studies SET sha256 = $1 WHERE id = $2")
            .bind(cxr_platform::domain::Sha256Digest::of(&body).to_hex())
            .bind(id)
            .execute(db.pool())
            .await
            .expect("digest");
        store.put(&ObjectKey::new(key).expect("key"), body, "application/octet-stream").await.expect("upload");
    }
    (store, missing)
}

/// Every file under `root`: relative path -> bytes.
fn files(root: &Path) -> BTreeMap<String, Vec<u8>> {
    fn walk(dir: &Path, root: &Path, out: &mut BTreeMap<String, Vec<u8>>) {
        for entry in std::fs::read_dir(dir).expect("read dir") {
            let path = entry.expect("entry").path();
            if path.is_dir() {
                walk(&path, root, out);
            } else {
                let relative = path.strip_prefix(root).expect("under root").to_string_lossy().into_owned();
                out.insert(relative, std::fs::read(&path).expect("read file"));
            }
        }
    }
    let mut out = BTreeMap::new();
    if root.exists() {
        walk(root, root, &mut out);
    }
    out
}

fn coco(root: &Path, split: &str) -> CocoFile {
    let bytes = std::fs::read(root.join(format!("annotations/instances_{split}.json"))).expect("instances file");
    serde_json::from_slice(&bytes).expect("COCO JSON")
}

/// Loads each split with pycocotools, checks every image file is there,
/// runs COCOeval on the model boxes, and on the ground truth itself as
/// detections (which must score AP 1.0: boxes are read as COCO means them).
const PYCOCOTOOLS_CHECK: &str = r#"
import json, os, sys
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval
root = sys.argv[1]
for split in sys.argv[2:]:
    gt = COCO(os.path.join(root, "annotations", "instances_%s.json" % split))
    for image in gt.dataset["images"]:
        assert os.path.exists(os.path.join(root, image["file_name"])), image["file_name"]
    oracle = [dict(image_id=a["image_id"], category_id=a["category_id"], bbox=a["bbox"], score=1.0) for a in gt.dataset["annotations"]]
    ev = COCOeval(gt, gt.loadRes(oracle), "bbox"); ev.evaluate(); ev.accumulate(); ev.summarize()
    assert abs(ev.stats[0] - 1.0) < 1e-9, "ground truth as detections must give AP 1.0, got %s" % ev.stats[0]
    detections = os.path.join(root, "annotations", "detections_%s.json" % split)
    if os.path.exists(detections) and json.load(open(detections)):
        ev = COCOeval(gt, gt.loadRes(detections), "bbox"); ev.evaluate(); ev.accumulate(); ev.summarize()
        print("model AP", split, ev.stats[0])
    print("ok", split, len(gt.getImgIds()), len(gt.getAnnIds()))
"#;

fn pycocotools_accepts(root: &Path, splits: &[&str]) -> String {
    let python = LocalStack::get().var("CXR_PYTHON");
    let output = std::process::Command::new(python)
        .arg("-c")
        .arg(PYCOCOTOOLS_CHECK)
        .arg(root)
        .args(splits)
        .output()
        .unwrap_or_else(|e| panic!("run {python} (pycocotools; `infra/local/dev.sh up` installs it): {e}"));
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(output.status.success(), "pycocotools refused the export:\n{stdout}\n{}", String::from_utf8_lossy(&output.stderr));
    stdout
}

#[tokio::test]
async fn annotated_studies_export_de_identified_and_pycocotools_accepts_them() {
    let stack = LocalStack::get();
    let db = stack.fresh_database().await;
    let (_images, missing) = lake_with_images(&db, 40).await;
    // The split is a hash of the public id: fixed ids make it the same every
    // run (with random ones, all 9 studies land in one split about 4% of the time).
    sqlx::query("UPDATE studies SET public_id = md5('split-fixture-' || id)::uuid").execute(db.pool()).await.expect("fixed ids");
    let dir = tempfile::tempdir().expect("temp dir");
    let mart = DataMart::Local { root: dir.path().to_owned() };
    let options = ExportOptions { validation_percent: 30, include_model_boxes: true, model_score_threshold: 0.0, ..options() };
    let report = run_export(&db, &stack.s3_client(), &mart, &UidKey::new(SECRET), &options).await.expect("export");

    // 40 studies, every 4th annotated (10), one of them without its image.
    assert_eq!((report.studies_changed, report.exported), (40, 9));
    assert_eq!(report.skipped, BTreeMap::from([("missing_image".to_owned(), 1)]));
    assert_eq!((report.images_in_export, report.annotations_in_export), (9, 9));
    assert!(report.detections > 0);
    let (train, val) = (coco(dir.path(), "train"), coco(dir.path(), "val"));
    assert_eq!(train.images.len() + val.images.len(), 9);
    assert!(!val.images.is_empty() && !train.images.is_empty(), "both splits used");
    assert!(train.images.iter().chain(&val.images).all(|i| i.id != missing));

    // Boxes as COCO means them: [x_min, y_min, width, height] (the seed's 5, 6, 70, 80).
    let annotation = &train.annotations[0];
    assert_eq!((annotation.bbox, annotation.area, annotation.iscrowd), ([5.0, 6.0, 70.0, 80.0], 5600.0, 0));
    assert_eq!(train.categories.len(), 14);
    assert_eq!((train.categories[0].id, train.categories[0].name.as_str()), (1, "Aortic enlargement"));
    assert!(train.annotations.iter().chain(&val.annotations).all(|a| a.id >= 1 && (1..=14).contains(&a.category_id)));

    // Nothing identifying leaves the lake: not in images, file names or metadata.
    let exported = files(dir.path());
    let dicom: Vec<&String> = exported.keys().filter(|k| k.ends_with(".dcm")).collect();
    assert_eq!(dicom.len(), 1, "the DICOM study is exported as DICOM");
    for (path, bytes) in &exported {
        let text = String::from_utf8_lossy(bytes);
        for identifier in ["Doe^Jane", "MRN-0042", "St Example", "seed-", "owner-"] {
            assert!(!text.contains(identifier) && !path.contains(identifier), "{identifier} found in {path}");
        }
    }
    assert!(String::from_utf8_lossy(&exported[dicom[0].as_str()]).contains("YES"), "Patient Identity Removed recorded");

    let checked = pycocotools_accepts(dir.path(), &["train", "val"]);
    assert!(checked.contains("model AP"), "{checked}");
}

#[tokio::test]
async fn incremental_runs_rewrite_only_what_changed_and_drop_what_lost_its_annotations() {
    let stack = LocalStack::get();
    let db = stack.fresh_database().await;
    let (_images, _) = lake_with_images(&db, 24).await;
    let mart_bucket = stack.fresh_bucket().await;
    let mart = DataMart::S3 { store: mart_bucket.clone(), prefix: "coco".into() };
    let key = UidKey::new(SECRET);
    let s3 = stack.s3_client();

    let first = run_export(&db, &s3, &mart, &key, &options()).await.expect("first run");
    assert_eq!((first.exported, first.images_in_export), (5, 5));
    let listing = |store: ObjectStore| async move { store.list("coco/").await.expect("list").into_iter().map(|o| o.key).collect::<Vec<_>>() };
    let before = listing(mart_bucket.clone()).await;
    assert!(before.contains(&"coco/annotations/instances_all.json".to_owned()) && before.contains(&"coco/manifest.json".to_owned()));

    let unchanged = run_export(&db, &s3, &mart, &key, &options()).await.expect("unchanged run");
    assert_eq!((unchanged.studies_changed, unchanged.exported, unchanged.images_in_export), (0, 0, 5));

    // One study loses its annotations, another gains one.
    let lost: i64 = sqlx::query_scalar("DELETE FROM annotations WHERE study_id = (SELECT max(study_id) FROM annotations) RETURNING study_id")
        .fetch_one(db.pool())
        .await
        .expect("delete annotations");
    let gained: i64 = sqlx::query_scalar(
        "INSERT INTO annotations (study_id, label_set, label, x_min, y_min, width, height, author)
         SELECT min(id), 'vinbigdata', 'Cardiomegaly', 1, 2, 30, 40, 'rad' FROM studies
          WHERE id NOT IN (SELECT study_id FROM annotations) RETURNING study_id",
    )
    .fetch_one(db.pool())
    .await
    .expect("annotate");
    let changed = run_export(&db, &s3, &mart, &key, &options()).await.expect("run after changes");
    assert_eq!((changed.studies_changed, changed.exported, changed.removed, changed.images_in_export), (2, 1, 1, 5));
    let after = listing(mart_bucket.clone()).await;
    assert!(!after.iter().any(|k| k.contains(&format!("{lost:010}"))), "the study without annotations left the mart");
    assert!(after.iter().any(|k| k.contains(&format!("images/{gained:010}.png"))));
    let file: CocoFile =
        serde_json::from_slice(&mart_bucket.get(&ObjectKey::new("coco/annotations/instances_all.json").expect("key"), 1 << 20).await.expect("get").bytes)
            .expect("COCO");
    assert!(file.images.iter().any(|i| i.id == gained) && !file.images.iter().any(|i| i.id == lost));
    let cardiomegaly = file.annotations.iter().find(|a| a.image_id == gained).expect("new annotation");
    assert_eq!((cardiomegaly.category_id, cardiomegaly.bbox), (4, [1.0, 2.0, 30.0, 40.0]));
}

#[tokio::test]
async fn a_dry_run_writes_nothing_and_a_short_budget_hands_over() {
    let stack = LocalStack::get();
    let db = stack.fresh_database().await;
    lake_with_images(&db, 30).await;
    let dir = tempfile::tempdir().expect("temp dir");
    let mart = DataMart::Local { root: dir.path().join("mart") };
    let key = UidKey::new(SECRET);
    let s3 = stack.s3_client();

    let dry = run_export(&db, &s3, &mart, &key, &ExportOptions { dry_run: true, ..options() }).await.expect("dry run");
    assert_eq!((dry.dry_run, dry.studies_changed, dry.exported), (true, 30, 7));
    assert!(files(&dir.path().join("mart")).is_empty(), "a dry run writes nothing");

    let budget = ExportOptions { time_budget: Some(Duration::ZERO), chunk_studies: 10, ..options() };
    let mut reports: Vec<ExportReport> = Vec::new();
    while reports.last().is_none_or(|r| !r.complete) {
        reports.push(run_export(&db, &s3, &mart, &key, &budget).await.expect("run"));
        assert!(reports.len() < 10, "never completed");
    }
    // Three full chunks, each followed by a hand-over; the fourth run finds
    // no more studies and assembles the COCO files.
    assert_eq!(reports.iter().map(|r| r.complete).collect::<Vec<_>>(), [false, false, false, true]);
    assert_eq!((reports[3].exported, reports[3].images_in_export), (6, 6), "7 annotated, one image missing");
    assert!(files(&dir.path().join("mart")).contains_key("annotations/instances_all.json"));
}

fn export_command(database_url: &str, destination: &Path) -> tokio::process::Command {
    let mut command = LocalStack::get().command(env!("CARGO_BIN_EXE_coco-export"));
    command
        .arg("run")
        .env("DATABASE_URL", database_url)
        .env("COCO_DESTINATION", destination)
        .env("COCO_CHUNK_STUDIES", "1")
        .env("COCO_INCLUDE_MODEL_BOXES", "true")
        .env("COCO_VALIDATION_PERCENT", "25")
        .env("DEIDENTIFY_SECRET", SECRET);
    command
}

#[tokio::test]
async fn sigkill_halfway_then_rerun_equals_an_uninterrupted_run() {
    let stack = LocalStack::get();
    let (url, db) = stack.fresh_migrated_database().await;
    lake_with_images(&db, 160).await;
    let dir = tempfile::tempdir().expect("temp dir");

    let interrupted = dir.path().join("interrupted");
    let mut child = export_command(&url, &interrupted).spawn().expect("spawn");
    let killed_at = kill_at_checkpoint(&db, &mut child, "chunks", 50).await;
    assert!(killed_at < 160, "killed halfway (at chunk {killed_at})");
    assert!(!interrupted.join("manifest.json").exists(), "no manifest before the export is assembled");
    let status = export_command(&url, &interrupted).status().await.expect("rerun");
    assert!(status.success());

    // Reference: forget the runs, export everything in one go elsewhere.
    sqlx::query("DELETE FROM job_runs").execute(db.pool()).await.expect("forget runs");
    let reference = dir.path().join("reference");
    let status = export_command(&url, &reference).status().await.expect("reference run");
    assert!(status.success());

    let (got, want) = (files(&interrupted), files(&reference));
    assert_eq!(got.keys().collect::<Vec<_>>(), want.keys().collect::<Vec<_>>(), "same files");
    assert!(got == want, "same bytes in every file");
    assert!(want.len() > 40, "images, fragments and COCO files");
    pycocotools_accepts(&interrupted, &["train", "val"]);
}

#[tokio::test]
async fn an_edited_box_is_exported_as_edited_and_a_deleted_box_is_gone() {
    let stack = LocalStack::get();
    let db = stack.fresh_database().await;
    let (_images, missing) = lake_with_images(&db, 12).await;
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().to_owned();
    let mart = DataMart::Local { root: dir.clone() };
    let key = UidKey::new(SECRET);
    let s3 = stack.s3_client();
    // An exportable annotated PNG study gets a second box.
    let study: i64 = sqlx::query_scalar(
        "SELECT a.study_id FROM annotations a JOIN studies s ON s.id = a.study_id
          WHERE s.media_type = 'image/png' AND a.study_id <> $1 ORDER BY a.study_id LIMIT 1",
    )
    .bind(missing)
    .fetch_one(db.pool())
    .await
    .expect("study");
    let rad = cxr_platform::domain::Owner::new("radiologist-1").expect("owner");
    let second = db
        .add_annotation(
            study,
            &cxr_platform::storage::postgres::studies::NewAnnotation {
                label_set: "vinbigdata".into(),
                label: "Pleural effusion".into(),
                bbox: Some(cxr_platform::domain::PixelBox::new(10.0, 10.0, 20.0, 20.0).expect("box")),
                author: rad.clone(),
            },
        )
        .await
        .expect("second box");
    run_export(&db, &s3, &mart, &key, &options()).await.expect("first export");
    let of_study = |file: &CocoFile| file.annotations.iter().filter(|a| a.image_id == study).map(|a| (a.id, a.category_id, a.bbox)).collect::<Vec<_>>();
    let first: i64 = sqlx::query_scalar("SELECT min(id) FROM annotations WHERE study_id = $1").bind(study).fetch_one(db.pool()).await.expect("first box");
    assert_eq!(of_study(&coco(&dir, "all")).len(), 2);

    // Move the first box and relabel it; delete the second.
    let change = cxr_platform::storage::postgres::studies::AnnotationChange {
        label: Some("Cardiomegaly".into()),
        bbox: Some(Some(cxr_platform::domain::PixelBox::new(7.0, 8.0, 60.0, 50.0).expect("box"))),
    };
    db.update_annotation(study, first, &change, &rad).await.expect("edit").expect("edited");
    assert!(db.delete_annotation(study, second.id, &rad).await.expect("delete"));
    let report = run_export(&db, &s3, &mart, &key, &options()).await.expect("export after edits");
    assert_eq!(report.studies_changed, 1);
    assert_eq!(of_study(&coco(&dir, "all")), [(first, 4, [7.0, 8.0, 60.0, 50.0])], "exactly the edited box; the deleted one is gone");
    let out = pycocotools_accepts(&dir, &["all"]);
    assert!(out.contains("ok all"), "{out}");
}

//! The export run. Studies changed in the run's window are taken in chunks;
//! each annotated study's image is read from the data lake, de-identified
//! and written to the mart with a per-study fragment (its COCO image entry,
//! annotations and model detections). At the end the fragments are
//! assembled into the COCO files, written last with a manifest. Fragments
//! make the export incremental: a run rewrites only what changed, and the
//! assembled files always cover every exported study.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use cxr_platform::domain::{MediaType, Sha256Digest};
use cxr_platform::jobs::driver::{ChunkedJob, run_chunked};
use cxr_platform::jobs::{Job, JobError, StudyCursor};
use cxr_platform::storage::postgres::Database;
use cxr_platform::storage::postgres::studies::{STUDY_COLUMNS, StudyRecord};
use cxr_platform::storage::s3::{ObjectKey, ObjectStore, S3Error};
use futures::{StreamExt, TryStreamExt};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use time::OffsetDateTime;

use crate::coco::{self, Annotation, CocoFile, Detection, Image, Info, Split};
use crate::deidentify::{DeidentifyError, UidKey, deidentify};
use crate::mart::{DataMart, MartError};

pub const JOB_NAME: &str = "coco-export";
/// Largest image the export reads: the platform's image limit.
pub use cxr_platform::domain::MAX_IMAGE_BYTES;
/// Images read, de-identified and written at once: S3 reads are latency
/// bound, and 16 images of typical size (5-30 MiB) fit a 2 GiB Lambda.
const CONCURRENT_IMAGES: usize = 16;

#[derive(Clone, Debug)]
pub struct ExportOptions {
    pub chunk_studies: u32,
    /// Share of studies (0-100) in the validation split; 0 = no split.
    pub validation_percent: u8,
    /// Also export the latest model run's boxes (COCO results format).
    pub include_model_boxes: bool,
    /// Model boxes below this probability are left out.
    pub model_score_threshold: f32,
    pub dry_run: bool,
    pub time_budget: Option<Duration>,
}

#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    #[error(transparent)]
    Job(#[from] JobError),
    #[error("reading the data lake: {0}")]
    Read(#[from] sqlx::Error),
    #[error("reading an image from the data lake: {0}")]
    Image(S3Error),
    #[error("writing the export: {0}")]
    Write(#[from] MartError),
    #[error("checkpoint or fragment JSON: {0}")]
    Json(#[from] serde_json::Error),
}

/// What a run did. Totals include the work of the run it resumed.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExportReport {
    pub dry_run: bool,
    /// False when the run ran out of time and handed over.
    pub complete: bool,
    pub destination: String,
    /// Studies changed in the window.
    pub studies_changed: u64,
    /// Of those, annotated studies exported (image + fragment).
    pub exported: u64,
    pub image_bytes: u64,
    pub annotations: u64,
    pub detections: u64,
    /// Studies left out, by reason (missing image, burned-in text, ...).
    pub skipped: BTreeMap<String, u64>,
    /// Studies dropped from the mart since they lost their annotations.
    pub removed: u64,
    /// In the assembled COCO files (every exported study, not only this run's).
    pub images_in_export: u64,
    pub annotations_in_export: u64,
    /// The COCO files written, relative to the destination.
    pub files: Vec<String>,
    pub chunks: u64,
    pub resumed_from: Option<i64>,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
struct Checkpoint {
    #[serde(flatten)]
    cursor: StudyCursor,
    studies_changed: u64,
    exported: u64,
    image_bytes: u64,
    annotations: u64,
    detections: u64,
    skipped: BTreeMap<String, u64>,
    chunks: u64,
    /// Set by the assembly at the end of the window.
    #[serde(default)]
    removed: u64,
    #[serde(default)]
    images_in_export: u64,
}

impl Checkpoint {
    fn counts(&self) -> serde_json::Value {
        serde_json::json!({
            "studies_changed": self.studies_changed, "exported": self.exported, "image_bytes": self.image_bytes,
            "annotations": self.annotations, "detections": self.detections, "skipped": self.skipped, "chunks": self.chunks,
            "removed": self.removed, "images_in_export": self.images_in_export,
        })
    }
}

/// One study's share of the export, kept in the mart between runs.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Fragment {
    pub image: Image,
    pub split: Split,
    pub annotations: Vec<Annotation>,
    pub detections: Vec<Detection>,
    #[serde(with = "time::serde::rfc3339")]
    pub updated_at: OffsetDateTime,
}

pub fn fragment_path(study_id: i64) -> String {
    format!("fragments/{study_id:010}.json")
}

pub fn image_path(study_id: i64, media_type: MediaType) -> String {
    format!("images/{study_id:010}.{}", media_type.file_extension())
}

pub async fn run_export(
    db: &Database,
    images: &aws_sdk_s3::Client,
    mart: &DataMart,
    key: &UidKey,
    options: &ExportOptions,
) -> Result<ExportReport, ExportError> {
    let report = ExportReport { dry_run: options.dry_run, destination: mart.describe(), ..ExportReport::default() };
    let mut export = Export { db, images, mart, key, options, report };
    let run = run_chunked(db, &mut export, options.dry_run, options.time_budget).await?;
    let checkpoint = run.progress;
    Ok(ExportReport {
        complete: run.finished.is_some(),
        studies_changed: checkpoint.studies_changed,
        exported: checkpoint.exported,
        image_bytes: checkpoint.image_bytes,
        annotations: checkpoint.annotations,
        detections: checkpoint.detections,
        skipped: checkpoint.skipped,
        chunks: checkpoint.chunks,
        resumed_from: run.resumed_from,
        ..export.report
    })
}

/// A study the chunk exports, with everything its fragment needs.
struct StudyToExport {
    id: i64,
    public_id: uuid::Uuid,
    bucket: String,
    key: ObjectKey,
    media_type: MediaType,
    /// The digest recorded when the image was read for inference: what the
    /// annotations and detections describe.
    sha256: Sha256Digest,
    width: u32,
    height: u32,
    updated_at: OffsetDateTime,
    annotations: Vec<Annotation>,
    detections: Vec<Detection>,
}

/// The export's part of the chunked run (the loop is
/// [`cxr_platform::jobs::driver::run_chunked`]'s).
struct Export<'a> {
    db: &'a Database,
    images: &'a aws_sdk_s3::Client,
    mart: &'a DataMart,
    key: &'a UidKey,
    options: &'a ExportOptions,
    /// Filled in by the assembly.
    report: ExportReport,
}

impl ChunkedJob for Export<'_> {
    type Progress = Checkpoint;
    /// How many studies changed, and the exportable ones among them.
    type Rows = (usize, Vec<StudyToExport>);
    type Finished = ();
    type Error = ExportError;
    const NAME: &'static str = JOB_NAME;

    fn chunk_studies(&self) -> u32 {
        self.options.chunk_studies
    }

    fn cursor(progress: &mut Checkpoint) -> &mut StudyCursor {
        &mut progress.cursor
    }

    fn counts(progress: &Checkpoint) -> serde_json::Value {
        progress.counts()
    }

    async fn read(&mut self, tx: &mut sqlx::Transaction<'static, sqlx::Postgres>, ids: &[i64]) -> Result<Self::Rows, ExportError> {
        Ok((ids.len(), read_chunk(tx, ids, self.options).await?))
    }

    async fn write(&mut self, _job: &Job, (changed, studies): Self::Rows, checkpoint: &mut Checkpoint) -> Result<(), ExportError> {
        checkpoint.studies_changed += changed as u64;
        let (images, mart, key, options) = (self.images, self.mart, self.key, self.options);
        let outcomes: Vec<Outcome> =
            futures::stream::iter(studies).map(|study| export_study(images, mart, key, options, study)).buffered(CONCURRENT_IMAGES).try_collect().await?;
        for outcome in outcomes {
            match outcome {
                Outcome::Exported { bytes, annotations, detections } => {
                    checkpoint.exported += 1;
                    checkpoint.image_bytes += bytes;
                    checkpoint.annotations += annotations;
                    checkpoint.detections += detections;
                }
                Outcome::Skipped(reason) => *checkpoint.skipped.entry(reason.to_owned()).or_default() += 1,
            }
        }
        checkpoint.chunks += 1;
        Ok(())
    }

    /// The fragments assembled into the COCO files, the manifest last.
    async fn finish(&mut self, _job: &Job, checkpoint: &mut Checkpoint) -> Result<(), ExportError> {
        if !self.options.dry_run {
            assemble(self.db, self.mart, self.options, &mut self.report).await?;
        }
        checkpoint.removed = self.report.removed;
        checkpoint.images_in_export = self.report.images_in_export;
        Ok(())
    }
}

/// The exportable studies among `ids` (annotated with the VinBigData set,
/// image read), with their annotations and, if asked, model boxes.
async fn read_chunk(tx: &mut sqlx::Transaction<'static, sqlx::Postgres>, ids: &[i64], options: &ExportOptions) -> Result<Vec<StudyToExport>, sqlx::Error> {
    // The repository's columns and row mapping, read in this run's snapshot.
    let rows: Vec<StudyRecord> = sqlx::query_as(&format!("SELECT {STUDY_COLUMNS} FROM studies s WHERE id = ANY($1) AND {EXPORTABLE} ORDER BY id"))
        .bind(ids)
        .fetch_all(&mut **tx)
        .await?;
    let exportable: Vec<i64> = rows.iter().map(|r| r.row_id).collect();

    let mut annotations: BTreeMap<i64, Vec<Annotation>> = BTreeMap::new();
    let boxes: Vec<(i64, i64, String, f32, f32, f32, f32)> = sqlx::query_as(
        "SELECT id, study_id, label, x_min, y_min, width, height FROM annotations
          WHERE study_id = ANY($1) AND label_set = 'vinbigdata' AND x_min IS NOT NULL ORDER BY id",
    )
    .bind(&exportable)
    .fetch_all(&mut **tx)
    .await?;
    for (id, study_id, label, x, y, w, h) in boxes {
        let Some(category_id) = coco::category_id(&label) else { continue };
        let bbox = [f64::from(x), f64::from(y), f64::from(w), f64::from(h)];
        annotations.entry(study_id).or_default().push(Annotation { id, image_id: study_id, category_id, bbox, area: bbox[2] * bbox[3], iscrowd: 0 });
    }

    let mut detections: BTreeMap<i64, Vec<Detection>> = BTreeMap::new();
    if options.include_model_boxes {
        // The latest inference run of each study: what the model says now.
        let found: Vec<(i64, String, f32, f32, f32, f32, f32)> = sqlx::query_as(
            "SELECT r.study_id, f.label, f.probability, f.x_min, f.y_min, f.width, f.height
               FROM (SELECT DISTINCT ON (study_id) id, study_id FROM inference_runs
                      WHERE study_id = ANY($1) ORDER BY study_id, created_at DESC, id DESC) r
               JOIN findings f ON f.inference_run_id = r.id
              WHERE f.x_min IS NOT NULL AND f.probability >= $2
              ORDER BY f.id",
        )
        .bind(&exportable)
        .bind(options.model_score_threshold)
        .fetch_all(&mut **tx)
        .await?;
        for (study_id, label, probability, x, y, w, h) in found {
            let Some(category_id) = coco::category_id(&label) else { continue };
            detections.entry(study_id).or_default().push(Detection {
                image_id: study_id,
                category_id,
                bbox: [f64::from(x), f64::from(y), f64::from(w), f64::from(h)],
                score: f64::from(probability),
            });
        }
    }

    Ok(rows
        .into_iter()
        .filter_map(|row| {
            Some(StudyToExport {
                id: row.row_id,
                public_id: row.id.as_uuid(),
                bucket: row.s3_bucket,
                key: row.s3_key,
                media_type: row.media_type,
                // EXPORTABLE requires the image to have been read.
                sha256: row.sha256?,
                width: row.width?,
                height: row.height?,
                updated_at: row.updated_at,
                annotations: annotations.remove(&row.row_id).unwrap_or_default(),
                detections: detections.remove(&row.row_id).unwrap_or_default(),
            })
        })
        .collect())
}

/// The SQL condition for a study that belongs in the export: its image was
/// read, and a radiologist annotated it with the VinBigData labels (with or
/// without boxes: an image with none is a valid COCO image).
const EXPORTABLE: &str = "s.status IN ('uploaded', 'processing', 'done') AND s.width IS NOT NULL
    AND EXISTS (SELECT 1 FROM annotations a WHERE a.study_id = s.id AND a.label_set = 'vinbigdata')";

enum Outcome {
    Exported { bytes: u64, annotations: u64, detections: u64 },
    Skipped(&'static str),
}

async fn export_study(
    images: &aws_sdk_s3::Client,
    mart: &DataMart,
    key: &UidKey,
    options: &ExportOptions,
    study: StudyToExport,
) -> Result<Outcome, ExportError> {
    let counts = (study.annotations.len() as u64, study.detections.len() as u64);
    if options.dry_run {
        return Ok(Outcome::Exported { bytes: 0, annotations: counts.0, detections: counts.1 });
    }
    let skip = |reason: &'static str, detail: String| {
        tracing::warn!(study = study.id, reason, detail, "study left out of the COCO export");
        Outcome::Skipped(reason)
    };
    let source = ObjectStore::from_client(images.clone(), study.bucket.clone());
    let object_key = &study.key;
    let outcome = match source.get(object_key, MAX_IMAGE_BYTES).await {
        Err(S3Error::NotFound { key }) => skip("missing_image", key),
        Err(err @ S3Error::TooLarge { .. }) => skip("too_large", err.to_string()),
        Err(err) => return Err(ExportError::Image(err)),
        // Originals are written once (If-None-Match), so this cannot happen
        // through the API; checked anyway, since a mart image that is not
        // the one the labels describe would poison every model trained on it.
        Ok(object) if Sha256Digest::of(&object.bytes) != study.sha256 => {
            tracing::error!(study = study.id, key = %object_key, "the stored image is not the one that was analysed");
            skip("image_changed", format!("SHA-256 differs from {}", study.sha256.to_hex()))
        }
        Ok(object) => match deidentify(study.media_type, &object.bytes, key) {
            Err(DeidentifyError::BurnedInAnnotation) => skip("burned_in_annotation", String::new()),
            Err(err) => skip("unreadable_image", err.to_string()),
            Ok(clean) => {
                let bytes = clean.len() as u64;
                let path = image_path(study.id, study.media_type);
                mart.put(&path, clean, study.media_type.as_str()).await?;
                let fragment = Fragment {
                    image: Image { id: study.id, file_name: path, width: i64::from(study.width), height: i64::from(study.height), license: 1 },
                    split: Split::of(&study.public_id, options.validation_percent),
                    annotations: study.annotations,
                    detections: study.detections,
                    updated_at: study.updated_at,
                };
                // The fragment after the image: a fragment never points at
                // an image that is not there.
                mart.put(&fragment_path(study.id), serde_json::to_vec(&fragment)?, "application/json").await?;
                return Ok(Outcome::Exported { bytes, annotations: counts.0, detections: counts.1 });
            }
        },
    };
    // Left out now: drop what an earlier export wrote for it.
    remove_study(mart, study.id, study.media_type).await?;
    Ok(outcome)
}

async fn remove_study(mart: &DataMart, study_id: i64, media_type: MediaType) -> Result<(), MartError> {
    mart.delete(&fragment_path(study_id)).await?;
    mart.delete(&image_path(study_id, media_type)).await
}

/// Reads every fragment, drops those of studies that lost their
/// annotations, and writes the COCO files and the manifest (last).
async fn assemble(db: &Database, mart: &DataMart, options: &ExportOptions, report: &mut ExportReport) -> Result<(), ExportError> {
    let paths = mart.list("fragments").await?;
    let mut fragments: Vec<Fragment> = futures::stream::iter(paths.iter())
        .map(|path| async move {
            let bytes = mart.get(path).await?.ok_or_else(|| MartError::BadPath(format!("{path} vanished while assembling")))?;
            Ok::<_, ExportError>(serde_json::from_slice::<Fragment>(&bytes)?)
        })
        .buffered(16)
        .try_collect()
        .await?;

    // Studies still in the data lake that no longer qualify leave the mart;
    // studies purged from the lake (kept in its backups) stay.
    let ids: Vec<i64> = fragments.iter().map(|f| f.image.id).collect();
    let stale: Vec<(i64, String)> =
        sqlx::query_as(&format!("SELECT id, media_type FROM studies s WHERE id = ANY($1) AND NOT ({EXPORTABLE})")).bind(&ids).fetch_all(db.pool()).await?;
    for (id, media_type) in &stale {
        if let Ok(media_type) = media_type.parse::<MediaType>() {
            remove_study(mart, *id, media_type).await?;
        }
    }
    let stale: BTreeSet<i64> = stale.into_iter().map(|(id, _)| id).collect();
    fragments.retain(|f| !stale.contains(&f.image.id));
    fragments.sort_by_key(|f| f.image.id);
    report.removed = stale.len() as u64;

    let splits: &[Split] = if options.validation_percent == 0 { &[Split::All] } else { &[Split::Train, Split::Val] };
    let newest = fragments.iter().map(|f| f.updated_at).max();
    let mut written = Vec::new();
    for &split in splits {
        let chosen: Vec<&Fragment> = fragments.iter().filter(|f| f.split == split).collect();
        let file = coco_file(&chosen, newest);
        report.images_in_export += file.images.len() as u64;
        report.annotations_in_export += file.annotations.len() as u64;
        let path = format!("annotations/instances_{}.json", split.name());
        written.push(write_json(mart, &path, &file).await?);
        if options.include_model_boxes {
            let detections: Vec<&Detection> = chosen.iter().flat_map(|f| &f.detections).collect();
            let path = format!("annotations/detections_{}.json", split.name());
            written.push(write_json(mart, &path, &detections).await?);
        }
    }
    // Files of a split layout no longer configured would mislead: remove.
    for split in [Split::All, Split::Train, Split::Val] {
        if !splits.contains(&split) {
            mart.delete(&format!("annotations/instances_{}.json", split.name())).await?;
            mart.delete(&format!("annotations/detections_{}.json", split.name())).await?;
        }
    }
    if !options.include_model_boxes {
        for split in splits {
            mart.delete(&format!("annotations/detections_{}.json", split.name())).await?;
        }
    }
    let manifest = serde_json::json!({
        "format": "COCO detection (pycocotools); bbox = [x_min, y_min, width, height], pixels, top-left origin",
        "images": report.images_in_export,
        "annotations": report.annotations_in_export,
        "validation_percent": options.validation_percent,
        "model_score_threshold": options.include_model_boxes.then_some(options.model_score_threshold),
        "deidentification": crate::deidentify::DEIDENTIFICATION_METHOD,
        "files": written,
    });
    write_json(mart, "manifest.json", &manifest).await?;
    report.files = written.iter().map(|w| w["path"].as_str().unwrap_or_default().to_owned()).collect();
    report.files.push("manifest.json".into());
    Ok(())
}

fn coco_file(fragments: &[&Fragment], newest: Option<OffsetDateTime>) -> CocoFile {
    let date_created = newest.and_then(|t| t.format(&time::format_description::well_known::Rfc3339).ok()).unwrap_or_default();
    let mut annotations: Vec<Annotation> = fragments.iter().flat_map(|f| f.annotations.iter().cloned()).collect();
    annotations.sort_by_key(|a| a.id);
    CocoFile {
        info: Info {
            description: "Chest X-ray findings, radiologist boxes (cxr-platform data mart)".into(),
            version: "1.0".into(),
            year: newest.map_or(1970, |t| t.year()),
            contributor: "cxr-platform".into(),
            url: String::new(),
            date_created,
        },
        licenses: coco::licenses(),
        images: fragments.iter().map(|f| f.image.clone()).collect(),
        annotations,
        categories: coco::categories(),
    }
}

/// Writes JSON; returns its manifest entry (path, bytes, SHA-256).
async fn write_json(mart: &DataMart, path: &str, value: &impl Serialize) -> Result<serde_json::Value, ExportError> {
    let bytes = serde_json::to_vec(value)?;
    let entry = serde_json::json!({ "path": path, "bytes": bytes.len(), "sha256": hex::encode(Sha256::digest(&bytes)) });
    mart.put(path, bytes, "application/json").await?;
    Ok(entry)
}

//! The warehouse's document: one per study, with its image facts, inference
//! runs (each with its findings), radiologist annotations, and summary
//! fields the analysts' indexes use (labels, model versions, dates).
//!
//! Documents are a pure function of the study's rows: no load time or run
//! id is stored, so loading the same rows twice yields the same collection.

use std::collections::{BTreeMap, BTreeSet};

use cxr_platform::storage::postgres::studies::StudyRecord;
use mongodb::bson::DateTime;
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

/// Decision threshold for labels a run has none recorded for.
pub const DEFAULT_THRESHOLD: f32 = 0.5;

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct StudyDocument {
    /// The study's public id (the one API clients and logs see).
    #[serde(rename = "_id")]
    pub id: String,
    /// The data lake's row id, for joins back to RDS.
    pub study_id: i64,
    pub owner: String,
    pub status: String,
    pub image: ImageFacts,
    pub modality: Option<String>,
    /// De-identified DICOM attributes (already de-identified in RDS).
    pub dicom: Option<serde_json::Value>,
    pub failure: Option<String>,
    pub created_at: DateTime,
    pub updated_at: DateTime,
    pub labels: LabelSummary,
    /// `name@version` of every model that ran on the study.
    pub models: Vec<String>,
    pub inference_runs: Vec<InferenceRunDocument>,
    pub annotations: Vec<AnnotationDocument>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ImageFacts {
    pub bucket: String,
    pub key: String,
    pub media_type: String,
    pub byte_size: Option<i64>,
    pub sha256: Option<String>,
    pub width: Option<i32>,
    pub height: Option<i32>,
    pub bit_depth: Option<i16>,
}

/// Labels on the study: what radiologists marked, and what the latest run
/// of each model version found at or above its threshold.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct LabelSummary {
    pub annotated: Vec<String>,
    pub predicted: Vec<String>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct InferenceRunDocument {
    pub run_id: i64,
    pub model_name: String,
    pub model_version: String,
    pub thresholds: serde_json::Value,
    pub timings_ms: serde_json::Value,
    /// S3 key of the run's Grad-CAM heatmap (in the images bucket).
    pub heatmap_key: Option<String>,
    pub created_at: DateTime,
    pub findings: Vec<FindingDocument>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct FindingDocument {
    pub finding_id: i64,
    pub label: String,
    pub probability: f64,
    /// At or above the run's threshold for the label.
    pub positive: bool,
    pub source: String,
    /// `[x_min, y_min, width, height]` in original-image pixels, top-left origin.
    pub bbox: Option<[f64; 4]>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct AnnotationDocument {
    pub annotation_id: i64,
    pub label_set: String,
    pub label: String,
    pub bbox: Option<[f64; 4]>,
    pub author: String,
    pub created_at: DateTime,
}

/// The rows the documents are built from (one chunk's worth). Studies are
/// the repository's [`StudyRecord`]s; the children are read whole, ids
/// included, which the documents carry.
#[derive(Clone, Debug, sqlx::FromRow)]
pub struct RunRow {
    pub id: i64,
    pub study_id: i64,
    pub model_name: String,
    pub model_version: String,
    pub thresholds: serde_json::Value,
    pub timings_ms: serde_json::Value,
    pub heatmap_key: Option<String>,
    pub created_at: OffsetDateTime,
}

#[derive(Clone, Debug, sqlx::FromRow)]
pub struct FindingRow {
    pub id: i64,
    pub inference_run_id: i64,
    pub label: String,
    pub probability: f32,
    pub x_min: Option<f32>,
    pub y_min: Option<f32>,
    pub width: Option<f32>,
    pub height: Option<f32>,
    pub source: String,
}

#[derive(Clone, Debug, sqlx::FromRow)]
pub struct AnnotationRow {
    pub id: i64,
    pub study_id: i64,
    pub label_set: String,
    pub label: String,
    pub x_min: Option<f32>,
    pub y_min: Option<f32>,
    pub width: Option<f32>,
    pub height: Option<f32>,
    pub author: String,
    pub created_at: OffsetDateTime,
}

/// One chunk of rows, to be assembled into documents.
#[derive(Clone, Debug, Default)]
pub struct ChunkRows {
    pub studies: Vec<StudyRecord>,
    pub runs: Vec<RunRow>,
    pub findings: Vec<FindingRow>,
    pub annotations: Vec<AnnotationRow>,
}

impl ChunkRows {
    /// One document per study, in the studies' order. Children are grouped
    /// by parent id; runs, findings and annotations keep their id order.
    pub fn into_documents(self) -> Vec<StudyDocument> {
        let mut findings: BTreeMap<i64, Vec<FindingRow>> = BTreeMap::new();
        for finding in self.findings {
            findings.entry(finding.inference_run_id).or_default().push(finding);
        }
        let mut runs: BTreeMap<i64, Vec<InferenceRunDocument>> = BTreeMap::new();
        for run in self.runs {
            let document = run_document(&run, findings.remove(&run.id).unwrap_or_default());
            runs.entry(run.study_id).or_default().push(document);
        }
        let mut annotations: BTreeMap<i64, Vec<AnnotationDocument>> = BTreeMap::new();
        for a in self.annotations {
            annotations.entry(a.study_id).or_default().push(AnnotationDocument {
                annotation_id: a.id,
                label_set: a.label_set,
                label: a.label,
                bbox: bbox(a.x_min, a.y_min, a.width, a.height),
                author: a.author,
                created_at: bson_date(a.created_at),
            });
        }
        self.studies
            .into_iter()
            .map(|study| {
                let mut inference_runs = runs.remove(&study.row_id).unwrap_or_default();
                inference_runs.sort_by_key(|r| r.run_id);
                let mut annotations = annotations.remove(&study.row_id).unwrap_or_default();
                annotations.sort_by_key(|a| a.annotation_id);
                study_document(study, inference_runs, annotations)
            })
            .collect()
    }
}

fn study_document(study: StudyRecord, inference_runs: Vec<InferenceRunDocument>, annotations: Vec<AnnotationDocument>) -> StudyDocument {
    let annotated: BTreeSet<String> = annotations.iter().map(|a| a.label.clone()).collect();
    // The latest run of each model version decides what it predicts.
    let mut latest: BTreeMap<(&str, &str), &InferenceRunDocument> = BTreeMap::new();
    for run in &inference_runs {
        latest.insert((&run.model_name, &run.model_version), run);
    }
    let predicted: BTreeSet<String> = latest.values().flat_map(|run| run.findings.iter().filter(|f| f.positive).map(|f| f.label.clone())).collect();
    let models: BTreeSet<String> = inference_runs.iter().map(|r| format!("{}@{}", r.model_name, r.model_version)).collect();
    StudyDocument {
        id: study.id.to_string(),
        study_id: study.row_id,
        owner: study.owner.as_str().to_owned(),
        status: study.status.as_str().to_owned(),
        image: ImageFacts {
            bucket: study.s3_bucket,
            key: study.s3_key.into_string(),
            media_type: study.media_type.as_str().to_owned(),
            // The columns' own types (the record holds them unsigned).
            byte_size: study.byte_size.map(|n| n as i64),
            sha256: study.sha256.map(|d| d.to_hex()),
            width: study.width.map(|n| n as i32),
            height: study.height.map(|n| n as i32),
            bit_depth: study.bit_depth.map(i16::from),
        },
        modality: study.modality,
        dicom: study.dicom,
        failure: study.failure,
        created_at: bson_date(study.created_at),
        updated_at: bson_date(study.updated_at),
        labels: LabelSummary { annotated: annotated.into_iter().collect(), predicted: predicted.into_iter().collect() },
        models: models.into_iter().collect(),
        inference_runs,
        annotations,
    }
}

fn run_document(run: &RunRow, mut findings: Vec<FindingRow>) -> InferenceRunDocument {
    findings.sort_by_key(|f| f.id);
    let threshold = |label: &str| run.thresholds.get(label).and_then(serde_json::Value::as_f64).map_or(DEFAULT_THRESHOLD, |t| t as f32);
    InferenceRunDocument {
        run_id: run.id,
        model_name: run.model_name.clone(),
        model_version: run.model_version.clone(),
        thresholds: run.thresholds.clone(),
        timings_ms: run.timings_ms.clone(),
        heatmap_key: run.heatmap_key.clone(),
        created_at: bson_date(run.created_at),
        findings: findings
            .into_iter()
            .map(|f| FindingDocument {
                finding_id: f.id,
                positive: f.probability >= threshold(&f.label),
                probability: f64::from(f.probability),
                bbox: bbox(f.x_min, f.y_min, f.width, f.height),
                label: f.label,
                source: f.source,
            })
            .collect(),
    }
}

fn bbox(x: Option<f32>, y: Option<f32>, w: Option<f32>, h: Option<f32>) -> Option<[f64; 4]> {
    Some([f64::from(x?), f64::from(y?), f64::from(w?), f64::from(h?)])
}

/// BSON dates hold milliseconds; PostgreSQL's microseconds are truncated.
fn bson_date(t: OffsetDateTime) -> DateTime {
    DateTime::from_millis((t.unix_timestamp_nanos() / 1_000_000) as i64)
}

#[cfg(test)]
mod tests {
    use super::*;
    use cxr_platform::domain::{MediaType, ObjectKey, Owner, StudyId, StudyStatus};
    use time::macros::datetime;

    fn study(id: i64) -> StudyRecord {
        StudyRecord {
            row_id: id,
            id: StudyId::from_uuid(uuid::Uuid::from_u128(id as u128)),
            owner: Owner::new("dr-a").expect("owner"),
            status: StudyStatus::Done,
            s3_bucket: "b".into(),
            s3_key: ObjectKey::new(format!("studies/{id}/original.png")).expect("key"),
            media_type: MediaType::Png,
            byte_size: Some(10),
            sha256: None,
            width: Some(100),
            height: Some(80),
            bit_depth: Some(8),
            modality: None,
            dicom: None,
            failure: None,
            preview_key: None,
            priority: None,
            priority_label: None,
            created_at: datetime!(2026-11-01 10:00:00.123456 UTC),
            updated_at: datetime!(2026-11-02 10:00:00 UTC),
        }
    }

    fn run(id: i64, study_id: i64, version: &str) -> RunRow {
        RunRow {
            id,
            study_id,
            model_name: "densenet".into(),
            model_version: version.into(),
            thresholds: serde_json::json!({"Effusion": 0.3}),
            timings_ms: serde_json::json!({}),
            heatmap_key: Some(format!("heatmaps/{id}.png")),
            created_at: datetime!(2026-11-01 10:00:01 UTC),
        }
    }

    fn finding(id: i64, run: i64, label: &str, probability: f32) -> FindingRow {
        FindingRow {
            id,
            inference_run_id: run,
            label: label.into(),
            probability,
            x_min: Some(1.0),
            y_min: Some(2.0),
            width: Some(3.0),
            height: Some(4.0),
            source: "cam".into(),
        }
    }

    #[test]
    fn children_nest_under_their_study_and_summaries_follow_thresholds() {
        let rows = ChunkRows {
            studies: vec![study(2), study(1)],
            runs: vec![run(11, 1, "1"), run(12, 1, "2")],
            findings: vec![
                finding(103, 12, "Effusion", 0.35),    // above its 0.3 threshold
                finding(102, 12, "Cardiomegaly", 0.4), // below the default 0.5
                finding(101, 11, "Nodule", 0.9),
            ],
            annotations: vec![AnnotationRow {
                id: 5,
                study_id: 2,
                label_set: "vinbigdata".into(),
                label: "ILD".into(),
                x_min: None,
                y_min: None,
                width: None,
                height: None,
                author: "rad".into(),
                created_at: datetime!(2026-11-03 00:00:00 UTC),
            }],
        };
        let docs = rows.into_documents();
        assert_eq!(docs.iter().map(|d| d.study_id).collect::<Vec<_>>(), [2, 1], "study order kept");
        assert_eq!(docs[0].labels.annotated, ["ILD"]);
        assert!(docs[0].inference_runs.is_empty());
        let one = &docs[1];
        assert_eq!(one.inference_runs.iter().map(|r| r.run_id).collect::<Vec<_>>(), [11, 12]);
        assert_eq!(one.inference_runs[1].findings.iter().map(|f| f.finding_id).collect::<Vec<_>>(), [102, 103]);
        assert_eq!(one.labels.predicted, ["Effusion", "Nodule"]);
        assert_eq!(one.models, ["densenet@1", "densenet@2"]);
        assert_eq!(one.inference_runs[0].findings[0].bbox, Some([1.0, 2.0, 3.0, 4.0]));
        assert_eq!(one.created_at.timestamp_millis() % 1000, 123, "milliseconds kept");
        assert_eq!(one.id, uuid::Uuid::from_u128(1).to_string());
    }
}

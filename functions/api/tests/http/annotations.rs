//! Editing and deleting annotations (history kept, owner-scoped), the
//! label sets, and the priority worklist, through the API on a random port
//! against the local stack.

use std::time::Duration;

use crate::common::{ALICE, BOB, call, start, start_with};
use cxr_api::app::AppState;
use cxr_platform::domain::{Owner, Sha256Digest, StudyId};
use cxr_platform::storage::postgres::studies::{FindingSource, ImageFacts, NewFinding, NewInferenceRun, NewStudy, StudyRecord};
use reqwest::Method;
use serde_json::{Value, json};

fn alice() -> Owner {
    Owner::new("alice").expect("owner")
}

/// A study of `owner` whose 1024 x 768 upload has been read.
async fn read_study(state: &AppState, owner: &Owner) -> StudyRecord {
    let new = NewStudy { owner: owner.clone(), s3_bucket: state.images.bucket().to_owned(), media_type: cxr_platform::domain::MediaType::Png };
    let study = state.db.create_study(&new).await.expect("study");
    let facts = ImageFacts {
        byte_size: 10,
        sha256: Sha256Digest::of(study.id.to_string().as_bytes()),
        width: 1024,
        height: 768,
        bit_depth: 8,
        modality: None,
        dicom: None,
    };
    state.db.record_upload(study.row_id, &facts).await.expect("upload")
}

#[tokio::test]
async fn edits_and_deletions_keep_the_history_and_are_owner_scoped() {
    let (base, state) = start().await;
    let study = read_study(&state, &alice()).await;
    let list_url = format!("{base}/v1/studies/{}/annotations", study.id);
    let (status, created) =
        call(Method::POST, &list_url, Some(ALICE), Some(json!({"label": "Cardiomegaly", "box": {"x_min": 100, "y_min": 200, "width": 300, "height": 150}})))
            .await;
    assert_eq!(status, 201, "{created}");
    assert_eq!((created["updated_by"].as_str(), created["updated_at"].as_str()), (Some("alice"), created["created_at"].as_str()));
    let url = format!("{list_url}/{}", created["id"]);

    // Move and resize the box.
    let (status, moved) = call(Method::PATCH, &url, Some(ALICE), Some(json!({"box": {"x_min": 110, "y_min": 210, "width": 280, "height": 140}}))).await;
    assert_eq!(status, 200, "{moved}");
    assert_eq!(moved["box"], json!({"x_min": 110.0, "y_min": 210.0, "width": 280.0, "height": 140.0}));
    assert_eq!(moved["label"], "Cardiomegaly");
    // Relabel; then make it an image-level label.
    let (status, relabelled) = call(Method::PATCH, &url, Some(ALICE), Some(json!({"label": "Aortic enlargement"}))).await;
    assert_eq!((status, relabelled["label"].as_str(), relabelled["box"]["width"].as_f64()), (200, Some("Aortic enlargement"), Some(280.0)));
    let (status, image_level) = call(Method::PATCH, &url, Some(ALICE), Some(json!({"box": null}))).await;
    assert_eq!((status, image_level["box"].is_null()), (200, true), "{image_level}");

    // Refusals change nothing.
    for (body, want) in [
        (json!({}), 422),
        (json!({"label": "Dragons"}), 422),
        (json!({"box": {"x_min": 1000, "y_min": 0, "width": 100, "height": 10}}), 422),
        (json!({"colour": "red"}), 400),
    ] {
        let (status, problem) = call(Method::PATCH, &url, Some(ALICE), Some(body.clone())).await;
        assert_eq!(status, want, "{body}: {problem}");
    }
    // Another owner, an unknown or malformed annotation id: 404, as for a missing study.
    let (status, _) = call(Method::PATCH, &url, Some(BOB), Some(json!({"label": "ILD"}))).await;
    assert_eq!(status, 404);
    let (status, _) = call(Method::DELETE, &url, Some(BOB), None).await;
    assert_eq!(status, 404);
    for other in ["999999", "not-a-number"] {
        let (status, problem) = call(Method::PATCH, &format!("{list_url}/{other}"), Some(ALICE), Some(json!({"label": "ILD"}))).await;
        assert_eq!(status, 404, "{problem}");
        assert_eq!(problem["detail"], "no such annotation on this study");
    }
    let (_, still) = call(Method::GET, &list_url, Some(ALICE), None).await;
    assert_eq!(still[0]["label"], "Aortic enlargement");

    // An annotation of another study of the same owner is not reachable through this one.
    let other_study = read_study(&state, &alice()).await;
    let (status, _) = call(Method::DELETE, &format!("{base}/v1/studies/{}/annotations/{}", other_study.id, created["id"]), Some(ALICE), None).await;
    assert_eq!(status, 404);

    let response = reqwest::Client::new().delete(&url).bearer_auth(ALICE).send().await.expect("delete");
    assert_eq!(response.status().as_u16(), 204);
    let (status, _) = call(Method::DELETE, &url, Some(ALICE), None).await;
    assert_eq!(status, 404, "deleted once");
    let (_, left) = call(Method::GET, &list_url, Some(ALICE), None).await;
    assert_eq!(left, json!([]));

    // Who changed what and when: every state, the deletion included.
    let (status, history) = call(Method::GET, &format!("{list_url}/history"), Some(ALICE), None).await;
    assert_eq!(status, 200, "{history}");
    let changes: Vec<(&str, &str, bool)> = history
        .as_array()
        .expect("history")
        .iter()
        .map(|r| (r["change"].as_str().unwrap_or(""), r["label"].as_str().unwrap_or(""), r["box"].is_null()))
        .collect();
    assert_eq!(
        changes,
        [
            ("created", "Cardiomegaly", false),
            ("updated", "Cardiomegaly", false),
            ("updated", "Aortic enlargement", false),
            ("updated", "Aortic enlargement", true),
            ("deleted", "Aortic enlargement", true)
        ]
    );
    assert!(history.as_array().expect("history").iter().all(|r| r["changed_by"] == "alice" && r["annotation_id"] == created["id"]));
    assert_eq!(history[1]["box"]["x_min"], 110.0);
    let (status, _) = call(Method::GET, &format!("{list_url}/history"), Some(BOB), None).await;
    assert_eq!(status, 404);
}

#[tokio::test]
async fn label_sets_are_served_from_the_one_list() {
    let (base, _) = start().await;
    let (status, sets) = call(Method::GET, &format!("{base}/v1/label-sets"), Some(ALICE), None).await;
    assert_eq!(status, 200, "{sets}");
    let vinbigdata = sets.as_array().expect("sets").iter().find(|s| s["name"] == "vinbigdata").expect("vinbigdata");
    let labels: Vec<&str> = vinbigdata["labels"].as_array().expect("labels").iter().filter_map(Value::as_str).collect();
    assert_eq!(labels, cxr_platform::domain::LabelSets::builtin().vinbigdata().labels.iter().map(String::as_str).collect::<Vec<_>>());
    assert_eq!(labels.len(), 14);
    let (status, _) = call(Method::GET, &format!("{base}/v1/label-sets"), None, None).await;
    assert_eq!(status, 401);
}

/// A finished study whose latest run gives `probability` to Cardiomegaly,
/// created `age` ago.
async fn inferred_study(state: &AppState, probability: f32, age: Duration) -> StudyId {
    let study = read_study(state, &alice()).await;
    let run = NewInferenceRun { model_name: "m".into(), model_version: "1".into(), ..Default::default() };
    let findings = [
        NewFinding::new("Cardiomegaly", probability, None, FindingSource::Model).expect("finding"),
        NewFinding::new("Effusion", 0.2, None, FindingSource::Model).expect("finding"),
    ];
    state.db.record_inference(study.row_id, &run, &findings).await.expect("inference");
    sqlx::query("UPDATE studies SET created_at = now() - make_interval(secs => $2) WHERE id = $1")
        .bind(study.row_id)
        .bind(age.as_secs_f64())
        .execute(state.db.pool())
        .await
        .expect("age");
    study.id
}

async fn listing(base: &str, query: &str) -> Vec<(String, Value, bool)> {
    let mut out = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let url = match &cursor {
            Some(c) => format!("{base}/v1/studies?{query}&limit=2&cursor={c}"),
            None => format!("{base}/v1/studies?{query}&limit=2"),
        };
        let (status, page) = call(Method::GET, &url, Some(ALICE), None).await;
        assert_eq!(status, 200, "{page}");
        for s in page["studies"].as_array().expect("studies") {
            out.push((s["id"].as_str().expect("id").to_owned(), s["priority"].clone(), s["overdue"].as_bool().expect("overdue")));
        }
        match page["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_owned()),
            None => return out,
        }
    }
}

#[tokio::test]
async fn the_priority_worklist_ranks_by_score_but_starves_no_case() {
    let (base, state) = start_with(None, |s| s.worklist_max_wait = Duration::from_secs(3600)).await;
    let hour = Duration::from_secs(3600);
    let low_old = inferred_study(&state, 0.55, hour * 3).await; // waited 3 h, never reviewed
    let reviewed_old = inferred_study(&state, 0.6, hour * 5).await; // waited 5 h, but reviewed
    let high = inferred_study(&state, 0.95, Duration::from_secs(60)).await;
    let negative = inferred_study(&state, 0.1, Duration::from_secs(120)).await; // nothing positive: priority 0
    let middle = inferred_study(&state, 0.8, Duration::from_secs(30)).await;
    let waiting = read_study(&state, &alice()).await.id; // not inferred yet: no priority
    let older_unreviewed = inferred_study(&state, 0.7, hour * 2).await;
    let reviewed = state.db.find_study(&alice(), reviewed_old).await.expect("find").expect("study");
    state
        .db
        .add_annotation(
            reviewed.row_id,
            &cxr_platform::storage::postgres::studies::NewAnnotation { label_set: "vinbigdata".into(), label: "ILD".into(), bbox: None, author: alice() },
        )
        .await
        .expect("review");

    let order = listing(&base, "sort=priority").await;
    let ids: Vec<String> = order.iter().map(|(id, _, _)| id.clone()).collect();
    let expect = [low_old, older_unreviewed, high, middle, reviewed_old, negative, waiting].map(|id| id.to_string());
    assert_eq!(ids, expect, "overdue unreviewed first (oldest first), then by priority, not yet inferred last");
    assert_eq!(order.iter().map(|(_, _, overdue)| *overdue).collect::<Vec<_>>(), [true, true, false, false, false, false, false]);
    assert_eq!(order[2].1.as_f64().map(|p| (p * 100.0).round()), Some(95.0));
    assert_eq!(order[5].1.as_f64(), Some(0.0), "no positive finding: priority 0");
    assert!(order[6].1.is_null());

    // Filters apply to the priority order too; newest first is unchanged.
    let done_only = listing(&base, "sort=priority&status=done").await;
    assert_eq!(done_only.len(), 6);
    let newest = listing(&base, "sort=newest").await;
    assert_eq!(newest[0].0, waiting.to_string());

    // A cursor belongs to its order.
    let (_, page) = call(Method::GET, &format!("{base}/v1/studies?sort=priority&limit=1"), Some(ALICE), None).await;
    let cursor = page["next_cursor"].as_str().expect("cursor");
    let (status, problem) = call(Method::GET, &format!("{base}/v1/studies?cursor={cursor}"), Some(ALICE), None).await;
    assert_eq!(status, 400, "{problem}");
    let (status, _) = call(Method::GET, &format!("{base}/v1/studies?sort=loudest"), Some(ALICE), None).await;
    assert_eq!(status, 400);

    // The sort has its index (owner, priority, created_at, id).
    let index: Option<String> = sqlx::query_scalar("SELECT indexname::text FROM pg_indexes WHERE indexname = 'studies_owner_priority_idx'")
        .fetch_optional(state.db.pool())
        .await
        .expect("index");
    assert!(index.is_some());
}

//! Generated data-lake content for job tests and benchmarks, and a
//! fingerprint to compare tables by.

use crate::storage::postgres::Database;

/// Generated data-lake content for job tests and benchmarks: `studies`
/// studies (every 10th without any inference, every 4th with annotations),
/// each of the others with one inference run of `findings_per_study`
/// findings. Set-based SQL, so 10,000 studies take about a second.
pub async fn seed(db: &Database, studies: i64, findings_per_study: i64) -> Result<(), crate::storage::postgres::DbError> {
    let mut tx = db.begin().await?;
    let first: i64 = sqlx::query_scalar("SELECT COALESCE(max(id), 0) FROM studies").fetch_one(&mut *tx).await?;
    sqlx::query(
        "INSERT INTO studies (owner, status, s3_bucket, s3_key, media_type, byte_size, sha256, width, height,
                              bit_depth, modality, dicom, created_at, updated_at)
         SELECT 'owner-' || (g % 7), CASE WHEN g % 10 = 0 THEN 'uploaded' ELSE 'done' END::study_status,
                'cxr-images', 'studies/seed-' || ($1 + g) || '/original.png', 'image/png', 100000 + g,
                md5(g::text) || md5((g + 1)::text), 2048 + g % 100, 2000, 16, 'DX',
                CASE WHEN g % 3 = 0 THEN jsonb_build_object('Modality', 'DX', 'Rows', 2000) END,
                now() - make_interval(secs => $2 - g), now() - make_interval(secs => $2 - g)
           FROM generate_series(1, $2) AS g",
    )
    .bind(first)
    .bind(studies)
    .execute(&mut *tx)
    .await?;
    sqlx::query(
        "INSERT INTO inference_runs (study_id, model_name, model_version, thresholds, timings_ms, model_trained)
         SELECT id, 'densenet121-res224-all', '1', '{\"Cardiomegaly\": 0.5}', jsonb_build_object('infer', id % 50), id % 2 = 0
           FROM studies WHERE id > $1 AND status = 'done'",
    )
    .bind(first)
    .execute(&mut *tx)
    .await?;
    sqlx::query(
        "INSERT INTO findings (inference_run_id, label, probability, x_min, y_min, width, height, source)
         SELECT r.id, l.name, ((r.id * 7 + f) % 100) / 100.0,
                CASE WHEN f % 2 = 0 THEN 10 * f END, CASE WHEN f % 2 = 0 THEN 20 END,
                CASE WHEN f % 2 = 0 THEN 100 END, CASE WHEN f % 2 = 0 THEN 50 + f END,
                CASE WHEN f % 2 = 0 THEN 'cam' ELSE 'model' END::finding_source
           FROM inference_runs r JOIN studies s ON s.id = r.study_id
          CROSS JOIN generate_series(1, $2) AS f
           JOIN labels l ON l.label_set = 'torchxrayvision-all' AND l.position = f % 18
          WHERE s.id > $1",
    )
    .bind(first)
    .bind(findings_per_study)
    .execute(&mut *tx)
    .await?;
    sqlx::query(
        "INSERT INTO annotations (study_id, label_set, label, x_min, y_min, width, height, author)
         SELECT s.id, 'vinbigdata', l.name, 5, 6, 70, 80, 'radiologist-' || (s.id % 3)
           FROM studies s JOIN labels l ON l.label_set = 'vinbigdata' AND l.position = s.id % 14
          WHERE s.id > $1 AND s.id % 4 = 0",
    )
    .bind(first)
    .execute(&mut *tx)
    .await?;
    sqlx::query(
        "INSERT INTO annotation_revisions (annotation_id, study_id, change, label_set, label, x_min, y_min, width, height, changed_by, changed_at)
         SELECT a.id, a.study_id, 'created', a.label_set, a.label, a.x_min, a.y_min, a.width, a.height, a.author, a.created_at
           FROM annotations a WHERE a.study_id > $1",
    )
    .bind(first)
    .execute(&mut *tx)
    .await?;
    sqlx::query(
        "UPDATE studies s SET (priority, priority_label) =
                (SELECT COALESCE(max(top.probability), 0), max(top.label)
                   FROM (SELECT f.probability, f.label FROM inference_runs r JOIN findings f ON f.inference_run_id = r.id
                          WHERE r.study_id = s.id AND f.source = 'model' AND f.probability >= 0.5
                          ORDER BY f.probability DESC, f.label LIMIT 1) top)
          WHERE s.id > $1 AND s.status = 'done'",
    )
    .bind(first)
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(())
}

/// Row count and an order-independent digest of a table's full contents,
/// for comparing a restored database with its source.
pub async fn table_fingerprint(db: &Database, table: &str, order_by: &str) -> (i64, String) {
    // Table and column names come from the test, never from input.
    sqlx::query_as(&format!("SELECT count(*), md5(COALESCE(string_agg(t::text, '|' ORDER BY {order_by}), '')) FROM {table} t"))
        .fetch_one(db.pool())
        .await
        .expect("fingerprint")
}

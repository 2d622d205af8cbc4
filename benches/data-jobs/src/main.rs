//! Data-job benchmark: seeds a fresh database on the local stack with
//! generated studies, then runs each scheduled job once over all of it
//! (first run, the heaviest) and PostgreSQL's own `COPY ... TO STDOUT` of
//! the same tables as the reference, in the same process and run.
//!
//! Peak memory is the process's resident high-water mark (VmHWM), reset
//! before each measurement through /proc/self/clear_refs.
//!
//!     infra/local/dev.sh up
//!     cargo run --release -p cxr-data-jobs-bench -- --studies 10000 --findings-per-study 12

use std::time::{Duration, Instant};

use clap::Parser;
use cxr_coco_export::deidentify::UidKey;
use cxr_platform::storage::postgres::Database;
use cxr_platform::storage::s3::ObjectKey;
use cxr_platform::testing::{LocalStack, png_with_text, seed};
use futures::{StreamExt, TryStreamExt};

#[derive(Parser)]
struct Args {
    /// Studies to generate (every 10th without inference, every 4th annotated).
    #[arg(long, default_value_t = 10_000)]
    studies: i64,
    /// Findings per inference run.
    #[arg(long, default_value_t = 12)]
    findings_per_study: i64,
    /// Studies per chunk for every job.
    #[arg(long, default_value_t = 1000)]
    chunk: u32,
}

struct Measurement {
    name: &'static str,
    units: u64,
    unit: &'static str,
    elapsed: Duration,
    peak_rss_mib: f64,
}

fn reset_peak_rss() {
    // "5" resets the peak resident set size (Linux 4.0+); best effort.
    let _ = std::fs::write("/proc/self/clear_refs", "5");
}

fn peak_rss_mib() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| s.lines().find(|l| l.starts_with("VmHWM:")).and_then(|l| l.split_whitespace().nth(1)?.parse::<f64>().ok()))
        .map_or(f64::NAN, |kib| kib / 1024.0)
}

async fn measure<F, T>(name: &'static str, unit: &'static str, work: F) -> anyhow::Result<(Measurement, T)>
where
    F: std::future::Future<Output = anyhow::Result<(u64, T)>>,
{
    reset_peak_rss();
    let started = Instant::now();
    let (units, value) = work.await?;
    let measurement = Measurement { name, units, unit, elapsed: started.elapsed(), peak_rss_mib: peak_rss_mib() };
    eprintln!("{name}: {units} {unit} in {:.2?}", measurement.elapsed);
    Ok((measurement, value))
}

/// `COPY (table) TO STDOUT` of every table the jobs read; returns rows.
async fn copy_out(db: &Database) -> anyhow::Result<u64> {
    let mut rows = 0;
    for table in ["studies", "inference_runs", "findings", "annotations"] {
        let mut connection = db.pool().acquire().await?;
        let mut stream = connection.copy_out_raw(&format!("COPY {table} TO STDOUT")).await?;
        while let Some(chunk) = stream.try_next().await? {
            rows += chunk.iter().filter(|b| **b == b'\n').count() as u64;
        }
    }
    Ok(rows)
}

async fn count(db: &Database, table: &str) -> anyhow::Result<u64> {
    Ok(sqlx::query_scalar::<_, i64>(&format!("SELECT count(*) FROM {table}")).fetch_one(db.pool()).await? as u64)
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    cxr_platform::telemetry::init();
    let stack = LocalStack::get();
    let db = stack.fresh_database().await;
    let images = stack.fresh_bucket().await;
    seed(&db, args.studies, args.findings_per_study).await?;
    sqlx::query("UPDATE studies SET s3_bucket = $1").bind(images.bucket()).execute(db.pool()).await?;
    let annotated: Vec<String> = sqlx::query_scalar("SELECT s3_key FROM studies WHERE id IN (SELECT study_id FROM annotations)").fetch_all(db.pool()).await?;
    let png = png_with_text("Patient Doe^Jane");
    futures::stream::iter(annotated.iter())
        .map(|key| {
            let (images, png) = (images.clone(), png.clone());
            async move { images.put(&ObjectKey::new(key.clone())?, png, "image/png").await.map_err(anyhow::Error::from) }
        })
        .buffer_unordered(32)
        .try_collect::<Vec<_>>()
        .await?;
    let total_rows = count(&db, "studies").await? + count(&db, "inference_runs").await? + count(&db, "findings").await? + count(&db, "annotations").await?;
    eprintln!(
        "data set: {} studies, {} findings, {} annotations ({} rows in the four tables), {} images",
        count(&db, "studies").await?,
        count(&db, "findings").await?,
        count(&db, "annotations").await?,
        total_rows,
        annotated.len()
    );

    let mut results = Vec::new();
    let (m, _) = measure("PostgreSQL COPY TO STDOUT (reference)", "rows", async { Ok((copy_out(&db).await?, ())) }).await?;
    results.push(m);

    let backups = stack.fresh_bucket().await;
    let options = cxr_backup::export::BackupOptions { prefix: "rds-backups".into(), chunk_studies: args.chunk, dry_run: false, time_budget: None };
    let (m, report) = measure("backup (RDS -> Parquet in S3)", "rows", async {
        let report = cxr_backup::export::run_backup(&db, &backups, &options).await?;
        Ok((["studies", "inference_runs", "findings", "annotations"].iter().map(|t| report.rows[*t]).sum(), report))
    })
    .await?;
    eprintln!("  {} parts, {} bytes", report.parts, report.bytes);
    results.push(m);

    let restored = stack.fresh_database().await;
    let (m, _) = measure("restore (S3 Parquet -> empty RDS)", "rows", async {
        let report = cxr_backup::restore::restore(&restored, &backups, "rds-backups").await?;
        Ok((["studies", "inference_runs", "findings", "annotations"].iter().map(|t| report.rows.get(*t).copied().unwrap_or(0)).sum(), ()))
    })
    .await?;
    results.push(m);

    let warehouse = stack.fresh_warehouse().await;
    let collection = warehouse.collection("studies");
    let options = cxr_warehouse::load::LoadOptions { chunk_studies: args.chunk, dry_run: false, time_budget: None };
    let (m, _) = measure("warehouse (RDS -> DocumentDB documents)", "documents", async {
        let report = cxr_warehouse::load::run_load(&db, &collection, &options).await?;
        Ok((report.documents, ()))
    })
    .await?;
    results.push(m);

    let mart = tempfile::tempdir()?;
    let options = cxr_coco_export::export::ExportOptions {
        chunk_studies: args.chunk,
        validation_percent: 20,
        include_model_boxes: true,
        model_score_threshold: 0.5,
        dry_run: false,
        time_budget: None,
    };
    let data_mart = cxr_coco_export::mart::DataMart::Local { root: mart.path().to_owned() };
    let key = UidKey::new("benchmark-deidentify-secret");
    let (m, report) = measure("coco-export (annotated studies -> COCO, local dir)", "studies scanned", async {
        let report = cxr_coco_export::export::run_export(&db, &stack.s3_client(), &data_mart, &key, &options).await?;
        Ok((report.studies_changed, report))
    })
    .await?;
    eprintln!("  {} images exported, {} annotations, {} detections", report.exported, report.annotations_in_export, report.detections);
    results.push(m);

    let reference = results[0].elapsed.as_secs_f64();
    println!("| job | units | time (s) | units/s | time vs COPY | peak RSS (MiB) |");
    println!("|---|---:|---:|---:|---:|---:|");
    for m in &results {
        let secs = m.elapsed.as_secs_f64();
        println!("| {} | {} {} | {:.2} | {:.0} | {:.1}x | {:.0} |", m.name, m.units, m.unit, secs, m.units as f64 / secs, secs / reference, m.peak_rss_mib);
    }
    Ok(())
}

//! Load on the API's hottest read, `GET /v1/studies/{id}`, on loopback.
//!
//! 1. Seeds a finished study (18 findings, 2 boxes, a heatmap key) in a
//!    fresh database, bucket and table of the local stack, with its
//!    DynamoDB hot copy, exactly as the inference pipeline leaves it.
//! 2. Starts the real `api` binary and measures spawn -> first 200 from
//!    `GET /v1/health` (start-to-first-response).
//! 3. Runs a bounded closed-loop load (`--connections` workers, each with
//!    one keep-alive connection, one request in flight each, for
//!    `--seconds`) and reports requests/s and p50/p99/max latency.
//! 4. Reference, same run, same concurrency: DynamoDB `GetItem` of the same
//!    hot copy straight through the SDK (the API's one backing call on
//!    this path), so the ratio shows what the API adds on top.
//! 5. CPU time per request of each process involved (the api, this
//!    process as the load generator or SDK client, and the DynamoDB server
//!    when `--dynamodb-pid` is given), read from `/proc` over the timed
//!    part: on a shared machine latency moves with the neighbours' load,
//!    CPU time per request much less.
//!
//! Run with the stack up: `infra/local/dev.sh up && source .stack/env &&
//! cargo build --release -p cxr-api && cargo run --release -p cxr-api-load-bench
//! -- --dynamodb-pid $(cat .stack/run/dynamodb.pid)`.

use std::time::{Duration, Instant};

use clap::Parser;
use cxr_platform::domain::{MediaType, Owner, PixelBox, Sha256Digest};
use cxr_platform::storage::postgres::studies::{FindingSource, ImageFacts, NewFinding, NewInferenceRun, NewStudy};
use cxr_platform::storage::results::{ResultStore, StudySnapshot};
use cxr_platform::testing::LocalStack;

#[derive(Parser)]
struct Args {
    /// The api binary to start.
    #[arg(long, default_value = "target/release/api")]
    api_bin: std::path::PathBuf,
    /// Concurrent connections (each with one request in flight).
    #[arg(long, default_value_t = 16)]
    connections: usize,
    /// Seconds of load per measurement (after a 2 s warm-up).
    #[arg(long, default_value_t = 10)]
    seconds: u64,
    /// The local DynamoDB server's process id, to report its CPU time per
    /// request too (`.stack/run/dynamodb.pid`).
    #[arg(long)]
    dynamodb_pid: Option<u32>,
}

/// A process whose CPU time is counted over a measurement.
#[derive(Clone)]
struct Watched {
    name: &'static str,
    /// A pid, or `self`.
    proc_dir: String,
}

impl Watched {
    fn process(name: &'static str, pid: u32) -> Self {
        Self { name, proc_dir: pid.to_string() }
    }

    fn this_process(name: &'static str) -> Self {
        Self { name, proc_dir: "self".to_owned() }
    }

    /// User plus system CPU time of all its threads so far (`None` where
    /// `/proc` is not Linux's).
    fn cpu_time(&self) -> Option<Duration> {
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", self.proc_dir)).ok()?;
        // Fields after the parenthesised command name; utime and stime are
        // the 14th and 15th of the line, in USER_HZ ticks (100 per second
        // on Linux whatever the kernel's tick rate).
        let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
        let ticks = fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
        Some(Duration::from_millis(ticks * 10))
    }
}

const TOKEN: &str = "bench-token-0123456789abcdef";

struct Measured {
    requests: usize,
    errors: usize,
    elapsed: Duration,
    latencies: Vec<Duration>,
    /// CPU time per request of each watched process.
    cpu_per_request: Vec<(&'static str, Duration)>,
}

impl Measured {
    fn percentile(&self, p: f64) -> Duration {
        if self.latencies.is_empty() {
            return Duration::ZERO;
        }
        let i = ((self.latencies.len() as f64 - 1.0) * p).round() as usize;
        self.latencies[i]
    }

    fn rps(&self) -> f64 {
        self.requests as f64 / self.elapsed.as_secs_f64()
    }

    fn row(&self, name: &str) -> String {
        let ms = |d: Duration| d.as_secs_f64() * 1000.0;
        format!(
            "| {name} | {:.0} | {:.2} | {:.2} | {:.2} | {} |",
            self.rps(),
            ms(self.percentile(0.50)),
            ms(self.percentile(0.99)),
            ms(self.latencies.last().copied().unwrap_or_default()),
            self.errors
        )
    }

    fn cpu_row(&self, name: &str) -> String {
        let per = self.cpu_per_request.iter().map(|(process, t)| format!("{process} {:.0} µs", t.as_secs_f64() * 1e6)).collect::<Vec<_>>();
        format!("| {name} | {} |", per.join(", "))
    }
}

/// `connections` workers call `request` back to back for `seconds`.
async fn closed_loop<F, Fut>(connections: usize, seconds: u64, watched: &[Watched], request: F) -> Measured
where
    F: Fn(usize) -> Fut + Clone + Send + 'static,
    Fut: std::future::Future<Output = bool> + Send,
{
    // Warm-up: connections opened, caches filled.
    let warm_until = Instant::now() + Duration::from_secs(2);
    let workers: Vec<_> = (0..connections)
        .map(|w| {
            let request = request.clone();
            tokio::spawn(async move {
                while Instant::now() < warm_until {
                    request(w).await;
                }
            })
        })
        .collect();
    futures::future::join_all(workers).await;

    let cpu_before: Vec<_> = watched.iter().map(Watched::cpu_time).collect();
    let started = Instant::now();
    let until = started + Duration::from_secs(seconds);
    let workers: Vec<_> = (0..connections)
        .map(|w| {
            let request = request.clone();
            tokio::spawn(async move {
                let mut latencies = Vec::new();
                let mut errors = 0;
                while Instant::now() < until {
                    let t = Instant::now();
                    if request(w).await {
                        latencies.push(t.elapsed());
                    } else {
                        errors += 1;
                    }
                }
                (latencies, errors)
            })
        })
        .collect();
    let mut latencies = Vec::new();
    let mut errors = 0;
    for worker in futures::future::join_all(workers).await {
        let (l, e) = worker.expect("worker");
        latencies.extend(l);
        errors += e;
    }
    let elapsed = started.elapsed();
    let requests = u32::try_from(latencies.len().max(1)).unwrap_or(u32::MAX);
    let cpu_per_request = watched.iter().zip(cpu_before).filter_map(|(w, before)| Some((w.name, w.cpu_time()?.saturating_sub(before?) / requests))).collect();
    latencies.sort();
    Measured { requests: latencies.len(), errors, elapsed, latencies, cpu_per_request }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    anyhow::ensure!(args.api_bin.exists(), "{} not found: cargo build --release -p cxr-api", args.api_bin.display());
    let stack = LocalStack::get();

    // 1. A finished study, as the pipeline leaves it.
    let url = stack.fresh_database_url().await;
    let db = cxr_platform::storage::postgres::Database::connect(&stack.postgres_settings(&url)).await?;
    db.migrate().await?;
    let images = stack.fresh_bucket().await;
    let table = stack.fresh_table().await;
    let results = ResultStore::new(table.clone());
    let owner = Owner::new("bench")?;
    let study = db.create_study(&NewStudy { owner: owner.clone(), s3_bucket: images.bucket().to_owned(), media_type: MediaType::Png }).await?;
    let facts = ImageFacts { byte_size: 1000, sha256: Sha256Digest::of(b"bench image"), width: 2048, height: 2048, bit_depth: 8, modality: None, dicom: None };
    db.record_upload(study.row_id, &facts).await?;
    db.claim_for_inference(study.row_id, Duration::from_secs(45)).await?;
    let mut findings: Vec<NewFinding> =
        (0..18).map(|i| NewFinding::new(format!("Label {i}"), i as f32 / 18.0, None, FindingSource::Model)).collect::<Result<_, _>>()?;
    for i in 0..2 {
        findings.push(NewFinding::new("Label 17", 0.9, Some(PixelBox::new(100.0 * i as f32, 200.0, 300.0, 250.0)?), FindingSource::Cam)?);
    }
    let run = NewInferenceRun {
        model_name: "bench".into(),
        model_version: "1".into(),
        heatmap_key: Some(cxr_platform::domain::ObjectKey::new("heatmaps/bench.png")?),
        ..Default::default()
    };
    db.record_inference(study.row_id, &run, &findings).await?;
    let done = db.find_study(&owner, study.id).await?.ok_or_else(|| anyhow::anyhow!("study vanished"))?;
    let latest = db.latest_inference(done.row_id).await?;
    results.put_snapshot(&StudySnapshot::of(&done, latest.as_ref()).ok_or_else(|| anyhow::anyhow!("not finished"))?).await?;

    // 2. The api binary: spawn -> first 200.
    let port = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
    let mut command = stack.command(&args.api_bin);
    command
        .env("DATABASE_URL", &url)
        .env("DATABASE_MAX_CONNECTIONS", args.connections.to_string())
        .env("IMAGES_BUCKET", images.bucket())
        .env("RESULTS_TABLE", table.name())
        .env("API_ADDR", format!("127.0.0.1:{port}"))
        .env("API_DEV_TOKENS", format!("{TOKEN}=bench"))
        .env("MODEL_ENDPOINT_NAME", "unused-by-this-bench")
        .stdout(std::process::Stdio::null());
    let client = reqwest::Client::builder().pool_max_idle_per_host(args.connections).build()?;
    let health = format!("http://127.0.0.1:{port}/v1/health");
    let spawned = Instant::now();
    let mut api = command.spawn()?;
    let first_response = loop {
        if let Ok(answer) = client.get(&health).send().await
            && answer.status().is_success()
        {
            break spawned.elapsed();
        }
        anyhow::ensure!(spawned.elapsed() < Duration::from_secs(30), "the api did not answer within 30 s");
        tokio::time::sleep(Duration::from_millis(1)).await;
    };

    // 3. Load on GET /v1/studies/{id}.
    let study_url = format!("http://127.0.0.1:{port}/v1/studies/{}", study.id);
    let check = client.get(&study_url).bearer_auth(TOKEN).send().await?;
    anyhow::ensure!(check.status().is_success(), "GET answered {}", check.status());
    let body = check.text().await?;
    anyhow::ensure!(body.contains("\"status\":\"done\"") && body.contains("heatmap_url"), "unexpected answer: {body}");
    let dynamodb = args.dynamodb_pid.map(|pid| Watched::process("DynamoDB server", pid));
    let api_load = {
        let (client, url) = (client.clone(), study_url.clone());
        let watched: Vec<_> =
            [api.id().map(|pid| Watched::process("api", pid)), Some(Watched::this_process("load generator")), dynamodb.clone()].into_iter().flatten().collect();
        closed_loop(args.connections, args.seconds, &watched, move |_| {
            let request = client.get(&url).bearer_auth(TOKEN).send();
            async move {
                match request.await {
                    Ok(answer) => answer.status().is_success() && answer.bytes().await.is_ok(),
                    Err(_) => false,
                }
            }
        })
        .await
    };

    // 4. Reference: the same hot copy straight from DynamoDB.
    let reference = {
        let results = results.clone();
        let id = study.id;
        let watched: Vec<_> = [Some(Watched::this_process("SDK client")), dynamodb.clone()].into_iter().flatten().collect();
        closed_loop(args.connections, args.seconds, &watched, move |_| {
            let results = results.clone();
            async move { matches!(results.snapshot(id).await, Ok(Some(_))) }
        })
        .await
    };
    let _ = api.kill().await;

    println!("api start-to-first-response (spawn -> first 200 from /v1/health): {:.0} ms", first_response.as_secs_f64() * 1000.0);
    println!("{} connections, {} s each, closed loop, loopback\n", args.connections, args.seconds);
    println!("| target | requests/s | p50 ms | p99 ms | max ms | errors |");
    println!("|---|---:|---:|---:|---:|---:|");
    println!("{}", reference.row("DynamoDB GetItem of the hot copy via the SDK (reference)"));
    println!("{}", api_load.row("GET /v1/studies/{id} (api binary)"));
    println!("\nGET /v1/studies/{{id}} / reference: {:.2}x the requests/s", api_load.rps() / reference.rps());
    println!("\n| CPU time per request | by process |");
    println!("|---|---|");
    println!("{}", reference.cpu_row("DynamoDB GetItem (reference)"));
    println!("{}", api_load.cpu_row("GET /v1/studies/{id}"));
    Ok(())
}

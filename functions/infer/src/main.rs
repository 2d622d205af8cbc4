use std::time::Duration;

use aws_lambda_events::s3::S3Event;
use clap::{Parser, Subcommand};
use cxr_infer::InferHandler;
use cxr_infer::local_relay::LocalRelay;
use cxr_platform::config::{Env, S3Settings};
use cxr_platform::storage::s3::ObjectStore;
use lambda_runtime::{LambdaEvent, service_fn};

/// The inference handler: a Lambda for S3 ObjectCreated events in AWS;
/// locally, the stand-in for S3's notifications.
#[derive(Parser)]
#[command(version)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Deliver S3 ObjectCreated events for uploads to the local stack
    /// (s3s-fs sends none), until Ctrl-C.
    Relay {
        #[arg(long, default_value_t = 500)]
        interval_ms: u64,
    },
    /// Handle one S3 event from a JSON file (e.g. events/s3-object-created.json).
    Event { file: std::path::PathBuf },
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    cxr_platform::telemetry::init();
    let env = Env::process();
    let in_lambda = cxr_platform::aws::in_lambda();
    let cli = if in_lambda { Cli { command: None } } else { Cli::parse() };
    let handler = InferHandler::from_env(&env).await?;
    match cli.command {
        None if in_lambda => {
            let handler = &handler;
            lambda_runtime::run(service_fn(move |event: LambdaEvent<S3Event>| async move {
                handler.handle(&event.payload).await.map_err(|e| lambda_runtime::Diagnostic::from(Box::new(e) as Box<dyn std::error::Error + Send + Sync>))
            }))
            .await
            .map_err(|e| anyhow::anyhow!(e))
        }
        None => anyhow::bail!("not running in Lambda: use `infer relay` or `infer event FILE` (see --help)"),
        Some(Command::Relay { interval_ms }) => {
            let sdk = cxr_platform::aws::load_sdk_config().await?;
            let images = ObjectStore::new(&sdk, &S3Settings::from_env(&env)?);
            tracing::info!(bucket = images.bucket(), "relaying S3 ObjectCreated events to the infer handler");
            let stop = async {
                let _ = tokio::signal::ctrl_c().await;
            };
            LocalRelay::new(&handler, images).run(Duration::from_millis(interval_ms), stop).await;
            Ok(())
        }
        Some(Command::Event { file }) => {
            let event: S3Event = serde_json::from_str(&std::fs::read_to_string(&file)?)?;
            let report = handler.handle(&event).await?;
            println!("{}", serde_json::to_string_pretty(&report)?);
            Ok(())
        }
    }
}

use clap::{Parser, Subcommand};
use cxr_backup::{BackupJob, ScheduledDetail};
use cxr_platform::config::Env;
use lambda_runtime::{LambdaEvent, service_fn};

#[derive(Parser)]
#[command(name = "backup", about = "Incremental Parquet backup of the data lake to S3, and restore")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Back up everything changed since the last successful run.
    Run {
        /// Report what would be written, write nothing.
        #[arg(long)]
        dry_run: bool,
    },
    /// Load every backup under BACKUP_PREFIX into the (empty) DATABASE_URL database.
    Restore,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    cxr_platform::telemetry::init();
    let job = BackupJob::from_env(&Env::process()).await?;
    if std::env::var_os("AWS_LAMBDA_RUNTIME_API").is_some() {
        let job = &job;
        // An error fails the invocation, so EventBridge's retry and the
        // dead-letter queue see it: nothing is swallowed.
        lambda_runtime::run(service_fn(move |event: LambdaEvent<serde_json::Value>| async move {
            let detail = ScheduledDetail::from_event(&event.payload);
            job.backup(detail.dry_run).await.map_err(|e| lambda_runtime::Diagnostic::from(Box::new(e) as Box<dyn std::error::Error + Send + Sync>))
        }))
        .await
        .map_err(|e| anyhow::anyhow!(e))?;
        return Ok(());
    }
    let report = match Cli::parse().command {
        Command::Run { dry_run } => serde_json::to_value(job.backup(dry_run).await?)?,
        Command::Restore => serde_json::to_value(job.restore().await?)?,
    };
    println!("{}", serde_json::to_string_pretty(&report)?);
    Ok(())
}

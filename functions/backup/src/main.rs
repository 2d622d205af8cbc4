use clap::{Parser, Subcommand};
use cxr_backup::BackupJob;
use cxr_platform::config::Env;
use cxr_platform::jobs::scheduled::{ScheduledRun, in_lambda, serve_lambda};

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
    if in_lambda() {
        return serve_lambda(job.job, |run| job.backup(run)).await.map_err(|e| anyhow::anyhow!(e));
    }
    let report = match Cli::parse().command {
        Command::Run { dry_run } => {
            serde_json::to_value(job.backup(ScheduledRun { dry_run, time_budget: job.job.time_budget }).await?)?
        }
        Command::Restore => serde_json::to_value(job.restore().await?)?,
    };
    println!("{}", serde_json::to_string_pretty(&report)?);
    Ok(())
}

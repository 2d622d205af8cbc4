use clap::{Parser, Subcommand};
use cxr_backup::BackupJob;
use cxr_platform::config::Env;
use cxr_platform::jobs::scheduled::{RunArgs, in_lambda, serve_lambda};

#[derive(Parser)]
#[command(name = "backup", about = "Incremental Parquet backup of the data lake to S3, and restore")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Back up everything changed since the last successful run (then purge,
    /// if BACKUP_PURGE_AFTER_DAYS is set).
    Run(RunArgs),
    /// Delete studies older than the retention whose current version is in
    /// a verified backup (all backups are read back and checked first).
    Purge {
        /// Retention in days (default: BACKUP_PURGE_AFTER_DAYS).
        #[arg(long)]
        older_than_days: Option<u32>,
        /// Report what would be deleted, delete nothing.
        #[arg(long)]
        dry_run: bool,
    },
    /// Load every backup under BACKUP_PREFIX into the (empty) DATABASE_URL database.
    Restore,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    cxr_platform::telemetry::init();
    // Outside Lambda, parse the command line first: `--help` needs no configuration.
    let cli = (!in_lambda()).then(Cli::parse);
    let job = BackupJob::from_env(&Env::process()).await?;
    if in_lambda() {
        return serve_lambda(job.job, |run| job.scheduled(run)).await.map_err(|e| anyhow::anyhow!(e));
    }
    let Some(cli) = cli else { return Ok(()) };
    let report = match cli.command {
        Command::Run(args) => serde_json::to_value(job.scheduled(args.scheduled_run(job.job)?).await?)?,
        Command::Purge { older_than_days, dry_run } => {
            let retention = match older_than_days {
                Some(0) => anyhow::bail!("--older-than-days must be at least 1"),
                Some(days) => std::time::Duration::from_secs(u64::from(days) * 86_400),
                None => job.settings.purge_after.ok_or_else(|| anyhow::anyhow!("no retention: pass --older-than-days or set BACKUP_PURGE_AFTER_DAYS"))?,
            };
            serde_json::to_value(job.purge(retention, dry_run).await?)?
        }
        Command::Restore => serde_json::to_value(job.restore().await?)?,
    };
    println!("{}", serde_json::to_string_pretty(&report)?);
    Ok(())
}

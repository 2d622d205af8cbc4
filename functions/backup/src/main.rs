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
    /// Back up everything changed since the last successful run.
    Run(RunArgs),
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
        return serve_lambda(job.job, |run| job.backup(run)).await.map_err(|e| anyhow::anyhow!(e));
    }
    let Some(cli) = cli else { return Ok(()) };
    let report = match cli.command {
        Command::Run(args) => serde_json::to_value(job.backup(args.scheduled_run(job.job)?).await?)?,
        Command::Restore => serde_json::to_value(job.restore().await?)?,
    };
    println!("{}", serde_json::to_string_pretty(&report)?);
    Ok(())
}

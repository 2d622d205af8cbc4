use clap::{Parser, Subcommand};
use cxr_coco_export::CocoExportJob;
use cxr_platform::config::Env;
use cxr_platform::jobs::scheduled::{RunArgs, in_lambda, serve_lambda};

#[derive(Parser)]
#[command(name = "coco-export", about = "COCO detection export of annotated, de-identified studies to the data mart")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Export every study changed since the last successful run, then
    /// rewrite the COCO files.
    Run(RunArgs),
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    cxr_platform::telemetry::init();
    // Outside Lambda, parse the command line first: `--help` needs no configuration.
    let cli = (!in_lambda()).then(Cli::parse);
    let job = CocoExportJob::from_env(&Env::process()).await?;
    if in_lambda() {
        return serve_lambda(job.job, |run| job.run(run)).await.map_err(|e| anyhow::anyhow!(e));
    }
    let Some(Cli { command: Command::Run(args) }) = cli else { return Ok(()) };
    let report = job.run(args.scheduled_run(job.job)?).await?;
    println!("{}", serde_json::to_string_pretty(&report)?);
    Ok(())
}

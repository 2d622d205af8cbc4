use clap::Parser;

#[tokio::main]
async fn main() -> std::process::ExitCode {
    cxr_platform::telemetry::init();
    let cli = cxr_admin::Cli::parse();
    match cxr_admin::run(cli).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("cxr-admin: {err:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

use clap::Parser;
use cxr_inference::models::Classifier;
use cxr_model_server::config::{Cli, Command};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt().with_env_filter(tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into())).init();
    match Cli::parse().command {
        Command::Serve(config) => cxr_model_server::serve(config).await,
        Command::GenerateModel { kind, dir } => {
            let manifest = cxr_model_server::generated_manifest(&kind)
                .ok_or_else(|| anyhow::anyhow!("unknown kind {kind:?}: densenet121-xrv, resnet50-pneumonia or resnet50-covid3"))?;
            Classifier::write_generated(&dir, &manifest)?;
            println!("wrote {} (generated, untrained weights)", dir.display());
            Ok(())
        }
    }
}

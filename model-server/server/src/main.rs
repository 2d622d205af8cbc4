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
        Command::Train { flags } => std::process::exit(cxr_model_server::training::train(&flags).await),
        Command::Phantoms { out, count, seed, size, layout, format, findings, normal_fraction } => {
            let findings = findings
                .iter()
                .map(|f| {
                    cxr_training::phantoms::FINDINGS.iter().position(|k| k.eq_ignore_ascii_case(f)).ok_or_else(|| anyhow::anyhow!("unknown finding {f:?}"))
                })
                .collect::<anyhow::Result<Vec<_>>>()?;
            let settings = cxr_training::phantoms::PhantomSettings { count, seed, size, findings, normal_fraction, ..Default::default() };
            let written = cxr_training::phantoms::write_set(&out, &settings, layout, format)?;
            println!("{}", serde_json::to_string(&written)?);
            Ok(())
        }
        Command::Evaluate { model, data, split, out, batch_size } => {
            let evaluation = tokio::task::spawn_blocking(move || cxr_training::evaluation::evaluate(&model, &data, split, batch_size)).await??;
            let text = serde_json::to_string_pretty(&evaluation)?;
            if let Some(out) = out {
                if let Some(parent) = out.parent().filter(|p| !p.as_os_str().is_empty()) {
                    std::fs::create_dir_all(parent)?;
                }
                std::fs::write(&out, &text).map_err(|e| anyhow::anyhow!("writing {}: {e}", out.display()))?;
            }
            println!("{text}");
            Ok(())
        }
    }
}

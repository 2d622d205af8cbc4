//! `model-server train`: the training run on a blocking thread, SIGTERM
//! (SageMaker stopping a job or reclaiming a spot instance) answered by a
//! checkpoint, a failure's reason written where SageMaker reads it.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use cxr_training::sagemaker::{self, HYPERPARAMETERS};
use cxr_training::{TrainError, settings};

/// Runs training with `flags` (after SageMaker's hyperparameters); returns
/// the process's exit status: 0 trained, 1 failed, 143 stopped by SIGTERM
/// after checkpointing.
pub async fn train(flags: &[String]) -> i32 {
    if flags.iter().any(|f| f == "--help" || f == "-h") {
        let _ = settings::resolve(Path::new("/nonexistent"), &["--help".into()]).map_err(|help| println!("{help}"));
        return 0;
    }
    let settings = match settings::resolve(Path::new(HYPERPARAMETERS), flags) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("{e}");
            sagemaker::write_failure(Path::new("/opt/ml/output"), &format!("invalid settings: {e}"));
            return 1;
        }
    };
    let stop = Arc::new(AtomicBool::new(false));
    let flag = stop.clone();
    tokio::spawn(async move {
        if let Ok(mut term) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            term.recv().await;
            tracing::warn!("SIGTERM: checkpointing and stopping");
            flag.store(true, Ordering::Relaxed);
        }
    });
    let output_dir = settings.output_dir.clone();
    let result = tokio::task::spawn_blocking(move || sagemaker::run(&settings, &stop)).await;
    match result {
        Ok(Ok(summary)) => {
            tracing::info!(model_dir = %summary.model_dir.display(), seconds = summary.seconds, test_mean_auc = ?summary.report.test_mean_auc, "trained");
            println!("test_mean_auc={:.5} seconds={:.1}", summary.report.test_mean_auc.unwrap_or(f64::NAN), summary.seconds);
            0
        }
        Ok(Err(TrainError::Stopped)) => 143,
        Ok(Err(e)) => {
            tracing::error!(error = %e, "training failed");
            sagemaker::write_failure(&output_dir, &e.to_string());
            1
        }
        Err(e) => {
            sagemaker::write_failure(&output_dir, &format!("the training thread ended: {e}"));
            1
        }
    }
}

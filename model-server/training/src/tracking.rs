//! MLflow tracking through its REST API (no Python in the container):
//! a run per training job with its parameters, a metric per epoch, the
//! plots and the model directory as artefacts (through the server's
//! artefact proxy, `mlflow server --serve-artifacts`), and a registered
//! model version. Tracking is best effort: a tracking server that fails
//! mid-run is logged, never fails the training.

use std::path::Path;

use serde_json::{Value, json};

use crate::TrainError;
use crate::report::Report;
use crate::trainer::EpochRecord;

pub struct MlflowRun {
    base: String,
    client: reqwest::blocking::Client,
    pub experiment_id: String,
    pub run_id: String,
}

fn now_ms() -> i64 {
    (time::OffsetDateTime::now_utc().unix_timestamp_nanos() / 1_000_000) as i64
}

impl MlflowRun {
    fn call(&self, method: reqwest::Method, path: &str, body: &Value) -> Result<Value, String> {
        let response = self.client.request(method, format!("{}/api/2.0/mlflow/{path}", self.base)).json(body).send().map_err(|e| e.to_string())?;
        let status = response.status();
        let value: Value = response.json().unwrap_or(Value::Null);
        if status.is_success() { Ok(value) } else { Err(format!("{path}: {status} {value}")) }
    }

    /// Opens a run in `experiment` (created when missing) and logs the
    /// parameters.
    pub fn start(uri: &str, experiment: &str, run_name: &str, params: &Value) -> Result<Self, TrainError> {
        let client =
            reqwest::blocking::Client::builder().timeout(std::time::Duration::from_secs(30)).build().map_err(|e| TrainError::Settings(e.to_string()))?;
        let mut run = Self { base: uri.trim_end_matches('/').to_owned(), client, experiment_id: String::new(), run_id: String::new() };
        let fail = |e: String| TrainError::Settings(format!("MLflow at {uri}: {e}"));
        run.experiment_id = match run.call(reqwest::Method::GET, &format!("experiments/get-by-name?experiment_name={experiment}"), &Value::Null) {
            Ok(v) => v["experiment"]["experiment_id"].as_str().unwrap_or_default().to_owned(),
            Err(_) => run.call(reqwest::Method::POST, "experiments/create", &json!({"name": experiment})).map_err(fail)?["experiment_id"]
                .as_str()
                .unwrap_or_default()
                .to_owned(),
        };
        let created = run
            .call(reqwest::Method::POST, "runs/create", &json!({"experiment_id": run.experiment_id, "run_name": run_name, "start_time": now_ms()}))
            .map_err(fail)?;
        run.run_id = created["run"]["info"]["run_id"].as_str().unwrap_or_default().to_owned();
        let params: Vec<Value> = params
            .as_object()
            .map(|m| m.iter().map(|(k, v)| json!({"key": k, "value": v.as_str().map_or_else(|| v.to_string(), str::to_owned)})).collect())
            .unwrap_or_default();
        run.call(reqwest::Method::POST, "runs/log-batch", &json!({"run_id": run.run_id, "params": params})).map_err(fail)?;
        tracing::info!(run_id = %run.run_id, experiment_id = %run.experiment_id, "MLflow run started");
        Ok(run)
    }

    pub fn log_epoch(&mut self, r: &EpochRecord) {
        let ts = now_ms();
        let mut metrics = vec![
            json!({"key": "train_loss", "value": r.train_loss, "timestamp": ts, "step": r.epoch}),
            json!({"key": "val_loss", "value": r.val_loss, "timestamp": ts, "step": r.epoch}),
            json!({"key": "learning_rate", "value": r.learning_rate, "timestamp": ts, "step": r.epoch}),
            json!({"key": "images_per_second", "value": r.images_per_second, "timestamp": ts, "step": r.epoch}),
        ];
        if let Some(auc) = r.val_auc {
            metrics.push(json!({"key": "val_auc", "value": auc, "timestamp": ts, "step": r.epoch}));
        }
        if let Err(e) = self.call(reqwest::Method::POST, "runs/log-batch", &json!({"run_id": self.run_id, "metrics": metrics})) {
            tracing::warn!(error = %e, "MLflow: epoch metrics not logged");
        }
    }

    fn upload(&self, local: &Path, artifact_path: &str) -> Result<(), String> {
        let bytes = std::fs::read(local).map_err(|e| e.to_string())?;
        let url = format!("{}/api/2.0/mlflow-artifacts/artifacts/{}/{}/artifacts/{artifact_path}", self.base, self.experiment_id, self.run_id);
        let response = self.client.put(url).body(bytes).send().map_err(|e| e.to_string())?;
        if response.status().is_success() { Ok(()) } else { Err(format!("{artifact_path}: {}", response.status())) }
    }

    /// Final metrics, the model directory (and its plots) as artefacts, the
    /// registered version, and the run marked finished.
    pub fn finish(&mut self, model_dir: &Path, report: &Report, registered_model: Option<&str>) {
        let ts = now_ms();
        let mut metrics = Vec::new();
        if let Some(auc) = report.test_mean_auc {
            metrics.push(json!({"key": "test_mean_auc", "value": auc, "timestamp": ts, "step": 0}));
        }
        for l in &report.labels {
            let key: String = l.label.chars().map(|c| if c.is_ascii_alphanumeric() { c } else { '_' }).collect();
            if let Some(auc) = l.test.auc {
                metrics.push(json!({"key": format!("test_auc_{key}"), "value": auc, "timestamp": ts, "step": 0}));
            }
            metrics.push(json!({"key": format!("test_f1_{key}"), "value": l.test.f1, "timestamp": ts, "step": 0}));
        }
        if let Err(e) = self.call(reqwest::Method::POST, "runs/log-batch", &json!({"run_id": self.run_id, "metrics": metrics})) {
            tracing::warn!(error = %e, "MLflow: final metrics not logged");
        }
        let mut files = Vec::new();
        for entry in walk(model_dir) {
            if let Ok(relative) = entry.strip_prefix(model_dir) {
                files.push((entry.clone(), format!("model/{}", relative.to_string_lossy())));
            }
        }
        for (local, remote) in &files {
            if let Err(e) = self.upload(local, remote) {
                tracing::warn!(error = %e, "MLflow: artefact not uploaded");
            }
        }
        if let Some(name) = registered_model {
            let _ = self.call(reqwest::Method::POST, "registered-models/create", &json!({"name": name}));
            let source = format!("mlflow-artifacts:/{}/{}/artifacts/model", self.experiment_id, self.run_id);
            match self.call(reqwest::Method::POST, "model-versions/create", &json!({"name": name, "source": source, "run_id": self.run_id})) {
                Ok(v) => tracing::info!(model = name, version = %v["model_version"]["version"], "MLflow: model version registered"),
                Err(e) => tracing::warn!(error = %e, "MLflow: model not registered"),
            }
        }
        if let Err(e) = self.call(reqwest::Method::POST, "runs/update", &json!({"run_id": self.run_id, "status": "FINISHED", "end_time": now_ms()})) {
            tracing::warn!(error = %e, "MLflow: run not closed");
        }
    }
}

fn walk(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    if let Ok(entries) = std::fs::read_dir(dir) {
        for e in entries.flatten() {
            let p = e.path();
            if p.is_dir() { out.extend(walk(&p)) } else { out.push(p) }
        }
    }
    out.sort();
    out
}

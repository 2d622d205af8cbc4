//! `cxr-admin` as operators run it: configured only through environment
//! variables, reaching the stand-ins through the SDKs' standard
//! `AWS_ENDPOINT_URL_*` variables.

use std::process::Output;

use cxr_platform::testing::{LocalStack, closed_port, unique_name};

async fn admin(args: &[&str], overrides: &[(&str, &str)], remove: &[&str]) -> Output {
    let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_cxr-admin"));
    command.args(args).env_clear().env("PATH", std::env::var("PATH").unwrap_or_default());
    for (name, value) in LocalStack::get().vars() {
        if !remove.contains(&name) {
            command.env(name, value);
        }
    }
    command.env("AWS_EC2_METADATA_DISABLED", "true");
    for (name, value) in overrides {
        command.env(name, value);
    }
    command.output().await.expect("cxr-admin runs")
}

fn text(output: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr))
}

#[tokio::test]
async fn provision_then_check_a_fresh_environment() {
    let database_url = LocalStack::get().fresh_database_url().await;
    let bucket = unique_name("provision-").replace('_', "-");
    let table = unique_name("provision_");
    let vars = [("DATABASE_URL", database_url.as_str()), ("IMAGES_BUCKET", bucket.as_str()), ("RESULTS_TABLE", table.as_str())];

    let provisioned = admin(&["provision"], &vars, &[]).await;
    assert!(provisioned.status.success(), "{}", text(&provisioned));
    // Provisioning is idempotent.
    let again = admin(&["provision"], &vars, &[]).await;
    assert!(again.status.success(), "{}", text(&again));

    let checked = admin(&["check"], &vars, &[]).await;
    let out = text(&checked);
    assert!(checked.status.success(), "{out}");
    for line in ["postgres    healthy  schema version", "s3          healthy  bucket", "dynamodb    healthy  table", "documentdb  healthy"] {
        assert!(out.contains(line), "missing {line:?} in:\n{out}");
    }
}

#[tokio::test]
async fn a_missing_variable_is_named() {
    let output = admin(&["migrate"], &[], &["DATABASE_URL"]).await;
    assert!(!output.status.success());
    assert!(text(&output).contains("DATABASE_URL is not set"), "{}", text(&output));
}

#[tokio::test]
async fn check_reports_each_store_and_fails_when_one_is_down() {
    let s3_down = format!("http://127.0.0.1:{}", closed_port());
    let output = admin(&["check"], &[("AWS_ENDPOINT_URL_S3", s3_down.as_str())], &[]).await;
    let out = text(&output);
    assert!(!output.status.success(), "{out}");
    assert!(out.contains("s3          FAILING  S3 is unreachable"), "{out}");
    assert!(out.contains("documentdb  healthy"), "{out}");
    assert!(out.contains("unhealthy: s3"), "{out}");
}

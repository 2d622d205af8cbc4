//! A channel given as an S3 prefix (`s3://bucket/prefix`): copied to a
//! local directory once (SageMaker's File mode does the same for its
//! channels), then read like any directory. Objects already there with the
//! same size are not fetched again, so a resumed run does not re-download.

use std::path::Path;

use super::DataError;

/// Copies every object under `uri` into `dir`, keeping the relative paths.
pub async fn fetch_prefix(uri: &str, dir: &Path) -> Result<usize, DataError> {
    let rest = uri.strip_prefix("s3://").ok_or_else(|| DataError::S3(format!("{uri} is not an s3:// URI")))?;
    let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
    let prefix = if prefix.is_empty() || prefix.ends_with('/') { prefix.to_owned() } else { format!("{prefix}/") };
    let config = aws_config::load_from_env().await;
    let force_path_style = std::env::var("S3_FORCE_PATH_STYLE").is_ok_and(|v| v == "true" || v == "1");
    let client = aws_sdk_s3::Client::from_conf(aws_sdk_s3::config::Builder::from(&config).force_path_style(force_path_style).build());
    let mut pages = client.list_objects_v2().bucket(bucket).prefix(&prefix).into_paginator().send();
    let mut fetched = 0;
    while let Some(page) = pages.next().await {
        let page = page.map_err(|e| DataError::S3(format!("listing {uri}: {}", aws_sdk_s3::error::DisplayErrorContext(e))))?;
        for object in page.contents() {
            let Some(key) = object.key() else { continue };
            let relative = &key[prefix.len()..];
            // Never write outside `dir`, whatever the keys say.
            if relative.is_empty() || relative.ends_with('/') || relative.split('/').any(|p| p == ".." || p.is_empty()) {
                continue;
            }
            let target = dir.join(relative);
            if std::fs::metadata(&target).is_ok_and(|m| Some(m.len() as i64) == object.size()) {
                continue;
            }
            let body = client
                .get_object()
                .bucket(bucket)
                .key(key)
                .send()
                .await
                .map_err(|e| DataError::S3(format!("reading s3://{bucket}/{key}: {}", aws_sdk_s3::error::DisplayErrorContext(e))))?
                .body
                .collect()
                .await
                .map_err(|e| DataError::S3(format!("reading s3://{bucket}/{key}: {e}")))?
                .into_bytes();
            if let Some(parent) = target.parent() {
                std::fs::create_dir_all(parent).map_err(|e| super::read_error(parent, e))?;
            }
            std::fs::write(&target, &body).map_err(|e| super::read_error(&target, e))?;
            fetched += 1;
        }
    }
    Ok(fetched)
}

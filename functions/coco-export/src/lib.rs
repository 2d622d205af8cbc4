//! The `coco-export` scheduled job: annotated studies, de-identified, as a
//! COCO detection data set in the data mart ([`export`]), written to an S3
//! prefix or a local directory ([`mart`]) in the format pycocotools reads
//! ([`coco`]). Images are de-identified on the way out ([`deidentify`]:
//! this job is its one user, so it lives here).

pub mod coco;
pub mod deidentify;
pub mod export;
pub mod mart;

use cxr_platform::aws::load_sdk_config;
use cxr_platform::config::{ConfigError, Env, PostgresSettings, S3Settings, Secret};
use cxr_platform::jobs::scheduled::{JobSettings, ScheduledRun};
use cxr_platform::storage::postgres::Database;
use cxr_platform::storage::s3::ObjectStore;

use crate::deidentify::UidKey;
use crate::mart::{DataMart, Destination};

/// The job's own settings.
#[derive(Clone, Debug)]
pub struct CocoSettings {
    /// `COCO_DESTINATION`: `s3://bucket/prefix` or a directory.
    pub destination: Destination,
    /// `COCO_CHUNK_STUDIES` (default 200).
    pub chunk_studies: u32,
    /// `COCO_VALIDATION_PERCENT` (default 0: one `all` file).
    pub validation_percent: u8,
    /// `COCO_INCLUDE_MODEL_BOXES` (default false).
    pub include_model_boxes: bool,
    /// `COCO_MODEL_SCORE_THRESHOLD` (default 0.5).
    pub model_score_threshold: f32,
    /// Keys the replacement DICOM UIDs.
    pub deidentify_secret: DeidentifySecret,
}

/// Where the de-identification key comes from.
#[derive(Clone, Debug)]
pub enum DeidentifySecret {
    /// `DEIDENTIFY_SECRET`: the key itself (the local stack, tests).
    Inline(Secret),
    /// `DEIDENTIFY_SECRET_ARN`: a Secrets Manager secret whose JSON key
    /// `secret` is the key, read at start (in AWS).
    SecretArn(String),
}

/// Shorter keys make the replacement UIDs guessable.
const MIN_DEIDENTIFY_SECRET: usize = 16;

fn checked_deidentify_secret(name: &'static str, secret: Secret) -> Result<Secret, ConfigError> {
    if secret.expose().len() < MIN_DEIDENTIFY_SECRET {
        return Err(ConfigError::Malformed { name, reason: format!("must be at least {MIN_DEIDENTIFY_SECRET} characters") });
    }
    Ok(secret)
}

impl CocoSettings {
    pub fn from_env(env: &Env) -> Result<Self, ConfigError> {
        let destination = env.required("COCO_DESTINATION", "s3://bucket/prefix or a directory for the COCO export")?;
        let destination = Destination::parse(&destination).map_err(|reason| ConfigError::Malformed { name: "COCO_DESTINATION", reason })?;
        let chunk_studies = env.parsed_or("COCO_CHUNK_STUDIES", 200u32)?;
        if chunk_studies == 0 {
            return Err(ConfigError::Malformed { name: "COCO_CHUNK_STUDIES", reason: "must be at least 1".into() });
        }
        let validation_percent = env.parsed_or("COCO_VALIDATION_PERCENT", 0u8)?;
        if validation_percent > 100 {
            return Err(ConfigError::Malformed { name: "COCO_VALIDATION_PERCENT", reason: "must be 0 to 100".into() });
        }
        let model_score_threshold = env.parsed_or("COCO_MODEL_SCORE_THRESHOLD", 0.5f32)?;
        if !(0.0..=1.0).contains(&model_score_threshold) {
            return Err(ConfigError::Malformed { name: "COCO_MODEL_SCORE_THRESHOLD", reason: "must be 0 to 1".into() });
        }
        let deidentify_secret = match env.secret_arn("DEIDENTIFY_SECRET_ARN")? {
            Some(arn) => DeidentifySecret::SecretArn(arn),
            None => DeidentifySecret::Inline(checked_deidentify_secret(
                "DEIDENTIFY_SECRET",
                Secret::new(env.required("DEIDENTIFY_SECRET", "secret that keys replacement DICOM UIDs (keep it stable), or DEIDENTIFY_SECRET_ARN")?),
            )?),
        };
        Ok(Self {
            destination,
            chunk_studies,
            validation_percent,
            include_model_boxes: env.flag_or("COCO_INCLUDE_MODEL_BOXES", false)?,
            model_score_threshold,
            deidentify_secret,
        })
    }
}

/// Everything a run needs, built once per process.
pub struct CocoExportJob {
    pub db: Database,
    /// Reads study images from whichever bucket each study names.
    pub images: aws_sdk_s3::Client,
    pub mart: DataMart,
    pub key: UidKey,
    pub settings: CocoSettings,
    pub job: JobSettings,
}

impl CocoExportJob {
    pub async fn from_env(env: &Env) -> anyhow::Result<Self> {
        let settings = CocoSettings::from_env(env)?;
        let job = JobSettings::from_env(env)?;
        let force_path_style = S3Settings::force_path_style(env)?;
        let sdk = load_sdk_config().await?;
        let images = cxr_platform::aws::s3_client(&sdk, force_path_style, None);
        let mart = match &settings.destination {
            Destination::S3 { bucket, prefix } => DataMart::S3 {
                store: ObjectStore::new(&sdk, &S3Settings { images_bucket: bucket.clone(), force_path_style, presign_endpoint: None }),
                prefix: prefix.clone(),
            },
            Destination::Local(root) => DataMart::Local { root: root.clone() },
        };
        let db = Database::connect(&PostgresSettings::from_env(env)?).await?;
        let secret = match &settings.deidentify_secret {
            DeidentifySecret::Inline(secret) => secret.clone(),
            DeidentifySecret::SecretArn(arn) => {
                checked_deidentify_secret("DEIDENTIFY_SECRET_ARN", cxr_platform::secrets::JsonSecret::read(&sdk, arn).await?.get("secret")?)?
            }
        };
        let key = UidKey::new(secret.expose());
        Ok(Self { db, images, mart, key, settings, job })
    }

    pub fn options(&self, run: ScheduledRun) -> export::ExportOptions {
        export::ExportOptions {
            chunk_studies: self.settings.chunk_studies,
            validation_percent: self.settings.validation_percent,
            include_model_boxes: self.settings.include_model_boxes,
            model_score_threshold: self.settings.model_score_threshold,
            dry_run: run.dry_run,
            time_budget: Some(run.time_budget),
        }
    }

    pub async fn run(&self, run: ScheduledRun) -> Result<export::ExportReport, export::ExportError> {
        // Boxed: the nested async state machine is otherwise too deep for
        // the compiler's layout query.
        Box::pin(export::run_export(&self.db, &self.images, &self.mart, &self.key, &self.options(run))).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> Env {
        Env::from_map(pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect())
    }

    #[test]
    fn settings_name_what_is_missing_or_wrong() {
        let secret = ("DEIDENTIFY_SECRET", "0123456789abcdef");
        assert!(matches!(CocoSettings::from_env(&env(&[secret])), Err(ConfigError::Missing { name: "COCO_DESTINATION", .. })));
        let ok = CocoSettings::from_env(&env(&[secret, ("COCO_DESTINATION", "s3://mart/coco")])).expect("defaults");
        assert_eq!((ok.chunk_studies, ok.validation_percent, ok.include_model_boxes), (200, 0, false));
        for (name, value) in [
            ("COCO_VALIDATION_PERCENT", "101"),
            ("COCO_MODEL_SCORE_THRESHOLD", "1.5"),
            ("COCO_CHUNK_STUDIES", "0"),
            ("COCO_DESTINATION", "ftp://x/y"),
            ("DEIDENTIFY_SECRET", "short"),
            ("DEIDENTIFY_SECRET_ARN", "cxr/dev/deidentify"),
        ] {
            let mut pairs = vec![secret, ("COCO_DESTINATION", "/tmp/mart")];
            pairs.retain(|(n, _)| *n != name);
            pairs.push((name, value));
            assert!(matches!(CocoSettings::from_env(&env(&pairs)), Err(ConfigError::Malformed { .. })), "{name}={value}");
        }
    }
}

//! Training for the chest X-ray models, in candle, in the same container
//! that serves them (`model-server train`). The data flow, one module each:
//!
//! - [`data`]: readers (folder per class, COCO data mart, S3 prefix) and
//!   the seeded split by patient;
//! - [`inputs`]: decoding and preprocessing as the server does, then
//!   seeded augmentation;
//! - [`model`]: the network as trainable `Var`s, from a base model,
//!   generated weights or fresh values;
//! - [`trainer`]: frozen then unfrozen phases, AdamW ([`optim`]), losses
//!   with class weights ([`loss`]), reduce-on-plateau, early stopping,
//!   checkpoints and resume;
//! - [`report`]: metrics ([`metrics`]), thresholds, plots ([`plots`]), the
//!   model directory with its provenance; [`evaluation`]: a written model
//!   judged as the server runs it;
//! - [`sagemaker`]: the training contract (paths, hyperparameters, failure
//!   file, metric lines); [`tracking`]: MLflow's REST API;
//! - [`phantoms`]: synthetic chest phantoms for tests and the demo model.

pub mod data;
pub mod evaluation;
pub mod inputs;
pub mod loss;
pub mod metrics;
pub mod model;
pub mod optim;
pub mod phantoms;
pub mod plots;
pub mod report;
pub mod sagemaker;
pub mod settings;
pub mod tracking;
pub mod trainer;

use std::path::PathBuf;

pub use settings::TrainSettings;

#[derive(Debug, thiserror::Error)]
pub enum TrainError {
    #[error(transparent)]
    Data(#[from] data::DataError),
    #[error("the model: {0}")]
    Model(String),
    #[error("computing: {0}")]
    Candle(#[from] candle_core::Error),
    #[error("writing {0}: {1}")]
    Io(PathBuf, std::io::Error),
    #[error("settings: {0}")]
    Settings(String),
    #[error("stopped on request; the checkpoint holds the progress")]
    Stopped,
}

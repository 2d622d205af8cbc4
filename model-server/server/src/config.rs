//! The server's settings, from flags or environment variables, read once.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::Parser;

#[derive(Clone, Debug, Parser)]
#[command(name = "model-server", about = "Chest X-ray model server (SageMaker container contract)")]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Clone, Debug, clap::Subcommand)]
pub enum Command {
    /// Serve the model (what SageMaker runs: `docker run <image> serve`).
    Serve(ServeConfig),
    /// Write a model directory with generated, untrained weights (for local
    /// runs and tests; real weights come from the converter scripts).
    GenerateModel {
        /// `densenet121-xrv`, `resnet50-pneumonia` or `resnet50-covid3`.
        #[arg(long, default_value = "densenet121-xrv")]
        kind: String,
        #[arg(long)]
        dir: PathBuf,
    },
    /// Train a model (what a SageMaker training job runs: `docker run
    /// <image> train`): settings from /opt/ml/input/config/hyperparameters.json
    /// and these flags (`model-server train --help` lists them).
    #[command(disable_help_flag = true)]
    Train {
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        flags: Vec<String>,
    },
    /// Write synthetic chest phantoms (PNG or DICOM, folder-per-class or
    /// COCO layout) for tests and the demo model.
    Phantoms {
        #[arg(long)]
        out: PathBuf,
        #[arg(long, default_value_t = 200)]
        count: usize,
        #[arg(long, default_value_t = 7)]
        seed: u64,
        #[arg(long, default_value_t = 256)]
        size: usize,
        #[arg(long, value_enum, default_value = "folder")]
        layout: cxr_training::phantoms::Layout,
        #[arg(long, value_enum, default_value = "png")]
        format: cxr_training::phantoms::FileFormat,
        /// Only these findings (`Cardiomegaly`, `Effusion`, `Lung Opacity`,
        /// `Nodule`), comma-separated; default all.
        #[arg(long, value_delimiter = ',')]
        findings: Vec<String>,
        /// Share of images without a finding.
        #[arg(long, default_value_t = 0.4)]
        normal_fraction: f64,
    },
    /// Judge a model directory as the server runs it on a dataset's
    /// held-out split (re-drawn from the seed the manifest records): ROC-AUC,
    /// precision, recall, F1 and calibration per label, as JSON.
    Evaluate {
        /// The model directory (`model.json` + weights).
        #[arg(long)]
        model: PathBuf,
        /// The data, in the folder-per-class or COCO layout.
        #[arg(long)]
        data: PathBuf,
        #[arg(long, value_enum, default_value = "test")]
        split: cxr_training::evaluation::Split,
        /// Also write the JSON here.
        #[arg(long)]
        out: Option<PathBuf>,
        #[arg(long, default_value_t = 16)]
        batch_size: usize,
    },
}

#[derive(Clone, Debug, clap::Args)]
pub struct ServeConfig {
    /// The model directory (`model.json` + weights); SageMaker unpacks the
    /// model artefact to /opt/ml/model.
    #[arg(long, env = "SM_MODEL_DIR", default_value = "/opt/ml/model")]
    pub model_dir: PathBuf,
    /// Copy the model from this S3 prefix into `model_dir` first
    /// (`s3://bucket/prefix` holding `model.json` and its weights).
    #[arg(long, env = "MODEL_S3_URI")]
    pub model_s3_uri: Option<String>,
    /// SageMaker sends requests to port 8080.
    #[arg(long, env = "MODEL_SERVER_ADDR", default_value = "0.0.0.0:8080")]
    pub addr: SocketAddr,
    /// Largest batch the device runs at once.
    #[arg(long, env = "MODEL_SERVER_MAX_BATCH", default_value_t = 8)]
    pub max_batch_size: usize,
    /// Requests admitted at once (decoding, queued or running); beyond this
    /// the server answers 429.
    #[arg(long, env = "MODEL_SERVER_MAX_CONCURRENT", default_value_t = 64)]
    pub max_concurrent_requests: usize,
    /// Largest request body (SageMaker real-time allows 6 MB).
    #[arg(long, env = "MODEL_SERVER_MAX_BODY_BYTES", default_value_t = cxr_inference::decode::MAX_IMAGE_BYTES as usize)]
    pub max_body_bytes: usize,
    /// Arithmetic precision: f32, or f16/bf16 where the device supports them
    /// (on a GPU; on CPU they are slower than f32).
    #[arg(long, env = "MODEL_SERVER_DTYPE", default_value = "f32", value_parser = ["f32", "f16", "bf16"])]
    pub dtype: String,
    /// Largest image side in pixels.
    #[arg(long, env = "MODEL_SERVER_MAX_SIDE", default_value_t = 16384)]
    pub max_side: u32,
}

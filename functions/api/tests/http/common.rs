//! The API on a random port against the local stack (PostgreSQL, S3,
//! DynamoDB) and, where a test needs one, the real model server.

use cxr_api::app::{AppState, router};
use cxr_api::config::ApiSettings;
use cxr_platform::domain::Owner;
use cxr_platform::storage::results::ResultStore;
/// The one HTTP helper, shared with the end-to-end test.
pub use cxr_platform::testing::call;
use cxr_platform::testing::{LocalStack, closed_port, serve};

pub const ALICE: &str = "alice-token-0123456789";
pub const BOB: &str = "bob-token-0123456789ab";

pub fn settings() -> ApiSettings {
    let tokens = [(ALICE, "alice"), (BOB, "bob")].into_iter().map(|(t, o)| (t.to_owned(), Owner::new(o).expect("owner"))).collect();
    let mut settings = ApiSettings::for_tests(tokens, "cxr-densenet121");
    settings.upload_url_ttl = std::time::Duration::from_secs(120);
    settings.max_upload_bytes = 6 * 1024 * 1024;
    settings.multipart_part_bytes = 5 * 1024 * 1024;
    settings.max_image_bytes = 16 * 1024 * 1024;
    settings
}

/// The model server (generated DenseNet-121 weights) on a random port.
pub async fn model_server() -> String {
    let dir = std::path::PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("generated-densenet121-xrv");
    cxr_model_server::in_process::serve_generated("densenet121-xrv", &dir).await.expect("model server")
}

pub fn runtime_client(endpoint: &str) -> aws_sdk_sagemakerruntime::Client {
    aws_sdk_sagemakerruntime::Client::new(&LocalStack::get().sdk_config_at(endpoint))
}

/// The API with fresh storage; `endpoint` is the model server's base URL
/// (`None`: a closed port, for tests that never infer).
pub async fn start_with(endpoint: Option<&str>, tweak: impl FnOnce(&mut ApiSettings)) -> (String, AppState) {
    let stack = LocalStack::get();
    let endpoint = endpoint.map(str::to_owned).unwrap_or_else(|| format!("http://127.0.0.1:{}", closed_port()));
    let mut settings = settings();
    tweak(&mut settings);
    let state = AppState::new(
        stack.fresh_database().await,
        stack.fresh_bucket().await,
        ResultStore::new(stack.fresh_table().await),
        runtime_client(&endpoint),
        settings,
    );
    (serve(router(state.clone())).await, state)
}

pub async fn start() -> (String, AppState) {
    start_with(None, |_| {}).await
}

/// A grey PNG with a pattern (`seed` makes different images).
pub fn png(seed: u32) -> Vec<u8> {
    let mut out = std::io::Cursor::new(Vec::new());
    let image = image::DynamicImage::ImageLuma8(image::ImageBuffer::from_fn(320, 256, |x, y| image::Luma([((x * 5 + y * 3 + seed * 7) % 256) as u8])));
    image.write_to(&mut out, image::ImageFormat::Png).expect("png");
    out.into_inner()
}

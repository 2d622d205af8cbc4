use aws_lambda_events::s3::S3Event;
use cxr_infer::InferHandler;
use cxr_platform::config::Env;
use lambda_runtime::{LambdaEvent, service_fn};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    cxr_platform::telemetry::init();
    let handler = InferHandler::from_env(&Env::process()).await?;
    let handler = &handler;
    lambda_runtime::run(service_fn(move |event: LambdaEvent<S3Event>| async move {
        handler.handle(&event.payload).await.map_err(|e| lambda_runtime::Diagnostic::from(Box::new(e) as Box<dyn std::error::Error + Send + Sync>))
    }))
    .await
    .map_err(|e| anyhow::anyhow!(e))
}

use cxr_migrate::{CustomResourceRequest, answer_cloudformation};
use lambda_runtime::{LambdaEvent, service_fn};

#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    cxr_platform::telemetry::init();
    lambda_runtime::run(service_fn(|event: LambdaEvent<CustomResourceRequest>| async move {
        answer_cloudformation(event.payload, &cxr_platform::config::Env::process()).await.map_err(|e| e.to_string())
    }))
    .await
}

use cxr_api::app::{AppState, router};
use cxr_platform::config::Env;

// glibc's malloc and free were about a seventh of a warm read's CPU under
// load; mimalloc took about a sixth off the api's CPU per request (README,
// API numbers).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    cxr_platform::telemetry::init();
    let app = router(AppState::from_env(&Env::process()).await?);
    if cxr_platform::aws::in_lambda() {
        return cxr_api::lambda::run(app).await.map_err(|e| anyhow::anyhow!(e));
    }
    let addr = std::env::var("API_ADDR").unwrap_or_else(|_| "127.0.0.1:3000".into());
    let listener = tokio::net::TcpListener::bind(&addr).await?;
    tracing::info!(addr = %listener.local_addr()?, "API listening");
    axum::serve(listener, app)
        .with_graceful_shutdown(async {
            let _ = tokio::signal::ctrl_c().await;
        })
        .await?;
    Ok(())
}

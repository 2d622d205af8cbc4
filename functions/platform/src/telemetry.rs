//! The one `tracing` set-up for every binary: JSON lines inside Lambda (so
//! CloudWatch Logs Insights can query fields), human-readable elsewhere.
//! `RUST_LOG` filters as usual; the default is `info` (PostgreSQL's
//! notices, such as "already exists, skipping", only from `warn`).

use tracing_subscriber::EnvFilter;

/// Installs the global subscriber. Calling it twice is harmless (the second
/// call does nothing), which keeps tests that start several apps simple.
pub fn init() {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info,sqlx::postgres::notice=warn"));
    let in_lambda = crate::aws::in_lambda();
    let builder = tracing_subscriber::fmt().with_env_filter(filter);
    let _already_set = if in_lambda {
        // Lambda adds its own timestamps and request ids to each line.
        builder.json().flatten_event(true).with_current_span(true).without_time().with_ansi(false).try_init()
    } else {
        builder.with_writer(std::io::stderr).try_init()
    };
}

//! How a scheduled job is started: by an EventBridge schedule in Lambda, or
//! by hand from the command line. Both go through [`ScheduledRun`], which
//! says whether it is a dry run and how long the run may take before it
//! must hand over to the next one.

use std::future::Future;
use std::time::{Duration, SystemTime};

use lambda_runtime::{LambdaEvent, service_fn};
use serde::Serialize;

use crate::config::{ConfigError, Env};

/// Lambda stops a function at 15 minutes; a run stops taking new chunks
/// well before, so the last chunk and the hand-over fit.
pub const DEFAULT_TIME_BUDGET: Duration = Duration::from_secs(10 * 60);
/// Kept free before Lambda's deadline for the chunk in flight and the
/// hand-over bookkeeping.
pub const DEADLINE_MARGIN: Duration = Duration::from_secs(90);

/// Settings every scheduled job shares.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct JobSettings {
    /// `JOB_TIME_BUDGET_SECS`: how long a run may take new chunks.
    pub time_budget: Duration,
}

impl JobSettings {
    pub fn from_env(env: &Env) -> Result<Self, ConfigError> {
        let time_budget = env.seconds_or("JOB_TIME_BUDGET_SECS", DEFAULT_TIME_BUDGET)?;
        if time_budget.is_zero() {
            return Err(ConfigError::Malformed { name: "JOB_TIME_BUDGET_SECS", reason: "must be more than 0".into() });
        }
        Ok(Self { time_budget })
    }
}

/// The EventBridge scheduled event's `detail` (empty for a plain schedule;
/// `{"dry_run": true}` to rehearse).
#[derive(Debug, Default, serde::Deserialize)]
pub struct ScheduledDetail {
    #[serde(default)]
    pub dry_run: bool,
}

impl ScheduledDetail {
    pub fn from_event(event: &serde_json::Value) -> Self {
        event.get("detail").and_then(|d| serde_json::from_value(d.clone()).ok()).unwrap_or_default()
    }
}

/// One invocation of a job.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ScheduledRun {
    pub dry_run: bool,
    /// Stop taking new chunks after this long, then hand over.
    pub time_budget: Duration,
}

impl ScheduledRun {
    /// The configured budget, shortened so the run ends [`DEADLINE_MARGIN`]
    /// before Lambda's `deadline`.
    pub fn for_deadline(dry_run: bool, settings: JobSettings, deadline: SystemTime, now: SystemTime) -> Self {
        let left = deadline.duration_since(now).unwrap_or_default().saturating_sub(DEADLINE_MARGIN);
        Self { dry_run, time_budget: settings.time_budget.min(left).max(Duration::from_secs(1)) }
    }
}

/// The command-line form of a scheduled invocation: `run [--dry-run]
/// [--event FILE]`, where FILE is an EventBridge event such as the samples
/// in `events/` (read exactly as Lambda would receive it).
#[derive(Clone, Debug, Default, clap::Args)]
pub struct RunArgs {
    /// Report what would be done, write nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Run as if invoked with this EventBridge event (JSON file).
    #[arg(long, value_name = "FILE")]
    pub event: Option<std::path::PathBuf>,
}

#[derive(Debug, thiserror::Error)]
pub enum EventFileError {
    #[error("cannot read the event file {path}: {source}")]
    Read { path: String, source: std::io::Error },
    #[error("the event file {path} is not JSON: {source}")]
    Json { path: String, source: serde_json::Error },
}

impl RunArgs {
    /// The run these arguments ask for, with the configured time budget.
    pub fn scheduled_run(&self, settings: JobSettings) -> Result<ScheduledRun, EventFileError> {
        let mut dry_run = self.dry_run;
        if let Some(path) = &self.event {
            let shown = path.display().to_string();
            let text = std::fs::read_to_string(path).map_err(|source| EventFileError::Read { path: shown.clone(), source })?;
            let event: serde_json::Value = serde_json::from_str(&text).map_err(|source| EventFileError::Json { path: shown, source })?;
            dry_run |= ScheduledDetail::from_event(&event).dry_run;
        }
        Ok(ScheduledRun { dry_run, time_budget: settings.time_budget })
    }
}

pub use crate::aws::in_lambda;

/// Serves EventBridge scheduled events until Lambda stops the process. A
/// failed run fails the invocation (so EventBridge's retry and the
/// dead-letter queue see it); nothing is swallowed.
pub async fn serve_lambda<F, Fut, R, E>(settings: JobSettings, job: F) -> Result<(), lambda_runtime::Error>
where
    F: Fn(ScheduledRun) -> Fut,
    Fut: Future<Output = Result<R, E>>,
    R: Serialize,
    E: std::error::Error + Send + Sync + 'static,
{
    let job = &job;
    lambda_runtime::run(service_fn(move |event: LambdaEvent<serde_json::Value>| async move {
        let detail = ScheduledDetail::from_event(&event.payload);
        let run = ScheduledRun::for_deadline(detail.dry_run, settings, event.context.deadline(), SystemTime::now());
        job(run).await.map_err(|e| lambda_runtime::Diagnostic::from(Box::new(e) as Box<dyn std::error::Error + Send + Sync>))
    }))
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(name: &str) -> serde_json::Value {
        let path = format!("{}/../../events/{name}", env!("CARGO_MANIFEST_DIR"));
        serde_json::from_str(&std::fs::read_to_string(path).expect("sample event")).expect("JSON")
    }

    #[test]
    fn sample_scheduled_events_parse() {
        for job in ["backup", "warehouse", "coco-export"] {
            assert!(!ScheduledDetail::from_event(&event(&format!("{job}-scheduled.json"))).dry_run, "{job}");
            assert!(ScheduledDetail::from_event(&event(&format!("{job}-scheduled-dry-run.json"))).dry_run, "{job}");
        }
        assert!(!ScheduledDetail::from_event(&serde_json::json!({"detail": "not an object"})).dry_run);
    }

    #[test]
    fn budget_ends_before_the_lambda_deadline() {
        let settings = JobSettings { time_budget: DEFAULT_TIME_BUDGET };
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000);
        let run = ScheduledRun::for_deadline(false, settings, now + Duration::from_secs(15 * 60), now);
        assert_eq!(run.time_budget, DEFAULT_TIME_BUDGET);
        let run = ScheduledRun::for_deadline(true, settings, now + Duration::from_secs(5 * 60), now);
        assert_eq!((run.dry_run, run.time_budget), (true, Duration::from_secs(210)));
        // A deadline already past still gives one chunk a chance, never zero.
        let run = ScheduledRun::for_deadline(false, settings, now, now + Duration::from_secs(1));
        assert_eq!(run.time_budget, Duration::from_secs(1));
    }

    #[test]
    fn run_args_read_the_sample_event() {
        let settings = JobSettings { time_budget: Duration::from_secs(5) };
        let events = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../events");
        let args = RunArgs { dry_run: false, event: Some(events.join("backup-scheduled-dry-run.json")) };
        assert_eq!(args.scheduled_run(settings).expect("event"), ScheduledRun { dry_run: true, time_budget: Duration::from_secs(5) });
        let missing = RunArgs { dry_run: false, event: Some(events.join("no-such-event.json")) };
        assert!(matches!(missing.scheduled_run(settings), Err(EventFileError::Read { .. })));
    }

    #[test]
    fn settings_reject_a_zero_budget() {
        let env = |v: &str| Env::from_map([("JOB_TIME_BUDGET_SECS".to_owned(), v.to_owned())].into());
        assert_eq!(JobSettings::from_env(&env("120")).expect("valid").time_budget, Duration::from_secs(120));
        assert!(matches!(JobSettings::from_env(&env("0")), Err(ConfigError::Malformed { .. })));
        assert!(matches!(JobSettings::from_env(&env("soon")), Err(ConfigError::Malformed { .. })));
    }
}

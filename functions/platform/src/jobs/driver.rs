//! The one run-and-chunk loop of the scheduled jobs. [`run_chunked`] owns
//! the run: the lock and `job_runs` row ([`Job::begin`]), the window, the
//! time budget, resumption of a dead or handed-over run's checkpoint, the
//! chunk loop (next chunk of changed studies, read in one repeatable-read
//! snapshot, written, checkpoint saved), hand-over when out of time, and
//! the end (succeeded, handed over, or failed with its error recorded).
//! Each job supplies only reading a chunk, writing it and finishing the
//! window ([`ChunkedJob`]).

use std::time::Duration;

use serde::Serialize;
use serde::de::DeserializeOwned;

use super::{Job, JobError, StudyCursor, Window, begin_snapshot};
use crate::storage::postgres::Database;

/// What a chunked job adds to [`run_chunked`].
// Not spawned: the futures need not be `Send`, so `async fn` is fine here.
#[allow(async_fn_in_trait)]
pub trait ChunkedJob {
    /// Everything the run has done so far: saved as the checkpoint after
    /// each chunk and taken up again by the run that resumes this one.
    type Progress: Default + Serialize + DeserializeOwned;
    /// One chunk's rows, read inside its snapshot.
    type Rows;
    /// What finishing the window hands back (e.g. a manifest's key).
    type Finished;
    type Error: From<JobError> + From<sqlx::Error> + From<serde_json::Error> + std::fmt::Display;

    /// The job's name in `job_runs` and in its lock.
    const NAME: &'static str;

    /// Studies per chunk.
    fn chunk_studies(&self) -> u32;
    /// Where the progress keeps its place in the window.
    fn cursor(progress: &mut Self::Progress) -> &mut StudyCursor;
    /// The counts recorded in `job_runs`.
    fn counts(progress: &Self::Progress) -> serde_json::Value;

    /// Before the first chunk of this run (the progress is already the
    /// resumed one, if any).
    async fn start(&mut self, _job: &Job, _progress: &mut Self::Progress) -> Result<(), Self::Error> {
        Ok(())
    }
    /// Reads the chunk's studies (by row id) and their children.
    async fn read(&mut self, tx: &mut sqlx::Transaction<'static, sqlx::Postgres>, ids: &[i64]) -> Result<Self::Rows, Self::Error>;
    /// Writes one chunk durably and records it in `progress` (the driver
    /// saves the checkpoint right after).
    async fn write(&mut self, job: &Job, rows: Self::Rows, progress: &mut Self::Progress) -> Result<(), Self::Error>;
    /// After the whole window's chunks are written.
    async fn finish(&mut self, job: &Job, progress: &mut Self::Progress) -> Result<Self::Finished, Self::Error>;
}

/// How a run ended (a failed run ends in the job's error instead).
#[derive(Debug)]
pub struct ChunkedRun<P, F> {
    pub progress: P,
    /// `None` when the run ran out of time and handed its window over.
    pub finished: Option<F>,
    /// The dead or handed-over run this one took over.
    pub resumed_from: Option<i64>,
    pub window: Window,
}

/// Runs `job` over the window of studies changed since its last successful
/// run; see the module documentation.
pub async fn run_chunked<J: ChunkedJob>(
    db: &Database,
    job: &mut J,
    dry_run: bool,
    time_budget: Option<Duration>,
) -> Result<ChunkedRun<J::Progress, J::Finished>, J::Error> {
    let mut run = Job::begin(db, J::NAME, dry_run).await?;
    if let Some(budget) = time_budget {
        run.set_time_budget(budget);
    }
    let mut progress = J::Progress::default();
    let resumed_from = run.resumed_from();
    let window = run.window();
    match drive(db, job, &mut run, &mut progress).await {
        Ok(finished) => {
            run.end(finished.is_some(), &J::counts(&progress)).await?;
            Ok(ChunkedRun { progress, finished, resumed_from, window })
        }
        Err(err) => {
            // Recorded, never swallowed; the watermark stays put, so the
            // next run covers this window again.
            run.fail(&J::counts(&progress), &err.to_string()).await?;
            Err(err)
        }
    }
}

/// The chunk loop; `Ok(None)` when the time budget ran out first.
async fn drive<J: ChunkedJob>(db: &Database, job: &mut J, run: &mut Job, progress: &mut J::Progress) -> Result<Option<J::Finished>, J::Error> {
    if let Some(value) = run.checkpoint() {
        *progress = serde_json::from_value(value.clone())?;
        tracing::info!(job = J::NAME, "resuming an interrupted run from its checkpoint");
    }
    job.start(run, progress).await?;
    let window = run.window();
    let chunk_studies = job.chunk_studies();
    loop {
        let mut tx = begin_snapshot(db).await.map_err(JobError::from)?;
        let Some((ids, next)) = J::cursor(progress).next_chunk(&mut tx, &window, chunk_studies).await? else { break };
        let rows = job.read(&mut tx, &ids).await?;
        tx.commit().await?;
        job.write(run, rows, progress).await?;
        *J::cursor(progress) = next;
        run.save_checkpoint(serde_json::to_value(&*progress)?, &J::counts(progress)).await?;
        tracing::info!(job = J::NAME, studies = ids.len(), counts = %J::counts(progress), "chunk written");
        if ids.len() < chunk_studies.max(1) as usize {
            break; // a short chunk is the last one
        }
        if run.out_of_time() {
            return Ok(None);
        }
    }
    job.finish(run, progress).await.map(Some)
}

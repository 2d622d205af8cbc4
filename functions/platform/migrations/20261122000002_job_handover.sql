-- Scheduled jobs stop before Lambda's 15-minute limit and hand the rest of
-- their window to the next run: such a run ends 'handed_over' with its
-- checkpoint, and the run that takes it over is recorded in `resumed_by`
-- (also for runs that died), so a checkpoint is resumed exactly once.
ALTER TYPE job_status ADD VALUE 'handed_over';

ALTER TABLE job_runs ADD COLUMN resumed_by bigint REFERENCES job_runs (id);

-- "Is there a run waiting to be resumed?"
CREATE INDEX job_runs_unresumed_idx ON job_runs (job_name, id DESC) WHERE resumed_by IS NULL;

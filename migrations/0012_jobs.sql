-- Periodic jobs shared by every instance (issue 17). A job runs in one
-- instance at a time: that instance holds the job's session-level advisory
-- lock (7262, hashtext(job)) on a dedicated connection for the whole run, and the schedule below says when the job is next due. A run that dies
-- with its instance releases the lock with the connection, and the job, still
-- due, is taken by the next instance that looks.

CREATE TABLE job_schedule (
    job              text PRIMARY KEY CHECK (job ~ '^[a-z][a-z._]{1,62}$'),
    next_run_at      timestamptz NOT NULL DEFAULT now(),
    last_started_at  timestamptz,
    last_finished_at timestamptz,
    last_instance    text,
    last_outcome     text CHECK (last_outcome IN ('ok', 'failed')),
    last_error       text,
    runs             bigint NOT NULL DEFAULT 0,
    failures         bigint NOT NULL DEFAULT 0
);

-- One row per run: started when the lock was taken, finished when the run
-- ended (`cancelled`: its instance shut down). A row left unfinished is a
-- run whose instance died or lost its lock connection.
CREATE TABLE job_runs (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    job         text NOT NULL REFERENCES job_schedule (job),
    instance    text NOT NULL,
    started_at  timestamptz NOT NULL DEFAULT now(),
    finished_at timestamptz,
    outcome     text CHECK (outcome IN ('ok', 'failed', 'cancelled')),
    detail      text
);
CREATE INDEX job_runs_by_job ON job_runs (job, started_at);

-- Not tenant data: the schedule is the deployment's. The serving role keeps
-- it; it may forget old runs but never rewrite one after it finished.
GRANT SELECT, INSERT, UPDATE ON job_schedule TO fortifile_app;
GRANT SELECT, INSERT, DELETE ON job_runs TO fortifile_app;
GRANT UPDATE (finished_at, outcome, detail) ON job_runs TO fortifile_app;

CREATE FUNCTION job_runs_finish_once() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF OLD.finished_at IS NOT NULL THEN
        RAISE EXCEPTION 'job run % has finished: its record is not changed', OLD.id;
    END IF;
    RETURN NEW;
END
$$;
CREATE TRIGGER job_runs_finish_once BEFORE UPDATE ON job_runs
    FOR EACH ROW EXECUTE FUNCTION job_runs_finish_once();

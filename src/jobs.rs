//! Periodic jobs that run in one instance at a time, however many instances
//! share the database.
//!
//! Each instance runs one [`Scheduler`]. Once a second it asks, on a
//! connection of its own outside the pool, which jobs are due
//! (`job_schedule.next_run_at`, migration 0012). For each due job it tries
//! the job's session-level advisory lock, `(7262, hashtext(name))`, on that
//! connection; the instance that gets it checks again that the job is still
//! due (another may have just finished it), records the start in `job_runs`,
//! runs the job, records the outcome and the next due time (the run's start +
//! period), and lets the lock go.
//!
//! Why a session lock on a dedicated connection and not a row lock in a
//! transaction: a transaction held open for a run would hold an id, and the
//! audit sealer seals only below the oldest running transaction, so a long
//! job would hold sealing back. The lock lives as long as the connection: a
//! process that dies lets its jobs go at once, and since their schedule still
//! says they are due, another instance takes them within a second (a host
//! that vanishes lets them go when PostgreSQL notices, by its TCP keepalives).
//!
//! The one window: an instance whose lock connection broke keeps running
//! until its next statement on that connection fails or times out
//! ([`STATEMENT_TIMEOUT`]), then cancels its runs. So the jobs are also
//! written to be safe if two runs ever overlap: each claims its work row by
//! row in short tenant transactions (`DELETE … RETURNING`, `FOR UPDATE SKIP
//! LOCKED`, transaction-level locks), and can be cancelled at any await.

use std::{future::Future, panic::AssertUnwindSafe, pin::Pin, time::Duration};

use futures::FutureExt;
use sqlx::{Connection, PgConnection};
use tokio::task::JoinSet;

use crate::{db::Database, telemetry};

/// The advisory-lock class of jobs; the second key is `hashtext(name)`.
const LOCK_CLASS: i32 = 7262;

/// How often the schedule is looked at.
const TICK: Duration = Duration::from_secs(1);

/// How long a statement on the lock connection may take before the
/// connection is given up for lost (and this instance's runs cancelled).
pub const STATEMENT_TIMEOUT: Duration = Duration::from_secs(10);

/// What a run reports: a line for the log and `job_runs.detail`, or the error.
pub type Outcome = anyhow::Result<String>;

type Run = Box<dyn Fn() -> Pin<Box<dyn Future<Output = Outcome> + Send>> + Send + Sync>;

/// A periodic job.
pub struct Job {
    /// Its name in `job_schedule`, logs and metrics; its lock is derived from it.
    pub name: &'static str,
    /// How long from one run's start to the next.
    pub every: Duration,
    /// A run still going after this long is cancelled and recorded as failed.
    pub timeout: Duration,
    run: Run,
}

impl Job {
    pub fn new<F, Fut>(name: &'static str, every: Duration, timeout: Duration, run: F) -> Job
    where
        F: Fn() -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Outcome> + Send + 'static,
    {
        Job { name, every, timeout, run: Box::new(move || Box::pin(run())) }
    }
}

impl std::fmt::Debug for Job {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Job").field("name", &self.name).field("every", &self.every).finish()
    }
}

/// Runs `jobs` when they are due and this instance holds their lock.
pub struct Scheduler {
    db: Database,
    jobs: Vec<Job>,
    instance: String,
}

/// A finished run, as the scheduler learns of it.
struct Finished {
    job: usize,
    run_id: i64,
    outcome: Outcome,
}

/// What one tick's statements ran into.
type Step = Result<(), sqlx::Error>;

impl Scheduler {
    /// `instance` names this process in `job_schedule` and `job_runs`.
    pub fn new(db: Database, jobs: Vec<Job>, instance: String) -> Scheduler {
        let mut names: Vec<&str> = jobs.iter().map(|j| j.name).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), jobs.len(), "two jobs share a name");
        Scheduler { db, jobs, instance }
    }

    /// Schedules until `stop` resolves; then cancels the runs in progress,
    /// waits for them, records them as cancelled and lets their locks go.
    pub async fn run(self, stop: impl Future<Output = ()>) {
        let mut tick = tokio::time::interval(TICK);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut conn: Option<PgConnection> = None;
        let mut running: JoinSet<Finished> = JoinSet::new();
        // Per job: the run in progress here, if any.
        let mut busy: Vec<Option<i64>> = vec![None; self.jobs.len()];
        tokio::pin!(stop);
        loop {
            tokio::select! {
                _ = &mut stop => break,
                _ = tick.tick() => {
                    if conn.is_none() {
                        conn = self.connect().await;
                    }
                    let Some(c) = conn.as_mut() else { continue };
                    let step = timed(self.start_due(c, &mut running, &mut busy)).await;
                    if let Err(e) = step {
                        lost(e, &mut conn, &mut running, &mut busy).await;
                    }
                }
                Some(done) = running.join_next(), if !running.is_empty() => {
                    // Runs catch their panics and are aborted only here, by us.
                    let Ok(done) = done else { continue };
                    busy[done.job] = None;
                    let Some(c) = conn.as_mut() else { continue };
                    if let Err(e) = timed(self.finish(c, done)).await {
                        lost(e, &mut conn, &mut running, &mut busy).await;
                    }
                }
            }
        }
        running.abort_all();
        while let Some(done) = running.join_next().await {
            // A run that finished before the abort reached it is recorded as such.
            if let Ok(done) = done {
                busy[done.job] = None;
                if let Some(c) = conn.as_mut() {
                    let _ = timed(self.finish(c, done)).await;
                }
            }
        }
        if let Some(mut c) = conn {
            let cancelled: Vec<i64> = busy.iter().flatten().copied().collect();
            let recorded = sqlx::query(
                "UPDATE job_runs SET finished_at = now(), outcome = 'cancelled', detail = 'the instance shut down' \
                 WHERE id = ANY($1) AND finished_at IS NULL",
            )
            .bind(&cancelled)
            .execute(&mut c);
            if let Err(e) = timed(recorded).await {
                tracing::warn!(error = %e, "could not record the job runs cancelled at shutdown");
            }
            // Closing the connection lets every lock of this instance go.
            c.close().await.ok();
        }
    }

    async fn connect(&self) -> Option<PgConnection> {
        let attempt = async {
            let mut conn = self.db.dedicated_connection().await?;
            let names: Vec<&str> = self.jobs.iter().map(|j| j.name).collect();
            // Every job has a row; a new job is due at once.
            sqlx::query("INSERT INTO job_schedule (job) SELECT unnest($1::text[]) ON CONFLICT (job) DO NOTHING")
                .bind(&names)
                .execute(&mut conn)
                .await?;
            // Locks are derived from names: two names must not share one.
            let distinct: i64 = sqlx::query_scalar("SELECT count(DISTINCT hashtext(n)) FROM unnest($1::text[]) n")
                .bind(&names)
                .fetch_one(&mut conn)
                .await?;
            assert_eq!(distinct as usize, names.len(), "two job names hash to one lock");
            Ok::<_, sqlx::Error>(conn)
        };
        match tokio::time::timeout(STATEMENT_TIMEOUT, attempt).await {
            Ok(Ok(conn)) => Some(conn),
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "job scheduler cannot connect; retrying");
                None
            }
            Err(_) => {
                tracing::warn!("job scheduler: connecting timed out; retrying");
                None
            }
        }
    }

    /// Starts every due job whose lock this instance gets.
    async fn start_due(
        &self,
        conn: &mut PgConnection,
        running: &mut JoinSet<Finished>,
        busy: &mut [Option<i64>],
    ) -> Step {
        let due: Vec<String> =
            sqlx::query_scalar("SELECT job FROM job_schedule WHERE next_run_at <= now()").fetch_all(&mut *conn).await?;
        for (i, job) in self.jobs.iter().enumerate() {
            if busy[i].is_some() || !due.iter().any(|d| d == job.name) {
                continue;
            }
            let locked: bool = sqlx::query_scalar("SELECT pg_try_advisory_lock($1, hashtext($2))")
                .bind(LOCK_CLASS)
                .bind(job.name)
                .fetch_one(&mut *conn)
                .await?;
            if !locked {
                continue;
            }
            // Under the lock: still due? (Another instance may have just finished it.)
            let run_id: Option<i64> = sqlx::query_scalar(
                "WITH claimed AS ( \
                   UPDATE job_schedule SET last_started_at = now(), last_instance = $2 \
                   WHERE job = $1 AND next_run_at <= now() RETURNING job) \
                 INSERT INTO job_runs (job, instance) SELECT job, $2 FROM claimed RETURNING id",
            )
            .bind(job.name)
            .bind(&self.instance)
            .fetch_optional(&mut *conn)
            .await?;
            let Some(run_id) = run_id else {
                unlock(conn, job.name).await?;
                continue;
            };
            busy[i] = Some(run_id);
            let (work, timeout) = ((job.run)(), job.timeout);
            running.spawn(async move {
                let outcome = match tokio::time::timeout(timeout, AssertUnwindSafe(work).catch_unwind()).await {
                    Ok(Ok(outcome)) => outcome,
                    Ok(Err(_)) => Err(anyhow::anyhow!("the job panicked")),
                    Err(_) => Err(anyhow::anyhow!("the job ran past its {} s and was cancelled", timeout.as_secs())),
                };
                Finished { job: i, run_id, outcome }
            });
        }
        Ok(())
    }

    /// Records a run's outcome and when the job is next due, then lets its lock go.
    async fn finish(&self, conn: &mut PgConnection, done: Finished) -> Step {
        let job = &self.jobs[done.job];
        let (outcome, detail) = match &done.outcome {
            Ok(line) => ("ok", line.replace('\0', "")),
            // PostgreSQL's text takes no NUL.
            Err(e) => ("failed", format!("{e:#}").replace('\0', "")),
        };
        match &done.outcome {
            Ok(line) if line.is_empty() => tracing::debug!(job = job.name, "job ran"),
            Ok(line) => tracing::info!(job = job.name, "{line}"),
            Err(_) => tracing::warn!(job = job.name, error = %detail, "job failed"),
        }
        let every = i64::try_from(job.every.as_millis()).unwrap_or(i64::MAX);
        let mut tx = conn.begin().await?;
        let started: Option<time::OffsetDateTime> = sqlx::query_scalar(
            "UPDATE job_runs SET finished_at = now(), outcome = $2, detail = nullif($3, '') \
             WHERE id = $1 AND finished_at IS NULL RETURNING started_at",
        )
        .bind(done.run_id)
        .bind(outcome)
        .bind(&detail)
        .fetch_optional(&mut *tx)
        .await?;
        // The schedule is this run's to move, unless another instance has
        // claimed the job since (after this one's lock was lost).
        sqlx::query(
            "UPDATE job_schedule SET last_finished_at = now(), last_outcome = $2, \
                    last_error = CASE WHEN $2 = 'failed' THEN $3 END, \
                    runs = runs + 1, failures = failures + (CASE WHEN $2 = 'failed' THEN 1 ELSE 0 END), \
                    next_run_at = $4 + make_interval(secs => $5::double precision / 1000) \
             WHERE job = $1 AND last_instance = $6 AND last_started_at = $4",
        )
        .bind(job.name)
        .bind(outcome)
        .bind(&detail)
        .bind(started)
        .bind(every)
        .bind(&self.instance)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        telemetry::job_run(job.name, outcome);
        unlock(conn, job.name).await
    }
}

/// `work`, or a timeout error after [`STATEMENT_TIMEOUT`].
async fn timed<T>(work: impl Future<Output = Result<T, sqlx::Error>>) -> Result<T, sqlx::Error> {
    tokio::time::timeout(STATEMENT_TIMEOUT, work).await.unwrap_or_else(|_| {
        Err(sqlx::Error::Io(std::io::Error::new(std::io::ErrorKind::TimedOut, "no answer on the lock connection")))
    })
}

/// The lock connection failed: the locks went with it, so the runs they
/// covered are cancelled (and waited for) before anything is taken again.
/// Their `job_runs` rows stay unfinished, as a crashed instance's would.
async fn lost(
    error: sqlx::Error,
    conn: &mut Option<PgConnection>,
    running: &mut JoinSet<Finished>,
    busy: &mut [Option<i64>],
) {
    tracing::warn!(%error, "job scheduler lost its connection; runs in progress cancelled");
    running.abort_all();
    while running.join_next().await.is_some() {}
    busy.iter_mut().for_each(|b| *b = None);
    *conn = None;
}

async fn unlock(conn: &mut PgConnection, name: &str) -> Step {
    sqlx::query("SELECT pg_advisory_unlock($1, hashtext($2))")
        .bind(LOCK_CLASS)
        .bind(name)
        .execute(conn)
        .await
        .map(|_| ())
}

/// Names this process in the schedule: host, process id and listening address.
pub fn instance_name(bind: std::net::SocketAddr) -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
    format!("{}/{}/{bind}", host.trim(), std::process::id())
}

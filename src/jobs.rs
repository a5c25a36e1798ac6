//! Periodic jobs that run in exactly one instance at a time, however many
//! instances share the database.
//!
//! Each instance runs one [`Scheduler`]. Once a second it asks, on a
//! connection of its own outside the pool, which jobs are due
//! (`job_schedule.next_run_at`, migration 0012). For each due job it tries
//! the job's session-level advisory lock on that connection; the instance
//! that gets it checks again that the job is still due (another may have just
//! finished it), records the start, runs the job, records the outcome and the
//! next due time (start + period), and lets the lock go.
//!
//! Why a session lock on a dedicated connection and not a row lock in a
//! transaction: a transaction held open for a run would hold an id, and the
//! audit sealer seals only below the oldest running transaction, so a long
//! job would hold sealing back. The lock lives exactly as long as the
//! connection: an instance that dies, or loses that connection, lets its
//! jobs go, and since their schedule still says they are due, another
//! instance takes them within a second. Losing the connection also cancels
//! this instance's runs, so a job never runs in two places. Jobs are written
//! to be cancelled at any await: their work is claimed row by row in their
//! own transactions, so what a cancelled run did not finish is found by the
//! next one.

use std::{future::Future, pin::Pin, time::Duration};

use sqlx::{Connection, PgConnection};
use tokio::task::JoinSet;

use crate::{db::Database, telemetry};

/// The advisory-lock class of jobs; the second key is the job's own.
const LOCK_CLASS: i32 = 7262;

/// How often the schedule is looked at.
const TICK: Duration = Duration::from_secs(1);

/// What a run reports: a line for the log and `job_runs.detail`, or the error.
pub type Outcome = anyhow::Result<String>;

type Run = Box<dyn Fn() -> Pin<Box<dyn Future<Output = Outcome> + Send>> + Send + Sync>;

/// A periodic job.
pub struct Job {
    /// Its name in `job_schedule`, logs and metrics.
    pub name: &'static str,
    /// Its advisory-lock key (unique among jobs).
    pub key: i32,
    /// How long from one run's start to the next.
    pub every: Duration,
    run: Run,
}

impl Job {
    pub fn new<F, Fut>(name: &'static str, key: i32, every: Duration, run: F) -> Job
    where
        F: Fn() -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Outcome> + Send + 'static,
    {
        Job { name, key, every, run: Box::new(move || Box::pin(run())) }
    }
}

impl std::fmt::Debug for Job {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Job").field("name", &self.name).field("key", &self.key).field("every", &self.every).finish()
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

impl Scheduler {
    /// `instance` names this process in `job_schedule` and `job_runs`.
    pub fn new(db: Database, jobs: Vec<Job>, instance: String) -> Scheduler {
        let mut keys: Vec<i32> = jobs.iter().map(|j| j.key).collect();
        keys.sort_unstable();
        keys.dedup();
        assert_eq!(keys.len(), jobs.len(), "two jobs share an advisory-lock key");
        Scheduler { db, jobs, instance }
    }

    /// Schedules until the task is dropped (which cancels every run in progress).
    pub async fn run(self) {
        let mut tick = tokio::time::interval(TICK);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut conn: Option<PgConnection> = None;
        // Dropped with the scheduler: runs in progress are cancelled with it.
        let mut running: JoinSet<Finished> = JoinSet::new();
        let mut busy = vec![false; self.jobs.len()];
        loop {
            tokio::select! {
                _ = tick.tick() => {
                    if conn.is_none() {
                        conn = self.connect().await;
                    }
                    let Some(c) = conn.as_mut() else { continue };
                    if let Err(e) = self.start_due(c, &mut running, &mut busy).await {
                        lost(e, &mut conn, &mut running, &mut busy).await;
                    }
                }
                Some(done) = running.join_next(), if !running.is_empty() => {
                    let Ok(done) = done else { continue };
                    busy[done.job] = false;
                    if let Some(c) = conn.as_mut()
                        && let Err(e) = self.finish(c, done).await
                    {
                        lost(e, &mut conn, &mut running, &mut busy).await;
                    }
                }
            }
        }
    }

    async fn connect(&self) -> Option<PgConnection> {
        let mut conn = match self.db.dedicated_connection().await {
            Ok(c) => c,
            Err(e) => {
                tracing::warn!(error = %e, "job scheduler cannot connect; retrying");
                return None;
            }
        };
        // Every job has a row; a new job is due at once.
        for job in &self.jobs {
            let added = sqlx::query("INSERT INTO job_schedule (job) VALUES ($1) ON CONFLICT (job) DO NOTHING")
                .bind(job.name)
                .execute(&mut conn)
                .await;
            if let Err(e) = added {
                tracing::warn!(error = %e, job = job.name, "job scheduler cannot register a job; retrying");
                return None;
            }
        }
        Some(conn)
    }

    /// Starts every due job whose lock this instance gets.
    async fn start_due(
        &self,
        conn: &mut PgConnection,
        running: &mut JoinSet<Finished>,
        busy: &mut [bool],
    ) -> Result<(), sqlx::Error> {
        let due: Vec<String> =
            sqlx::query_scalar("SELECT job FROM job_schedule WHERE next_run_at <= now()").fetch_all(&mut *conn).await?;
        for (i, job) in self.jobs.iter().enumerate() {
            if busy[i] || !due.iter().any(|d| d == job.name) {
                continue;
            }
            let locked: bool = sqlx::query_scalar("SELECT pg_try_advisory_lock($1, $2)")
                .bind(LOCK_CLASS)
                .bind(job.key)
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
                unlock(conn, job.key).await?;
                continue;
            };
            busy[i] = true;
            let work = (job.run)();
            running.spawn(async move { Finished { job: i, run_id, outcome: work.await } });
        }
        Ok(())
    }

    /// Records a run's outcome and when the job is next due, then lets its lock go.
    async fn finish(&self, conn: &mut PgConnection, done: Finished) -> Result<(), sqlx::Error> {
        let job = &self.jobs[done.job];
        let (outcome, detail) = match &done.outcome {
            Ok(line) => ("ok", line.clone()),
            Err(e) => ("failed", format!("{e:#}")),
        };
        telemetry::job_run(job.name, outcome);
        match &done.outcome {
            Ok(line) if line.is_empty() => tracing::debug!(job = job.name, "job ran"),
            Ok(line) => tracing::info!(job = job.name, "{line}"),
            Err(_) => tracing::warn!(job = job.name, error = %detail, "job failed"),
        }
        let every = i64::try_from(job.every.as_millis()).unwrap_or(i64::MAX);
        let mut tx = conn.begin().await?;
        sqlx::query("UPDATE job_runs SET finished_at = now(), outcome = $2, detail = nullif($3, '') WHERE id = $1")
            .bind(done.run_id)
            .bind(outcome)
            .bind(&detail)
            .execute(&mut *tx)
            .await?;
        sqlx::query(
            "UPDATE job_schedule SET last_finished_at = now(), last_outcome = $2, \
                    last_error = CASE WHEN $2 = 'failed' THEN $3 END, \
                    runs = runs + 1, failures = failures + (CASE WHEN $2 = 'failed' THEN 1 ELSE 0 END), \
                    next_run_at = last_started_at + make_interval(secs => $4::double precision / 1000) \
             WHERE job = $1",
        )
        .bind(job.name)
        .bind(outcome)
        .bind(&detail)
        .bind(every)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        unlock(conn, job.key).await
    }
}

/// The lock connection failed: the locks went with it, so the runs they
/// covered are cancelled (and waited for) before anything is taken again.
async fn lost(error: sqlx::Error, conn: &mut Option<PgConnection>, running: &mut JoinSet<Finished>, busy: &mut [bool]) {
    tracing::warn!(%error, "job scheduler lost its connection; runs in progress cancelled");
    running.abort_all();
    while running.join_next().await.is_some() {}
    busy.iter_mut().for_each(|b| *b = false);
    *conn = None;
}

async fn unlock(conn: &mut PgConnection, key: i32) -> Result<(), sqlx::Error> {
    sqlx::query("SELECT pg_advisory_unlock($1, $2)").bind(LOCK_CLASS).bind(key).execute(conn).await.map(|_| ())
}

/// Names this process in the schedule: host, process id and listening address.
pub fn instance_name(bind: std::net::SocketAddr) -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
    format!("{}/{}/{bind}", host.trim(), std::process::id())
}

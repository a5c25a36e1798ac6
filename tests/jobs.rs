//! The job scheduler on real PostgreSQL, with jobs of the test's own: a run
//! that panics, hangs or is cancelled at shutdown is recorded and unlocked,
//! and the job is run again when due; two schedulers never run one job at once.

mod common;

use std::{
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

use common::TestApp;
use fortifile::jobs::{Job, Scheduler};
use sqlx::PgConnection;

async fn outcomes(conn: &mut PgConnection, job: &str) -> Vec<Option<String>> {
    sqlx::query_scalar("SELECT outcome FROM job_runs WHERE job = $1 ORDER BY id")
        .bind(job)
        .fetch_all(conn)
        .await
        .unwrap()
}

async fn until(conn: &mut PgConnection, job: &str, n: usize) -> Vec<Option<String>> {
    let started = Instant::now();
    loop {
        let seen = outcomes(conn, job).await;
        if seen.iter().filter(|o| o.is_some()).count() >= n {
            return seen;
        }
        assert!(started.elapsed() < Duration::from_secs(20), "{job}: {seen:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Job locks held in this test's database, once a closed connection's
/// backend has had a moment to go.
async fn job_locks_held(conn: &mut PgConnection) -> i64 {
    let mut held = 0;
    for _ in 0..20 {
        held = sqlx::query_scalar(
            "SELECT count(*) FROM pg_locks l JOIN pg_database d ON d.oid = l.database \
             WHERE l.locktype = 'advisory' AND l.classid = 7262 AND d.datname = current_database()",
        )
        .fetch_one(&mut *conn)
        .await
        .unwrap();
        if held == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    held
}

async fn due_now(conn: &mut PgConnection, job: &str) {
    sqlx::query("UPDATE job_schedule SET next_run_at = now() WHERE job = $1").bind(job).execute(conn).await.unwrap();
}

#[tokio::test]
async fn a_job_that_panics_or_hangs_is_recorded_as_failed_unlocked_and_run_again_when_due() {
    let app = TestApp::spawn().await;
    let hour = Duration::from_secs(3600);
    let panics = Job::new("test.panics", hour, hour, || async { panic!("a bug in a job") });
    let hangs = Job::new("test.hangs", hour, Duration::from_millis(300), || async {
        tokio::time::sleep(Duration::from_secs(3600)).await;
        Ok(String::new())
    });
    let scheduler = Scheduler::new(app.db.clone(), vec![panics, hangs], "test/1".into());
    let running = tokio::spawn(scheduler.run(std::future::pending()));
    let mut db = app.owner_conn().await;

    assert_eq!(until(&mut db, "test.panics", 1).await, vec![Some("failed".to_string())]);
    assert_eq!(until(&mut db, "test.hangs", 1).await, vec![Some("failed".to_string())]);
    let (error, failures): (Option<String>, i64) =
        sqlx::query_as("SELECT last_error, failures FROM job_schedule WHERE job = 'test.hangs'")
            .fetch_one(&mut db)
            .await
            .unwrap();
    assert!(error.unwrap().contains("ran past"), "the timeout is named");
    assert_eq!(failures, 1);

    // Not stuck: due again, each runs again.
    due_now(&mut db, "test.panics").await;
    due_now(&mut db, "test.hangs").await;
    assert_eq!(until(&mut db, "test.panics", 2).await.len(), 2);
    assert_eq!(until(&mut db, "test.hangs", 2).await.len(), 2);
    let held = job_locks_held(&mut db).await;
    assert_eq!(held, 0, "no lock is left held by a failed run");
    running.abort();
}

#[tokio::test]
async fn at_shutdown_a_run_in_progress_is_cancelled_recorded_and_its_lock_released() {
    let app = TestApp::spawn().await;
    let hour = Duration::from_secs(3600);
    let slow = Job::new("test.slow", hour, hour, || async {
        tokio::time::sleep(Duration::from_secs(3600)).await;
        Ok(String::new())
    });
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let scheduler = Scheduler::new(app.db.clone(), vec![slow], "test/1".into());
    let running = tokio::spawn(scheduler.run(async {
        let _ = stopped.await;
    }));
    let mut db = app.owner_conn().await;
    let started = Instant::now();
    while outcomes(&mut db, "test.slow").await.is_empty() {
        assert!(started.elapsed() < Duration::from_secs(10));
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    stop.send(()).unwrap();
    tokio::time::timeout(Duration::from_secs(15), running).await.expect("the scheduler stops").unwrap();
    assert_eq!(outcomes(&mut db, "test.slow").await, vec![Some("cancelled".to_string())]);
    let held = job_locks_held(&mut db).await;
    assert_eq!(held, 0);
}

#[tokio::test]
async fn four_schedulers_on_one_database_run_a_due_job_once_at_a_time() {
    let app = TestApp::spawn().await;
    let hour = Duration::from_secs(3600);
    let (now, most) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let runs = Arc::new(AtomicUsize::new(0));
    let schedulers: Vec<_> = (0..4)
        .map(|i| {
            let (now, most, runs) = (now.clone(), most.clone(), runs.clone());
            let job = Job::new("test.once", hour, hour, move || {
                let (now, most, runs) = (now.clone(), most.clone(), runs.clone());
                async move {
                    let at_once = now.fetch_add(1, Ordering::SeqCst) + 1;
                    most.fetch_max(at_once, Ordering::SeqCst);
                    tokio::time::sleep(Duration::from_millis(300)).await;
                    now.fetch_sub(1, Ordering::SeqCst);
                    runs.fetch_add(1, Ordering::SeqCst);
                    Ok(String::new())
                }
            });
            tokio::spawn(Scheduler::new(app.db.clone(), vec![job], format!("test/{i}")).run(std::future::pending()))
        })
        .collect();
    let mut db = app.owner_conn().await;
    until(&mut db, "test.once", 1).await;
    for n in 2..=5 {
        due_now(&mut db, "test.once").await;
        until(&mut db, "test.once", n).await;
    }
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(runs.load(Ordering::SeqCst), 5, "one run per period among four schedulers");
    assert_eq!(most.load(Ordering::SeqCst), 1, "never two at once");
    for s in schedulers {
        s.abort();
    }
}

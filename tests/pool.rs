//! The connection pool under cancellation: a request whose client goes away
//! while its transaction is beginning must not hand an open transaction to the
//! next request that borrows the connection (sqlx 0.9.0's `Pool::begin` does:
//! transact-rs/sqlx#4393). And how a request ends its transaction on it.

mod common;

use std::{
    future::Future,
    pin::pin,
    task::{Context, Waker},
    time::Duration,
};

use common::TestApp;
use fortifile::db::Database;
use reqwest::StatusCode;

/// Polls `fut` `polls` times, pausing between polls so that the statement it
/// sent can reach the server, then drops it unfinished. Whether it finished.
fn poll_then_abandon<F: Future>(fut: F, polls: usize) -> bool {
    let mut fut = pin!(fut);
    let mut cx = Context::from_waker(Waker::noop());
    for _ in 0..polls {
        if fut.as_mut().poll(&mut cx).is_ready() {
            return true;
        }
        std::thread::sleep(Duration::from_micros(150));
    }
    false
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_transaction_abandoned_while_it_begins_never_leaks_into_the_next_borrower_of_its_connection() {
    let app = TestApp::spawn().await;
    let tenant = app.db.tenant_ids().await.unwrap()[0];
    // One connection, so every borrower gets the one an abandoned BEGIN used.
    let db = Database::connect(app.owner.clone().username("fortifile_app"), 1).await.unwrap();
    let (mut abandoned, mut leaked) = (0, 0);
    for polls in 1..=12 {
        for _ in 0..24 {
            if poll_then_abandon(db.tenant_tx(tenant, None), polls) {
                continue;
            }
            abandoned += 1;
            tokio::time::sleep(Duration::from_millis(10)).await;
            // Outside a transaction each statement has its own clock; inside a
            // leaked one, now() stays at the abandoned BEGIN.
            let first = db.now().await.unwrap();
            tokio::time::sleep(Duration::from_millis(10)).await;
            let second = db.now().await.unwrap();
            if first == second {
                leaked += 1;
            }
            // A full transaction still works on the connection afterwards.
            let tx = db.tenant_tx(tenant, None).await.unwrap();
            tx.commit().await.unwrap();
        }
    }
    assert!(abandoned > 0, "no BEGIN was abandoned mid-flight; the test proves nothing");
    assert_eq!(leaked, 0, "{leaked} of {abandoned} abandoned BEGINs left their transaction open on the connection");
}

/// What the server's one pooled connection last ran, once it is back in the
/// pool (idle, the release check answered).
async fn last_statement_of_the_pool(app: &TestApp) -> String {
    let mut watcher = app.owner_conn().await;
    loop {
        let row: Option<(String, String)> = sqlx::query_as(
            "SELECT state, query FROM pg_stat_activity \
              WHERE datname = current_database() AND usename = 'fortifile_app'",
        )
        .fetch_optional(&mut watcher)
        .await
        .unwrap();
        if let Some((state, query)) = row
            && state == "idle"
        {
            return query;
        }
        tokio::task::yield_now().await;
    }
}

#[tokio::test]
async fn a_read_sends_no_commit_and_a_write_still_commits() {
    let app = TestApp::spawn_with_pool(1, |_, _| {}).await;
    let staff = app.signed_in_as("carol", "staff", "public").await;
    staff.upload_ok("kept.txt", b"kept", None).await;
    assert_eq!(last_statement_of_the_pool(&app).await, "COMMIT", "an upload commits its row");
    // `/me` reads the session and writes nothing: BEGIN and one statement,
    // then a rollback that goes out with the pool's release check.
    let (status, me) = staff.get("/me").await;
    assert_eq!((status, me["user"]["username"].as_str()), (StatusCode::OK, Some("carol")));
    assert_eq!(last_statement_of_the_pool(&app).await, "ROLLBACK");
    // So does a guarded read: the guard's decision and the list, then the rollback.
    let (status, list) = staff.get("/api/files").await;
    assert_eq!((status, list["files"].as_array().map(Vec::len)), (StatusCode::OK, Some(1)));
    assert_eq!(last_statement_of_the_pool(&app).await, "ROLLBACK");
    // The next write on the same connection is not inside anything left open.
    staff.upload_ok("also.txt", b"also", None).await;
    assert_eq!(last_statement_of_the_pool(&app).await, "COMMIT");
    let files: i64 =
        sqlx::query_scalar("SELECT count(*) FROM files").fetch_one(&mut app.owner_conn().await).await.unwrap();
    assert_eq!(files, 2);
}

#[tokio::test]
async fn ending_a_transaction_that_wrote_as_read_only_is_caught_in_every_test_build() {
    let app = TestApp::spawn().await;
    let mut tx = app.db.tenant_tx(app.default_tenant, None).await.unwrap();
    sqlx::query("INSERT INTO pending_objects (tenant_id, object_key, purpose, since) VALUES ($1, $2, 'upload', now())")
        .bind(app.default_tenant)
        .bind(format!("{}/{}", app.default_tenant, uuid::Uuid::new_v4()))
        .execute(tx.conn())
        .await
        .unwrap();
    let ended = tokio::spawn(tx.end_read_only()).await;
    assert!(ended.is_err_and(|e| e.is_panic()), "a write would have been rolled back silently");
    let kept: i64 = sqlx::query_scalar("SELECT count(*) FROM pending_objects")
        .fetch_one(&mut app.owner_conn().await)
        .await
        .unwrap();
    assert_eq!(kept, 0, "and nothing of it committed");
    // A transaction that only read ends quietly.
    let mut tx = app.db.tenant_tx(app.default_tenant, None).await.unwrap();
    sqlx::query("SELECT count(*) FROM files").execute(tx.conn()).await.unwrap();
    tx.end_read_only().await.unwrap();
}

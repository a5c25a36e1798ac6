//! The connection pool under cancellation: a request whose client goes away
//! while its transaction is beginning must not hand an open transaction to the
//! next request that borrows the connection (sqlx 0.9.0's `Pool::begin` does:
//! transact-rs/sqlx#4393).

mod common;

use std::{
    future::Future,
    pin::pin,
    task::{Context, Waker},
    time::Duration,
};

use common::TestApp;
use fortifile::db::Database;

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

//! Objects in flight: stored objects that have no `files` row yet (an upload in
//! progress) or no longer have one (a delete whose object is still to go).
//!
//! Each is recorded in `pending_objects` before it can be left behind: an
//! upload's record is committed before its first byte is stored and removed in
//! the transaction that inserts its `files` row; a delete's record is written in
//! the transaction that removes the row and dropped once the object is gone.
//! So whatever a crash, a cancelled request or a failing store leaves (a
//! complete object, a local staging file `<key>#<n>`), the sweep finds it by
//! reading this table: its work grows with failures, not with the store.

use std::time::Duration;

use time::OffsetDateTime;
use uuid::Uuid;

use crate::{
    db::TenantTx,
    http::{AppState, error::AppError},
};

/// What an in-flight record is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Purpose {
    Upload,
    Delete,
}

impl Purpose {
    fn as_str(self) -> &'static str {
        match self {
            Purpose::Upload => "upload",
            Purpose::Delete => "delete",
        }
    }
}

/// Records `key` as in flight, in `tx`.
pub async fn record(tx: &mut TenantTx, key: &str, purpose: Purpose, now: OffsetDateTime) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO pending_objects (tenant_id, object_key, purpose, since) VALUES ($1, $2, $3, $4) \
         ON CONFLICT (object_key) DO UPDATE SET purpose = EXCLUDED.purpose, since = EXCLUDED.since",
    )
    .bind(tx.tenant_id())
    .bind(key)
    .bind(purpose.as_str())
    .bind(now)
    .execute(tx.conn())
    .await
    .map(|_| ())
}

/// Records an upload's object before its first byte, in a transaction of its
/// own (it must outlive a crash of the upload).
pub async fn begin_upload(state: &AppState, tenant: Uuid, actor: Uuid, key: &str) -> Result<(), sqlx::Error> {
    let mut tx = state.db.tenant_tx(tenant, Some(actor)).await?;
    record(&mut tx, key, Purpose::Upload, state.clock.now()).await?;
    tx.commit().await
}

/// The object `key` is settled (its row committed, or the object removed).
/// True when this call removed the record: false means another transaction
/// (the sweep) settled it first.
pub async fn settle(tx: &mut TenantTx, key: &str) -> Result<bool, sqlx::Error> {
    let done = sqlx::query("DELETE FROM pending_objects WHERE object_key = $1").bind(key).execute(tx.conn()).await?;
    Ok(done.rows_affected() == 1)
}

/// Claims an upload's record for the transaction that will insert its row:
/// deleting it first waits for a sweep that holds it, and finds it gone if
/// that sweep removed the object, so no row can point at a swept object.
pub async fn claim_upload(tx: &mut TenantTx, key: &str) -> Result<(), AppError> {
    if settle(tx, key).await? {
        return Ok(());
    }
    Err(outlived())
}

/// Renews an upload's record once its object is complete, so that the sweep
/// does not take a finished object for a crashed one, however long the upload
/// took. Fails when the sweep already settled the record.
pub async fn renew_upload(state: &AppState, tenant: Uuid, actor: Uuid, key: &str) -> Result<(), AppError> {
    let mut tx = state.db.tenant_tx(tenant, Some(actor)).await?;
    let renewed = sqlx::query("UPDATE pending_objects SET since = $2 WHERE object_key = $1")
        .bind(key)
        .bind(state.clock.now())
        .execute(tx.conn())
        .await?;
    tx.commit().await?;
    if renewed.rows_affected() == 1 { Ok(()) } else { Err(outlived()) }
}

fn outlived() -> AppError {
    AppError::Internal(anyhow::anyhow!("an upload outlived its in-flight record and its object was swept"))
}

/// Removes the object `key` (with any local staging parts) and then its
/// record, unless a `files` row references it. The failed upload that calls
/// this cannot know that its row did not commit: a commit can land and its
/// answer be lost (the connection broke, the database stopped), and then the
/// row and its object stay. So the database decides, not the error: the record
/// is locked first, which waits out the upload's own transaction if it is
/// still open somewhere, and only then is the `files` row looked for, in a
/// statement that sees that transaction's outcome. Nothing is removed before
/// the database has answered; a failure is logged and left to the sweep.
pub async fn remove(state: &AppState, tenant: Uuid, key: &str) {
    let removed = async {
        let mut tx = state.db.tenant_tx(tenant, None).await?;
        sqlx::query("SELECT 1 FROM pending_objects WHERE object_key = $1 FOR UPDATE")
            .bind(key)
            .fetch_optional(tx.conn())
            .await?;
        let referenced: bool = sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM files WHERE object_key = $1)")
            .bind(key)
            .fetch_one(tx.conn())
            .await?;
        if referenced {
            tracing::info!("an upload that answered an error had committed its row; its object stays");
        } else {
            state.files.storage.delete_with_staging(key).await?;
        }
        settle(&mut tx, key).await?;
        tx.commit().await?;
        Ok::<_, anyhow::Error>(())
    };
    if let Err(e) = removed.await {
        tracing::warn!(error = format!("{e:#}"), "could not remove an unrecorded object; the sweep will");
    }
}

/// Records older than this are what a crash, a cancelled request or a failed
/// delete left behind; younger ones may be uploads in progress.
pub const GRACE: Duration = Duration::from_secs(3600);

/// How many records one tenant's sweep takes at a time.
const BATCH: i64 = 500;

/// Removes what in-flight records older than `grace` left behind, in every
/// tenant: the object and its staging parts, unless a `files` row references
/// it, then the record. Records another sweep is working on are skipped, so
/// several instances can sweep at once. Returns how many records were settled.
pub async fn sweep(state: &AppState, grace: Duration) -> anyhow::Result<usize> {
    let before = state.clock.now() - grace;
    let mut settled = 0;
    for tenant in state.db.tenant_ids().await? {
        let mut tx = state.db.tenant_tx(tenant, None).await?;
        let due: Vec<(String, bool)> = sqlx::query_as(
            "SELECT p.object_key, EXISTS (SELECT 1 FROM files f WHERE f.object_key = p.object_key) \
             FROM pending_objects p WHERE p.since < $1 ORDER BY p.since LIMIT $2 FOR UPDATE SKIP LOCKED",
        )
        .bind(before)
        .bind(BATCH)
        .fetch_all(tx.conn())
        .await?;
        for (key, referenced) in due {
            // A slow local upload that is still writing keeps its record.
            if !referenced && state.files.storage.written_since(&key, before) {
                continue;
            }
            if !referenced {
                state.files.storage.delete_with_staging(&key).await?;
            }
            settle(&mut tx, &key).await?;
            settled += 1;
        }
        tx.commit().await?;
    }
    Ok(settled)
}

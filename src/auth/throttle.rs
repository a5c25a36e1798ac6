//! Attempt counters kept in PostgreSQL, so that every instance sees the same
//! counts: one row per (kind, subject) holding the attempts of the current
//! fixed window. An attempt is counted by one atomic upsert (no read-then-write
//! for parallel attempts to slip through), and refused once the window holds
//! more than the threshold allows.
//!
//! Used for registration per client address (against account enumeration and
//! mass sign-up); the accounts work adds login lockout on the same table.

use time::OffsetDateTime;

use crate::{config::Threshold, db::TenantTx, http::AppState};

/// Counts an attempt of `kind` by `subject` at `now`. `Ok(None)` when it is
/// within `limit`; `Ok(Some(seconds))` when it is over, with the seconds until
/// the window ends.
pub async fn attempt(
    tx: &mut TenantTx,
    kind: &str,
    subject: &str,
    limit: Threshold,
    now: OffsetDateTime,
) -> Result<Option<u64>, sqlx::Error> {
    let (attempts, window_start): (i32, OffsetDateTime) = sqlx::query_as(
        "INSERT INTO throttles (tenant_id, kind, subject, window_start, attempts) VALUES ($1, $2, $3, $4, 1) \
         ON CONFLICT (tenant_id, kind, subject) DO UPDATE SET \
           attempts = CASE WHEN throttles.window_start <= $4 - make_interval(mins => $5) THEN 1 \
                           ELSE least(throttles.attempts, 1000000) + 1 END, \
           window_start = CASE WHEN throttles.window_start <= $4 - make_interval(mins => $5) THEN $4 \
                               ELSE throttles.window_start END \
         RETURNING attempts, window_start",
    )
    .bind(tx.tenant_id())
    .bind(kind)
    .bind(subject)
    .bind(now)
    .bind(limit.minutes)
    .fetch_one(tx.conn())
    .await?;
    if i64::from(attempts) <= limit.count {
        return Ok(None);
    }
    let ends = window_start + time::Duration::minutes(limit.minutes.into());
    Ok(Some((ends - now).whole_seconds().max(1) as u64))
}

/// Forgets windows that ended more than a day ago, in every tenant.
pub async fn forget_old(state: &AppState) -> Result<u64, sqlx::Error> {
    let before = state.clock.now() - time::Duration::days(1);
    let mut forgotten = 0;
    for tenant in state.db.tenant_ids().await? {
        let mut tx = state.db.tenant_tx(tenant, None).await?;
        let done = sqlx::query("DELETE FROM throttles WHERE window_start < $1").bind(before).execute(tx.conn()).await?;
        tx.commit().await?;
        forgotten += done.rows_affected();
    }
    Ok(forgotten)
}

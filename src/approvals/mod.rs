//! Dual control's requests, as people see and decide them (issue 15): the
//! list and detail of requests (`GET /api/approvals`), approving, denying and
//! cancelling them (`decide`), running an approved request with its
//! requester's rights (`execute`), and the per-tenant policies (`policies`).
//! Whether an operation is held at all is decided where it runs, by
//! `authz::dual::gate`.
//!
//! Who sees a request: its requester, the people who approved it, and
//! everyone eligible to approve it now; never someone cleared below the
//! document it is about. Reading needs only a session: eligibility is the
//! policy's decision, checked per request. Requests past their time are
//! closed (`approval.expire`) when read and by the periodic job.

pub mod decide;
pub mod execute;
pub mod handlers;
pub mod policies;

use serde::Deserialize;
use time::OffsetDateTime;
use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;

use crate::{
    approval_eligible, approval_select,
    audit::Source,
    authz::dual::{self, ApprovalView, Operation},
    db::TenantTx,
    http::{AppState, error::AppError},
};

/// Who may see request `a`: `$1` the reader, `$2` now (for concat!).
macro_rules! visible {
    () => {
        concat!(
            "(a.requester_id = $1 OR EXISTS (SELECT 1 FROM approval_votes v WHERE v.approval_id = a.id AND v.approver_id = $1) \
                OR ",
            approval_eligible!(),
            ") AND COALESCE(a.classification_rank, 0) <= (SELECT c.level FROM users u \
                JOIN clearance_levels c ON c.id = u.clearance_level_id WHERE u.id = $1) "
        )
    };
}

/// The filters of `GET /api/approvals`.
#[derive(Debug, Default, Deserialize, IntoParams, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct ListQuery {
    /// Only requests in this state.
    #[param(value_type = Option<dual::ApprovalStatus>)]
    pub status: Option<String>,
    /// Only requests for this operation.
    #[param(value_type = Option<Operation>)]
    pub operation: Option<String>,
    /// Only the reader's own requests.
    pub mine: Option<bool>,
    /// Only pending requests the reader may approve and has not.
    pub to_approve: Option<bool>,
    /// Requests per page (default 50).
    #[param(minimum = 1, maximum = 200)]
    pub limit: Option<i64>,
    /// The `nextCursor` of the previous page.
    #[param(pattern = "@cursor")]
    pub after: Option<String>,
}

const STATUSES: [&str; 7] = ["pending", "approved", "executed", "failed", "denied", "cancelled", "expired"];

/// One page of the requests `me` may see, newest first, and the next cursor.
pub async fn list(
    state: &AppState,
    tx: &mut TenantTx,
    me: Uuid,
    q: &ListQuery,
) -> Result<(Vec<ApprovalView>, Option<String>), AppError> {
    let now = state.clock.now();
    let limit = q.limit.unwrap_or(50);
    if !(1..=200).contains(&limit) {
        return Err(AppError::invalid("limit", "must be between 1 and 200"));
    }
    if let Some(status) = q.status.as_deref()
        && !STATUSES.contains(&status)
    {
        return Err(AppError::invalid("status", format!("must be one of {}", STATUSES.join(", "))));
    }
    if let Some(op) = q.operation.as_deref()
        && Operation::parse(op).is_none()
    {
        return Err(AppError::invalid("operation", "no such operation"));
    }
    let after = q.after.as_deref().map(crate::http::params::parse_cursor).transpose()?;
    expire_due(tx, &Source::default(), now).await?;
    let rows: Vec<ApprovalView> = sqlx::query_as(concat!(
        approval_select!(),
        "WHERE ",
        visible!(),
        "AND ($3::text IS NULL OR a.status = $3) AND ($4::text IS NULL OR a.operation = $4) \
           AND (NOT $5 OR a.requester_id = $1) \
           AND (NOT $6 OR (a.status = 'pending' AND a.requester_id <> $1 AND ",
        approval_eligible!(),
        " AND NOT EXISTS (SELECT 1 FROM approval_votes v WHERE v.approval_id = a.id AND v.approver_id = $1))) \
           AND ($7::timestamptz IS NULL OR (a.created_at, a.id) < ($7, $8)) \
         ORDER BY a.created_at DESC, a.id DESC LIMIT $9"
    ))
    .bind(me)
    .bind(now)
    .bind(q.status.as_deref())
    .bind(q.operation.as_deref())
    .bind(q.mine.unwrap_or(false))
    .bind(q.to_approve.unwrap_or(false))
    .bind(after.map(|(at, _)| at))
    .bind(after.map(|(_, id)| id))
    .bind(limit + 1)
    .fetch_all(tx.conn())
    .await?;
    let mut rows = rows;
    let next = if rows.len() as i64 > limit {
        rows.truncate(limit as usize);
        rows.last().map(|r| crate::http::params::cursor(r.created_at, r.id))
    } else {
        None
    };
    Ok((rows, next))
}

/// Request `id`, if `me` may see it (404 otherwise).
pub async fn get(state: &AppState, tx: &mut TenantTx, me: Uuid, id: Uuid) -> Result<ApprovalView, AppError> {
    let now = state.clock.now();
    expire_due(tx, &Source::default(), now).await?;
    visible(tx, me, id, now).await?.ok_or(AppError::NotFound)
}

async fn visible(
    tx: &mut TenantTx,
    me: Uuid,
    id: Uuid,
    now: OffsetDateTime,
) -> Result<Option<ApprovalView>, sqlx::Error> {
    sqlx::query_as(concat!(approval_select!(), "WHERE a.id = $3 AND ", visible!()))
        .bind(me)
        .bind(now)
        .bind(id)
        .fetch_optional(tx.conn())
        .await
}

/// How many requests wait for `me` to approve them (for the navigation).
pub async fn waiting_for(tx: &mut TenantTx, me: Uuid, now: OffsetDateTime) -> Result<i64, sqlx::Error> {
    sqlx::query_scalar(concat!(
        "SELECT count(*) FROM approvals a WHERE a.status = 'pending' AND a.expires_at > $2 AND a.requester_id <> $1 \
           AND NOT EXISTS (SELECT 1 FROM approval_votes v WHERE v.approval_id = a.id AND v.approver_id = $1) AND ",
        approval_eligible!()
    ))
    .bind(me)
    .bind(now)
    .fetch_one(tx.conn())
    .await
}

/// Closes the tenant's open requests past their time, each with its
/// `approval.expire` row; rows another transaction holds are left to it.
pub async fn expire_due(tx: &mut TenantTx, source: &Source, now: OffsetDateTime) -> Result<u64, sqlx::Error> {
    let due: Vec<Uuid> = sqlx::query_scalar(
        "SELECT id FROM approvals WHERE status IN ('pending', 'approved') AND expires_at <= $1 \
         ORDER BY expires_at FOR UPDATE SKIP LOCKED",
    )
    .bind(now)
    .fetch_all(tx.conn())
    .await?;
    for id in &due {
        if let Some(request) = dual::lock(tx, *id).await? {
            dual::expire(tx, source, &request, now).await?;
        }
    }
    Ok(due.len() as u64)
}

/// The periodic job: expires due requests in every tenant.
pub async fn sweep(state: &AppState) -> Result<u64, sqlx::Error> {
    let now = state.clock.now();
    let mut closed = 0;
    for tenant in state.db.tenant_ids().await? {
        let mut tx = state.db.tenant_tx(tenant, None).await?;
        closed += expire_due(&mut tx, &Source::default(), now).await?;
        tx.commit().await?;
    }
    Ok(closed)
}

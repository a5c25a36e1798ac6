//! Approving, denying and cancelling a request, each under the request's row
//! lock, so whatever arrives concurrently is taken one at a time and a
//! request runs at most once. Every refusal is recorded (the action with
//! `result: fail` and its reason) and committed with the error.
//!
//! An approver must not be the requester, must be eligible at the moment of
//! approval (see `authz::dual::approval_eligible`), and counts once however
//! many sessions they use (one vote per person, by primary key). With the
//! last required approval a state change runs at once (see `execute`); an
//! export becomes `approved`, for its requester to run once.

use serde::Deserialize;
use serde_json::json;
use utoipa::ToSchema;
use uuid::Uuid;

use super::execute;
use crate::{
    audit::{self, Action, Outcome, Source},
    authz::dual::{self, ApprovalView, Locked, Operation},
    db::TenantTx,
    http::{AppState, error::AppError},
};

/// An approval, with an optional comment (at most 1000 characters).
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Approve {
    #[serde(default)]
    #[schema(max_length = 1000, pattern = r"^[^\x00]*$")]
    pub comment: Option<String>,
}

/// A denial: why (1 to 1000 characters).
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Deny {
    #[schema(max_length = 1000, pattern = "@text")]
    pub reason: String,
}

fn clean_text(field: &'static str, text: &str, required: bool) -> Result<Option<String>, AppError> {
    let text = text.trim();
    if text.chars().count() > 1000 || text.chars().any(|c| c.is_control() && c != '\n') {
        return Err(AppError::invalid(field, "must be at most 1000 characters, without control characters"));
    }
    if text.is_empty() {
        return if required { Err(AppError::invalid(field, "say why")) } else { Ok(None) };
    }
    Ok(Some(text.to_string()))
}

/// Records `action` refused for `reason`, commits, and answers `error`.
async fn refuse(
    mut tx: TenantTx,
    source: &Source,
    request: &Locked,
    action: Action,
    reason: &'static str,
    error: AppError,
) -> Result<ApprovalView, AppError> {
    audit::record(&mut tx, source, request.entry(action, Outcome::Fail, json!({ "reason": reason }))).await?;
    tx.commit().await?;
    Err(error)
}

/// Request `id` locked; an open one past its time is expired first (the
/// caller refuses it as `expired`). Whoever acts need not be able to see it:
/// an approver who lost eligibility is refused (and recorded), not ignored.
async fn locked(state: &AppState, tx: &mut TenantTx, source: &Source, id: Uuid) -> Result<Locked, AppError> {
    let now = state.clock.now();
    let request = dual::lock(tx, id).await?.ok_or(AppError::NotFound)?;
    if request.is_open() && request.expires_at <= now {
        dual::expire(tx, source, &request, now).await?;
    }
    Ok(request)
}

/// Why `me` may not approve or deny `request` now, if they may not: it has
/// expired or is no longer pending, it is their own (`own`: the reason and
/// message), or they are not eligible.
async fn undecidable(
    tx: &mut TenantTx,
    request: &Locked,
    me: Uuid,
    now: time::OffsetDateTime,
    own: (&'static str, &'static str),
    decidable: &[&str],
) -> Result<Option<(&'static str, AppError)>, sqlx::Error> {
    Ok(if is_expired(request, now) {
        Some(("expired", AppError::Conflict("This request has expired".into())))
    } else if !decidable.contains(&request.status.as_str()) {
        Some(("not_pending", AppError::Conflict(format!("This request is {}, not pending", request.status))))
    } else if request.requester_id == me {
        Some((own.0, AppError::forbidden(own.1)))
    } else if !dual::eligible(tx, request.id, me, now).await? {
        Some(("not_eligible", AppError::forbidden("You are not eligible to decide this request")))
    } else if benefits(tx, request, me).await? {
        Some(("beneficiary", AppError::forbidden("You cannot decide a request that is about you or a role you hold")))
    } else {
        None
    })
}

/// Whether the request is about `me`: a change to my own account, or to a
/// role I hold. Such a person is not the independent second pair of eyes.
async fn benefits(tx: &mut TenantTx, request: &Locked, me: Uuid) -> Result<bool, sqlx::Error> {
    let target: Option<Uuid> = request.target_id.as_deref().and_then(|t| t.parse().ok());
    Ok(match (request.target_type.as_deref(), target) {
        (Some("user"), Some(user)) => user == me,
        (Some("role"), Some(role)) => {
            sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM user_roles WHERE user_id = $1 AND role_id = $2)")
                .bind(me)
                .bind(role)
                .fetch_one(tx.conn())
                .await?
        }
        _ => false,
    })
}

fn is_expired(request: &Locked, now: time::OffsetDateTime) -> bool {
    request.is_open() && request.expires_at <= now
}

/// `POST /api/approvals/{id}/approve`.
pub async fn approve(
    state: &AppState,
    source: &Source,
    mut tx: TenantTx,
    me: Uuid,
    id: Uuid,
    input: Approve,
) -> Result<ApprovalView, AppError> {
    let comment = clean_text("comment", input.comment.as_deref().unwrap_or(""), false)?;
    let now = state.clock.now();
    let request = locked(state, &mut tx, source, id).await?;
    let action = Action::ApprovalApprove;
    let own = ("self_approval", "You cannot approve your own request");
    if let Some((reason, error)) = undecidable(&mut tx, &request, me, now, own, &["pending"]).await? {
        return refuse(tx, source, &request, action, reason, error).await;
    }
    let voted = sqlx::query(
        "INSERT INTO approval_votes (tenant_id, approval_id, approver_id, comment, created_at) \
         VALUES ($1, $2, $3, $4, $5) ON CONFLICT DO NOTHING",
    )
    .bind(tx.tenant_id())
    .bind(id)
    .bind(me)
    .bind(&comment)
    .bind(now)
    .execute(tx.conn())
    .await?
    .rows_affected();
    if voted == 0 {
        let error = AppError::Conflict("You have already approved this request".into());
        return refuse(tx, source, &request, action, "already_approved", error).await;
    }
    let count = dual::standing_votes(&mut tx, id, now).await?;
    let entry = request.entry(
        action,
        Outcome::Success,
        json!({ "comment": comment, "approvals": count, "approvalsRequired": request.approvals_required }),
    );
    audit::record(&mut tx, source, entry).await?;
    if count >= i64::from(request.approvals_required) {
        sqlx::query("UPDATE approvals SET status = 'approved' WHERE id = $1").bind(id).execute(tx.conn()).await?;
        // An export returns data to its requester: they run it once themselves.
        if request.operation != Operation::AuditExport.as_str() {
            execute::run(state, source, &mut tx, &request, now).await?;
        }
    }
    let view = super::visible(&mut tx, me, id, now).await?.ok_or(AppError::NotFound)?;
    tx.commit().await?;
    Ok(view)
}

/// `POST /api/approvals/{id}/deny`: an eligible approver closes a pending request.
pub async fn deny(
    state: &AppState,
    source: &Source,
    mut tx: TenantTx,
    me: Uuid,
    id: Uuid,
    input: Deny,
) -> Result<ApprovalView, AppError> {
    let reason = clean_text("reason", &input.reason, true)?;
    let now = state.clock.now();
    let request = locked(state, &mut tx, source, id).await?;
    let action = Action::ApprovalDeny;
    let own = ("self_denial", "Cancel your own request instead of denying it");
    // An approved export waits for its requester to run it: until then an
    // eligible approver may still deny it.
    if let Some((reason, error)) = undecidable(&mut tx, &request, me, now, own, &["pending", "approved"]).await? {
        return refuse(tx, source, &request, action, reason, error).await;
    }
    close(&mut tx, &request, "denied", me, reason.as_deref(), now).await?;
    let entry = request.entry(action, Outcome::Success, json!({ "reason": reason }));
    audit::record(&mut tx, source, entry).await?;
    let view = super::visible(&mut tx, me, id, now).await?.ok_or(AppError::NotFound)?;
    tx.commit().await?;
    Ok(view)
}

/// `POST /api/approvals/{id}/cancel`: the requester withdraws an open request.
pub async fn cancel(
    state: &AppState,
    source: &Source,
    mut tx: TenantTx,
    me: Uuid,
    id: Uuid,
) -> Result<ApprovalView, AppError> {
    let now = state.clock.now();
    let request = locked(state, &mut tx, source, id).await?;
    let action = Action::ApprovalCancel;
    if request.requester_id != me {
        let error = AppError::forbidden("Only the requester may cancel a request");
        return refuse(tx, source, &request, action, "not_requester", error).await;
    }
    if is_expired(&request, now) || !request.is_open() {
        let status = if is_expired(&request, now) { "expired" } else { request.status.as_str() };
        let error = AppError::Conflict(format!("This request is {status}, not open"));
        return refuse(tx, source, &request, action, "not_open", error).await;
    }
    close(&mut tx, &request, "cancelled", me, None, now).await?;
    audit::record(&mut tx, source, request.entry(action, Outcome::Success, json!({}))).await?;
    let view = super::visible(&mut tx, me, id, now).await?.ok_or(AppError::NotFound)?;
    tx.commit().await?;
    Ok(view)
}

async fn close(
    tx: &mut TenantTx,
    request: &Locked,
    status: &str,
    by: Uuid,
    reason: Option<&str>,
    now: time::OffsetDateTime,
) -> Result<(), sqlx::Error> {
    sqlx::query("UPDATE approvals SET status = $2, closed_by = $3, reason = $4, closed_at = $5 WHERE id = $1")
        .bind(request.id)
        .bind(status)
        .bind(by)
        .bind(reason)
        .bind(now)
        .execute(tx.conn())
        .await
        .map(|_| ())
}

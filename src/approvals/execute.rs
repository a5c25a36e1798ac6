//! Running an approved request: the operation it names, called again through
//! the same capability code as its route, in the approving request's
//! transaction, with the *requester's* rights as they are now (a permit
//! carrying the approval's mark, so the gate lets exactly that request pass).
//! Everything is checked again against the current state; a refusal undoes
//! the attempt and the request becomes `failed` with the reason. Every audit
//! row the operation writes names the approval, its requester (the row's
//! actor) and its approvers.

use serde::de::DeserializeOwned;
use serde_json::{Value, json};
use time::OffsetDateTime;
use uuid::Uuid;

use crate::{
    audit::{self, Action, Outcome, Source, holds},
    authz::{
        Permission, Permit,
        dual::{self, Done, Locked, Mark},
        files::Refusal,
    },
    db::TenantTx,
    directory::{Attempt, Refused, factors, membership, roles, users},
    files::manage,
    http::{AppState, error::AppError},
};

/// Why a run did not happen (kept as the request's reason), or a failure of
/// the server itself (the whole request is rolled back: nothing changes).
enum Failed {
    Reason(String),
    Internal(AppError),
}

impl From<AppError> for Failed {
    fn from(e: AppError) -> Self {
        match e {
            AppError::Internal(_) | AppError::Unavailable => Failed::Internal(e),
            AppError::NotFound => Failed::Reason("not_found".into()),
            AppError::Forbidden(m) => Failed::Reason(format!("forbidden: {m}")),
            AppError::Conflict(m) => Failed::Reason(format!("conflict: {m}")),
            other => Failed::Reason(format!("invalid: {other}")),
        }
    }
}

impl From<sqlx::Error> for Failed {
    fn from(e: sqlx::Error) -> Self {
        Failed::Internal(e.into())
    }
}

impl From<Refused> for Failed {
    fn from(r: Refused) -> Self {
        match r {
            Refused::Denied(d) => Failed::Reason(d.reason.into()),
            Refused::LastAdmin { .. } => Failed::Reason("last_admin".into()),
            Refused::App(e) => e.into(),
        }
    }
}

/// Whether it ran (`false`: the operation would be held again).
fn ran<T>(outcome: Attempt<Done<T>>) -> Result<bool, Failed> {
    Ok(matches!(outcome?, Done::Now(_)))
}

fn gated<T>(outcome: holds::Gated<T>) -> Result<bool, Failed> {
    match outcome? {
        Ok(done) => Ok(matches!(done, Done::Now(_))),
        Err(denial) => Err(Failed::Reason(denial.reason.into())),
    }
}

/// The permission the request's route requires.
fn permission_of(route: &str) -> Option<Permission> {
    Some(match route {
        membership::ROUTE_ASSIGN | roles::ROUTE_UPDATE | super::policies::ROUTE_PUT => Permission::AdminManageRoles,
        users::ROUTE_UPDATE | factors::ROUTE_RESET => Permission::UsersEdit,
        users::ROUTE_DELETE => Permission::UsersDelete,
        manage::ROUTE_CLASSIFY => Permission::FileClassify,
        holds::ROUTE_PURGE | holds::ROUTE_LEGAL_HOLD => Permission::AdminManageRoles,
        _ => return None,
    })
}

fn body<T: DeserializeOwned>(request: &Value) -> Result<T, Failed> {
    serde_json::from_value(request["body"].clone()).map_err(|_| Failed::Reason("request_unreadable".into()))
}

fn param(request: &Value, name: &str) -> Result<String, Failed> {
    request["params"][name].as_str().map(str::to_string).ok_or_else(|| Failed::Reason("request_unreadable".into()))
}

fn id_param(request: &Value) -> Result<Uuid, Failed> {
    param(request, "id")?.parse().map_err(|_| Failed::Reason("request_unreadable".into()))
}

async fn dispatch(
    state: &AppState,
    permit: &Permit,
    source: &Source,
    tx: &mut TenantTx,
    route: &str,
    request: &Value,
) -> Result<bool, Failed> {
    match route {
        membership::ROUTE_ASSIGN => {
            let (id, input) = (id_param(request)?, body(request)?);
            ran(membership::assign_attempt(state, permit, source, tx, id, input).await)
        }
        users::ROUTE_UPDATE => {
            let (id, input) = (id_param(request)?, body(request)?);
            ran(users::update_attempt(state, permit, source, tx, id, input).await)
        }
        users::ROUTE_DELETE => ran(users::delete_attempt(state, permit, source, tx, id_param(request)?).await),
        factors::ROUTE_RESET => {
            let (id, input) = (id_param(request)?, body(request)?);
            ran(factors::reset_attempt(state, permit, source, tx, id, input).await)
        }
        roles::ROUTE_UPDATE => {
            let (id, input) = (id_param(request)?, body(request)?);
            ran(roles::update_attempt(state, permit, source, tx, id, input).await)
        }
        super::policies::ROUTE_PUT => {
            let (operation, input) = (param(request, "operation")?, body(request)?);
            ran(super::policies::put_attempt(state, permit, source, tx, &operation, input).await)
        }
        manage::ROUTE_CLASSIFY => {
            let (id, input) = (id_param(request)?, body(request)?);
            match manage::classify_in(state, permit, source, tx, id, input).await? {
                Ok(done) => Ok(matches!(done, Done::Now(_))),
                Err(Refusal::Rbac(d)) => Err(Failed::Reason(d.reason.into())),
                Err(Refusal::Mac(_)) => Err(Failed::Reason("mac_denied".into())),
            }
        }
        holds::ROUTE_PURGE => {
            gated(holds::purge_in(state, permit, source, tx, state.clock.now(), Some(body(request)?)).await)
        }
        holds::ROUTE_LEGAL_HOLD => gated(holds::legal_hold_in(state, permit, source, tx, body(request)?).await),
        _ => Err(Failed::Reason("unknown_operation".into())),
    }
}

/// Runs approved `request` in `tx` and records how it went: `executed`, or
/// `failed` with the reason. An error is the server's own (nothing commits).
pub async fn run(
    state: &AppState,
    source: &Source,
    tx: &mut TenantTx,
    request: &Locked,
    now: OffsetDateTime,
) -> Result<(), AppError> {
    let facts = dual::facts(tx, request).await?;
    let outcome = match attempt(state, source, tx, request, facts.clone(), now).await {
        Ok(()) => Ok(()),
        Err(Failed::Reason(reason)) => Err(reason),
        Err(Failed::Internal(e)) => return Err(e),
    };
    let (status, result, reason) = match &outcome {
        Ok(()) => ("executed", Outcome::Success, None),
        Err(reason) => ("failed", Outcome::Fail, Some(reason.clone())),
    };
    sqlx::query("UPDATE approvals SET status = $2, reason = $3, closed_at = $4 WHERE id = $1")
        .bind(request.id)
        .bind(status)
        .bind(&reason)
        .bind(now)
        .execute(tx.conn())
        .await?;
    let mut details = json!({ "approvedBy": facts["approvedBy"] });
    if let Some(reason) = reason {
        details["reason"] = json!(reason);
    }
    audit::record(tx, source, request.entry(Action::ApprovalExecute, result, details)).await?;
    Ok(())
}

async fn attempt(
    state: &AppState,
    source: &Source,
    tx: &mut TenantTx,
    request: &Locked,
    facts: serde_json::Map<String, Value>,
    now: OffsetDateTime,
) -> Result<(), Failed> {
    let route = request.request["route"].as_str().unwrap_or_default().to_string();
    let permission = permission_of(&route).ok_or_else(|| Failed::Reason("unknown_operation".into()))?;
    let mark = Mark { id: request.id, request_sha256: request.request_sha256.clone() };
    let permit = match Permit::for_requester(tx, request.requester_id, permission, &route, mark, now).await? {
        None => return Err(Failed::Reason("requester_inactive".into())),
        Some(Err(denial)) => return Err(Failed::Reason(denial.reason.into())),
        Some(Ok(permit)) => permit,
    };
    tx.savepoint().await?;
    let previous = tx.under_approval(request.requester_id, facts);
    let result = dispatch(state, &permit, source, tx, &route, &request.request).await;
    tx.end_approval(previous);
    let failure = match result {
        Ok(true) => return Ok(()),
        Ok(false) => Failed::Reason("request_changed".into()),
        Err(failure) => failure,
    };
    if let Failed::Reason(_) = failure {
        tx.undo_attempt().await?;
    }
    Err(failure)
}

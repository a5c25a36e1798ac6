//! The shapes of successful API answers: `{key: value}` with 200 or 201, or 204.

use axum::{
    Json,
    http::StatusCode,
    response::{IntoResponse, Response},
};
use serde_json::json;

use super::error::AppError;
use crate::{authz::dual::Done, db::TenantTx};

/// What an API handler returns.
pub type Answer = Result<Response, AppError>;

pub fn created(key: &str, value: impl serde::Serialize) -> Answer {
    Ok((StatusCode::CREATED, Json(json!({ key: value }))).into_response())
}

pub fn ok(key: &str, value: impl serde::Serialize) -> Answer {
    Ok(Json(json!({ key: value })).into_response())
}

/// Commits the request's transaction (a read's), then answers `{key: value}`.
pub async fn committed(tx: TenantTx, key: &str, value: impl serde::Serialize) -> Answer {
    tx.commit().await?;
    ok(key, value)
}

pub fn no_content() -> Answer {
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// `202 {"approval": …}`: the operation waits for a second person.
pub fn held(approval: impl serde::Serialize) -> Answer {
    Ok((StatusCode::ACCEPTED, Json(json!({ "approval": approval }))).into_response())
}

/// The answer to an operation under dual control: `now`'s when it ran, 202
/// with the approval when it waits.
pub fn done<T>(done: Done<T>, now: impl FnOnce(T) -> Answer) -> Answer {
    match done {
        Done::Now(v) => now(v),
        Done::Held(approval) => held(approval),
    }
}

//! The shapes of successful API answers: `{key: value}` with 200 or 201, or 204.

use axum::{
    Json,
    http::StatusCode,
    response::{IntoResponse, Response},
};
use serde_json::json;

use super::error::AppError;

/// What an API handler returns.
pub type Answer = Result<Response, AppError>;

pub fn created(key: &str, value: impl serde::Serialize) -> Answer {
    Ok((StatusCode::CREATED, Json(json!({ key: value }))).into_response())
}

pub fn ok(key: &str, value: impl serde::Serialize) -> Answer {
    Ok(Json(json!({ key: value })).into_response())
}

pub fn no_content() -> Answer {
    Ok(StatusCode::NO_CONTENT.into_response())
}

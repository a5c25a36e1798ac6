//! The one error type of the HTTP layer.
//!
//! Capability code returns [`AppError`] (or something that converts into it); every
//! variant maps to a status and a JSON body `{"error": "..."}`. Messages are written
//! for the client: they never carry SQL, internal type names or secrets. An
//! [`AppError::Internal`] is logged (inside the request's span, which carries the
//! request id) and answered with a generic 500.

use std::borrow::Cow;

use axum::{
    Json,
    http::{HeaderValue, StatusCode, header},
    response::{IntoResponse, Response},
};
use serde_json::json;

#[derive(Debug, thiserror::Error)]
pub enum AppError {
    #[error("{0}")]
    BadRequest(String),
    #[error("Authentication required")]
    Unauthorized,
    #[error("Invalid username or password")]
    InvalidCredentials,
    #[error("{0}")]
    Forbidden(String),
    #[error("Not found")]
    NotFound,
    #[error("Method not allowed")]
    MethodNotAllowed,
    #[error("{0}")]
    Conflict(String),
    #[error("Request body too large")]
    PayloadTooLarge,
    #[error("Expected a JSON body (Content-Type: application/json)")]
    UnsupportedMediaType,
    /// A field failed validation; the message names the field.
    #[error("{field}: {message}")]
    Invalid { field: Cow<'static, str>, message: String },
    /// Too many attempts from one address or for one account: 429, with the
    /// seconds to wait in `Retry-After`.
    #[error("Too many attempts; try again later")]
    TooManyRequests { retry_after_secs: u64 },
    /// Over the request rate limit (`FORTIFILE_RATE_LIMIT`): 429 with
    /// `Retry-After`.
    #[error("Too many requests: the limit is {requests} per {seconds} seconds; retry after {retry_after_secs} s")]
    RateLimited { retry_after_secs: u64, requests: u32, seconds: u32 },
    /// The user's roles require a second factor they have not enrolled: the
    /// session reaches only `/me/mfa` and logout until they do (403).
    #[error("Your role requires a second factor: enrol one at /me/mfa")]
    MfaEnrollmentRequired,
    /// A sensitive action without a recent second-factor verification (401):
    /// `POST /auth/step-up`, then try again.
    #[error("This action needs a recent second-factor verification: POST /auth/step-up")]
    StepUpRequired,
    /// A second factor that did not match (or was already used).
    #[error("Wrong or already used code")]
    WrongSecondFactor,
    #[error("Service unavailable")]
    Unavailable,
    /// The document store is full: nothing of the request was kept (507).
    #[error("The document store is full: nothing was kept; try again later")]
    InsufficientStorage,
    /// The document store does not answer: nothing of the request was kept (503).
    #[error("The document store does not answer: nothing was kept; try again later")]
    StorageUnavailable,
    /// `/readyz` of an instance that is shutting down (SIGTERM): it still
    /// serves what it is sent while the balancer takes it out.
    #[error("Shutting down: send new requests to another instance")]
    Draining,
    /// A read that would run past its statement timeout (a dashboard range too
    /// large for the server to answer in time): 503, never a connection held.
    #[error("{0}")]
    TimedOut(&'static str),
    /// A known server-side failure whose message may be shown (a stored file
    /// that fails its integrity check): 500, logged like an internal error.
    #[error("{0}")]
    ServerFailure(&'static str),
    #[error("internal error")]
    Internal(#[from] anyhow::Error),
}

impl AppError {
    /// A store error: full or unavailable when it says so, else internal.
    pub fn from_storage(e: anyhow::Error) -> Self {
        match crate::storage::trouble(&e) {
            Some(crate::storage::Trouble::Full) => {
                tracing::error!(error = format!("{e:#}"), "the document store is full");
                AppError::InsufficientStorage
            }
            Some(crate::storage::Trouble::Unavailable) => {
                tracing::error!(error = format!("{e:#}"), "the document store does not answer");
                AppError::StorageUnavailable
            }
            None => AppError::Internal(e),
        }
    }

    pub fn invalid(field: impl Into<Cow<'static, str>>, message: impl Into<String>) -> Self {
        AppError::Invalid { field: field.into(), message: message.into() }
    }

    pub fn forbidden(message: impl Into<String>) -> Self {
        AppError::Forbidden(message.into())
    }

    pub fn status(&self) -> StatusCode {
        match self {
            AppError::BadRequest(_) => StatusCode::BAD_REQUEST,
            AppError::Unauthorized
            | AppError::InvalidCredentials
            | AppError::StepUpRequired
            | AppError::WrongSecondFactor => StatusCode::UNAUTHORIZED,
            AppError::Forbidden(_) | AppError::MfaEnrollmentRequired => StatusCode::FORBIDDEN,
            AppError::NotFound => StatusCode::NOT_FOUND,
            AppError::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            AppError::Conflict(_) => StatusCode::CONFLICT,
            AppError::PayloadTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            AppError::UnsupportedMediaType => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            AppError::Invalid { .. } => StatusCode::UNPROCESSABLE_ENTITY,
            AppError::TooManyRequests { .. } | AppError::RateLimited { .. } => StatusCode::TOO_MANY_REQUESTS,
            AppError::Unavailable | AppError::Draining | AppError::TimedOut(_) | AppError::StorageUnavailable => {
                StatusCode::SERVICE_UNAVAILABLE
            }
            AppError::InsufficientStorage => StatusCode::INSUFFICIENT_STORAGE,
            AppError::Internal(_) | AppError::ServerFailure(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }
}

/// Database errors are internal unless a caller maps a known constraint first
/// (see [`crate::db::unique_violation`]); a statement cancelled by its
/// `statement_timeout` is a 503 that says why.
impl From<sqlx::Error> for AppError {
    fn from(e: sqlx::Error) -> Self {
        if crate::db::timed_out(&e) {
            tracing::warn!("a statement ran past its statement_timeout and was cancelled");
            return AppError::TimedOut("The query took too long; narrow the date range or the filters");
        }
        if crate::db::unreachable(&e) {
            tracing::error!(error = %e, "the database is unavailable");
            return AppError::Unavailable;
        }
        AppError::Internal(e.into())
    }
}

impl IntoResponse for AppError {
    fn into_response(self) -> Response {
        let status = self.status();
        let body = match &self {
            AppError::Internal(err) => {
                // `{:#}` prints the cause chain; the span adds the request id.
                tracing::error!(error = format!("{err:#}"), "request failed");
                json!({ "error": "Internal server error" })
            }
            AppError::ServerFailure(message) => {
                tracing::error!(error = message, "request failed");
                json!({ "error": message })
            }
            AppError::Invalid { field, .. } => json!({ "error": self.to_string(), "field": field }),
            AppError::MfaEnrollmentRequired => json!({ "error": self.to_string(), "mfaEnrollmentRequired": true }),
            AppError::StepUpRequired => json!({ "error": self.to_string(), "stepUp": true }),
            _ => json!({ "error": self.to_string() }),
        };
        let message = body["error"].as_str().unwrap_or_default().to_string();
        let mut response = (status, Json(body)).into_response();
        if let AppError::TooManyRequests { retry_after_secs } | AppError::RateLimited { retry_after_secs, .. } = &self {
            response.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(*retry_after_secs));
        }
        response.extensions_mut().insert(PublicMessage(message));
        response
    }
}

/// The client-safe message of an error response, kept on the response so that
/// page routes can show it in an HTML page instead of the JSON body.
#[derive(Debug, Clone)]
pub struct PublicMessage(pub String);

pub type AppResult<T> = Result<T, AppError>;

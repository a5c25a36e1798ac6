//! A JSON body extractor whose rejections are [`AppError`]s, so malformed input
//! answers with the same `{"error": ...}` shape as everything else: 400 for
//! JSON that does not parse, 415 without a JSON content type, 413 over the body
//! limit, and 422 for text holding NUL or a value of the wrong form (see
//! [`super::input`]).

use axum::{
    extract::{FromRequest, Request},
    http::header,
    response::{IntoResponse, Response},
};
use serde::{Serialize, de::DeserializeOwned};
use serde_json::Value;

use super::{error::AppError, input};

pub struct ApiJson<T>(pub T);

impl<S, T> FromRequest<S> for ApiJson<T>
where
    S: Send + Sync,
    T: DeserializeOwned,
{
    type Rejection = AppError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        if !is_json(req.headers()) {
            return Err(AppError::UnsupportedMediaType);
        }
        let bytes = input::body(req, state).await?;
        parse(&bytes).map(ApiJson)
    }
}

/// `application/json` or any `+json` type.
fn is_json(headers: &axum::http::HeaderMap) -> bool {
    let Some(ct) = headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()) else { return false };
    let essence = ct.split(';').next().unwrap_or("").trim().to_ascii_lowercase();
    essence == "application/json" || (essence.starts_with("application/") && essence.ends_with("+json"))
}

/// Parses a JSON body into `T`: NUL first (it can only arrive escaped), then
/// the shape, each failure explained with the field it concerns.
pub fn parse<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, AppError> {
    if input::json_may_hold_nul(bytes) {
        let value: Value = serde_json::from_slice(bytes).map_err(|_| malformed())?;
        if let Some(field) = input::nul_in_json(&value) {
            return Err(AppError::invalid(field, input::NUL_MESSAGE));
        }
    }
    let mut deserializer = serde_json::Deserializer::from_slice(bytes);
    let value = serde_path_to_error::deserialize(&mut deserializer).map_err(|e| {
        if e.inner().is_syntax() || e.inner().is_eof() { malformed() } else { input::explain(e, "body") }
    })?;
    deserializer.end().map_err(|_| malformed())?;
    Ok(value)
}

fn malformed() -> AppError {
    AppError::BadRequest("Malformed JSON body".into())
}

impl<T: Serialize> IntoResponse for ApiJson<T> {
    fn into_response(self) -> Response {
        axum::Json(self.0).into_response()
    }
}

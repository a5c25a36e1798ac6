//! A JSON body extractor whose rejections are [`AppError`]s, so malformed input
//! answers with the same `{"error": ...}` shape as everything else.

use axum::{
    extract::{FromRequest, Request, rejection::JsonRejection},
    response::{IntoResponse, Response},
};
use serde::{Serialize, de::DeserializeOwned};

use super::error::AppError;

pub struct ApiJson<T>(pub T);

impl<S, T> FromRequest<S> for ApiJson<T>
where
    S: Send + Sync,
    T: DeserializeOwned,
{
    type Rejection = AppError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        match axum::Json::<T>::from_request(req, state).await {
            Ok(axum::Json(v)) => Ok(ApiJson(v)),
            Err(rejection) => Err(map_rejection(rejection)),
        }
    }
}

fn map_rejection(rejection: JsonRejection) -> AppError {
    match rejection {
        JsonRejection::JsonSyntaxError(_) => AppError::BadRequest("Malformed JSON body".into()),
        JsonRejection::MissingJsonContentType(_) => AppError::UnsupportedMediaType,
        JsonRejection::JsonDataError(e) => {
            // serde's message names the field and the expected type; it holds no
            // internal type names of ours (bodies are plain structs of std types).
            AppError::Invalid { field: "body", message: describe_data_error(&e.body_text()) }
        }
        JsonRejection::BytesRejection(e) if e.status() == axum::http::StatusCode::PAYLOAD_TOO_LARGE => {
            AppError::PayloadTooLarge
        }
        _ => AppError::BadRequest("Unreadable request body".into()),
    }
}

/// serde's message names the field and the expected JSON type; where it would name
/// one of our Rust types ("expected struct LoginBody") that part is replaced.
fn describe_data_error(text: &str) -> String {
    let text = text.strip_prefix("Failed to deserialize the JSON body into the target type: ").unwrap_or(text);
    match text.find("expected struct ") {
        Some(at) => {
            let rest = &text[at + "expected struct ".len()..];
            let tail = rest.find(' ').map(|i| &rest[i..]).unwrap_or("");
            format!("{}expected a JSON object{}", &text[..at], tail)
        }
        None => text.to_string(),
    }
}

impl<T: Serialize> IntoResponse for ApiJson<T> {
    fn into_response(self) -> Response {
        axum::Json(self.0).into_response()
    }
}

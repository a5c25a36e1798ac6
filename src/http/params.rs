//! Path, query and form extractors whose rejections are [`AppError`]s.
//!
//! A path parameter that holds NUL answers 422 (see [`super::input`]); one that
//! does not parse otherwise (say, an id that is not a UUID) names no object, so
//! it answers 404 like an unknown id. A bad query string or form answers 422
//! naming the field.

use axum::{
    extract::{FromRequest, FromRequestParts, Path, RawPathParams, Request},
    http::{header, request::Parts},
};
use serde::de::DeserializeOwned;
use time::OffsetDateTime;
use uuid::Uuid;

use super::{error::AppError, input};

pub struct ApiPath<T>(pub T);

impl<S, T> FromRequestParts<S> for ApiPath<T>
where
    S: Send + Sync,
    T: DeserializeOwned + Send,
{
    type Rejection = AppError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        if let Ok(raw) = RawPathParams::from_request_parts(parts, state).await {
            for (name, value) in &raw {
                input::refuse_nul(name, value)?;
            }
        }
        match Path::<T>::from_request_parts(parts, state).await {
            Ok(Path(v)) => Ok(ApiPath(v)),
            Err(_) => Err(AppError::NotFound),
        }
    }
}

pub struct ApiQuery<T>(pub T);

impl<S, T> FromRequestParts<S> for ApiQuery<T>
where
    S: Send + Sync,
    T: DeserializeOwned,
{
    type Rejection = AppError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        let query = parts.uri.query().unwrap_or("");
        input::from_pairs(query.as_bytes(), "query").map(ApiQuery)
    }
}

/// A URL-encoded form body (`application/x-www-form-urlencoded`), as the
/// pages' forms post it.
pub struct ApiForm<T>(pub T);

impl<S, T> FromRequest<S> for ApiForm<T>
where
    S: Send + Sync,
    T: DeserializeOwned,
{
    type Rejection = AppError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let is_form = req
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|ct| ct.starts_with("application/x-www-form-urlencoded"));
        if !is_form {
            return Err(AppError::BadRequest("Expected a form (application/x-www-form-urlencoded)".into()));
        }
        let bytes = input::body(req, state).await?;
        input::from_pairs(&bytes, "form").map(ApiForm)
    }
}

/// A keyset cursor for lists ordered by `(created_at, id)` descending: the
/// position after the last row of a page, as `<unix microseconds>.<id>`.
pub fn cursor(at: OffsetDateTime, id: Uuid) -> String {
    format!("{}.{id}", at.unix_timestamp_nanos() / 1000)
}

/// Finishes a keyset page: `rows` were fetched with `LIMIT limit + 1`; an extra
/// row means there is a next page, whose cursor is the last kept row's position.
pub fn finish_page<T>(
    mut rows: Vec<T>,
    limit: i64,
    position: impl Fn(&T) -> (OffsetDateTime, Uuid),
) -> (Vec<T>, Option<String>) {
    if rows.len() as i64 > limit {
        rows.truncate(limit as usize);
        let next = rows.last().map(|row| {
            let (at, id) = position(row);
            cursor(at, id)
        });
        (rows, next)
    } else {
        (rows, None)
    }
}

/// Parses a [`cursor`] given back as `after`; anything else is a 422.
pub fn parse_cursor(text: &str) -> Result<(OffsetDateTime, Uuid), AppError> {
    let bad = || AppError::invalid("after", "not a cursor from a previous page");
    let (micros, id) = text.split_once('.').ok_or_else(bad)?;
    let micros: i128 = micros.parse().map_err(|_| bad())?;
    let nanos = micros.checked_mul(1000).ok_or_else(bad)?;
    let at = OffsetDateTime::from_unix_timestamp_nanos(nanos).map_err(|_| bad())?;
    // Only instants PostgreSQL can compare against (it stores no year before 4713 BC).
    if at.year() < 1 {
        return Err(bad());
    }
    Ok((at, Uuid::parse_str(id).map_err(|_| bad())?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursors_round_trip_and_garbage_is_refused() {
        let id = Uuid::new_v4();
        let at = OffsetDateTime::from_unix_timestamp_nanos(1_700_000_000_123_456_000).unwrap();
        assert_eq!(parse_cursor(&cursor(at, id)).unwrap(), (at, id));
        assert!(parse_cursor("yesterday").is_err());
        assert!(parse_cursor("12.not-a-uuid").is_err());
        // Out of range: no overflow, no instant PostgreSQL would refuse.
        let uuid = Uuid::nil();
        assert!(parse_cursor(&format!("{}.{uuid}", "9".repeat(38))).is_err());
        assert!(parse_cursor(&format!("-300000000000000000.{uuid}")).is_err());
    }
}

//! Path and query extractors whose rejections are [`AppError`]s.
//!
//! A path parameter that does not parse (say, an id that is not a UUID) names no
//! object, so it answers 404 like an unknown id. A bad query string answers 422.

use axum::{
    extract::{FromRequestParts, Path, Query},
    http::request::Parts,
};
use serde::de::DeserializeOwned;
use time::OffsetDateTime;
use uuid::Uuid;

use super::error::AppError;

pub struct ApiPath<T>(pub T);

impl<S, T> FromRequestParts<S> for ApiPath<T>
where
    S: Send + Sync,
    T: DeserializeOwned + Send,
{
    type Rejection = AppError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
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

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        match Query::<T>::from_request_parts(parts, state).await {
            Ok(Query(v)) => Ok(ApiQuery(v)),
            Err(e) => Err(AppError::invalid("query", e.body_text())),
        }
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
    let at = OffsetDateTime::from_unix_timestamp_nanos(micros * 1000).map_err(|_| bad())?;
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
    }
}

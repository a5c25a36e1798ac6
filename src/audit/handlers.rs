//! HTTP handlers for the audit log's JSON API (the security dashboard's data).

use axum::{Json, extract::State, response::IntoResponse};
use serde_json::json;

use super::{
    export::{self, Format},
    highlights, query,
};
use crate::{
    authz::Permit,
    http::{AppState, client::ClientSource, params::ApiQuery, reply::Answer},
};

pub async fn list(State(s): State<AppState>, permit: Permit, ApiQuery(filter): ApiQuery<query::LogFilter>) -> Answer {
    let (logs, next) = query::list(&s, &permit, &filter).await?;
    Ok(Json(json!({ "logs": logs, "nextCursor": next })).into_response())
}

pub async fn highlights(
    State(s): State<AppState>,
    permit: Permit,
    ApiQuery(range): ApiQuery<highlights::Range>,
) -> Answer {
    Ok(Json(json!({ "highlights": highlights::find(&s, &permit, &range).await? })).into_response())
}

pub async fn export_csv(
    State(s): State<AppState>,
    ClientSource(src): ClientSource,
    permit: Permit,
    ApiQuery(filter): ApiQuery<query::LogFilter>,
) -> Answer {
    export::export(&s, &permit, &src, Format::Csv, filter).await
}

pub async fn export_jsonl(
    State(s): State<AppState>,
    ClientSource(src): ClientSource,
    permit: Permit,
    ApiQuery(filter): ApiQuery<query::LogFilter>,
) -> Answer {
    export::export(&s, &permit, &src, Format::Jsonl, filter).await
}

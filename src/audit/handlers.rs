//! HTTP handlers for the audit log's JSON API (the security dashboard's data).

use axum::{Json, extract::State, response::IntoResponse};
use serde_json::json;

use super::{
    export::{self, Format},
    highlights, query,
};
use crate::{
    authz::Permit,
    http::{
        AppState,
        client::ClientSource,
        guard::Tx,
        params::ApiQuery,
        reply::{Answer, committed},
    },
};

pub async fn list(
    State(s): State<AppState>,
    permit: Permit,
    Tx(mut tx): Tx,
    ApiQuery(filter): ApiQuery<query::LogFilter>,
) -> Answer {
    let (logs, next) = query::list(&s, &permit, &mut tx, &filter).await?;
    tx.commit().await?;
    Ok(Json(json!({ "logs": logs, "nextCursor": next })).into_response())
}

pub async fn highlights(
    State(s): State<AppState>,
    Tx(mut tx): Tx,
    ApiQuery(range): ApiQuery<highlights::Range>,
) -> Answer {
    let found = highlights::find(&s, &mut tx, &range).await?;
    committed(tx, "highlights", found).await
}

pub async fn export_csv(
    State(s): State<AppState>,
    ClientSource(src): ClientSource,
    permit: Permit,
    Tx(tx): Tx,
    ApiQuery(filter): ApiQuery<query::LogFilter>,
) -> Answer {
    export::export(&s, &permit, &src, tx, Format::Csv, filter).await
}

pub async fn export_jsonl(
    State(s): State<AppState>,
    ClientSource(src): ClientSource,
    permit: Permit,
    Tx(tx): Tx,
    ApiQuery(filter): ApiQuery<query::LogFilter>,
) -> Answer {
    export::export(&s, &permit, &src, tx, Format::Jsonl, filter).await
}

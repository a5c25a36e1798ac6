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
        apidoc::Op,
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

/// The export's query: the list's filters, where `limit` and `after` are
/// accepted (as a whole number and text) and ignored, since an export holds
/// every matching row.
fn export_query(op: Op) -> Op {
    let mut op = op.query::<query::LogFilter>();
    for parameter in &mut op.params {
        let constraints: &[&str] = match parameter["name"].as_str() {
            Some("limit") => &["minimum", "maximum"],
            Some("after") => &["pattern"],
            _ => continue,
        };
        parameter["description"] = json!("Accepted and ignored: the export holds every matching row.");
        if let Some(schema) = parameter["schema"].as_object_mut() {
            for constraint in constraints {
                schema.remove(*constraint);
            }
        }
        if parameter["name"] == "after" {
            parameter["schema"]["pattern"] = json!(r"^[^\x00]*$");
        }
    }
    op
}

/// This module's operations, for the OpenAPI document.
pub fn api() -> Vec<Op> {
    const EXPORT: &str = "Every entry matching the filters, newest first, streamed; the export is recorded \
                          (`audit.export`, with its format and filters) before the first byte. Entries about \
                          objects classified above the caller's clearance have their details withheld.";
    vec![
        Op::get("/api/audit-logs", "List audit log entries")
            .describe(
                "A page of the organisation's audit log, newest first, filtered. Entries about objects classified \
                 above the caller's clearance have their details withheld (`redacted`).",
            )
            .query::<query::LogFilter>()
            .without_param("approval")
            .page::<query::LogView>("logs")
            .error(
                422,
                "`limit` is not between 1 and 1000, `result` is not `success` or `fail`, `ip` is not an address, \
                 `after` is not a cursor from a previous page, or `approval` (exports only) is given",
            ),
        Op::get("/api/audit-logs/highlights", "Suspicious activity")
            .describe(
                "Subjects with at least N events of a kind within W minutes in the range (failed logins, password \
                 spraying, MAC and RBAC denials, bulk downloads, failed second factors), each with its evidence: \
                 the count, the window, and the filter that selects those entries.",
            )
            .query::<highlights::Range>()
            .ok::<Vec<highlights::Highlight>>("highlights")
            .error(422, "`from` is not before `to`"),
        export_query(Op::get("/api/audit-logs/export.csv", "Export the audit log as CSV").held().describe(EXPORT))
            .content(
                "text/csv",
                "CSV with a header row (`time, user, user_id, action, target_type, target_id, ip, user_agent, \
                 result, details, id`); cells a spreadsheet would take for a formula are prefixed with `'`",
            )
            .error(422, "`result` is not `success` or `fail`, or `ip` is not an address"),
        export_query(
            Op::get("/api/audit-logs/export.jsonl", "Export the audit log as JSON Lines").held().describe(EXPORT),
        )
        .content("application/jsonl", "One entry (as in `GET /api/audit-logs`) per line")
        .error(422, "`result` is not `success` or `fail`, or `ip` is not an address"),
    ]
}

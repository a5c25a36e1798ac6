//! Exporting the filtered audit log as CSV or JSON Lines, streamed page by page
//! (keyset pages of [`PAGE`] rows), so an export of millions of rows holds one
//! page in memory. The request's transaction reads the first page and records
//! the export (`audit.export`, with its format and filters) before the first
//! byte; each later page is read in a short transaction of its own, so a slow
//! reader never holds a transaction open for the whole download.
//!
//! CSV cells that a spreadsheet would take for a formula (starting with `=`,
//! `+`, `-`, `@`, tab or carriage return) are prefixed with `'` (ASVS 1.2.10);
//! the `csv` crate quotes but does not neutralise.

use axum::{
    body::{Body, Bytes},
    http::{HeaderValue, header},
    response::{IntoResponse, Response},
};
use futures::StreamExt;
use serde_json::json;

use super::{
    Action, Entry, Outcome, Source,
    query::{self, LogFilter, LogView},
};
use crate::{
    authz::{
        Permit,
        dual::{self, Gate, Hold, Operation},
    },
    db::TenantTx,
    http::{AppState, error::AppError, reply::held},
};

const PAGE: i64 = 1000;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Csv,
    Jsonl,
}

const COLUMNS: [&str; 11] =
    ["time", "user", "user_id", "action", "target_type", "target_id", "ip", "user_agent", "result", "details", "id"];

/// Makes a cell safe to open in a spreadsheet.
pub fn neutralise(cell: &str) -> std::borrow::Cow<'_, str> {
    if cell.starts_with(['=', '+', '-', '@', '\t', '\r']) { format!("'{cell}").into() } else { cell.into() }
}

fn csv_rows(rows: &[LogView], header: bool) -> anyhow::Result<Vec<u8>> {
    let mut out = csv::Writer::from_writer(Vec::new());
    if header {
        out.write_record(COLUMNS)?;
    }
    for r in rows {
        let time = r.created_at.format(&time::format_description::well_known::Rfc3339)?;
        let cells = [
            time,
            r.username.clone().unwrap_or_default(),
            r.user_id.map(|u| u.to_string()).unwrap_or_default(),
            r.action.clone(),
            r.target_type.clone().unwrap_or_default(),
            r.target_id.clone().unwrap_or_default(),
            r.ip.clone().unwrap_or_default(),
            r.user_agent.clone().unwrap_or_default(),
            r.result.clone(),
            r.details.to_string(),
            r.id.to_string(),
        ];
        out.write_record(cells.iter().map(|c| neutralise(c).into_owned()))?;
    }
    Ok(out.into_inner()?)
}

fn jsonl_rows(rows: &[LogView]) -> anyhow::Result<Vec<u8>> {
    let mut out = Vec::new();
    for r in rows {
        serde_json::to_writer(&mut out, r)?;
        out.push(b'\n');
    }
    Ok(out)
}

/// Records the export, then streams every row matching `filter`, newest first.
pub async fn export(
    state: &AppState,
    permit: &Permit,
    source: &Source,
    mut tx: TenantTx,
    format: Format,
    mut filter: LogFilter,
) -> Result<Response, AppError> {
    let run = filter.approval.take();
    filter.limit = Some(PAGE);
    filter.after = None;
    // Refuse a bad filter before recording anything: read the first page now.
    let (first, next) = query::list(state, permit, &mut tx, &filter).await?;
    let details = json!({
        "format": match format { Format::Csv => "csv", Format::Jsonl => "jsonl" },
        "filters": filter.to_query(),
    });
    // Under dual control the export is requested first, and run once, by its
    // requester, with `?approval=<id>` once approved.
    let now = state.clock.now();
    let route = match format {
        Format::Csv => "GET /api/audit-logs/export.csv",
        Format::Jsonl => "GET /api/audit-logs/export.jsonl",
    };
    let hold = Hold::new(Operation::AuditExport, route, "Export the audit log").body(&details).change(details.clone());
    match run {
        Some(id) => match dual::redeem(&mut tx, permit, source, id, &hold.request(), now).await? {
            Ok(facts) => {
                tx.under_approval(permit.user_id(), facts);
            }
            Err(refused) => {
                tx.commit().await?;
                return Err(refused.error);
            }
        },
        None => match dual::gate(&mut tx, permit, source, hold, now).await? {
            Ok(Gate::Proceed) => {}
            Ok(Gate::Held(approval)) => {
                tx.commit().await?;
                return held(approval);
            }
            Err(denial) => return Err(crate::authz::refuse(tx, permit, source, denial).await),
        },
    }
    let entry = Entry::new(Action::AuditExport, Outcome::Success).details(details);
    super::record(&mut tx, source, entry).await?;
    tx.commit().await?;

    let encode = move |rows: &[LogView], header: bool| match format {
        Format::Csv => csv_rows(rows, header),
        Format::Jsonl => jsonl_rows(rows),
    };
    let head = encode(&first, true).map_err(AppError::Internal)?;
    let (state, permit) = (state.clone(), permit.clone());
    let rest = futures::stream::try_unfold(next, move |cursor| {
        let (state, permit, mut filter) = (state.clone(), permit.clone(), filter.clone());
        async move {
            let Some(cursor) = cursor else { return Ok(None) };
            filter.after = Some(cursor);
            // Each page decides again: a revoked admin.view_logs (or an ended
            // session) stops the export at the next page.
            let page = async {
                let mut tx = permit.transaction(&state.db).await?;
                let current = permit.recheck(&mut tx, state.clock.now()).await?;
                let current = current.map_err(|_| AppError::forbidden(crate::authz::INSUFFICIENT))?;
                let page = query::list(&state, &current, &mut tx, &filter).await?;
                tx.commit().await?;
                Ok::<_, AppError>(page)
            };
            let (rows, next) = page.await.map_err(|e| std::io::Error::other(format!("export page: {e}")))?;
            let bytes = encode(&rows, false).map_err(std::io::Error::other)?;
            Ok::<_, std::io::Error>(Some((Bytes::from(bytes), next)))
        }
    });
    let body = futures::stream::once(async move { Ok::<_, std::io::Error>(Bytes::from(head)) }).chain(rest.boxed());
    let (content_type, name) = match format {
        Format::Csv => ("text/csv; charset=utf-8", "audit-log.csv"),
        Format::Jsonl => ("application/jsonl; charset=utf-8", "audit-log.jsonl"),
    };
    let mut response = Body::from_stream(body).into_response();
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    let disposition = format!("attachment; filename=\"{name}\"");
    headers.insert(header::CONTENT_DISPOSITION, HeaderValue::from_str(&disposition).expect("ascii"));
    Ok(response)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formula_cells_are_neutralised_and_others_left_alone() {
        for cell in ["=SUM(A1)", "+1", "-2", "@cmd", "\tx", "\rx"] {
            assert_eq!(neutralise(cell), format!("'{cell}"));
        }
        for cell in ["alice", "2026-11-22", "a=b", ""] {
            assert_eq!(neutralise(cell), cell);
        }
    }
}

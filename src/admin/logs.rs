//! `GET /admin/logs`: the security dashboard (seed 000 §5). Filters for date
//! range, user, action and result combine and stay in the URL; the highlights
//! sit on top with their evidence; a chart of events per hour (per day for long
//! ranges), successes against failures, drawn here as SVG; keyset pages and
//! exports of exactly the filtered view.

use askama::Template;
use axum::{extract::State, response::Response};
use serde::Deserialize;
use time::{Date, Duration, OffsetDateTime, macros::format_description};

use crate::{
    audit::{
        highlights::{self, Highlight},
        integrity::{self, ChainState},
        query::{self, LogFilter, LogView},
    },
    auth::{Authenticated, Me},
    authz::Permit,
    db::TenantTx,
    http::{AppState, error::AppError, guard::Tx, params::ApiQuery},
    web::{Nav, render},
};

/// The page's query: dates as the form's date inputs give them (a day, UTC;
/// `to` includes its day) or full RFC 3339 instants (the highlights' links).
#[derive(Debug, Default, Deserialize)]
pub struct PageQuery {
    #[serde(default)]
    from: String,
    #[serde(default)]
    to: String,
    #[serde(default)]
    user: String,
    #[serde(default)]
    username: String,
    #[serde(default)]
    ip: String,
    #[serde(default)]
    action: String,
    #[serde(default)]
    result: String,
    #[serde(default)]
    after: String,
    #[serde(default, rename = "approvalId")]
    approval_id: String,
}

fn instant(text: &str, end_of_day: bool) -> Result<Option<OffsetDateTime>, AppError> {
    let text = text.trim();
    if text.is_empty() {
        return Ok(None);
    }
    if let Ok(at) = OffsetDateTime::parse(text, &time::format_description::well_known::Rfc3339) {
        return Ok(Some(at));
    }
    let day = Date::parse(text, format_description!("[year]-[month]-[day]"))
        .map_err(|_| AppError::invalid("from", "dates are YYYY-MM-DD"))?;
    let day = if end_of_day { day.next_day().unwrap_or(day) } else { day };
    Ok(Some(day.midnight().assume_utc()))
}

fn some(text: &str) -> Option<String> {
    Some(text.trim().to_string()).filter(|s| !s.is_empty())
}

/// One bar of the chart, in SVG units.
pub struct Bar {
    pub x: i64,
    pub ok_y: i64,
    pub ok_h: i64,
    pub fail_y: i64,
    pub fail_h: i64,
    pub label: String,
}

pub struct Chart {
    pub bars: Vec<Bar>,
    pub width: i64,
    pub max: i64,
    pub unit: &'static str,
    pub successes: i64,
    pub failures: i64,
}

const CHART_HEIGHT: i64 = 120;

#[derive(Template)]
#[template(path = "admin_logs.html")]
struct LogsPage {
    nav: Nav,
    logs: Vec<LogView>,
    next: Option<String>,
    highlights: Vec<Highlight>,
    chart: Chart,
    q: PageQuery,
    /// The current filter as a query string (for exports and the next page).
    filter_query: String,
    /// The audit chain's state, with the "Verify integrity" action.
    chain: ChainState,
}

impl LogsPage {
    fn details(&self, row: &LogView) -> String {
        row.details.to_string()
    }

    fn time(&self, at: &OffsetDateTime) -> String {
        at.format(format_description!("[year]-[month]-[day] [hour]:[minute]:[second]")).unwrap_or_default()
    }

    fn page_link(&self, filter: &LogFilter) -> String {
        format!("/admin/logs?{}", filter.to_query())
    }
}

pub async fn page(
    State(state): State<AppState>,
    who: Authenticated,
    me: Me,
    permit: Permit,
    Tx(mut tx): Tx,
    ApiQuery(q): ApiQuery<PageQuery>,
) -> Result<Response, AppError> {
    let filter = LogFilter {
        from: instant(&q.from, false)?,
        to: instant(&q.to, true)?,
        user: some(&q.user),
        username: some(&q.username),
        ip: some(&q.ip),
        action: some(&q.action),
        result: some(&q.result),
        limit: Some(50),
        after: some(&q.after),
        approval_id: match q.approval_id.trim() {
            "" => None,
            id => Some(id.parse().map_err(|_| AppError::invalid("approvalId", "not an approval id"))?),
        },
        approval: None,
    };
    let (logs, next) = query::list(&state, &permit, &mut tx, &filter).await?;
    // Audit rows are timestamped by the database, so "now" is the database's.
    let to = match filter.to {
        Some(to) => to,
        None => tx.now().await?,
    };
    let from = filter.from.unwrap_or(to - Duration::days(1));
    let range = highlights::Range { from: Some(from), to: Some(to) };
    let highlights = highlights::find(&state, &mut tx, &range).await?;
    let chart = chart(&mut tx, &filter, from, to).await?;
    let chain = integrity::state(&state, &mut tx).await?;
    tx.commit().await?;
    let nav = Nav::new(&me, &who, permit.subject());
    let filter_query = LogFilter { limit: None, after: None, ..filter }.to_query();
    Ok(render(&LogsPage { nav, logs, next, highlights, chart, q, filter_query, chain }))
}

/// Successes and failures per hour (per day past three days) in the range,
/// with the page's other filters.
async fn chart(
    tx: &mut TenantTx,
    filter: &LogFilter,
    from: OffsetDateTime,
    to: OffsetDateTime,
) -> Result<Chart, AppError> {
    let daily = to - from > Duration::days(3);
    let unit = if daily { "day" } else { "hour" };
    let rows: Vec<(OffsetDateTime, i64, i64)> = sqlx::query_as(
        "SELECT date_trunc($1, a.created_at, 'UTC') AS bucket, \
                count(*) FILTER (WHERE a.result = 'success'), count(*) FILTER (WHERE a.result = 'fail') \
         FROM audit_logs a LEFT JOIN users u ON u.id = a.user_id \
         WHERE a.created_at >= $2 AND a.created_at < $3 \
           AND ($4::text IS NULL OR lower(u.username) = lower($4)) \
           AND ($5::text IS NULL OR a.action = $5) AND ($6::text IS NULL OR a.result = $6) \
         GROUP BY 1 ORDER BY 1",
    )
    .bind(unit)
    .bind(from)
    .bind(to)
    .bind(filter.user.as_deref())
    .bind(filter.action.as_deref())
    .bind(filter.result.as_deref())
    .fetch_all(tx.conn())
    .await?;
    let step = if daily { Duration::days(1) } else { Duration::hours(1) };
    let truncate = |at: OffsetDateTime| {
        let at = at.replace_nanosecond(0).unwrap_or(at).replace_second(0).unwrap_or(at).replace_minute(0).unwrap_or(at);
        if daily { at.replace_hour(0).unwrap_or(at) } else { at }
    };
    // Every bucket of the range, empty ones included (at most 200 bars).
    let mut buckets = Vec::new();
    let mut at = truncate(from.to_offset(time::UtcOffset::UTC));
    while at < to && buckets.len() < 200 {
        let (ok, fail) = rows.iter().find(|(b, _, _)| *b == at).map(|(_, s, f)| (*s, *f)).unwrap_or((0, 0));
        buckets.push((at, ok, fail));
        at += step;
    }
    let max = buckets.iter().map(|(_, s, f)| s + f).max().unwrap_or(0).max(1);
    let bar = 8;
    let bars = buckets
        .iter()
        .enumerate()
        .map(|(i, (at, ok, fail))| {
            let ok_h = ok * CHART_HEIGHT / max;
            let fail_h = fail * CHART_HEIGHT / max;
            let label_format = if daily {
                format_description!("[year]-[month]-[day]")
            } else {
                format_description!("[year]-[month]-[day] [hour]:00")
            };
            Bar {
                x: i as i64 * (bar + 2),
                ok_y: CHART_HEIGHT - ok_h,
                ok_h,
                fail_y: CHART_HEIGHT - ok_h - fail_h,
                fail_h,
                label: format!("{} UTC: {ok} success, {fail} fail", at.format(label_format).unwrap_or_default()),
            }
        })
        .collect::<Vec<_>>();
    Ok(Chart {
        width: (bars.len() as i64 * (bar + 2)).max(10),
        bars,
        max,
        unit,
        successes: buckets.iter().map(|(_, s, _)| s).sum(),
        failures: buckets.iter().map(|(_, _, f)| f).sum(),
    })
}

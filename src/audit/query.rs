//! Reading the audit log for the security dashboard: filters that combine
//! (date range, user, login username, address, action, result), newest first,
//! keyset pages on `(created_at, id)` so a page costs the same at any depth and
//! no `COUNT(*)` is ever taken. Row-level security keeps it to the tenant.
//!
//! Mandatory access control covers the log as it covers documents: an entry
//! about a classified object records the object's rank when it is written, and
//! a reader cleared below that rank sees the entry with its details (the name,
//! hash and anything else naming the object) redacted. Every reader of
//! entries (the API, the dashboard, both exports, incidents) gets them from
//! here, redacted for its subject.

use serde::{Deserialize, Serialize};
use serde_json::Value;
use time::OffsetDateTime;
use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;

use crate::{
    authz::{Permit, Subject},
    db::TenantTx,
    http::{
        AppState,
        error::AppError,
        params::{finish_page, parse_cursor},
    },
};

/// One audit entry as the dashboard shows it.
#[derive(Debug, Clone, Serialize, sqlx::FromRow, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct LogView {
    pub id: Uuid,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    /// The acting user; `null` for anonymous requests (and accounts deleted since).
    #[schema(required = true)]
    pub user_id: Option<Uuid>,
    #[schema(required = true)]
    pub username: Option<String>,
    /// The dotted action name, such as `auth.login` or `file.download`.
    pub action: String,
    /// The kind of object acted on (`user`, `file`, `role`, ...).
    #[schema(required = true)]
    pub target_type: Option<String>,
    #[schema(required = true)]
    pub target_id: Option<String>,
    /// The client address.
    #[schema(required = true)]
    pub ip: Option<String>,
    #[schema(required = true)]
    pub user_agent: Option<String>,
    #[schema(value_type = LogResult)]
    pub result: String,
    /// The facts of the decision; `{"redacted": "above your clearance"}` when
    /// withheld.
    #[schema(value_type = Object)]
    pub details: Value,
    /// Set when the details were withheld: the entry is about an object
    /// classified above the reader's clearance.
    #[sqlx(skip)]
    pub redacted: bool,
    #[serde(skip)]
    pub classification_rank: Option<i32>,
}

impl LogView {
    /// The entry as `subject` may see it: its details withheld when it is about
    /// an object classified above the subject's clearance.
    fn seen_by(mut self, subject: &Subject) -> LogView {
        if self.classification_rank.is_some_and(|rank| rank > subject.clearance_rank) {
            self.details = serde_json::json!({ "redacted": "above your clearance" });
            self.redacted = true;
        }
        self
    }
}

/// The columns of a [`LogView`], as a macro so queries stay static strings.
macro_rules! log_select {
    () => {
        "SELECT a.id, a.created_at, a.user_id, u.username, a.action, a.target_type, a.target_id, \
                host(a.ip) AS ip, a.user_agent, a.result, a.details, a.classification_rank \
         FROM audit_logs a LEFT JOIN users u ON u.id = a.user_id "
    };
}

/// One entry by id, as `subject` may see it; `None` when it does not exist in
/// the tenant.
pub async fn entry(tx: &mut TenantTx, subject: &Subject, id: Uuid) -> Result<Option<LogView>, sqlx::Error> {
    let row: Option<LogView> =
        sqlx::query_as(concat!(log_select!(), "WHERE a.id = $1")).bind(id).fetch_optional(tx.conn()).await?;
    Ok(row.map(|r| r.seen_by(subject)))
}

/// An entry's result.
#[derive(ToSchema)]
#[schema(rename_all = "lowercase", description = "An audit entry's result.")]
pub enum LogResult {
    Success,
    Fail,
}

/// The filters, as query parameters (`GET /api/audit-logs`). Blank text
/// filters filter nothing.
#[derive(Debug, Default, Clone, Deserialize, Serialize, IntoParams, ToSchema)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct LogFilter {
    /// From this instant (inclusive), RFC 3339.
    #[serde(default, with = "time::serde::rfc3339::option", skip_serializing_if = "Option::is_none")]
    pub from: Option<OffsetDateTime>,
    /// Until this instant (exclusive), RFC 3339.
    #[serde(default, with = "time::serde::rfc3339::option", skip_serializing_if = "Option::is_none")]
    pub to: Option<OffsetDateTime>,
    /// The acting user's username (case-insensitive; one that exists nowhere
    /// matches nothing).
    #[serde(skip_serializing_if = "Option::is_none")]
    #[param(pattern = r"^[^\x00]*$")]
    #[schema(pattern = r"^[^\x00]*$")]
    pub user: Option<String>,
    /// The username a login attempt named (it may not exist: a name that
    /// matches no account is found by its keyed hash, see `audit::names`).
    #[serde(skip_serializing_if = "Option::is_none")]
    #[param(pattern = r"^[^\x00]*$")]
    #[schema(pattern = r"^[^\x00]*$")]
    pub username: Option<String>,
    /// The client address (IPv4 or IPv6, surrounding whitespace ignored).
    #[serde(skip_serializing_if = "Option::is_none")]
    #[param(schema_with = ip_filter_schema)]
    #[schema(pattern = r"^[^\x00]*$")]
    pub ip: Option<String>,
    /// The action's exact name, such as `auth.login`.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[param(pattern = r"^[^\x00]*$")]
    #[schema(pattern = r"^[^\x00]*$")]
    pub action: Option<String>,
    /// Only entries with this result.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[param(value_type = Option<LogResult>)]
    #[schema(value_type = Option<LogResult>)]
    pub result: Option<String>,
    /// Entries per page (default 100).
    #[serde(skip_serializing_if = "Option::is_none")]
    #[param(minimum = 1, maximum = 1000)]
    #[schema(minimum = 1, maximum = 1000)]
    pub limit: Option<i64>,
    /// Only entries about this dual-control request (their `approvalId`).
    #[serde(rename = "approvalId", skip_serializing_if = "Option::is_none")]
    pub approval_id: Option<Uuid>,
    /// Exports only: run the approved export request with this id (its
    /// requester, once; the filters and format must be the request's).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub approval: Option<Uuid>,
    /// The `nextCursor` of the previous page.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[param(pattern = "@cursor")]
    #[schema(pattern = "@cursor")]
    pub after: Option<String>,
}

/// The `ip` filter: blank (no filter), or an IPv4 or IPv6 address, with
/// surrounding whitespace.
fn ip_filter_schema() -> utoipa::openapi::RefOr<utoipa::openapi::Schema> {
    use utoipa::openapi::{
        KnownFormat, ObjectBuilder, RefOr, Schema, SchemaFormat,
        schema::{AnyOfBuilder, Type},
    };
    let address =
        |format| ObjectBuilder::new().schema_type(Type::String).format(Some(SchemaFormat::KnownFormat(format)));
    let blank = ObjectBuilder::new()
        .schema_type(Type::String)
        .pattern(Some(r"^[\t-\r \x85\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000]*$"));
    let any = AnyOfBuilder::new()
        .item(blank)
        .item(address(KnownFormat::Ipv4))
        .item(address(KnownFormat::Ipv6))
        .description(Some("The client address, IPv4 or IPv6 (surrounding whitespace ignored); blank: any."));
    RefOr::T(Schema::AnyOf(any.build()))
}

impl LogFilter {
    /// This filter as a query string (for links to exactly these rows).
    pub fn to_query(&self) -> String {
        serde_urlencoded_pairs(self)
    }
}

fn serde_urlencoded_pairs(filter: &LogFilter) -> String {
    let value = serde_json::to_value(filter).unwrap_or(Value::Null);
    let mut out = url::form_urlencoded::Serializer::new(String::new());
    if let Value::Object(map) = value {
        for (key, value) in map {
            let text = match value {
                Value::String(s) => s,
                other => other.to_string(),
            };
            out.append_pair(&key, &text);
        }
    }
    out.finish()
}

/// One page of entries matching `filter`, and the cursor of the next page.
pub async fn list(
    state: &AppState,
    permit: &Permit,
    tx: &mut TenantTx,
    filter: &LogFilter,
) -> Result<(Vec<LogView>, Option<String>), AppError> {
    if filter.approval.is_some() {
        return Err(AppError::invalid("approval", "runs an approved export; the list filters by approvalId"));
    }
    let limit = filter.limit.unwrap_or(100);
    if !(1..=1000).contains(&limit) {
        return Err(AppError::invalid("limit", "must be between 1 and 1000"));
    }
    if let Some(result) = filter.result.as_deref()
        && !matches!(result, "success" | "fail")
    {
        return Err(AppError::invalid("result", "must be success or fail"));
    }
    let ip = match filter.ip.as_deref().map(str::trim).filter(|s| !s.is_empty()) {
        None => None,
        Some(text) => Some(
            text.parse::<std::net::IpAddr>()
                .map(ipnet::IpNet::from)
                .map_err(|_| AppError::invalid("ip", "not an IP address"))?,
        ),
    };
    let after = filter.after.as_deref().map(parse_cursor).transpose()?;
    let username = filter.username.as_deref().map(str::trim).filter(|s| !s.is_empty());
    tx.for_log_reading(state.config.dashboard_timeout).await?;
    // An unknown user matches nothing (not everything).
    let user = match filter.user.as_deref().map(str::trim).filter(|s| !s.is_empty()) {
        None => None,
        Some(name) => Some(
            sqlx::query_scalar::<_, Uuid>("SELECT id FROM users WHERE lower(username) = lower($1)")
                .bind(name)
                .fetch_optional(tx.conn())
                .await?
                .unwrap_or(Uuid::nil()),
        ),
    };
    let rows: Vec<LogView> = sqlx::query_as(concat!(
        log_select!(),
        "WHERE ($1::timestamptz IS NULL OR a.created_at >= $1) AND ($2::timestamptz IS NULL OR a.created_at < $2) \
           AND ($3::uuid IS NULL OR a.user_id = $3) \
           AND ($4::text IS NULL OR a.login_username = lower($4) OR a.login_username = $11) \
           AND ($5::inet IS NULL OR a.ip = $5) \
           AND ($6::text IS NULL OR a.action = $6) AND ($7::text IS NULL OR a.result = $7) \
           AND ($8::timestamptz IS NULL OR (a.created_at, a.id) < ($8, $9)) \
           AND ($12::text IS NULL OR a.details->>'approvalId' = $12) \
         ORDER BY a.created_at DESC, a.id DESC LIMIT $10"
    ))
    .bind(filter.from)
    .bind(filter.to)
    .bind(user)
    .bind(username)
    .bind(ip)
    .bind(filter.action.as_deref().map(str::trim).filter(|s| !s.is_empty()))
    .bind(filter.result.as_deref())
    .bind(after.map(|(at, _)| at))
    .bind(after.map(|(_, id)| id))
    .bind(limit + 1)
    .bind(username.map(|name| state.login_names.digest(name)))
    .bind(filter.approval_id.map(|id| id.to_string()))
    .fetch_all(tx.conn())
    .await?;
    let rows = rows.into_iter().map(|r| r.seen_by(permit.subject())).collect();
    Ok(finish_page(rows, limit, |r| (r.created_at, r.id)))
}

//! Security incidents (seed 000 §6): created and moved through `open` →
//! `investigating` → `resolved` by holders of `incident.manage`, optionally
//! linked to the audit entry that prompted them. Each change writes its audit
//! row (`incident.create`, `incident.update` with before and after) in the same
//! transaction.
//!
//! The `incident.manage` grant's scope decides which incidents it covers:
//! `own` the ones the holder opened, `department` also those opened by people
//! of the holder's department, `tenant` all. Outside it an incident is refused
//! (403, `rbac.denied`) and absent from lists. An incident may point at an audit
//! entry, but showing or linking one needs `admin.view_logs`: without it, any
//! entry is "no such audit log entry", so nobody can probe the log through
//! incidents, and a shown entry is redacted for the reader's clearance like
//! everywhere else.

pub mod handlers;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};
use time::OffsetDateTime;
use utoipa::{
    IntoParams, PartialSchema, ToSchema,
    openapi::{
        AllOfBuilder, ObjectBuilder, OneOfBuilder, Ref, RefOr, Schema, Type,
        schema::{AdditionalProperties, AnyOfBuilder},
    },
};
use uuid::Uuid;

use crate::{
    audit::{self, Action, Entry, Outcome, Source},
    authz::{self, INSUFFICIENT, Permission, Permit, Scope},
    db::TenantTx,
    directory::clean_name,
    http::{AppState, error::AppError},
};

pub const STATUSES: &[&str] = &["open", "investigating", "resolved"];
pub const SEVERITIES: &[&str] = &["low", "medium", "high"];

/// An incident's status (`STATUSES`), for the OpenAPI description.
#[derive(ToSchema)]
#[schema(
    rename_all = "lowercase",
    description = "An incident's status: `open`, then `investigating`, then `resolved`."
)]
pub enum IncidentStatus {
    Open,
    Investigating,
    Resolved,
}

/// An incident's severity (`SEVERITIES`), for the OpenAPI description.
#[derive(ToSchema)]
#[schema(rename_all = "lowercase", description = "An incident's severity.")]
pub enum Severity {
    Low,
    Medium,
    High,
}

/// A security incident.
#[derive(Debug, Clone, Serialize, sqlx::FromRow, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct IncidentView {
    pub id: Uuid,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    pub updated_at: OffsetDateTime,
    /// The username of who opened it; `null` once that account is gone.
    #[schema(required = true)]
    pub created_by: Option<String>,
    #[schema(value_type = IncidentStatus)]
    pub status: String,
    #[schema(value_type = Severity)]
    pub severity: String,
    pub title: String,
    pub description: String,
    /// The audit entry that prompted it; shown only to holders of
    /// `admin.view_logs` (`null` for others).
    #[schema(required = true)]
    pub related_audit_log_id: Option<Uuid>,
    /// Who opened it and their department now: what the grant's scope is judged on.
    #[serde(skip)]
    pub creator_id: Option<Uuid>,
    #[serde(skip)]
    pub creator_department: Option<Uuid>,
}

/// The view's columns from an incident row `i` and its creator `u`.
macro_rules! incident_columns {
    () => {
        "SELECT i.id, i.created_at, i.updated_at, u.username AS created_by, i.status, i.severity, i.title, \
                i.description, i.related_audit_log_id, u.id AS creator_id, u.department_id AS creator_department "
    };
}

macro_rules! incident_select {
    () => {
        concat!(incident_columns!(), "FROM incidents i LEFT JOIN users u ON u.id = i.created_by ")
    };
}

impl IncidentView {
    /// The incident as the caller may see it: which audit entry it points at is
    /// for holders of `admin.view_logs` only.
    fn seen_by(mut self, permit: &Permit) -> IncidentView {
        if !sees_the_log(permit) {
            self.related_audit_log_id = None;
        }
        self
    }
}

/// Whether the permit's `incident.manage` scope covers `incident`. An incident
/// whose creator is gone is covered by tenant scope only.
fn covers(permit: &Permit, incident: &IncidentView) -> bool {
    match (incident.creator_id, incident.creator_department) {
        (Some(creator), Some(department)) => permit.covers(creator, department),
        _ => permit.scope() == Scope::Tenant,
    }
}

/// Whether the caller may see or link audit entries.
pub fn sees_the_log(permit: &Permit) -> bool {
    permit.subject().holds(Permission::AdminViewLogs)
}

/// The incident `id` in `tx` (locked with `lock`): 404 when it does not exist,
/// 403 and `rbac.denied` (committed in `tx`) when the grant's scope does not
/// cover it; otherwise `tx` back with the incident.
pub async fn in_scope(
    permit: &Permit,
    source: &Source,
    mut tx: TenantTx,
    id: Uuid,
    lock: bool,
) -> Result<(TenantTx, IncidentView), AppError> {
    let sql = if lock {
        concat!(incident_select!(), "WHERE i.id = $1 FOR UPDATE OF i")
    } else {
        concat!(incident_select!(), "WHERE i.id = $1")
    };
    let view: IncidentView = sqlx::query_as(sql).bind(id).fetch_optional(tx.conn()).await?.ok_or(AppError::NotFound)?;
    if covers(permit, &view) {
        return Ok((tx, view));
    }
    let denial = permit.deny("outside_scope", INSUFFICIENT).target("incident", id);
    Err(authz::refuse(tx, permit, source, denial).await)
}

/// A new incident; it starts `open`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct NewIncident {
    /// 1 to 200 characters after trimming, without control characters.
    #[schema(max_length = 200, pattern = "@text")]
    pub title: String,
    /// At most 10000 characters after trimming. Default: empty.
    #[serde(default)]
    #[schema(max_length = 10000, pattern = r"^[^\x00]*$")]
    pub description: String,
    /// Case and surrounding whitespace are ignored.
    #[schema(value_type = Severity)]
    pub severity: String,
    /// An audit entry to link; needs `admin.view_logs` (without it, or for an
    /// entry that does not exist, 422).
    #[serde(default)]
    pub related_audit_log_id: Option<Uuid>,
}

/// A change of an incident's status, severity, or both. Its schema is written
/// out below: serde reads `null` as "no change", and [`update`] needs at least
/// one field that is not `null`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IncidentChange {
    pub status: Option<String>,
    pub severity: Option<String>,
}

impl utoipa::PartialSchema for IncidentChange {
    fn schema() -> RefOr<Schema> {
        let status = || Ref::from_schema_name(IncidentStatus::name());
        let severity = || Ref::from_schema_name(Severity::name());
        let or_null = |kind: Ref| OneOfBuilder::new().item(kind).item(ObjectBuilder::new().schema_type(Type::Null));
        let fields = ObjectBuilder::new()
            .schema_type(Type::Object)
            .property("status", or_null(status()))
            .property("severity", or_null(severity()))
            .additional_properties(Some(AdditionalProperties::FreeForm(false)));
        let given =
            |name: &str, kind: Ref| ObjectBuilder::new().schema_type(Type::Object).property(name, kind).required(name);
        AllOfBuilder::new()
            .item(fields)
            .item(AnyOfBuilder::new().item(given("status", status())).item(given("severity", severity())))
            .description(Some(
                "A change of an incident's status, severity, or both: at least one of them, not `null` (`null` \
                 changes nothing). Case and surrounding whitespace are ignored.",
            ))
            .into()
    }
}

impl ToSchema for IncidentChange {
    fn schemas(schemas: &mut Vec<(String, RefOr<Schema>)>) {
        schemas.push((IncidentStatus::name().into(), IncidentStatus::schema()));
        schemas.push((Severity::name().into(), Severity::schema()));
    }
}

fn one_of(field: &'static str, value: &str, allowed: &[&str]) -> Result<String, AppError> {
    let value = value.trim().to_ascii_lowercase();
    if allowed.contains(&value.as_str()) {
        Ok(value)
    } else {
        Err(AppError::invalid(field, format!("must be one of {}", allowed.join(", "))))
    }
}

fn clean_description(text: &str) -> Result<String, AppError> {
    let text = text.trim();
    if text.chars().count() > 10_000 {
        return Err(AppError::invalid("description", "must be at most 10000 characters"));
    }
    Ok(text.to_string())
}

pub async fn create(
    state: &AppState,
    permit: &Permit,
    source: &Source,
    mut tx: TenantTx,
    input: NewIncident,
) -> Result<IncidentView, AppError> {
    let title = clean_name("title", &input.title, 200)?;
    let description = clean_description(&input.description)?;
    let severity = one_of("severity", &input.severity, SEVERITIES)?;
    let now = state.clock.now();
    if let Some(entry) = input.related_audit_log_id {
        // Row-level security hides other tenants' entries, and without
        // admin.view_logs every entry is hidden: all are equally "unknown".
        let exists = sees_the_log(permit)
            && sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM audit_logs WHERE id = $1)")
                .bind(entry)
                .fetch_one(tx.conn())
                .await?;
        if !exists {
            return Err(AppError::invalid("relatedAuditLogId", "no such audit log entry"));
        }
    }
    // The insert hands back the view itself: no second statement, and no
    // read-back whose cached plan was made while the table was empty.
    let view: IncidentView = sqlx::query_as(concat!(
        "WITH i AS (INSERT INTO incidents (tenant_id, created_at, updated_at, created_by, severity, title, \
                                           description, related_audit_log_id) \
                    VALUES ($1, $2, $2, $3, $4, $5, $6, $7) RETURNING *) ",
        incident_columns!(),
        "FROM i LEFT JOIN users u ON u.id = i.created_by"
    ))
    .bind(permit.tenant_id())
    .bind(now)
    .bind(permit.user_id())
    .bind(&severity)
    .bind(&title)
    .bind(&description)
    .bind(input.related_audit_log_id)
    .fetch_one(tx.conn())
    .await?;
    let entry = Entry::new(Action::IncidentCreate, Outcome::Success).target("incident", view.id).details(json!({
        "title": view.title,
        "severity": view.severity,
        "status": view.status,
        "relatedAuditLogId": view.related_audit_log_id,
    }));
    audit::record(&mut tx, source, entry).await?;
    tx.commit().await?;
    Ok(view.seen_by(permit))
}

/// Changes status and/or severity; records each changed field's before and after.
pub async fn update(
    state: &AppState,
    permit: &Permit,
    source: &Source,
    tx: TenantTx,
    id: Uuid,
    input: IncidentChange,
) -> Result<IncidentView, AppError> {
    if input.status.is_none() && input.severity.is_none() {
        return Err(AppError::invalid("status", "give a status, a severity, or both"));
    }
    let status = input.status.as_deref().map(|s| one_of("status", s, STATUSES)).transpose()?;
    let severity = input.severity.as_deref().map(|s| one_of("severity", s, SEVERITIES)).transpose()?;
    let (mut tx, mut view) = in_scope(permit, source, tx, id, true).await?;
    let mut changes = Map::new();
    for (field, old, new) in [("status", &view.status, &status), ("severity", &view.severity, &severity)] {
        if let Some(new) = new
            && new != old
        {
            changes.insert(field.into(), json!({ "before": old, "after": new }));
        }
    }
    if !changes.is_empty() {
        // The row is locked by `in_scope`: what it returns is the row now.
        let (updated_at, status, severity): (OffsetDateTime, String, String) = sqlx::query_as(
            "UPDATE incidents SET status = COALESCE($2, status), severity = COALESCE($3, severity), updated_at = $4 \
             WHERE id = $1 RETURNING updated_at, status, severity",
        )
        .bind(id)
        .bind(&status)
        .bind(&severity)
        .bind(state.clock.now())
        .fetch_one(tx.conn())
        .await?;
        (view.updated_at, view.status, view.severity) = (updated_at, status, severity);
        let entry = Entry::new(Action::IncidentUpdate, Outcome::Success)
            .target("incident", id)
            .details(json!({ "changes": Value::Object(changes) }));
        audit::record(&mut tx, source, entry).await?;
    }
    tx.commit().await?;
    Ok(view.seen_by(permit))
}

pub async fn get(permit: &Permit, source: &Source, tx: TenantTx, id: Uuid) -> Result<IncidentView, AppError> {
    let (tx, view) = in_scope(permit, source, tx, id, false).await?;
    tx.commit().await?;
    Ok(view.seen_by(permit))
}

/// `GET /api/incidents` query parameters.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct ListQuery {
    /// Only incidents with this status (case and surrounding whitespace ignored).
    #[param(value_type = Option<IncidentStatus>)]
    pub status: Option<String>,
    /// Only incidents with this severity (case and surrounding whitespace ignored).
    #[param(value_type = Option<Severity>)]
    pub severity: Option<String>,
    /// Incidents per page (default 50).
    #[param(minimum = 1, maximum = 200)]
    pub limit: Option<i64>,
    /// The `nextCursor` of the previous page.
    #[param(pattern = "@cursor")]
    pub after: Option<String>,
}

/// Incidents newest first, filtered by status and severity, one page at a time,
/// within the grant's scope.
pub async fn list(
    permit: &Permit,
    tx: &mut TenantTx,
    query: ListQuery,
) -> Result<(Vec<IncidentView>, Option<String>), AppError> {
    let status = query.status.as_deref().map(|s| one_of("status", s, STATUSES)).transpose()?;
    let severity = query.severity.as_deref().map(|s| one_of("severity", s, SEVERITIES)).transpose()?;
    let limit = query.limit.unwrap_or(50);
    if !(1..=200).contains(&limit) {
        return Err(AppError::invalid("limit", "must be between 1 and 200"));
    }
    let after = query.after.as_deref().map(crate::http::params::parse_cursor).transpose()?;
    let subject = permit.subject();
    let rows: Vec<IncidentView> = sqlx::query_as(concat!(
        incident_select!(),
        "WHERE ($1::text IS NULL OR i.status = $1) AND ($2::text IS NULL OR i.severity = $2) \
           AND ($3::timestamptz IS NULL OR (i.created_at, i.id) < ($3, $4)) \
           AND ($6 = 'tenant' OR i.created_by = $7 OR ($6 = 'department' AND u.department_id = $8)) \
         ORDER BY i.created_at DESC, i.id DESC LIMIT $5"
    ))
    .bind(status)
    .bind(severity)
    .bind(after.map(|(at, _)| at))
    .bind(after.map(|(_, id)| id))
    .bind(limit + 1)
    .bind(permit.scope().as_str())
    .bind(subject.user_id)
    .bind(subject.department_id)
    .fetch_all(tx.conn())
    .await?;
    let rows = rows.into_iter().map(|i| i.seen_by(permit)).collect();
    Ok(crate::http::params::finish_page(rows, limit, |i| (i.created_at, i.id)))
}

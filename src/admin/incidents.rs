//! Incident pages (seed 000 §6): the list, the creation form (prefilled from an
//! audit entry or a highlight), and the detail page with the related entry
//! inline, a link to that user's activity around it, and the status/severity
//! form. Changes go through `incidents` exactly as the JSON API's do.

use askama::Template;
use axum::{
    extract::State,
    response::{IntoResponse, Redirect, Response},
};
use serde::Deserialize;
use time::Duration;
use uuid::Uuid;

use crate::{
    audit::{
        Source,
        query::{self, LogView},
    },
    auth::{Authenticated, Me},
    authz::Permit,
    db::TenantTx,
    http::{
        AppState,
        client::ClientSource,
        error::AppError,
        guard::Tx,
        params::{ApiForm, ApiPath, ApiQuery},
    },
    incidents::{self, IncidentChange, IncidentView, ListQuery, NewIncident, SEVERITIES, STATUSES},
    web::{Nav, render},
};

/// The audit entry `id` as the caller may see it: only with `admin.view_logs`,
/// and redacted for the caller's clearance.
async fn entry(tx: &mut TenantTx, permit: &Permit, id: Uuid) -> Result<Option<LogView>, sqlx::Error> {
    if !incidents::sees_the_log(permit) {
        return Ok(None);
    }
    query::entry(tx, permit.subject(), id).await
}

#[derive(Template)]
#[template(path = "incidents_list.html")]
struct ListPage {
    nav: Nav,
    incidents: Vec<IncidentView>,
    next: Option<String>,
    status: String,
    severity: String,
    statuses: &'static [&'static str],
    severities: &'static [&'static str],
}

#[derive(Debug, Default, Deserialize)]
pub struct ListForm {
    #[serde(default)]
    status: String,
    #[serde(default)]
    severity: String,
    #[serde(default)]
    after: String,
}

pub async fn list(
    who: Authenticated,
    me: Me,
    permit: Permit,
    Tx(mut tx): Tx,
    ApiQuery(q): ApiQuery<ListForm>,
) -> Result<Response, AppError> {
    let some = |s: &str| Some(s.to_string()).filter(|s| !s.is_empty());
    let query =
        ListQuery { status: some(&q.status), severity: some(&q.severity), limit: Some(50), after: some(&q.after) };
    let (incidents, next) = incidents::list(&permit, &mut tx, query).await?;
    tx.commit().await?;
    let nav = Nav::new(&me, &who, permit.subject());
    Ok(render(&ListPage {
        nav,
        incidents,
        next,
        status: q.status,
        severity: q.severity,
        statuses: STATUSES,
        severities: SEVERITIES,
    }))
}

#[derive(Template)]
#[template(path = "incident_new.html")]
struct NewPage {
    nav: Nav,
    related: Option<LogView>,
    title: String,
    error: bool,
    severities: &'static [&'static str],
}

#[derive(Debug, Default, Deserialize)]
pub struct NewQuery {
    audit: Option<Uuid>,
    #[serde(default)]
    highlight: String,
    #[serde(default)]
    subject: String,
    #[serde(default)]
    error: String,
}

pub async fn new(
    who: Authenticated,
    me: Me,
    permit: Permit,
    Tx(mut tx): Tx,
    ApiQuery(q): ApiQuery<NewQuery>,
) -> Result<Response, AppError> {
    let related = match q.audit {
        Some(id) => entry(&mut tx, &permit, id).await?,
        None => None,
    };
    tx.commit().await?;
    let nav = Nav::new(&me, &who, permit.subject());
    let what = match q.highlight.as_str() {
        "failed_logins" => "Repeated failed logins",
        "password_spraying" => "Password spraying",
        "mac_denials" => "Repeated MAC denials",
        "rbac_denials" => "Repeated permission denials",
        "bulk_downloads" => "Bulk downloads",
        "mfa_failures" => "Repeated failed second factors",
        _ => "",
    };
    let title = match (&related, what) {
        (_, what) if !what.is_empty() => format!("{what}: {}", q.subject.chars().take(100).collect::<String>()),
        (Some(r), _) => format!("{} ({})", r.action, r.result),
        _ => String::new(),
    };
    Ok(render(&NewPage { nav, related, title, error: !q.error.is_empty(), severities: SEVERITIES }))
}

#[derive(Debug, Deserialize)]
pub struct IncidentForm {
    title: String,
    #[serde(default)]
    description: String,
    severity: String,
    #[serde(default)]
    related_audit_log_id: String,
}

/// The creation form's post (the JSON API shares its route and capability).
pub async fn create_from_form(
    state: &AppState,
    permit: &Permit,
    source: &Source,
    tx: TenantTx,
    form: IncidentForm,
) -> Response {
    let related = form.related_audit_log_id.trim();
    let related_audit_log_id = if related.is_empty() { None } else { Uuid::parse_str(related).ok() };
    let input =
        NewIncident { title: form.title, description: form.description, severity: form.severity, related_audit_log_id };
    match incidents::create(state, permit, source, tx, input).await {
        Ok(incident) => Redirect::to(&format!("/admin/incidents/{}", incident.id)).into_response(),
        Err(AppError::Internal(e)) => AppError::Internal(e).into_response(),
        Err(_) => {
            let audit = related_audit_log_id.map(|id| format!("&audit={id}")).unwrap_or_default();
            Redirect::to(&format!("/admin/incidents/new?error=invalid{audit}")).into_response()
        }
    }
}

#[derive(Template)]
#[template(path = "incident_detail.html")]
struct DetailPage {
    nav: Nav,
    incident: IncidentView,
    related: Option<LogView>,
    /// The related user's activity an hour either side of the entry.
    activity: Option<String>,
    statuses: &'static [&'static str],
    severities: &'static [&'static str],
}

pub async fn detail(
    ClientSource(source): ClientSource,
    who: Authenticated,
    me: Me,
    permit: Permit,
    Tx(tx): Tx,
    ApiPath(id): ApiPath<Uuid>,
) -> Result<Response, AppError> {
    let (mut tx, incident) = incidents::in_scope(&permit, &source, tx, id, false).await?;
    let related = match incident.related_audit_log_id {
        Some(entry_id) => entry(&mut tx, &permit, entry_id).await?,
        None => None,
    };
    tx.commit().await?;
    let nav = Nav::new(&me, &who, permit.subject());
    let activity = related.as_ref().and_then(|r| {
        let rfc = &time::format_description::well_known::Rfc3339;
        let from = (r.created_at - Duration::hours(1)).format(rfc).ok()?;
        let to = (r.created_at + Duration::hours(1)).format(rfc).ok()?;
        let who = match (&r.username, r.details.get("username").and_then(|u| u.as_str())) {
            (Some(user), _) => ("user", user.to_string()),
            (None, Some(tried)) => ("username", tried.to_string()),
            (None, None) => return None,
        };
        let mut q = url::form_urlencoded::Serializer::new(String::new());
        q.append_pair(who.0, &who.1).append_pair("from", &from).append_pair("to", &to);
        Some(format!("/admin/logs?{}", q.finish()))
    });
    Ok(render(&DetailPage { nav, incident, related, activity, statuses: STATUSES, severities: SEVERITIES }))
}

#[derive(Debug, Deserialize)]
pub struct ChangeForm {
    #[serde(default)]
    status: String,
    #[serde(default)]
    severity: String,
}

/// `POST /admin/incidents/{id}`: the detail page's status/severity form.
pub async fn change(
    State(state): State<AppState>,
    ClientSource(source): ClientSource,
    permit: Permit,
    Tx(tx): Tx,
    ApiPath(id): ApiPath<Uuid>,
    ApiForm(form): ApiForm<ChangeForm>,
) -> Response {
    let some = |s: String| Some(s).filter(|s| !s.is_empty());
    let change = IncidentChange { status: some(form.status), severity: some(form.severity) };
    match incidents::update(&state, &permit, &source, tx, id, change).await {
        Ok(_) => Redirect::to(&format!("/admin/incidents/{id}")).into_response(),
        Err(e) => e.into_response(),
    }
}

/// For the templates' selects: is `value` the `option`?
fn same(value: &str, option: &str) -> bool {
    value == option
}

impl ListPage {
    fn same(&self, value: &str, option: &str) -> bool {
        same(value, option)
    }
}

impl DetailPage {
    fn same(&self, value: &str, option: &str) -> bool {
        same(value, option)
    }
}

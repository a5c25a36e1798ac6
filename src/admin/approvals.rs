//! `/admin/approvals`: dual control for people. Requests waiting for the
//! viewer, the viewer's own requests and the history they may see, each
//! with the change spelled out and the forms to approve, deny or cancel;
//! the tenant's policies below (editable by holders of `admin.manage_roles`).
//! Every form calls the same capability code as `/api/approvals`.

use askama::Template;
use axum::{
    extract::State,
    response::{IntoResponse, Redirect, Response},
};
use serde::Deserialize;
use uuid::Uuid;

use crate::{
    approvals::{self, ListQuery, decide, policies},
    auth::{Authenticated, Me},
    authz::{
        Permission, Permit, Subject,
        dual::{ApprovalView, Done, Operation},
    },
    http::{
        AppState,
        client::ClientSource,
        error::AppError,
        guard::Tx,
        params::{ApiForm, ApiPath, ApiQuery},
    },
    web::{Nav, render},
};

#[derive(Debug, Default, Deserialize)]
pub struct PageQuery {
    #[serde(default)]
    done: String,
    #[serde(default)]
    error: String,
}

/// One request as the page shows it.
pub struct Item {
    pub view: ApprovalView,
    /// The change, as indented JSON.
    pub change: String,
    /// The approvers so far, by name.
    pub approvers: String,
    /// For an approved export of the viewer's: where to run it.
    pub run: Option<String>,
    pub can_cancel: bool,
}

impl Item {
    fn of(view: ApprovalView, me: Uuid) -> Item {
        let change = serde_json::to_string_pretty(&view.change).unwrap_or_default();
        let approvers = view
            .approvals
            .as_array()
            .map(|a| a.iter().filter_map(|v| v["approver"].as_str()).collect::<Vec<_>>().join(", "))
            .unwrap_or_default();
        let mine = view.requester_id == me;
        let run = (mine && view.status == "approved" && view.operation == Operation::AuditExport.as_str()).then(|| {
            let format = view.change["format"].as_str().unwrap_or("csv");
            let filters = view.change["filters"].as_str().unwrap_or("");
            let sep = if filters.is_empty() { "" } else { "&" };
            format!("/api/audit-logs/export.{format}?{filters}{sep}approval={}", view.id)
        });
        let can_cancel = mine && (view.status == "pending" || view.status == "approved");
        Item { view, change, approvers, run, can_cancel }
    }
}

#[derive(Template)]
#[template(path = "admin_approvals.html")]
struct ApprovalsPage {
    nav: Nav,
    waiting: Vec<Item>,
    mine: Vec<Item>,
    history: Vec<Item>,
    policies: Vec<policies::PolicyView>,
    can_manage: bool,
    notice: Option<&'static str>,
    error: Option<&'static str>,
}

fn message(q: &PageQuery) -> (Option<&'static str>, Option<&'static str>) {
    let notice = match q.done.as_str() {
        "approved" => Some("Approved."),
        "denied" => Some("Denied."),
        "cancelled" => Some("Cancelled."),
        "saved" => Some("Policy saved."),
        "held" => Some("Waiting for approval: changing a policy needs a second administrator."),
        _ => None,
    };
    let error = match q.error.as_str() {
        "not_allowed" => Some("Not allowed: you requested it, or you are not eligible to decide it."),
        "conflict" => Some("That request is no longer open, has expired, or you already approved it."),
        "not_found" => Some("That request does not exist."),
        "invalid" => Some("Check the values and try again."),
        _ => None,
    };
    (notice, error)
}

/// `GET /admin/approvals`.
pub async fn page(
    State(state): State<AppState>,
    who: Authenticated,
    me: Me,
    subject: Subject,
    Tx(mut tx): Tx,
    ApiQuery(q): ApiQuery<PageQuery>,
) -> Result<Response, AppError> {
    let id = who.user_id;
    let list = |f: fn(&mut ListQuery)| {
        let mut q = ListQuery { limit: Some(50), ..ListQuery::default() };
        f(&mut q);
        q
    };
    let items = |v: Vec<ApprovalView>| v.into_iter().map(|a| Item::of(a, id)).collect::<Vec<_>>();
    let waiting = approvals::list(&state, &mut tx, id, &list(|q| q.to_approve = Some(true))).await?.0;
    let mine = approvals::list(&state, &mut tx, id, &list(|q| q.mine = Some(true))).await?.0;
    let history = approvals::list(&state, &mut tx, id, &list(|_| {})).await?.0;
    let can_manage = subject.holds(Permission::AdminManageRoles);
    let policies = if can_manage { policies::list(&mut tx).await? } else { Vec::new() };
    let nav = Nav::new(&me, &who, &subject).waiting(&mut tx, state.clock.now()).await?;
    tx.commit().await?;
    let (notice, error) = message(&q);
    let page = ApprovalsPage {
        nav,
        waiting: items(waiting),
        mine: items(mine),
        history: items(history),
        policies,
        can_manage,
        notice,
        error,
    };
    Ok(render(&page))
}

fn back(result: Result<&str, AppError>) -> Response {
    let code = match result {
        Ok(done) => format!("done={done}"),
        Err(AppError::Forbidden(_)) => "error=not_allowed".into(),
        Err(AppError::Conflict(_)) => "error=conflict".into(),
        Err(AppError::NotFound) => "error=not_found".into(),
        Err(e @ (AppError::Internal(_) | AppError::Unavailable)) => return e.into_response(),
        Err(_) => "error=invalid".into(),
    };
    Redirect::to(&format!("/admin/approvals?{code}")).into_response()
}

#[derive(Debug, Deserialize)]
pub struct DecisionForm {
    #[serde(default)]
    comment: String,
    #[serde(default)]
    reason: String,
}

/// `POST /admin/approvals/{id}/approve`.
pub async fn approve(
    State(state): State<AppState>,
    ClientSource(source): ClientSource,
    who: Authenticated,
    Tx(tx): Tx,
    ApiPath(id): ApiPath<Uuid>,
    ApiForm(form): ApiForm<DecisionForm>,
) -> Response {
    let input = decide::Approve { comment: Some(form.comment) };
    back(decide::approve(&state, &source, tx, who.user_id, id, input).await.map(|_| "approved"))
}

/// `POST /admin/approvals/{id}/deny`.
pub async fn deny(
    State(state): State<AppState>,
    ClientSource(source): ClientSource,
    who: Authenticated,
    Tx(tx): Tx,
    ApiPath(id): ApiPath<Uuid>,
    ApiForm(form): ApiForm<DecisionForm>,
) -> Response {
    let input = decide::Deny { reason: form.reason };
    back(decide::deny(&state, &source, tx, who.user_id, id, input).await.map(|_| "denied"))
}

/// `POST /admin/approvals/{id}/cancel`.
pub async fn cancel(
    State(state): State<AppState>,
    ClientSource(source): ClientSource,
    who: Authenticated,
    Tx(tx): Tx,
    ApiPath(id): ApiPath<Uuid>,
) -> Response {
    back(decide::cancel(&state, &source, tx, who.user_id, id).await.map(|_| "cancelled"))
}

#[derive(Debug, Deserialize)]
pub struct PolicyForm {
    #[serde(default)]
    enabled: Option<String>,
    approvals_required: i32,
    timeout_hours: i32,
}

/// `POST /admin/approvals/policies/{operation}` (guard `admin.manage_roles`).
pub async fn change_policy(
    State(state): State<AppState>,
    ClientSource(source): ClientSource,
    permit: Permit,
    Tx(tx): Tx,
    ApiPath(operation): ApiPath<String>,
    ApiForm(form): ApiForm<PolicyForm>,
) -> Response {
    let input = policies::PolicyInput {
        enabled: Some(form.enabled.is_some()),
        approvals_required: Some(form.approvals_required),
        approver_roles: None,
        timeout_hours: Some(form.timeout_hours),
    };
    let result = policies::put(&state, &permit, &source, tx, &operation, input).await;
    back(result.map(|done| if matches!(done, Done::Held(_)) { "held" } else { "saved" }))
}

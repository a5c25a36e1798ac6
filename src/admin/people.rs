//! `GET /admin/users` and `GET /admin/roles`: people and roles, managed through
//! the same `directory` code (and so the same guard rails and audit rows) as
//! the `/api/users` and `/api/roles` routes. Forms post back and redirect with a
//! fixed notice or error code.

use askama::Template;
use axum::{
    extract::State,
    response::{IntoResponse, Redirect, Response},
};
use serde::Deserialize;
use serde_json::{Map, Value, json};
use uuid::Uuid;

use crate::{
    auth::{Authenticated, Me, user::UserView},
    authz::{Permission, Permit, dual::Done},
    directory::{
        membership::{self, Approve},
        roles::{self, RoleView, UpdateRole},
        users::{self, ListQuery, UpdateUser},
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

fn outcome(path: &str, result: Result<(), AppError>) -> Response {
    let code = match result {
        Ok(()) => "done=saved",
        Err(AppError::Forbidden(_)) => "error=not_allowed",
        Err(AppError::Conflict(_)) => "error=conflict",
        Err(AppError::NotFound) => "error=not_found",
        Err(AppError::Internal(e)) => return AppError::Internal(e).into_response(),
        Err(_) => "error=invalid",
    };
    Redirect::to(&format!("{path}?{code}")).into_response()
}

/// Like [`outcome`], for an operation under dual control: held, it says so.
fn held_or_done<T>(path: &str, result: Result<Done<T>, AppError>) -> Response {
    match result {
        Ok(Done::Held(_)) => Redirect::to(&format!("{path}?done=held")).into_response(),
        other => outcome(path, other.map(|_| ())),
    }
}

fn message(done: &str, error: &str) -> (Option<&'static str>, Option<&'static str>) {
    let notice = match done {
        "saved" => Some("Saved."),
        "held" => Some("Waiting for approval: a second administrator must approve this on the approvals page."),
        _ => None,
    };
    let error = match error {
        "not_allowed" => Some("Not allowed: you cannot change your own access, or hand on more than you hold."),
        "conflict" => Some("Refused: the organisation must keep an active administrator, or the name is taken."),
        "not_found" => Some("That account or role no longer exists."),
        "invalid" => Some("Check the values and try again."),
        _ => None,
    };
    (notice, error)
}

#[derive(Template)]
#[template(path = "admin_users.html")]
struct UsersPage {
    nav: Nav,
    users: Vec<UserView>,
    next: Option<String>,
    status: String,
    can_edit: bool,
    roles: Vec<String>,
    departments: Vec<String>,
    levels: Vec<String>,
    statuses: &'static [&'static str],
    notice: Option<&'static str>,
    error: Option<&'static str>,
}

impl UsersPage {
    fn same(&self, value: &str, option: &str) -> bool {
        value == option
    }

    fn primary(&self, user: &UserView) -> String {
        user.role.clone().unwrap_or_default()
    }
}

#[derive(Debug, Default, Deserialize)]
pub struct UsersQuery {
    #[serde(default)]
    status: String,
    #[serde(default)]
    after: String,
    #[serde(default)]
    done: String,
    #[serde(default)]
    error: String,
}

pub async fn users_page(
    State(state): State<AppState>,
    who: Authenticated,
    me: Me,
    permit: Permit,
    Tx(mut tx): Tx,
    ApiQuery(q): ApiQuery<UsersQuery>,
) -> Result<Response, AppError> {
    let some = |s: &str| Some(s.to_string()).filter(|s| !s.is_empty());
    let query = ListQuery { status: some(&q.status), after: some(&q.after), limit: Some(50) };
    let (users, next) = users::list(&state, &permit, &mut tx, query).await?;
    let nav = Nav::new(&me, &who, permit.subject()).waiting(&mut tx, state.clock.now()).await?;
    let roles = sqlx::query_scalar("SELECT name FROM roles ORDER BY lower(name)").fetch_all(tx.conn()).await?;
    let departments =
        sqlx::query_scalar("SELECT name FROM departments ORDER BY lower(name)").fetch_all(tx.conn()).await?;
    let levels = sqlx::query_scalar("SELECT name FROM clearance_levels ORDER BY level").fetch_all(tx.conn()).await?;
    tx.commit().await?;
    let (notice, error) = message(&q.done, &q.error);
    Ok(render(&UsersPage {
        nav,
        users,
        next,
        status: q.status,
        can_edit: permit.subject().holds(Permission::UsersEdit),
        roles,
        departments,
        levels,
        statuses: &["active", "inactive", "suspended", "pending"],
        notice,
        error,
    }))
}

/// The row's form: the new values and, hidden, the current ones, so only what
/// changed is sent (an unchanged field is not a change of one's own access).
#[derive(Debug, Deserialize)]
pub struct UserForm {
    role: String,
    department: String,
    clearance_level: String,
    status: String,
    current_role: String,
    current_department: String,
    current_clearance_level: String,
    current_status: String,
}

pub async fn update_user(
    State(state): State<AppState>,
    ClientSource(source): ClientSource,
    permit: Permit,
    Tx(tx): Tx,
    ApiPath(id): ApiPath<Uuid>,
    ApiForm(form): ApiForm<UserForm>,
) -> Response {
    let changed = |new: String, old: &str| (new != old && !new.is_empty()).then_some(new);
    let input = UpdateUser {
        username: None,
        email: None,
        password: None,
        role: changed(form.role, &form.current_role),
        department: changed(form.department, &form.current_department),
        clearance_level: changed(form.clearance_level, &form.current_clearance_level),
        status: changed(form.status, &form.current_status),
    };
    held_or_done("/admin/users", users::update(&state, &permit, &source, tx, id, input).await)
}

#[derive(Debug, Deserialize)]
pub struct ApproveForm {
    #[serde(default)]
    role: String,
}

pub async fn approve_user(
    State(state): State<AppState>,
    ClientSource(source): ClientSource,
    permit: Permit,
    Tx(tx): Tx,
    ApiPath(id): ApiPath<Uuid>,
    ApiForm(form): ApiForm<ApproveForm>,
) -> Response {
    let input = Approve { role: Some(form.role).filter(|r| !r.is_empty()) };
    let result = membership::approve(&state, &permit, &source, tx, id, input).await.map(|_| ());
    outcome("/admin/users", result)
}

pub async fn unlock_user(
    State(state): State<AppState>,
    ClientSource(source): ClientSource,
    permit: Permit,
    Tx(tx): Tx,
    ApiPath(id): ApiPath<Uuid>,
) -> Response {
    outcome("/admin/users", crate::directory::factors::unlock(&state, &permit, &source, tx, id).await)
}

pub async fn reject_user(
    State(state): State<AppState>,
    ClientSource(source): ClientSource,
    permit: Permit,
    Tx(tx): Tx,
    ApiPath(id): ApiPath<Uuid>,
) -> Response {
    outcome("/admin/users", membership::reject(&state, &permit, &source, tx, id).await)
}

/// One row of the role × permission matrix.
pub struct MatrixRow {
    pub permission: &'static str,
    /// Per role, in column order: the grant's scope, if granted.
    pub cells: Vec<(Uuid, Option<&'static str>)>,
}

#[derive(Template)]
#[template(path = "admin_roles.html")]
struct RolesPage {
    nav: Nav,
    roles: Vec<RoleView>,
    rows: Vec<MatrixRow>,
    notice: Option<&'static str>,
    error: Option<&'static str>,
}

impl RolesPage {
    fn same(&self, value: &str, option: &str) -> bool {
        value == option
    }
}

#[derive(Debug, Default, Deserialize)]
pub struct RolesQuery {
    #[serde(default)]
    done: String,
    #[serde(default)]
    error: String,
}

pub async fn roles_page(
    State(state): State<AppState>,
    who: Authenticated,
    me: Me,
    permit: Permit,
    Tx(mut tx): Tx,
    ApiQuery(q): ApiQuery<RolesQuery>,
) -> Result<Response, AppError> {
    let roles = roles::list(&state, &mut tx).await?;
    tx.commit().await?;
    let rows = Permission::ALL
        .iter()
        .map(|p| {
            let (resource, action) = p.as_str().split_once('.').expect("resource.action");
            let cells = roles
                .iter()
                .map(|r| (r.id, r.scopes.get(resource).and_then(|a| a.get(action)).map(|s| s.as_str())))
                .collect();
            MatrixRow { permission: p.as_str(), cells }
        })
        .collect();
    let nav = Nav::new(&me, &who, permit.subject());
    let (notice, error) = message(&q.done, &q.error);
    Ok(render(&RolesPage { nav, roles, rows, notice, error }))
}

/// `POST /admin/roles/{id}`: one column of the matrix, as repeated `grant`
/// fields (the checked permissions) and a `scope.<permission>` per permission.
/// It replaces the role's whole permission set, as `PUT /api/roles/{id}` does.
pub async fn update_role(
    State(state): State<AppState>,
    ClientSource(source): ClientSource,
    permit: Permit,
    Tx(tx): Tx,
    ApiPath(id): ApiPath<Uuid>,
    ApiForm(fields): ApiForm<Vec<(String, String)>>,
) -> Response {
    let granted: Vec<&str> = fields.iter().filter(|(k, _)| k == "grant").map(|(_, v)| v.as_str()).collect();
    let scope_of = |p: &str| fields.iter().find(|(k, _)| k.strip_prefix("scope.") == Some(p)).map(|(_, v)| v.as_str());
    let mut nested: Map<String, Value> = Map::new();
    for p in Permission::ALL {
        let (resource, action) = p.as_str().split_once('.').expect("resource.action");
        let value =
            if granted.contains(&p.as_str()) { json!(scope_of(p.as_str()).unwrap_or("own")) } else { json!(false) };
        nested.entry(resource).or_insert_with(|| json!({}))[action] = value;
    }
    let permissions = match serde_json::from_value(Value::Object(nested)) {
        Ok(p) => p,
        Err(_) => return outcome("/admin/roles", Err(AppError::invalid("permissions", "bad scope"))),
    };
    let input = UpdateRole {
        name: None,
        description: None,
        permissions: Some(permissions),
        session_timeout_minutes: None,
        requires_mfa: None,
        mfa_type: None,
        portal: None,
        tier: None,
    };
    held_or_done("/admin/roles", roles::update(&state, &permit, &source, tx, id, input).await)
}

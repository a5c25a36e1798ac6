//! The application: every route with who may call it, the middleware around
//! them, and serving. This is the top of the house: it imports every handler,
//! and nothing below it (handlers, capabilities, `http`) may import it; only
//! `cli` (and tests) do. `tests/layout.rs` keeps it so.

use std::{net::SocketAddr, time::Duration};

use axum::{
    Json, Router,
    extract::{DefaultBodyLimit, Request, State},
    middleware::from_fn_with_state,
    response::{IntoResponse, Response},
};
use serde_json::json;
use tokio::net::TcpListener;
use tower_http::{catch_panic::CatchPanicLayer, request_id::PropagateRequestIdLayer, trace::TraceLayer};

use crate::{
    auth,
    http::{
        AppState, RouteRule, Routes,
        apidoc::{Op, Reply},
        error::AppError,
        middleware, ratelimit,
    },
    openapi,
};

/// JSON bodies are small; file uploads stream under `FORTIFILE_MAX_UPLOAD_BYTES`.
const JSON_BODY_LIMIT: usize = 64 * 1024;

/// Every route, with who may call it. Read a line as: method, path, rule, handler;
/// `_step_up` routes also need a second-factor verification within
/// `FORTIFILE_STEP_UP_MINUTES` from users who have a factor; `.idempotent()`
/// creates honour `Idempotency-Key`.
fn routes(state: AppState) -> Routes {
    use crate::{
        admin, approvals::handlers as approvals, audit::handlers as audit, auth::mfa::handlers as mfa,
        authz::Permission::*, directory::handlers as dir, files::handlers as files, incidents::handlers as incidents,
        web,
    };
    use axum::http::Method as M;
    Routes::new(state)
        // Pages for people (HTML; anonymous browsers are sent to /login).
        .public(M::GET, "/login", web::login::page)
        .public(M::POST, "/login", web::login::submit)
        .any_session(M::POST, "/logout", web::login::logout)
        .page_second_step(M::POST, "/login/mfa", web::login::second_step)
        .page_enrolment_step_up(M::POST, "/me/mfa/form/totp-setup", web::mfa::totp_setup)
        .page_enrolment_step_up(M::POST, "/me/mfa/form/totp-confirm", web::mfa::totp_confirm)
        .page_enrolment_step_up(M::POST, "/me/mfa/form/totp-remove", web::mfa::totp_remove)
        .page_enrolment_step_up(M::POST, "/me/mfa/form/recovery-codes", web::mfa::recovery_codes)
        .page_enrolment(M::POST, "/me/mfa/form/passkeys/{id}/rename", web::mfa::passkey_rename)
        .page_enrolment_step_up(M::POST, "/me/mfa/form/passkeys/{id}/remove", web::mfa::passkey_remove)
        .page_step_up(M::POST, "/me/form/password", web::account::change_password)
        .page(M::POST, "/me/form/sessions/{id}/end", web::account::end_session)
        .page(M::POST, "/me/form/sessions/end-others", web::account::end_others)
        .page_enrolment(M::GET, "/step-up", web::mfa::step_up_page)
        .page_enrolment(M::POST, "/step-up", web::mfa::step_up)
        .public(M::GET, "/static/app.css", web::stylesheet)
        .public(M::GET, "/static/app.js", web::script)
        .page_guarded(M::GET, "/", FileDownload, web::documents::page)
        .page_stream(M::POST, "/files", FileUpload, web::documents::upload) // csrf_token in the query
        .page_guarded(M::POST, "/files/{id}/shares", FileShare, web::documents::share)
        .page_guarded(M::POST, "/files/{id}/shares/{share_id}/revoke", FileShare, web::documents::revoke)
        .page_guarded(M::GET, "/admin/users", UsersView, admin::people::users_page)
        .page_guarded_step_up(M::POST, "/admin/users/{id}", UsersEdit, admin::people::update_user)
        .page_guarded_step_up(M::POST, "/admin/users/{id}/approve", UsersEdit, admin::people::approve_user)
        .page_guarded(M::POST, "/admin/users/{id}/reject", UsersEdit, admin::people::reject_user)
        .page_guarded_step_up(M::POST, "/admin/users/{id}/unlock", UsersEdit, admin::people::unlock_user)
        .page_guarded(M::GET, "/admin/roles", AdminManageRoles, admin::people::roles_page)
        .page_guarded_step_up(M::POST, "/admin/roles/{id}", AdminManageRoles, admin::people::update_role)
        .page(M::GET, "/admin/approvals", admin::approvals::page)
        .page_step_up(M::POST, "/admin/approvals/{id}/approve", admin::approvals::approve)
        .page_step_up(M::POST, "/admin/approvals/{id}/deny", admin::approvals::deny)
        .page(M::POST, "/admin/approvals/{id}/cancel", admin::approvals::cancel)
        .page_guarded_step_up(
            M::POST,
            "/admin/approvals/policies/{operation}",
            AdminManageRoles,
            admin::approvals::change_policy,
        )
        .page_guarded(M::GET, "/admin/logs", AdminViewLogs, admin::logs::page)
        .page_guarded(M::POST, "/admin/logs/verify", AdminViewLogs, admin::integrity::verify)
        .page_guarded(M::GET, "/admin/incidents", IncidentManage, admin::incidents::list)
        .page_guarded(M::GET, "/admin/incidents/new", IncidentManage, admin::incidents::new)
        .page_guarded(M::GET, "/admin/incidents/{id}", IncidentManage, admin::incidents::detail)
        .page_guarded(M::POST, "/admin/incidents/{id}", IncidentManage, admin::incidents::change)
        // The JSON API.
        .public(M::GET, "/healthz", live)
        .public(M::GET, "/readyz", ready)
        .public(M::GET, "/api/openapi.json", openapi_json) // describes, grants nothing
        .public(M::POST, "/auth/register", auth::handlers::register) // FORTIFILE_REGISTRATION
        .public(M::POST, "/auth/login", auth::handlers::login)
        .any_session(M::POST, "/auth/logout", auth::handlers::logout)
        .session(M::GET, "/me", web::account::page) // JSON, or the account page for browsers
        .session_step_up(M::POST, "/me/password", auth::handlers::change_password)
        .session(M::GET, "/me/sessions", auth::handlers::sessions)
        .session(M::DELETE, "/me/sessions/{id}", auth::handlers::end_session)
        .session(M::POST, "/me/sessions/end-others", auth::handlers::end_other_sessions)
        .session_step_up(M::POST, "/me/api-keys", auth::handlers::create_api_key)
        .idempotent()
        .session(M::GET, "/me/api-keys", auth::handlers::api_keys)
        .session(M::DELETE, "/me/api-keys/{id}", auth::handlers::revoke_api_key)
        // The second factor: the login's second step, step-up, and one's own factors.
        .second_step(M::POST, "/auth/mfa/totp", mfa::login_totp)
        .second_step(M::POST, "/auth/mfa/recovery", mfa::login_recovery)
        .second_step(M::POST, "/auth/mfa/webauthn/start", mfa::passkey_start)
        .second_step(M::POST, "/auth/mfa/webauthn/finish", mfa::login_passkey)
        .enrolment(M::POST, "/auth/step-up", mfa::step_up)
        .enrolment(M::POST, "/auth/step-up/webauthn/start", mfa::passkey_start)
        .enrolment(M::GET, "/me/mfa", web::mfa::page) // JSON, or the page for browsers
        .enrolment_step_up(M::POST, "/me/mfa/totp/setup", mfa::totp_setup)
        .enrolment_step_up(M::POST, "/me/mfa/totp/confirm", mfa::totp_confirm)
        .enrolment_step_up(M::DELETE, "/me/mfa/totp", mfa::totp_remove)
        .enrolment_step_up(M::POST, "/me/mfa/recovery-codes", mfa::recovery_regenerate)
        .enrolment_step_up(M::POST, "/me/mfa/webauthn/register/start", mfa::passkey_register_start)
        .enrolment_step_up(M::POST, "/me/mfa/webauthn/register/finish", mfa::passkey_register_finish)
        .enrolment(M::PATCH, "/me/mfa/webauthn/{id}", mfa::passkey_rename)
        .enrolment_step_up(M::DELETE, "/me/mfa/webauthn/{id}", mfa::passkey_remove)
        .guarded(M::GET, "/api/users", UsersView, dir::list_users)
        .guarded_step_up(M::POST, "/api/users", UsersCreate, dir::create_user)
        .idempotent()
        .guarded(M::GET, "/api/users/{id}", UsersView, dir::get_user)
        .guarded_step_up(M::PUT, "/api/users/{id}", UsersEdit, dir::update_user)
        .guarded(M::DELETE, "/api/users/{id}", UsersDelete, dir::delete_user)
        .guarded_step_up(M::POST, "/api/users/{id}/approve", UsersEdit, dir::approve_user)
        .guarded_step_up(M::POST, "/api/users/{id}/mfa/reset", UsersEdit, dir::reset_mfa)
        .guarded_step_up(M::POST, "/api/users/{id}/unlock", UsersEdit, dir::unlock_user)
        .guarded(M::GET, "/api/users/{id}/sessions", UsersEdit, dir::user_sessions)
        .guarded(M::DELETE, "/api/users/{id}/sessions", UsersEdit, dir::end_user_sessions)
        .guarded(M::GET, "/api/users/{id}/api-keys", UsersEdit, dir::user_api_keys)
        .guarded(M::DELETE, "/api/users/{id}/api-keys/{key}", UsersEdit, dir::revoke_user_api_key)
        .guarded(M::POST, "/api/users/{id}/reject", UsersEdit, dir::reject_user)
        .guarded_step_up(M::POST, "/api/users/{id}/roles", AdminManageRoles, dir::assign_role)
        .guarded_step_up(M::DELETE, "/api/users/{id}/roles/{role}", AdminManageRoles, dir::revoke_role)
        .guarded(M::GET, "/api/roles", AdminManageRoles, dir::list_roles)
        .guarded_step_up(M::POST, "/api/roles", AdminManageRoles, dir::create_role)
        .idempotent()
        .guarded(M::GET, "/api/roles/{id}", AdminManageRoles, dir::get_role)
        .guarded_step_up(M::PUT, "/api/roles/{id}", AdminManageRoles, dir::update_role)
        .guarded_step_up(M::DELETE, "/api/roles/{id}", AdminManageRoles, dir::delete_role)
        .guarded(M::GET, "/api/permissions", AdminManageRoles, dir::list_permissions)
        .guarded(M::GET, "/api/departments", UsersView, dir::list_departments)
        .guarded_step_up(M::POST, "/api/departments", AdminManageRoles, dir::create_department)
        .idempotent()
        .guarded_step_up(M::PUT, "/api/departments/{id}", AdminManageRoles, dir::update_department)
        .guarded_step_up(M::DELETE, "/api/departments/{id}", AdminManageRoles, dir::delete_department)
        .guarded(M::GET, "/api/clearance-levels", UsersView, dir::list_clearances)
        .guarded_step_up(M::POST, "/api/clearance-levels", AdminManageRoles, dir::create_clearance)
        .idempotent()
        .guarded_step_up(M::PUT, "/api/clearance-levels/{id}", AdminManageRoles, dir::update_clearance)
        .guarded_step_up(M::DELETE, "/api/clearance-levels/{id}", AdminManageRoles, dir::delete_clearance)
        // Documents: every file operation is also decided per file by authz::files (MAC, then scope).
        .guarded_stream(M::POST, "/api/files", FileUpload, files::upload) // FORTIFILE_MAX_UPLOAD_BYTES
        .idempotent()
        .guarded(M::GET, "/api/files", FileDownload, files::list)
        .guarded(M::GET, "/api/files/{id}", FileDownload, files::get)
        .guarded(M::GET, "/api/files/{id}/download", FileDownload, files::download)
        .guarded_step_up(M::PATCH, "/api/files/{id}", FileClassify, files::classify)
        .guarded(M::DELETE, "/api/files/{id}", FileDelete, files::delete)
        .guarded(M::POST, "/api/files/{id}/shares", FileShare, files::share)
        .idempotent()
        .guarded(M::GET, "/api/files/{id}/shares", FileShare, files::list_shares)
        .guarded(M::DELETE, "/api/files/{id}/shares/{share_id}", FileShare, files::unshare)
        // The security dashboard's data and incident tracking (seed 000 §5, §6).
        .guarded(M::GET, "/api/audit-logs", AdminViewLogs, audit::list)
        .guarded(M::GET, "/api/audit-logs/highlights", AdminViewLogs, audit::highlights)
        .guarded_step_up(M::GET, "/api/audit-logs/export.csv", AdminViewLogs, audit::export_csv)
        .guarded_step_up(M::GET, "/api/audit-logs/export.jsonl", AdminViewLogs, audit::export_jsonl)
        .guarded(M::GET, "/api/audit-logs/checkpoints", AdminViewLogs, audit::checkpoints)
        .guarded(M::GET, "/api/audit-logs/chain", AdminViewLogs, audit::chain)
        .guarded(M::POST, "/api/audit-logs/verify", AdminViewLogs, audit::verify)
        .guarded_step_up(M::POST, "/api/audit-logs/purge", AdminManageRoles, audit::purge) // audit.purge
        .guarded_step_up(M::PUT, "/api/audit-logs/legal-hold", AdminManageRoles, audit::legal_hold) // audit.legal_hold
        .guarded(M::POST, "/admin/incidents", IncidentManage, incidents::create) // JSON, or the page's form
        .idempotent()
        .guarded(M::PATCH, "/admin/incidents/{id}", IncidentManage, incidents::update)
        .guarded(M::GET, "/api/incidents", IncidentManage, incidents::list)
        .guarded(M::GET, "/api/incidents/{id}", IncidentManage, incidents::get)
        // Dual control: eligibility to decide a request is the policy's, checked per request;
        // people decide (never API keys), after a recent step-up.
        .session(M::GET, "/api/approvals", approvals::list)
        .session(M::GET, "/api/approvals/{id}", approvals::get)
        .session_step_up(M::POST, "/api/approvals/{id}/approve", approvals::approve)
        .idempotent()
        .session_step_up(M::POST, "/api/approvals/{id}/deny", approvals::deny)
        .idempotent()
        .session(M::POST, "/api/approvals/{id}/cancel", approvals::cancel)
        .idempotent()
        .guarded(M::GET, "/api/approval-policies", AdminManageRoles, approvals::list_policies)
        .guarded(M::GET, "/api/approval-policies/{operation}", AdminManageRoles, approvals::get_policy)
        .guarded_step_up(M::PUT, "/api/approval-policies/{operation}", AdminManageRoles, approvals::put_policy)
}

/// Every described JSON operation: each handler module's, and the server's own.
fn operations() -> Vec<Op> {
    use crate::{
        approvals::handlers as approvals, audit::handlers as audit, auth::handlers as auth, auth::mfa::handlers as mfa,
        directory::handlers as dir, files::handlers as files, incidents::handlers as incidents,
    };
    let server = vec![
        Op::get("/healthz", "The process is alive").answers(200, Reply::new().field::<String>("status")),
        Op::get("/readyz", "The instance takes work and its database answers")
            .answers(200, Reply::new().field::<String>("status"))
            .error(503, "The database does not answer, or the instance is shutting down"),
        Op::get("/api/openapi.json", "This description").answers(200, Reply::new().describe("OpenAPI 3.1")),
    ];
    [server, auth::api(), mfa::api(), dir::api(), files::api(), audit::api(), incidents::api(), approvals::api()]
        .concat()
}

/// The OpenAPI description of the JSON API, built from the route table.
pub fn openapi(state: AppState) -> serde_json::Value {
    let cookie = auth::session::cookie_name(&state.config);
    openapi::document(&route_table(state), operations(), cookie)
}

/// `GET /api/openapi.json`.
async fn openapi_json(State(state): State<AppState>) -> Response {
    Json(openapi(state)).into_response()
}

/// The declared routes, as data (for tests and documentation).
pub fn route_table(state: AppState) -> Vec<RouteRule> {
    routes(state).into_parts().1
}

pub fn router(state: AppState) -> Router {
    let (routes, _) = routes(state.clone()).into_parts();
    routes
        .fallback(crate::web::not_found)
        .method_not_allowed_fallback(|| async { AppError::MethodNotAllowed })
        .layer(from_fn_with_state(state.clone(), middleware::csrf_guard))
        .layer(DefaultBodyLimit::max(JSON_BODY_LIMIT))
        .layer(from_fn_with_state(state.clone(), ratelimit::limit))
        .layer(from_fn_with_state(state.clone(), middleware::security_headers))
        .layer(CatchPanicLayer::custom(|_| AppError::Internal(anyhow::anyhow!("a handler panicked")).into_response()))
        .layer(PropagateRequestIdLayer::new(middleware::REQUEST_ID))
        .layer(TraceLayer::new_for_http().make_span_with(|req: &Request| {
            let id = req.headers().get("x-request-id").and_then(|v| v.to_str().ok()).unwrap_or("-");
            // The path only: query strings are never logged.
            tracing::info_span!("request", request_id = %id, method = %req.method(), path = %req.uri().path())
        }))
        .layer(from_fn_with_state(state.clone(), middleware::request_id))
        .layer(axum::middleware::from_fn(middleware::record_metrics))
        .with_state(state)
}

/// `GET /healthz`: the process is alive.
async fn live() -> Response {
    Json(json!({ "status": "ok" })).into_response()
}

/// `GET /readyz`: the instance wants work (it is not shutting down) and the
/// database answers.
async fn ready(State(state): State<AppState>) -> Response {
    if state.readiness.is_draining() {
        return AppError::Draining.into_response();
    }
    match tokio::time::timeout(Duration::from_secs(3), state.db.ping()).await {
        Ok(Ok(())) => Json(json!({ "status": "ready" })).into_response(),
        _ => AppError::Unavailable.into_response(),
    }
}

/// Serves `state` on `listener` until `shutdown` resolves; then `/readyz`
/// answers 503 for `FORTIFILE_SHUTDOWN_DRAIN_SECONDS` while everything else is
/// still served, then the listener closes and in-flight requests finish.
pub async fn serve(
    listener: TcpListener,
    state: AppState,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let readiness = state.readiness.clone();
    let drain = state.config.ops.shutdown_drain;
    let app = router(state).into_make_service_with_connect_info::<SocketAddr>();
    let drained = async move {
        shutdown.await;
        readiness.drain();
        tracing::info!(seconds = drain.as_secs(), "draining: /readyz answers 503 until the balancer stops sending");
        tokio::time::sleep(drain).await;
        tracing::info!("no longer accepting connections: finishing in-flight requests");
    };
    axum::serve(listener, app).with_graceful_shutdown(drained).await
}

//! Server-rendered pages for people: auto-escaping askama templates under
//! `templates/`, one stylesheet and one small script under `static/` (compiled
//! into the binary, so nothing comes from elsewhere), and a Content-Security-
//! Policy that allows only our own script and style: no inline script at all.
//!
//! Pages are declared in `http::routes` with `page`/`page_guarded`: an
//! anonymous browser is redirected to `/login?next=…` (same-site targets only),
//! a missing permission shows the 403 page and is recorded as `rbac.denied`,
//! and any other error is shown as a page with its status ([`html_errors`]).
//! Forms post URL-encoded with a `csrf_token` field; the upload form, which is
//! multipart and streamed, carries the token in its action's query string.

pub mod account;
pub mod documents;
pub mod login;
pub mod mfa;

use askama::Template;
use axum::{
    extract::Request,
    http::{HeaderMap, HeaderValue, StatusCode, Uri, header},
    middleware::Next,
    response::{Html, IntoResponse, Redirect, Response},
};

use crate::{
    auth::{Authenticated, Me},
    authz::{Permission, Subject},
    http::error::{AppError, PublicMessage},
};

/// The policy of every page: our own script, style and images; forms and
/// fetches to ourselves; never framed.
pub const PAGE_CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; \
     connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'; object-src 'none'";

/// Renders `page` with `status` and the page CSP.
pub fn render_status(status: StatusCode, page: &impl Template) -> Response {
    match page.render() {
        Ok(body) => {
            let mut response = (status, Html(body)).into_response();
            response.headers_mut().insert(header::CONTENT_SECURITY_POLICY, HeaderValue::from_static(PAGE_CSP));
            response
        }
        Err(e) => AppError::Internal(anyhow::anyhow!("rendering a page: {e}")).into_response(),
    }
}

pub fn render(page: &impl Template) -> Response {
    render_status(StatusCode::OK, page)
}

/// Where to go after signing in: a path on this site, never another origin
/// (`//host`, `/\host`, schemes and control characters are refused).
pub fn safe_next(next: Option<&str>) -> String {
    match next {
        Some(n)
            if n.starts_with('/')
                && !n.starts_with("//")
                && !n.starts_with("/\\")
                && !n.chars().any(|c| c.is_control() || c == '\\') =>
        {
            n.to_string()
        }
        _ => "/".to_string(),
    }
}

/// The login page, remembering where the browser was going.
pub fn to_login(uri: &Uri) -> Response {
    let target = uri.path_and_query().map(|pq| pq.as_str()).unwrap_or("/");
    let next: String = url::form_urlencoded::byte_serialize(target.as_bytes()).collect();
    Redirect::to(&format!("/login?next={next}")).into_response()
}

/// To the step-up page, and from there back to the page the refused form was on
/// (its `Referer`, when it is one of ours).
pub fn to_step_up(headers: &HeaderMap) -> Response {
    let back = headers.get(header::REFERER).and_then(|v| v.to_str().ok()).and_then(|r| url::Url::parse(r).ok()).map(
        |u| match u.query() {
            Some(q) => format!("{}?{q}", u.path()),
            None => u.path().to_string(),
        },
    );
    let next: String = url::form_urlencoded::byte_serialize(safe_next(back.as_deref()).as_bytes()).collect();
    Redirect::to(&format!("/step-up?next={next}")).into_response()
}

#[derive(Template)]
#[template(path = "forbidden.html")]
struct Forbidden;

#[derive(Template)]
#[template(path = "error.html")]
struct ErrorPage<'a> {
    title: &'a str,
    message: &'a str,
    /// Shown on a 500, so the person can quote it and an administrator can find
    /// the log line.
    reference: Option<&'a str>,
}

/// Page routes answer errors as pages: a response that carries an error's
/// public message ([`PublicMessage`]) becomes the error page with the same
/// status, unless the caller asked for JSON (the upload script does).
pub async fn html_errors(req: Request, next: Next) -> Response {
    let wants_json = accepts(req.headers(), "application/json");
    let request_id = req.headers().get("x-request-id").and_then(|v| v.to_str().ok()).map(str::to_owned);
    let response = next.run(req).await;
    let status = response.status();
    if wants_json || !(status.is_client_error() || status.is_server_error()) {
        return response;
    }
    let Some(PublicMessage(message)) = response.extensions().get::<PublicMessage>().cloned() else {
        return response;
    };
    let title = status.canonical_reason().unwrap_or("Error");
    let reference = if status.is_server_error() { request_id.as_deref() } else { None };
    render_status(status, &ErrorPage { title, message: &message, reference })
}

/// Whether the request's `Accept` names `media` (the upload script asks for
/// `application/json`, browsers navigating ask for `text/html`).
pub fn accepts(headers: &HeaderMap, media: &str) -> bool {
    headers.get(header::ACCEPT).and_then(|v| v.to_str().ok()).is_some_and(|a| a.contains(media))
}

/// Any unknown address: the error page for a browser (it asks for HTML), the
/// JSON error for everyone else.
pub async fn not_found(headers: HeaderMap) -> Response {
    if accepts(&headers, "text/html") {
        let message = AppError::NotFound.to_string();
        let page = ErrorPage { title: "Not Found", message: &message, reference: None };
        render_status(StatusCode::NOT_FOUND, &page)
    } else {
        AppError::NotFound.into_response()
    }
}

/// The 403 page.
pub fn forbidden_page() -> Response {
    render_status(StatusCode::FORBIDDEN, &Forbidden)
}

/// What the page header shows: who is signed in, the logout form's token, and
/// the links this user may follow.
pub struct Nav {
    pub username: String,
    pub csrf: String,
    pub view_logs: bool,
    pub incidents: bool,
    pub users: bool,
    pub roles: bool,
    /// Dual-control requests waiting for this user's approval (see [`Nav::waiting`]).
    pub approvals: i64,
    user_id: uuid::Uuid,
}

impl Nav {
    /// This header with the count of requests waiting for the user to approve.
    pub async fn waiting(
        mut self,
        tx: &mut crate::db::TenantTx,
        now: time::OffsetDateTime,
    ) -> Result<Nav, sqlx::Error> {
        self.approvals = crate::approvals::waiting_for(tx, self.user_id, now).await?;
        Ok(self)
    }

    /// The header of a page that needs no permission (MFA enrolment, step-up):
    /// who is signed in and the logout form, no other links.
    pub fn plain(me: &Me, who: &Authenticated) -> Nav {
        Nav {
            username: me.0.username.clone(),
            csrf: who.csrf_token(),
            view_logs: false,
            incidents: false,
            users: false,
            roles: false,
            approvals: 0,
            user_id: who.user_id,
        }
    }

    /// The header for the signed-in user, from what the request's first
    /// statement found (no query of its own).
    pub fn new(me: &Me, who: &Authenticated, subject: &Subject) -> Nav {
        Nav {
            username: me.0.username.clone(),
            csrf: who.csrf_token(),
            view_logs: subject.holds(Permission::AdminViewLogs),
            incidents: subject.holds(Permission::IncidentManage),
            users: subject.holds(Permission::UsersView),
            roles: subject.holds(Permission::AdminManageRoles),
            approvals: 0,
            user_id: who.user_id,
        }
    }
}

/// `GET /static/app.css`
pub async fn stylesheet() -> Response {
    asset("text/css; charset=utf-8", include_str!("../../static/app.css"))
}

/// `GET /static/app.js`: the one script (upload progress, badge colours, passkeys).
pub async fn script() -> Response {
    asset("text/javascript; charset=utf-8", include_str!("../../static/app.js"))
}

fn asset(content_type: &'static str, body: &'static str) -> Response {
    let mut response = body.into_response();
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("public, max-age=3600"));
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_same_site_next_targets_are_followed() {
        assert_eq!(safe_next(Some("/admin/logs?action=auth.login")), "/admin/logs?action=auth.login");
        for bad in ["//evil.example", "/\\evil.example", "https://evil.example", "javascript:alert(1)", "/a\r\nb", ""] {
            assert_eq!(safe_next(Some(bad)), "/", "{bad:?}");
        }
        assert_eq!(safe_next(None), "/");
    }
}

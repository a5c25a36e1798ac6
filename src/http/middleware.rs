//! Cross-cutting request handling: request ids, security headers on every
//! response, CSRF and Origin checks on every unsafe request, request metrics.

use std::net::SocketAddr;

use axum::{
    body::{Body, to_bytes},
    extract::{ConnectInfo, MatchedPath, Request, State},
    http::{HeaderMap, HeaderName, HeaderValue, Method, header},
    middleware::Next,
    response::{IntoResponse, Response},
};
use url::Url;
use uuid::Uuid;

use super::{
    AppState,
    client::{is_trusted_proxy, source_of},
    error::AppError,
};
use crate::{
    auth::{account, session},
    config::Config,
};

pub const CSRF_HEADER: &str = "x-csrf-token";
/// Unsafe routes that are used without a session: only the Origin check applies.
const SESSIONLESS: &[&str] = &["/auth/login", "/auth/register", "/login"];
/// Largest form body read to find a `csrf_token` field.
const MAX_FORM_BYTES: usize = 64 * 1024;

pub const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");
/// The longest request id taken from a trusted proxy.
const MAX_REQUEST_ID: usize = 64;

/// Gives every request its id, which every log line of the request, the
/// response and a 500's page carry. The id is ours (a fresh UUID): a client's
/// `X-Request-Id` is replaced, so nobody can forge log fields with it. Only a
/// trusted proxy (`FORTIFILE_TRUSTED_PROXIES`) may pass its own id on, and only
/// as a short token of letters, digits, `-`, `_`, `.` and `:`.
pub async fn request_id(State(state): State<AppState>, mut req: Request, next: Next) -> Response {
    let peer = req.extensions().get::<ConnectInfo<SocketAddr>>().map(|c| c.0.ip());
    let from_proxy = peer.is_some_and(|ip| is_trusted_proxy(ip, &state.config.trusted_proxies));
    let given = req
        .headers()
        .get(&REQUEST_ID)
        .filter(|_| from_proxy)
        .and_then(|v| v.to_str().ok())
        .filter(|v| is_safe_token(v))
        .and_then(|v| HeaderValue::from_str(v).ok());
    let id = given
        .unwrap_or_else(|| HeaderValue::from_str(&Uuid::new_v4().to_string()).expect("a UUID is a valid header value"));
    req.headers_mut().insert(REQUEST_ID, id);
    next.run(req).await
}

/// Counts and times every answered request by its route pattern (metrics).
/// Layered inside the router, where the matched pattern is known; a path that
/// matched no route is counted as `unmatched`.
pub async fn record_metrics(req: Request, next: Next) -> Response {
    let started = std::time::Instant::now();
    // The method is the client's: anything unusual is one label, not a new series.
    let method = match *req.method() {
        Method::GET => "GET",
        Method::HEAD => "HEAD",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::PATCH => "PATCH",
        Method::DELETE => "DELETE",
        Method::OPTIONS => "OPTIONS",
        _ => "other",
    };
    let route = req.extensions().get::<MatchedPath>().map(|m| m.as_str().to_owned());
    let res = next.run(req).await;
    crate::telemetry::request(
        method,
        route.as_deref().unwrap_or("unmatched"),
        res.status().as_u16(),
        started.elapsed(),
    );
    res
}

fn is_safe_token(id: &str) -> bool {
    (1..=MAX_REQUEST_ID).contains(&id.len())
        && id.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b':'))
}

/// Security headers, set in one place for every response. A handler that needs a
/// different value (an HTML page's CSP, say) sets its own and it is kept.
///
/// While the instance drains (SIGTERM), every answer also closes its
/// connection, so that a balancer keeps no idle connection to an instance
/// about to stop: when the listener closes, a balancer only meets refused
/// connections, which it can safely try elsewhere, never a request cut off on
/// a keep-alive connection it was reusing. (One layer for both: each layer
/// costs every request an allocation and a move of the future it wraps.)
pub async fn security_headers(State(state): State<AppState>, req: Request, next: Next) -> Response {
    let mut res = next.run(req).await;
    let h = res.headers_mut();
    if state.readiness.is_draining() {
        h.insert(header::CONNECTION, HeaderValue::from_static("close"));
    }
    let mut default = |name: HeaderName, value: &'static str| {
        if !h.contains_key(&name) {
            h.insert(name, HeaderValue::from_static(value));
        }
    };
    default(header::X_CONTENT_TYPE_OPTIONS, "nosniff");
    default(header::X_FRAME_OPTIONS, "DENY");
    // `same-origin`, not `no-referrer`: under `no-referrer` browsers send `Origin: null`
    // on same-origin form posts, which the Origin check must refuse.
    default(header::REFERRER_POLICY, "same-origin");
    default(
        header::CONTENT_SECURITY_POLICY,
        "default-src 'none'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'; object-src 'none'",
    );
    default(HeaderName::from_static("cross-origin-opener-policy"), "same-origin");
    default(HeaderName::from_static("cross-origin-resource-policy"), "same-origin");
    default(HeaderName::from_static("permissions-policy"), "camera=(), microphone=(), geolocation=(), payment=()");
    default(header::CACHE_CONTROL, "no-store");
    if state.config.secure_cookies() {
        default(header::STRICT_TRANSPORT_SECURITY, "max-age=63072000; includeSubDomains");
    }
    res
}

/// Refuses unsafe requests from another origin, and unsafe requests carrying a
/// session cookie without that session's CSRF token (header `X-CSRF-Token`, a
/// `csrf_token` field of a URL-encoded form, or for a streamed multipart form a
/// `csrf_token` query parameter).
pub async fn csrf_guard(State(state): State<AppState>, req: Request, next: Next) -> Response {
    if matches!(*req.method(), Method::GET | Method::HEAD | Method::OPTIONS) {
        return next.run(req).await;
    }
    if let Some(origin) = req.headers().get(header::ORIGIN)
        && !origin_allowed(&state.config, origin, req.headers())
    {
        // A forged request riding on a real session is recorded like a missing token.
        if let Some(cookie) = session::from_headers(&state.config, req.headers()) {
            let (parts, _) = req.into_parts();
            let source = source_of(&parts, &state.config);
            let (method, path) = (parts.method.as_str(), parts.uri.path());
            if let Err(e) = account::record_csrf_denial(&state, &source, &cookie, method, path, "origin").await {
                return e.into_response();
            }
        }
        return AppError::forbidden("Cross-origin request refused").into_response();
    }
    if SESSIONLESS.contains(&req.uri().path()) {
        return next.run(req).await;
    }
    let Some(cookie) = session::from_headers(&state.config, req.headers()) else {
        // No session: nothing to forge. Routes that need one answer 401.
        return next.run(req).await;
    };
    let header_token = req.headers().get(CSRF_HEADER).and_then(|v| v.to_str().ok());
    if header_token.is_some_and(|t| cookie.csrf_matches(t)) {
        return next.run(req).await;
    }
    let header_given = header_token.is_some();
    // A multipart form (the upload page without script) is streamed, so its token
    // travels in the action's query string instead of a body field.
    let is_multipart = req
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|ct| ct.starts_with("multipart/form-data"));
    if !header_given && is_multipart {
        let query = req.uri().query().unwrap_or("");
        let token = url::form_urlencoded::parse(query.as_bytes()).find(|(k, _)| k == "csrf_token").map(|(_, v)| v);
        if token.is_some_and(|t| cookie.csrf_matches(&t)) {
            return next.run(req).await;
        }
    }
    let is_form = req
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|ct| ct.starts_with("application/x-www-form-urlencoded"));
    let (parts, body) = req.into_parts();
    if !header_given && is_form {
        let Ok(bytes) = to_bytes(body, MAX_FORM_BYTES).await else {
            return AppError::PayloadTooLarge.into_response();
        };
        let field = url::form_urlencoded::parse(&bytes).find(|(k, _)| k == "csrf_token").map(|(_, v)| v);
        if field.is_some_and(|t| cookie.csrf_matches(&t)) {
            return next.run(Request::from_parts(parts, Body::from(bytes))).await;
        }
    }
    let source = source_of(&parts, &state.config);
    let (method, path) = (parts.method.as_str(), parts.uri.path());
    if let Err(e) = account::record_csrf_denial(&state, &source, &cookie, method, path, "token").await {
        return e.into_response();
    }
    AppError::forbidden("Missing or invalid CSRF token").into_response()
}

/// Same-origin: the configured public origin, or else the request's own Host.
fn origin_allowed(config: &Config, origin: &HeaderValue, headers: &HeaderMap) -> bool {
    let Ok(origin) = origin.to_str() else { return false };
    if let Some(allowed) = config.allowed_origin() {
        return origin.eq_ignore_ascii_case(&allowed);
    }
    let Some(host) = headers.get(header::HOST).and_then(|h| h.to_str().ok()) else { return false };
    let Ok(url) = Url::parse(origin) else { return false };
    if !matches!(url.scheme(), "http" | "https") {
        return false;
    }
    let origin_host = match (url.host_str(), url.port()) {
        (Some(h), Some(p)) => format!("{h}:{p}"),
        (Some(h), None) => h.to_string(),
        (None, _) => return false,
    };
    origin_host.eq_ignore_ascii_case(host)
}

//! The route builder and the guard: the spine of every request that needs a
//! session.
//!
//! Every route is declared through [`Routes`], with who may call it on the same
//! line: `public`, `session` (a live session), or `guarded` by a [`Permission`];
//! which stages of the second factor it admits (a full session by default;
//! `second_step` routes only a session waiting for its second factor,
//! `enrolment` routes also one held in MFA enrolment); and, with `_step_up`,
//! that it needs a second-factor verification within `FORTIFILE_STEP_UP_MINUTES`.
//! The declarations are kept as data ([`RouteRule`]) so tests can walk the real
//! table (the RBAC matrix test does).
//!
//! For every route that is not public, the guard opens the request's one
//! transaction: it reads the (small) body first, so no connection waits on a
//! slow client; opens the session in the transaction (`auth::extractor::open`);
//! decides the route's permission there (a refusal is `rbac.denied`, committed
//! with the 403); and hands the open transaction to the handler ([`Tx`]), which
//! does its reads and writes in it and commits it. A handler that needs no more
//! than the session (`/me`) leaves it to the guard, which commits after it.
//! Streamed routes (uploads) get the decision but not the transaction: they
//! decide again in each transaction of their own.

use axum::{
    Router,
    body::{Body, to_bytes},
    extract::{DefaultBodyLimit, FromRequestParts, MatchedPath, Request, State},
    handler::Handler,
    http::{Method, request::Parts},
    middleware::{Next, from_fn, from_fn_with_state},
    response::{IntoResponse, Response},
    routing::{MethodFilter, MethodRouter, on},
};

use std::sync::{Arc, Mutex};

use super::{AppState, client::source_of, error::AppError, idempotency::Idempotency};
use crate::{
    auth::{
        extractor::{Opened, open, open_key},
        mfa::Stage,
        session,
    },
    authz::{self, Permission, Permit},
    db::TenantTx,
};

/// Who may call a route.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// Anyone.
    Public,
    /// Anyone with a live session.
    Session,
    /// A live session whose user holds the permission now.
    Guarded(Permission),
}

/// Which sessions, by the stage of their second factor, a route admits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admits {
    /// Only full sessions (the default).
    Full,
    /// Full sessions and those held in MFA enrolment (`/me/mfa`).
    Enrolment,
    /// Only sessions waiting for their second factor (the login's second step).
    SecondStep,
    /// Every session (logout).
    Any,
}

impl Admits {
    fn admits(self, stage: Stage) -> bool {
        matches!(
            (self, stage),
            (Admits::Any, _)
                | (Admits::Full, Stage::Full)
                | (Admits::Enrolment, Stage::Full | Stage::Enrolment)
                | (Admits::SecondStep, Stage::Pending)
        )
    }
}

/// One declared route.
#[derive(Debug, Clone)]
pub struct RouteRule {
    pub method: Method,
    pub path: &'static str,
    pub access: Access,
    pub admits: Admits,
    /// Needs a recent second-factor verification (from users who have a factor).
    pub step_up: bool,
    /// A page for browsers: without a session it redirects to the login page,
    /// and a refusal is the HTML 403 page (API routes answer 401/403 JSON).
    pub html: bool,
    /// A create that honours `Idempotency-Key` (see [`super::idempotency`]).
    pub idempotent: bool,
}

/// A router under construction, with the rules it was built from.
pub struct Routes {
    state: AppState,
    router: Router<AppState>,
    rules: Vec<RouteRule>,
    /// The route declared last, finished when the next one is declared, so a
    /// modifier such as [`Routes::idempotent`] still applies to it.
    last: Option<(MethodRouter<AppState>, Kind)>,
}

impl Routes {
    pub fn new(state: AppState) -> Self {
        Routes { state, router: Router::new(), rules: Vec::new(), last: None }
    }

    /// The route declared just before creates something and honours
    /// `Idempotency-Key`: a retry with the same key gets the first answer.
    pub fn idempotent(mut self) -> Self {
        let (rule, (_, kind)) = match (self.rules.last_mut(), self.last.as_mut()) {
            (Some(rule), Some(last)) => (rule, last),
            _ => panic!("idempotent() follows a route"),
        };
        assert!(
            rule.method == Method::POST && rule.access != Access::Public && !rule.html,
            "idempotent(): API creates"
        );
        rule.idempotent = true;
        kind.idempotent = true;
        self
    }

    pub fn public<H, T>(self, method: Method, path: &'static str, handler: H) -> Self
    where
        H: Handler<T, AppState>,
        T: 'static,
    {
        self.add(method, path, Access::Public, handler)
    }

    /// The handler must take [`Authenticated`], which answers 401 without a session.
    pub fn session<H, T>(self, method: Method, path: &'static str, handler: H) -> Self
    where
        H: Handler<T, AppState>,
        T: 'static,
    {
        self.add(method, path, Access::Session, handler)
    }

    /// A session route that also needs a recent step-up (changing one's password).
    pub fn session_step_up<H, T>(self, method: Method, path: &'static str, handler: H) -> Self
    where
        H: Handler<T, AppState>,
        T: 'static,
    {
        self.add_with(method, path, Access::Session, handler, Kind { step_up: true, ..Kind::API })
    }

    /// A page form for anyone signed in that also needs a recent step-up.
    pub fn page_step_up<H, T>(self, method: Method, path: &'static str, handler: H) -> Self
    where
        H: Handler<T, AppState>,
        T: 'static,
    {
        self.add_with(method, path, Access::Session, handler, Kind { step_up: true, ..Kind::PAGE })
    }

    /// A session route that any session reaches, whatever its second factor's stage (logout).
    pub fn any_session<H, T>(self, method: Method, path: &'static str, handler: H) -> Self
    where
        H: Handler<T, AppState>,
        T: 'static,
    {
        self.add_with(method, path, Access::Session, handler, Kind { admits: Admits::Any, ..Kind::API })
    }

    /// A route of the login's second step: only a session waiting for its second factor.
    pub fn second_step<H, T>(self, method: Method, path: &'static str, handler: H) -> Self
    where
        H: Handler<T, AppState>,
        T: 'static,
    {
        self.add_with(method, path, Access::Session, handler, Kind { admits: Admits::SecondStep, ..Kind::API })
    }

    /// A route of MFA enrolment: full sessions and those held until they enrol.
    pub fn enrolment<H, T>(self, method: Method, path: &'static str, handler: H) -> Self
    where
        H: Handler<T, AppState>,
        T: 'static,
    {
        self.add_with(method, path, Access::Session, handler, Kind { admits: Admits::Enrolment, ..Kind::API })
    }

    /// An enrolment route that also needs a recent step-up (changing factors).
    pub fn enrolment_step_up<H, T>(self, method: Method, path: &'static str, handler: H) -> Self
    where
        H: Handler<T, AppState>,
        T: 'static,
    {
        let kind = Kind { admits: Admits::Enrolment, step_up: true, ..Kind::API };
        self.add_with(method, path, Access::Session, handler, kind)
    }

    /// A guarded route that also needs a recent step-up.
    pub fn guarded_step_up<H, T>(self, method: Method, path: &'static str, permission: Permission, handler: H) -> Self
    where
        H: Handler<T, AppState>,
        T: 'static,
    {
        self.add_with(method, path, Access::Guarded(permission), handler, Kind { step_up: true, ..Kind::API })
    }

    pub fn guarded<H, T>(self, method: Method, path: &'static str, permission: Permission, handler: H) -> Self
    where
        H: Handler<T, AppState>,
        T: 'static,
    {
        self.add(method, path, Access::Guarded(permission), handler)
    }

    /// A guarded route whose body is streamed and limited by its handler (file
    /// uploads) instead of the router's small default body limit.
    pub fn guarded_stream<H, T>(self, method: Method, path: &'static str, permission: Permission, handler: H) -> Self
    where
        H: Handler<T, AppState>,
        T: 'static,
    {
        self.add_with(method, path, Access::Guarded(permission), handler, Kind { stream: true, ..Kind::API })
    }

    /// A page for anyone signed in (others are sent to the login page).
    pub fn page<H, T>(self, method: Method, path: &'static str, handler: H) -> Self
    where
        H: Handler<T, AppState>,
        T: 'static,
    {
        self.add_with(method, path, Access::Session, handler, Kind::PAGE)
    }

    /// A page guarded by `permission`: the login page without a session, the
    /// HTML 403 page (and `rbac.denied`) without the permission.
    pub fn page_guarded<H, T>(self, method: Method, path: &'static str, permission: Permission, handler: H) -> Self
    where
        H: Handler<T, AppState>,
        T: 'static,
    {
        self.add_with(method, path, Access::Guarded(permission), handler, Kind::PAGE)
    }

    /// A page of MFA enrolment (`/me/mfa`'s forms, the step-up page): full
    /// sessions and those held until they enrol.
    pub fn page_enrolment<H, T>(self, method: Method, path: &'static str, handler: H) -> Self
    where
        H: Handler<T, AppState>,
        T: 'static,
    {
        self.add_with(method, path, Access::Session, handler, Kind { admits: Admits::Enrolment, ..Kind::PAGE })
    }

    /// An enrolment page's form that also needs a recent step-up.
    pub fn page_enrolment_step_up<H, T>(self, method: Method, path: &'static str, handler: H) -> Self
    where
        H: Handler<T, AppState>,
        T: 'static,
    {
        let kind = Kind { admits: Admits::Enrolment, step_up: true, ..Kind::PAGE };
        self.add_with(method, path, Access::Session, handler, kind)
    }

    /// The login page's second step: a form for a session waiting for its second factor.
    pub fn page_second_step<H, T>(self, method: Method, path: &'static str, handler: H) -> Self
    where
        H: Handler<T, AppState>,
        T: 'static,
    {
        self.add_with(method, path, Access::Session, handler, Kind { admits: Admits::SecondStep, ..Kind::PAGE })
    }

    /// A guarded page (a form post) that also needs a recent step-up.
    pub fn page_guarded_step_up<H, T>(
        self,
        method: Method,
        path: &'static str,
        permission: Permission,
        handler: H,
    ) -> Self
    where
        H: Handler<T, AppState>,
        T: 'static,
    {
        self.add_with(method, path, Access::Guarded(permission), handler, Kind { step_up: true, ..Kind::PAGE })
    }

    /// A guarded page whose form posts a file (multipart, streamed).
    pub fn page_stream<H, T>(self, method: Method, path: &'static str, permission: Permission, handler: H) -> Self
    where
        H: Handler<T, AppState>,
        T: 'static,
    {
        self.add_with(method, path, Access::Guarded(permission), handler, Kind { stream: true, ..Kind::PAGE })
    }

    fn add<H, T>(self, method: Method, path: &'static str, access: Access, handler: H) -> Self
    where
        H: Handler<T, AppState>,
        T: 'static,
    {
        self.add_with(method, path, access, handler, Kind::API)
    }

    fn add_with<H, T>(mut self, method: Method, path: &'static str, access: Access, handler: H, kind: Kind) -> Self
    where
        H: Handler<T, AppState>,
        T: 'static,
    {
        self.finish_last();
        let filter = MethodFilter::try_from(method.clone()).expect("routes use standard methods");
        self.last = Some((on(filter, handler), kind));
        self.rules.push(RouteRule {
            method,
            path,
            access,
            admits: kind.admits,
            step_up: kind.step_up,
            html: kind.html,
            idempotent: false,
        });
        self
    }

    /// Puts the route declared last, with its guard, into the router.
    fn finish_last(&mut self) {
        let (Some((mut route, kind)), Some(rule)) = (self.last.take(), self.rules.last()) else { return };
        if kind.stream {
            route = route.layer(DefaultBodyLimit::disable());
        }
        let permission = match rule.access {
            Access::Guarded(permission) => Some(permission),
            _ => None,
        };
        // Every route but a public one passes the guard: it opens the session
        // (and sends a browser without one to the login page).
        if rule.access != Access::Public {
            let guard = Guard { state: self.state.clone(), permission, kind };
            route = route.route_layer(from_fn_with_state(guard, enforce));
        }
        if kind.html {
            // Outside the guard, so its errors are pages too.
            route = route.layer(from_fn(crate::web::html_errors));
        }
        self.router = std::mem::take(&mut self.router).route(rule.path, route);
    }

    pub fn into_parts(mut self) -> (Router<AppState>, Vec<RouteRule>) {
        self.finish_last();
        (self.router, self.rules)
    }
}

#[derive(Clone, Copy)]
struct Kind {
    /// The handler streams and limits the body itself.
    stream: bool,
    html: bool,
    admits: Admits,
    step_up: bool,
    idempotent: bool,
}

impl Kind {
    const API: Kind = Kind { stream: false, html: false, admits: Admits::Full, step_up: false, idempotent: false };
    const PAGE: Kind = Kind { html: true, ..Kind::API };
}

#[derive(Clone)]
struct Guard {
    state: AppState,
    /// `None`: a route that needs only a session.
    permission: Option<Permission>,
    kind: Kind,
}

/// The largest body the guard reads before opening the transaction (JSON and
/// forms); streamed routes are limited by their handlers.
pub const BODY_LIMIT: usize = 64 * 1024;

/// Runs before a route's handler: 401 without a session, 403 plus
/// `rbac.denied` without the permission (for pages: a redirect to the login
/// page, and the HTML 403 page); otherwise the handler runs with the open
/// transaction, the [`Authenticated`] user, the [`Me`] view and the [`Permit`].
async fn enforce(State(guard): State<Guard>, req: Request, next: Next) -> Response {
    let (mut parts, body) = req.into_parts();
    let state = &guard.state;
    let credential = match credential(&guard, &parts) {
        Ok(Some(credential)) => credential,
        Ok(None) => return unauthenticated(&guard, &parts),
        Err(refusal) => return refusal.into_response(),
    };
    let (body, bytes) = if guard.kind.stream {
        (body, None)
    } else {
        match to_bytes(body, BODY_LIMIT).await {
            Ok(bytes) => (Body::from(bytes.clone()), Some(bytes)),
            Err(_) => return AppError::PayloadTooLarge.into_response(),
        }
    };
    let source = source_of(&parts, &state.config);
    let opening = match &credential {
        Credential::Cookie(cookie) => open(state, cookie, &source).await,
        Credential::Key(key) => open_key(state, key, &source).await,
    };
    let Opened { mut tx, who, subject, me } = match opening {
        Ok(opened) => opened,
        Err(AppError::Unauthorized) => return unauthenticated(&guard, &parts),
        Err(e) => return e.into_response(),
    };
    if !guard.kind.admits.admits(who.mfa.stage) {
        // What a session short of its second factor gets elsewhere: nothing
        // (pending: as if signed out), or the way to enrolment.
        let refusal = match (who.mfa.stage, guard.kind.admits) {
            (Stage::Pending, _) => return unauthenticated(&guard, &parts),
            (_, Admits::SecondStep) => AppError::Conflict("No second step is pending for this session".into()),
            _ => AppError::MfaEnrollmentRequired,
        };
        if let Err(e) = tx.commit().await {
            return AppError::from(e).into_response();
        }
        // A page held in enrolment goes to the enrolment page.
        if guard.kind.html && matches!(refusal, AppError::MfaEnrollmentRequired) {
            return axum::response::Redirect::to("/me/mfa").into_response();
        }
        return refusal.into_response();
    }
    let stepped_up = !guard.kind.step_up || who.mfa.stepped_up(state.clock.now(), state.config.step_up);
    let idempotency = match guard.kind.idempotent {
        true => {
            let target = parts.uri.path_and_query().map_or(parts.uri.path(), |p| p.as_str());
            let principal = who.api_key.unwrap_or(who.user_id);
            match Idempotency::from_request(&parts.headers, principal, parts.method.as_str(), target) {
                Ok(key) => key,
                Err(e) => return e.into_response(),
            }
        }
        false => None,
    };
    parts.extensions.insert(who);
    parts.extensions.insert(me);
    if let Some(permission) = guard.permission {
        let route = match parts.extensions.get::<MatchedPath>() {
            Some(m) => m.as_str().to_string(),
            None => parts.uri.path().to_string(),
        };
        match authz::admit(&mut tx, subject, permission, parts.method.as_str(), &route, &source).await {
            Ok(permit) => {
                parts.extensions.insert(permit);
            }
            Err(refusal @ AppError::Forbidden(_)) => {
                if let Err(e) = tx.commit().await {
                    return AppError::from(e).into_response();
                }
                return if guard.kind.html { crate::web::forbidden_page() } else { refusal.into_response() };
            }
            Err(e) => return e.into_response(),
        }
    } else {
        // A session route's handler may ask what its user holds (API key limits).
        parts.extensions.insert(subject);
    }
    if !stepped_up {
        // Allowed, but not without a fresh second factor: nothing happened,
        // nothing to record; the step-up itself is audited.
        if let Err(e) = tx.commit().await {
            return AppError::from(e).into_response();
        }
        if guard.kind.html {
            // A form post cannot be replayed after a redirect: back to the
            // page it came from, once the second factor is verified again.
            return crate::web::to_step_up(&parts.headers);
        }
        return AppError::StepUpRequired.into_response();
    }
    let tenant = tx.tenant_id();
    let slot = if guard.kind.stream {
        // The decision is evidence for a streamed handler, which decides again
        // in the transactions it opens around the stream (and claims the
        // idempotency key in the last, once it knows the bytes' hash).
        if let Err(e) = tx.commit().await {
            return AppError::from(e).into_response();
        }
        if let Some(key) = &idempotency {
            parts.extensions.insert(key.clone());
        }
        None
    } else {
        if let (Some(key), Some(bytes)) = (&idempotency, &bytes) {
            match key.claim(&mut tx, key.fingerprint(bytes), state.clock.now()).await {
                Ok(None) => {}
                Ok(Some(answer)) => {
                    return match tx.commit().await {
                        Ok(()) => answer,
                        Err(e) => AppError::from(e).into_response(),
                    };
                }
                Err(e) => return e.into_response(),
            }
        }
        let slot = RequestTx(Arc::new(Mutex::new(Some(tx))));
        parts.extensions.insert(slot.clone());
        Some(slot)
    };
    let state = state.clone();
    let run = async move {
        let response = next.run(Request::from_parts(parts, body)).await;
        // The handler did not take the transaction: what the guard did commits.
        let left = slot.and_then(|slot| slot.0.lock().unwrap_or_else(|e| e.into_inner()).take());
        if let Some(tx) = left
            && let Err(e) = tx.commit().await
        {
            tracing::warn!(error = %e, "could not commit the request's transaction");
        }
        match &idempotency {
            Some(key) => key.record(&state, tenant, response).await,
            None => response,
        }
    };
    if !guard.kind.idempotent {
        return run.await;
    }
    // A create with a key runs to its end even if the client goes away, so its
    // answer is there for the retry.
    tokio::spawn(run)
        .await
        .unwrap_or_else(|_| AppError::Internal(anyhow::anyhow!("a handler panicked")).into_response())
}

/// How a request says who it is.
enum Credential {
    Cookie(session::SessionCookie),
    /// `Authorization: Bearer ffk_…`
    Key(String),
}

/// The request's credential: a session cookie or an API key, never both. A key
/// reaches only API routes guarded by a permission and not by a step-up:
/// pages, one's own account, MFA and sensitive operations need a person.
fn credential(guard: &Guard, parts: &Parts) -> Result<Option<Credential>, AppError> {
    let cookie = session::from_headers(&guard.state.config, &parts.headers);
    let bearer = parts
        .headers
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(|k| k.trim().to_string());
    match (cookie, bearer) {
        (Some(_), Some(_)) => Err(AppError::BadRequest("Send a session cookie or an API key, not both".into())),
        (Some(cookie), None) => Ok(Some(Credential::Cookie(cookie))),
        (None, Some(_)) if guard.kind.html => Err(AppError::forbidden("API keys cannot open pages")),
        // Only routes guarded by a permission: one's own account, sessions,
        // keys and factors, and every step-up operation, need a person.
        (None, Some(_)) if guard.kind.step_up || guard.kind.admits != Admits::Full || guard.permission.is_none() => {
            Err(AppError::forbidden("This needs a person signed in: API keys cannot do it"))
        }
        (None, Some(key)) => Ok(Some(Credential::Key(key))),
        (None, None) => Ok(None),
    }
}

fn unauthenticated(guard: &Guard, parts: &Parts) -> Response {
    if guard.kind.html { crate::web::to_login(&parts.uri) } else { AppError::Unauthorized.into_response() }
}

/// The request's open transaction, until its handler takes it.
#[derive(Clone)]
struct RequestTx(Arc<Mutex<Option<TenantTx>>>);

/// The request's one transaction, handed over by the guard: a handler does
/// its reads and writes in it and commits it. It can be taken once; a handler
/// on a route without a guard (or taking it twice) is a programming error and
/// answers 500.
pub struct Tx(pub TenantTx);

impl<S: Send + Sync> FromRequestParts<S> for Tx {
    type Rejection = AppError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        let slot = parts.extensions.get::<RequestTx>();
        let tx = slot.and_then(|slot| slot.0.lock().unwrap_or_else(|e| e.into_inner()).take());
        tx.map(Tx).ok_or_else(|| {
            AppError::Internal(anyhow::anyhow!(
                "handler wants the request's transaction, which its route does not have"
            ))
        })
    }
}

/// What the request's user holds, on routes that need only a session.
impl FromRequestParts<AppState> for authz::Subject {
    type Rejection = AppError;

    async fn from_request_parts(parts: &mut Parts, _state: &AppState) -> Result<Self, Self::Rejection> {
        parts
            .extensions
            .get::<authz::Subject>()
            .cloned()
            .ok_or_else(|| AppError::Internal(anyhow::anyhow!("handler wants a Subject but its route has none")))
    }
}

/// A guarded handler's permit. Only the guard issues one; a handler that asks
/// for it on an unguarded route is a programming error and answers 500.
impl FromRequestParts<AppState> for Permit {
    type Rejection = AppError;

    async fn from_request_parts(parts: &mut Parts, _state: &AppState) -> Result<Self, Self::Rejection> {
        parts
            .extensions
            .get::<Permit>()
            .cloned()
            .ok_or_else(|| AppError::Internal(anyhow::anyhow!("handler wants a Permit but its route has no guard")))
    }
}

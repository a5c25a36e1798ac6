//! The guard: the spine of every request that needs a session (every route
//! the builder in [`super::routes`] declares, but the public ones).
//!
//! For every route that is not public, the guard opens the request's one
//! transaction: it reads the (small) body first, so no connection waits on a
//! slow client; opens the session in the transaction (`auth::extractor::open`);
//! decides the route's permission there (a refusal is `rbac.denied`, committed
//! with the 403); claims the request's `Idempotency-Key` on a create; and hands
//! the open transaction to the handler ([`Tx`]), which does its reads and
//! writes in it and commits it, or, if all it did was read, ends it with
//! `TenantTx::end_read_only` (a rollback that travels with the pool's release
//! check, so `/me` is two round trips: `BEGIN`, the first statement; what the
//! guard wrote in it, an API key's last use or an idempotency claim, commits
//! instead). A handler that never takes it leaves it to the guard, which ends
//! it the same way after the handler. Streamed routes
//! (uploads) get the decision but not the transaction: they decide again in
//! each transaction of their own.

use axum::{
    body::{Body, to_bytes},
    extract::{FromRequestParts, MatchedPath, Request, State},
    http::request::Parts,
    middleware::{Next, from_fn_with_state},
    response::{IntoResponse, Response},
    routing::MethodRouter,
};

use std::sync::{Arc, Mutex};

use tracing::Instrument;

use super::{AppState, client::source_of, error::AppError, idempotency::Idempotency, ratelimit};
use crate::{
    auth::{
        extractor::{Opened, open, open_key},
        mfa::Stage,
        session,
    },
    authz::{self, Permission, Permit},
    db::TenantTx,
};

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
    pub(super) fn admits(self, stage: Stage) -> bool {
        matches!(
            (self, stage),
            (Admits::Any, _)
                | (Admits::Full, Stage::Full)
                | (Admits::Enrolment, Stage::Full | Stage::Enrolment)
                | (Admits::SecondStep, Stage::Pending)
        )
    }
}

#[derive(Clone, Copy)]
pub(super) struct Kind {
    /// The handler streams and limits the body itself.
    pub(super) stream: bool,
    pub(super) html: bool,
    pub(super) admits: Admits,
    pub(super) step_up: bool,
    pub(super) idempotent: bool,
}

impl Kind {
    pub(super) const API: Kind =
        Kind { stream: false, html: false, admits: Admits::Full, step_up: false, idempotent: false };
    pub(super) const PAGE: Kind = Kind { html: true, ..Kind::API };
}

/// `route` behind the guard, deciding `permission` (`None`: a session is enough).
pub(super) fn around(
    route: MethodRouter<AppState>,
    state: AppState,
    permission: Option<Permission>,
    kind: Kind,
) -> MethodRouter<AppState> {
    route.route_layer(from_fn_with_state(Guard { state, permission, kind }, enforce))
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
    // From now on this credential's requests are charged to it alone.
    if let Some(presented) = parts.extensions.get::<ratelimit::Presented>() {
        state.limits.verified(*presented);
    }
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
            match key.claim(&mut tx, state, bytes).await {
                Ok(None) => tx.opened_with_write(),
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
        // The handler did not take the transaction: what the guard wrote
        // commits; a transaction that only read ends without a round trip.
        let left = slot.and_then(|slot| slot.0.lock().unwrap_or_else(|e| e.into_inner()).take());
        if let Some(tx) = left
            && let Err(e) = tx.end_read_only().await
        {
            tracing::warn!(error = %e, "could not end the request's transaction");
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
    tokio::spawn(run.in_current_span())
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
    // A session cookie that is not one (malformed) is a credential that
    // failed, whatever else came with it.
    if cookie.is_none() && session::cookie_sent(&guard.state.config, &parts.headers) {
        return Ok(None);
    }
    match (cookie, bearer) {
        (Some(_), Some(_)) => Err(AppError::BadRequest("Send a session cookie or an API key, not both".into())),
        (Some(cookie), None) => Ok(Some(Credential::Cookie(cookie))),
        (None, Some(_)) if guard.kind.html => Err(AppError::forbidden("API keys cannot open pages")),
        // A CSRF token belongs to a session; sent with a key it is a mix-up
        // (or a probe), refused rather than ignored.
        (None, Some(_)) if parts.headers.contains_key(super::middleware::CSRF_HEADER) => {
            Err(AppError::forbidden("X-CSRF-Token goes with a session cookie; send none with an API key"))
        }
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

//! The session behind a request, opened in the request's own transaction.
//!
//! [`open`] is the first thing the route guard does for every route that needs
//! a session: `BEGIN`, then one statement (migration 0006) that sets the
//! tenant and finds the session with the user's status, profile, department,
//! clearance, shortest role timeout, roles and grants. Expired sessions are
//! deleted and audited (`auth.session_expired`) there; an active one's idle
//! timer is extended when due. The open transaction goes on to the guard's
//! decision and the handler, and commits once.
//!
//! `Authenticated`: a handler that names it only runs for a request carrying
//! a live session.

use std::{sync::Arc, time::Duration};

use axum::{extract::FromRequestParts, http::request::Parts};
use serde_json::json;
use time::OffsetDateTime;
use uuid::Uuid;

use super::{
    apikeys,
    mfa::{MfaState, Stage},
    session::{self, ExpiredBy, SessionCookie},
    user::UserView,
};
use crate::{
    audit::{self, Action, Entry, Outcome, Source},
    authz::Subject,
    db::TenantTx,
    http::{AppState, client::source_of, error::AppError},
};

/// The signed-in user behind a request: a session, or a program's API key.
#[derive(Debug, Clone)]
pub struct Authenticated {
    pub tenant_id: Uuid,
    pub user_id: Uuid,
    /// The session (for a request made with an API key: the key).
    pub session_id: Uuid,
    /// The session cookie; `None` for an API key.
    pub cookie: Option<SessionCookie>,
    /// Where the session stands with its second factor.
    pub mfa: MfaState,
    /// The API key the request was made with.
    pub api_key: Option<Uuid>,
}

impl Authenticated {
    /// The session's anti-CSRF token (empty for an API key, which needs none).
    pub fn csrf_token(&self) -> String {
        self.cookie.as_ref().map(SessionCookie::csrf_token).unwrap_or_default()
    }
}

/// The signed-in user's own view (`/me`, the page header), as the request's
/// first statement found it.
#[derive(Debug, Clone)]
pub struct Me(pub Arc<UserView>);

/// The user behind a request, as its first statement returns them.
#[derive(sqlx::FromRow)]
struct Profile {
    status: String,
    username: String,
    email: String,
    requested_role: Option<String>,
    department_id: Uuid,
    department: String,
    clearance: String,
    clearance_rank: i32,
    last_login: Option<OffsetDateTime>,
    created_at: OffsetDateTime,
    roles: Vec<String>,
    grants: Vec<String>,
}

/// What the request's first statement returns for a session (migration 0007).
#[derive(sqlx::FromRow)]
struct SessionRow {
    session_id: Uuid,
    user_id: Uuid,
    last_seen_at: OffsetDateTime,
    expires_at: OffsetDateTime,
    role_timeout: Option<i32>,
    #[sqlx(flatten)]
    profile: Profile,
    mfa_pending: bool,
    verified_at: Option<OffsetDateTime>,
    mfa_methods: Vec<String>,
    mfa_required: Option<String>,
}

/// A request with a live session, its transaction open.
pub struct Opened {
    pub tx: TenantTx,
    pub who: Authenticated,
    pub subject: Subject,
    pub me: Me,
}

/// Opens the request's transaction and finds its live session. Without one
/// (none, expired, user no longer active) the transaction commits what it
/// recorded and the answer is 401.
pub async fn open(state: &AppState, cookie: &SessionCookie, source: &Source) -> Result<Opened, AppError> {
    let now = state.clock.now();
    let (tx, row) = open_live(state, cookie, source, now, true).await?;
    let who = Authenticated {
        tenant_id: cookie.tenant,
        user_id: row.user_id,
        session_id: row.session_id,
        cookie: Some(cookie.clone()),
        mfa: MfaState::new(row.mfa_pending, row.mfa_methods, row.mfa_required, row.verified_at),
        api_key: None,
    };
    let subject = Subject::new(
        &who,
        row.profile.department_id,
        row.profile.clearance.clone(),
        row.profile.clearance_rank,
        &row.profile.grants,
    );
    Ok(opened(tx, who, subject, row.profile))
}

/// The request as opened: the subject decides, `Me` shows the user.
fn opened(tx: TenantTx, who: Authenticated, subject: Subject, p: Profile) -> Opened {
    let mut permissions: Vec<String> = subject.grants().map(|(p, _)| p.as_str().to_string()).collect();
    permissions.dedup();
    let me = UserView {
        id: who.user_id,
        username: p.username,
        email: p.email,
        status: p.status,
        role: p.roles.first().cloned(),
        roles: p.roles,
        permissions,
        department: p.department,
        clearance_level: p.clearance,
        requested_role: p.requested_role,
        mfa_enabled: who.mfa.enabled(),
        // A locked account has no live session to ask with.
        locked: false,
        last_login: p.last_login,
        created_at: p.created_at,
        department_id: p.department_id,
        clearance_rank: p.clearance_rank,
    };
    Opened { tx, who, subject, me: Me(Arc::new(me)) }
}

/// What the first statement of a request made with an API key returns (migration 0008).
#[derive(sqlx::FromRow)]
struct KeyRow {
    key_id: Uuid,
    user_id: Uuid,
    key_expires_at: OffsetDateTime,
    revoked: bool,
    last_used_at: Option<OffsetDateTime>,
    key_permissions: Option<Vec<String>>,
    #[sqlx(flatten)]
    profile: Profile,
    mfa_methods: Vec<String>,
    mfa_required: Option<String>,
}

/// Opens a request made with an API key: 401 for a key that is not one
/// (decided without the database), unknown, revoked or expired, or whose owner
/// is no longer active; a revoked or expired key, or an inactive owner's, is
/// recorded as `auth.api_key` fail.
pub async fn open_key(state: &AppState, key: &str, source: &Source) -> Result<Opened, AppError> {
    let Some(key) = apikeys::parse(key) else {
        tracing::info!("a malformed API key was refused");
        return Err(AppError::Unauthorized);
    };
    let now = state.clock.now();
    let (mut tx, row) = state.db.open_key_request(key.tenant, key.hash(), now, |r: &KeyRow| r.user_id).await?;
    let refusal = match &row {
        None => Some("unknown"),
        Some(r) if r.revoked => Some("revoked"),
        Some(r) if r.key_expires_at <= now => Some("expired"),
        Some(r) if r.profile.status != "active" => Some("owner_not_active"),
        Some(_) => None,
    };
    let known = row.is_some();
    let Some(row) = row.filter(|_| refusal.is_none()) else {
        // A key nobody was given writes nothing: anyone can make up a
        // well-formed one for any tenant, and must not fill its log.
        if known {
            let entry = Entry::new(Action::AuthApiKey, Outcome::Fail)
                .details(json!({ "reason": refusal.unwrap_or("unknown"), "prefix": key.shown() }));
            audit::record(&mut tx, source, entry).await?;
            tx.commit().await?;
        } else {
            tracing::info!(prefix = key.shown(), "an unknown API key was refused");
        }
        return Err(AppError::Unauthorized);
    };
    // Its last use is written at most once a minute, by whichever request gets the row first.
    let touch = row.last_used_at.is_none_or(|at| now - at >= Duration::from_secs(60));
    if touch {
        sqlx::query(
            "UPDATE api_keys SET last_used_at = $2 \
              WHERE id = (SELECT id FROM api_keys WHERE id = $1 FOR UPDATE SKIP LOCKED)",
        )
        .bind(row.key_id)
        .bind(now)
        .execute(tx.conn())
        .await?;
        tx.opened_with_write();
    }
    tx.through_key(row.key_id);
    let who = Authenticated {
        tenant_id: key.tenant,
        user_id: row.user_id,
        session_id: row.key_id,
        cookie: None,
        mfa: MfaState::new(false, row.mfa_methods, row.mfa_required, None),
        api_key: Some(row.key_id),
    };
    let p = &row.profile;
    let subject = Subject::new(&who, p.department_id, p.clearance.clone(), p.clearance_rank, &p.grants)
        .through_key(row.key_id, row.key_permissions.as_deref());
    Ok(opened(tx, who, subject, row.profile))
}

/// The request's transaction and its live session: 401 without one (none,
/// expired, user no longer active), after committing what was recorded.
/// `refresh`: whether the idle timer may be written first.
async fn open_live(
    state: &AppState,
    cookie: &SessionCookie,
    source: &Source,
    now: OffsetDateTime,
    refresh: bool,
) -> Result<(TenantTx, SessionRow), AppError> {
    let (mut tx, row) =
        state.db.open_request(cookie.tenant, &cookie.token_hash(), now, |r: &SessionRow| r.user_id).await?;
    let Some(row) = row else {
        tx.commit().await?;
        return Err(AppError::Unauthorized);
    };
    if row.profile.status != "active" {
        session::delete(&mut tx, row.session_id).await?;
        tx.commit().await?;
        return Err(AppError::Unauthorized);
    }
    let idle = match row.role_timeout {
        Some(minutes) if minutes > 0 => state.config.session_idle_timeout.min(Duration::from_secs(minutes as u64 * 60)),
        _ => state.config.session_idle_timeout,
    };
    let expired_by = if now >= row.expires_at {
        Some(ExpiredBy::Absolute)
    } else if now - row.last_seen_at > idle {
        Some(ExpiredBy::Idle)
    } else {
        None
    };
    if let Some(by) = expired_by {
        // Only the request whose DELETE removed the row reports (and audits) the
        // expiry; a concurrent one with the same cookie just finds no session.
        if session::delete(&mut tx, row.session_id).await? {
            let entry = Entry::new(Action::AuthSessionExpired, Outcome::Success)
                .user(row.user_id)
                .target("session", row.session_id)
                .details(json!({ "reason": by.as_str() }));
            audit::record(&mut tx, source, entry).await?;
        }
        tx.commit().await?;
        return Err(AppError::Unauthorized);
    }
    // The idle timer is written at most once per `idle / 20`, at least every
    // minute, in a short transaction of its own, so the session row is not
    // locked for the rest of the request and a request that fails still counts
    // as activity. It commits and gives its connection back before the request
    // opens again: a request holding a connection must never wait for a second
    // one (enough such requests at once would hold every connection of the pool
    // and wait for each other).
    let refresh_every = (idle / 20).clamp(Duration::from_secs(1), Duration::from_secs(60));
    if refresh && now - row.last_seen_at >= refresh_every {
        session::touch(&mut tx, row.session_id, now).await?;
        tx.commit().await?;
        return Box::pin(open_live(state, cookie, source, now, false)).await;
    }
    Ok((tx, row))
}

impl Authenticated {
    /// Whether `parts` carry a live session (for pages that only need to know).
    pub async fn from_request_parts_ok(parts: &mut Parts, state: &AppState) -> bool {
        Self::from_request_parts(parts, state).await.is_ok()
    }
}

/// On routes behind the guard the session was opened there; on public routes
/// (the login page asks whether someone is signed in) it is opened here, in a
/// transaction of its own. A session still waiting for its second factor is
/// nobody signed in.
impl FromRequestParts<AppState> for Authenticated {
    type Rejection = AppError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Self::Rejection> {
        if let Some(done) = parts.extensions.get::<Authenticated>() {
            return Ok(done.clone());
        }
        let cookie = session::from_headers(&state.config, &parts.headers).ok_or(AppError::Unauthorized)?;
        let opened = open(state, &cookie, &source_of(parts, &state.config)).await?;
        opened.tx.commit().await?;
        if opened.who.mfa.stage == Stage::Pending {
            return Err(AppError::Unauthorized);
        }
        parts.extensions.insert(opened.who.clone());
        Ok(opened.who)
    }
}

/// The signed-in user's view, on routes behind the guard.
impl FromRequestParts<AppState> for Me {
    type Rejection = AppError;

    async fn from_request_parts(parts: &mut Parts, _state: &AppState) -> Result<Self, Self::Rejection> {
        parts.extensions.get::<Me>().cloned().ok_or(AppError::Unauthorized)
    }
}

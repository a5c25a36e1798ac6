//! `Authenticated`: a handler that names it in its signature only runs for a
//! request carrying a live session. Expired sessions are deleted and audited
//! (`auth.session_expired`) on the request that finds them.

use axum::{extract::FromRequestParts, http::request::Parts};
use serde_json::json;
use uuid::Uuid;

use super::session::{self, Lookup, SessionCookie};
use crate::{
    audit::{self, Action, Entry, Outcome},
    http::{AppState, client::source_of, error::AppError},
};

/// The signed-in user behind a request.
#[derive(Debug, Clone)]
pub struct Authenticated {
    pub tenant_id: Uuid,
    pub user_id: Uuid,
    pub session_id: Uuid,
    pub cookie: SessionCookie,
}

impl Authenticated {
    /// Whether `parts` carry a live session (for pages that only need to know).
    pub async fn from_request_parts_ok(parts: &mut Parts, state: &AppState) -> bool {
        Self::from_request_parts(parts, state).await.is_ok()
    }
}

impl FromRequestParts<AppState> for Authenticated {
    type Rejection = AppError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Self::Rejection> {
        if let Some(done) = parts.extensions.get::<Authenticated>() {
            return Ok(done.clone());
        }
        let cookie = session::from_headers(&state.config, &parts.headers).ok_or(AppError::Unauthorized)?;
        let now = state.clock.now();
        let mut tx = state.db.tenant_tx(cookie.tenant, None).await?;
        match session::lookup(&mut tx, &cookie, now, state.config.session_idle_timeout).await? {
            Lookup::Active { session_id, user_id } => {
                tx.commit().await?;
                let who = Authenticated { tenant_id: cookie.tenant, user_id, session_id, cookie };
                parts.extensions.insert(who.clone());
                Ok(who)
            }
            Lookup::Expired { session_id, user_id, by } => {
                let entry = Entry::new(Action::AuthSessionExpired, Outcome::Success)
                    .user(user_id)
                    .target("session", session_id)
                    .details(json!({ "reason": by.as_str() }));
                audit::record(&mut tx, &source_of(parts, &state.config), entry).await?;
                tx.commit().await?;
                Err(AppError::Unauthorized)
            }
            Lookup::Missing => {
                tx.commit().await?;
                Err(AppError::Unauthorized)
            }
        }
    }
}

//! An administrator resetting another user's second factors (a lost phone, a
//! lost security key): every factor and recovery code removed and every session
//! ended, with the reason given in the audit row. The same guard rails as any
//! change of the user's access: in scope, no more powerful than the caller, and
//! never oneself (one's own factors are changed at `/me/mfa`, with a step-up).

use serde::Deserialize;
use serde_json::json;
use uuid::Uuid;

use super::{Attempt, begin, settle, targets::manageable};
use crate::{
    audit::{self, Action, Entry, Outcome, Source},
    auth::{mfa::store, session},
    authz::Permit,
    db::TenantTx,
    http::{AppState, error::AppError},
};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ResetMfa {
    pub reason: String,
}

/// What a reset removed.
#[derive(Debug, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Reset {
    pub removed: Vec<&'static str>,
    pub sessions_ended: u64,
}

pub async fn reset_mfa(
    state: &AppState,
    permit: &Permit,
    source: &Source,
    mut tx: TenantTx,
    id: Uuid,
    input: ResetMfa,
) -> Result<Reset, AppError> {
    let reason = input.reason.trim().to_string();
    if reason.is_empty() || reason.chars().count() > 500 {
        return Err(AppError::invalid("reason", "say why, in at most 500 characters"));
    }
    let outcome: Attempt<Reset> = async {
        let now = state.clock.now();
        let permit = &begin(&mut tx, permit, now).await?;
        manageable(&mut tx, permit, id, now, false).await?;
        let removed = store::methods(&mut tx, id).await?;
        store::delete_totp(&mut tx, id).await?;
        sqlx::query("DELETE FROM mfa_webauthn WHERE user_id = $1").bind(id).execute(tx.conn()).await?;
        store::delete_recovery_codes(&mut tx, id).await?;
        let sessions_ended = session::delete_all_of(&mut tx, id).await?;
        let entry = Entry::new(Action::AuthMfaReset, Outcome::Success)
            .target("user", id)
            .details(json!({ "reason": reason, "removed": removed, "sessionsEnded": sessions_ended }));
        audit::record(&mut tx, source, entry).await?;
        Ok(Reset { removed, sessions_ended })
    }
    .await;
    settle(tx, permit, source, outcome).await
}

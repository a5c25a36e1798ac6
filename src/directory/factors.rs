//! An administrator and another user's sign-in: resetting their second factors
//! (a lost phone, a lost security key): every factor and recovery code removed
//! and every session ended, with the reason given in the audit row, under the
//! same guard rails as any change of the user's access (in scope, no more
//! powerful than the caller, never oneself: one's own factors are changed at
//! `/me/mfa`, with a step-up); unlocking an account that too many failed
//! logins locked (the same guard rails); and a user's sessions and API keys.

use serde::Deserialize;
use serde_json::json;
use utoipa::ToSchema;
use uuid::Uuid;

use super::{Attempt, Gate, Hold, attempt, begin, gate, settle, targets::manageable};
use crate::{
    audit::{self, Action, Entry, Outcome, Source},
    auth::{apikeys, lockout, mfa::store, own, session},
    authz::{
        Permit,
        dual::{Done, Operation},
    },
    db::TenantTx,
    http::{AppState, error::AppError},
};

/// Why a user's second factors are reset (kept in the audit row).
#[derive(Deserialize, serde::Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ResetMfa {
    /// 1 to 500 characters after trimming.
    #[schema(
        max_length = 500,
        pattern = r"^[\t-\r \x85\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000]*[^\x00\t-\r \x85\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000](?:[^\x00]*[^\x00\t-\r \x85\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000])?[\t-\r \x85\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000]*$"
    )]
    pub reason: String,
}

/// The kinds of second factor a reset can remove.
#[derive(ToSchema)]
#[schema(rename_all = "lowercase", description = "A kind of second factor: an authenticator app or passkeys.")]
pub enum FactorKind {
    Totp,
    Webauthn,
}

/// What a reset removed.
#[derive(Debug, serde::Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
#[schema(as = MfaResetResult)]
pub struct Reset {
    /// The kinds of factor the user had.
    #[schema(value_type = Vec<FactorKind>)]
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
) -> Result<Done<Reset>, AppError> {
    let outcome = reset_attempt(state, permit, source, &mut tx, id, input).await;
    settle(tx, permit, source, outcome).await
}

/// The route of [`reset_mfa`], as stored with a held request.
pub const ROUTE_RESET: &str = "POST /api/users/{id}/mfa/reset";

pub async fn reset_attempt(
    state: &AppState,
    permit: &Permit,
    source: &Source,
    tx: &mut TenantTx,
    id: Uuid,
    input: ResetMfa,
) -> Attempt<Done<Reset>> {
    let reason = input.reason.trim().to_string();
    if reason.is_empty() || reason.chars().count() > 500 {
        return Err(AppError::invalid("reason", "say why, in at most 500 characters").into());
    }
    let now = state.clock.now();
    let permit = &begin(tx, permit, now).await?;
    let target = manageable(tx, permit, id, now, false).await?;
    let removed = store::methods(tx, id).await?;
    let summary = format!("Reset the second factors of {}", target.username);
    let hold = Hold::new(Operation::MfaReset, ROUTE_RESET, summary)
        .params(json!({ "id": id }))
        .body(&input)
        .change(json!({ "reason": reason, "before": { "factors": removed }, "after": { "factors": [] } }))
        .target("user", id);
    if let Gate::Held(approval) = gate(tx, permit, source, hold, now).await? {
        return Ok(Done::Held(approval));
    }
    store::delete_totp(tx, id).await?;
    sqlx::query("DELETE FROM mfa_webauthn WHERE user_id = $1").bind(id).execute(tx.conn()).await?;
    store::delete_recovery_codes(tx, id).await?;
    let sessions_ended = session::delete_all_of(tx, id).await?;
    apikeys::revoke_all(tx, source, id, "mfa_reset", now).await?;
    let entry = Entry::new(Action::AuthMfaReset, Outcome::Success)
        .target("user", id)
        .details(json!({ "reason": reason, "removed": removed, "sessionsEnded": sessions_ended }));
    audit::record(tx, source, entry).await?;
    Ok(Done::Now(Reset { removed, sessions_ended }))
}

/// `GET /api/users/{id}/sessions`: the user's live sessions.
pub async fn sessions(
    state: &AppState,
    permit: &Permit,
    source: &Source,
    mut tx: TenantTx,
    id: Uuid,
) -> Result<Vec<own::SessionView>, AppError> {
    let outcome: Attempt<Vec<own::SessionView>> = async {
        let now = state.clock.now();
        manageable(&mut tx, permit, id, now, true).await?;
        Ok(own::sessions(&mut tx, id, None, now).await?)
    }
    .await;
    settle(tx, permit, source, outcome).await
}

/// `DELETE /api/users/{id}/sessions`: every session of the user ends.
pub async fn end_sessions(
    state: &AppState,
    permit: &Permit,
    source: &Source,
    mut tx: TenantTx,
    id: Uuid,
) -> Result<usize, AppError> {
    let outcome: Attempt<usize> = async {
        attempt(&mut tx).await?;
        manageable(&mut tx, permit, id, state.clock.now(), true).await?;
        let ended: Vec<Uuid> = sqlx::query_scalar("DELETE FROM sessions WHERE user_id = $1 RETURNING id")
            .bind(id)
            .fetch_all(tx.conn())
            .await?;
        own::record_ended(&mut tx, source, id, "administrator", &ended).await?;
        Ok(ended.len())
    }
    .await;
    settle(tx, permit, source, outcome).await
}

/// `GET /api/users/{id}/api-keys`: the user's keys.
pub async fn api_keys(
    state: &AppState,
    permit: &Permit,
    source: &Source,
    mut tx: TenantTx,
    id: Uuid,
) -> Result<Vec<apikeys::ApiKeyView>, AppError> {
    let outcome: Attempt<Vec<apikeys::ApiKeyView>> = async {
        manageable(&mut tx, permit, id, state.clock.now(), true).await?;
        Ok(apikeys::list(&mut tx, id).await?)
    }
    .await;
    settle(tx, permit, source, outcome).await
}

/// `DELETE /api/users/{id}/api-keys/{key}`: revokes one of the user's keys.
pub async fn revoke_api_key(
    state: &AppState,
    permit: &Permit,
    source: &Source,
    mut tx: TenantTx,
    (id, key): (Uuid, Uuid),
) -> Result<(), AppError> {
    let outcome: Attempt<()> = async {
        attempt(&mut tx).await?;
        let now = state.clock.now();
        manageable(&mut tx, permit, id, now, true).await?;
        apikeys::revoke(&mut tx, source, id, key, "administrator", now).await?;
        Ok(())
    }
    .await;
    settle(tx, permit, source, outcome).await
}

/// `POST /api/users/{id}/unlock`: the account's lock, its count of failures in
/// a row and any running delay are cleared. 409 when nothing held it.
pub async fn unlock(
    state: &AppState,
    permit: &Permit,
    source: &Source,
    mut tx: TenantTx,
    id: Uuid,
) -> Result<(), AppError> {
    let outcome: Attempt<()> = async {
        attempt(&mut tx).await?;
        let user = manageable(&mut tx, permit, id, state.clock.now(), false).await?;
        if !lockout::unlock(&mut tx, id).await? {
            return Err(AppError::Conflict("This account is not locked".into()).into());
        }
        let entry = Entry::new(Action::UserUnlock, Outcome::Success)
            .target("user", id)
            .details(json!({ "username": user.username }));
        audit::record(&mut tx, source, entry).await?;
        Ok(())
    }
    .await;
    settle(tx, permit, source, outcome).await
}

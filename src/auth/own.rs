//! A user's own account: changing the password (the current one required, and
//! a step-up for users with a second factor, declared on the route), and the
//! sessions they are signed in with, which they can see and end. Administrators
//! see and end another user's sessions through `directory`.

use ipnet::IpNet;
use secrecy::SecretString;
use serde::{Deserialize, Serialize};
use serde_json::json;
use time::OffsetDateTime;
use utoipa::ToSchema;
use uuid::Uuid;

use super::{Authenticated, lockout, password::check_policy};
use crate::{
    audit::{self, Action, Entry, Outcome, Source},
    db::TenantTx,
    http::{AppState, error::AppError},
};

/// A wrong current password answers 422 (and counts like a failed login);
/// so does a new password that fails the policy: at least 8 characters, at
/// most 1024 bytes (UTF-8), not the username or email, and not too common or
/// easy to guess (zxcvbn score 2 or more), which a schema cannot express.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct PasswordChange {
    #[schema(value_type = String, format = Password, pattern = r"^[^\x00]*$")]
    pub current_password: SecretString,
    /// At least 8 characters and at most 1024 bytes (UTF-8); weak or common
    /// passwords, and the username or email, are refused with 422.
    #[schema(value_type = String, format = Password, min_length = 8, max_length = 1024, pattern = r"^[^\x00]*$")]
    pub new_password: SecretString,
}

impl std::fmt::Debug for PasswordChange {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("PasswordChange([redacted])")
    }
}

/// Changes the caller's password; every other session of theirs ends and
/// every API key is revoked. A wrong current password is refused and counts
/// like a failed login.
pub async fn change_password(
    state: &AppState,
    source: &Source,
    mut tx: TenantTx,
    who: &Authenticated,
    input: PasswordChange,
) -> Result<u64, AppError> {
    let (username, email, hash): (String, String, String) =
        sqlx::query_as("SELECT username, email, password_hash FROM users WHERE id = $1 FOR UPDATE")
            .bind(who.user_id)
            .fetch_one(tx.conn())
            .await?;
    let now = state.clock.now();
    // The current password is checked only within the account's login limits.
    let held = lockout::check(&mut tx, &state.config, source, who.user_id, now).await?;
    let right = match held {
        Some(_) => {
            state.passwords.verify(&input.current_password, None).await?;
            false
        }
        None => state.passwords.verify(&input.current_password, Some(&hash)).await?,
    };
    if !right {
        if held.is_none() {
            lockout::failed(&mut tx, source, who.user_id, now).await?;
        }
        let reason = held.map(|h| h.reason()).unwrap_or("wrong_current_password");
        let entry = Entry::new(Action::AuthPasswordChange, Outcome::Fail)
            .target("user", who.user_id)
            .details(json!({ "reason": reason }));
        audit::record(&mut tx, source, entry).await?;
        tx.commit().await?;
        return Err(AppError::invalid("currentPassword", "that is not your current password"));
    }
    check_policy(&input.new_password, &username, &email).map_err(|v| AppError::invalid("newPassword", v.0))?;
    let new_hash = state.passwords.hash(&input.new_password).await?;
    sqlx::query("UPDATE users SET password_hash = $2, failed_logins = 0 WHERE id = $1")
        .bind(who.user_id)
        .bind(new_hash)
        .execute(tx.conn())
        .await?;
    let ended = end_sessions(&mut tx, who.user_id, Some(who.session_id)).await?;
    let keys = super::apikeys::revoke_all(&mut tx, source, who.user_id, "password_change", now).await?;
    let entry = Entry::new(Action::AuthPasswordChange, Outcome::Success)
        .target("user", who.user_id)
        .details(json!({ "otherSessionsEnded": ended, "apiKeysRevoked": keys }));
    audit::record(&mut tx, source, entry).await?;
    tx.commit().await?;
    Ok(ended)
}

/// A live session as its user (or an administrator) sees it.
#[derive(Debug, Serialize, sqlx::FromRow, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct SessionView {
    pub id: Uuid,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    pub last_seen_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    pub expires_at: OffsetDateTime,
    #[serde(skip)]
    pub ip_net: Option<IpNet>,
    #[schema(required = true)]
    pub user_agent: Option<String>,
    /// Waiting for its second factor.
    pub pending: bool,
    /// The client address the session was opened from.
    #[sqlx(skip)]
    #[schema(required = true)]
    pub ip: Option<String>,
    /// The session this request came with.
    #[sqlx(skip)]
    pub current: bool,
}

/// `user`'s live sessions, newest first; `current` marks the caller's own.
pub async fn sessions(
    tx: &mut TenantTx,
    user: Uuid,
    current: Option<Uuid>,
    now: OffsetDateTime,
) -> Result<Vec<SessionView>, sqlx::Error> {
    let mut rows: Vec<SessionView> = sqlx::query_as(
        "SELECT id, created_at, last_seen_at, expires_at, ip AS ip_net, user_agent, mfa_pending AS pending \
         FROM sessions WHERE user_id = $1 AND expires_at > $2 ORDER BY created_at DESC, id",
    )
    .bind(user)
    .bind(now)
    .fetch_all(tx.conn())
    .await?;
    for row in &mut rows {
        row.ip = row.ip_net.map(|n| n.addr().to_string());
        row.current = Some(row.id) == current;
    }
    Ok(rows)
}

/// Ends every session of `user` but `keep`; how many ended.
pub async fn end_sessions(tx: &mut TenantTx, user: Uuid, keep: Option<Uuid>) -> Result<u64, sqlx::Error> {
    let done = sqlx::query("DELETE FROM sessions WHERE user_id = $1 AND ($2::uuid IS NULL OR id <> $2)")
        .bind(user)
        .bind(keep)
        .execute(tx.conn())
        .await?;
    Ok(done.rows_affected())
}

/// Records that `ended` sessions of `user` were ended, and by whom.
pub async fn record_ended(
    tx: &mut TenantTx,
    source: &Source,
    user: Uuid,
    by: &str,
    ended: &[Uuid],
) -> Result<(), sqlx::Error> {
    let entry = Entry::new(Action::AuthSessionEnd, Outcome::Success)
        .target("user", user)
        .details(json!({ "by": by, "sessions": ended }));
    audit::record(tx, source, entry).await.map(|_| ())
}

/// Ends one of the caller's own sessions (404 for anyone else's).
pub async fn end_own(source: &Source, mut tx: TenantTx, who: &Authenticated, id: Uuid) -> Result<(), AppError> {
    let ended: Option<Uuid> = sqlx::query_scalar("DELETE FROM sessions WHERE id = $1 AND user_id = $2 RETURNING id")
        .bind(id)
        .bind(who.user_id)
        .fetch_optional(tx.conn())
        .await?;
    let Some(ended) = ended else { return Err(AppError::NotFound) };
    record_ended(&mut tx, source, who.user_id, "self", &[ended]).await?;
    tx.commit().await?;
    Ok(())
}

/// Ends every session of the caller but this one; how many ended.
pub async fn end_others(source: &Source, mut tx: TenantTx, who: &Authenticated) -> Result<usize, AppError> {
    let ended: Vec<Uuid> = sqlx::query_scalar("DELETE FROM sessions WHERE user_id = $1 AND id <> $2 RETURNING id")
        .bind(who.user_id)
        .bind(who.session_id)
        .fetch_all(tx.conn())
        .await?;
    record_ended(&mut tx, source, who.user_id, "self", &ended).await?;
    tx.commit().await?;
    Ok(ended.len())
}

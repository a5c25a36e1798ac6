//! Passkeys and security keys (WebAuthn, with webauthn-rs): the relying party
//! from `FORTIFILE_PUBLIC_URL`, ceremonies kept server-side (one row per
//! session and kind, taken once with `DELETE … RETURNING`, five minutes), and
//! the credentials as rows, unique across every account.
//!
//! webauthn-rs checks the challenge, origin, relying party, user verification
//! and signature; it also refuses a signature counter that did not move past
//! the stored one. The stored counter itself moves only forward, by one
//! conditional `UPDATE`, so two assertions that raced past the check cannot
//! both be accepted.

use serde::{Serialize, de::DeserializeOwned};
use time::OffsetDateTime;
use url::Url;
use utoipa::ToSchema;
use uuid::Uuid;
use webauthn_rs::prelude::{
    AuthenticationResult, CreationChallengeResponse, Passkey, PasskeyAuthentication, PasskeyRegistration,
    PublicKeyCredential, RegisterPublicKeyCredential, RequestChallengeResponse, Webauthn, WebauthnBuilder,
};

use crate::{config::Config, db::TenantTx, http::error::AppError};

/// How long a ceremony waits for the authenticator.
pub const CEREMONY_FOR: std::time::Duration = std::time::Duration::from_secs(300);

/// The relying party for `config`, or why passkeys are unavailable: browsers
/// and webauthn-rs accept only a domain name as relying-party id.
pub fn relying_party(config: &Config) -> Result<Webauthn, String> {
    let Some(url) = config.public_url.as_ref() else {
        return Err("FORTIFILE_PUBLIC_URL is not set; passkeys need it (e.g. http://localhost:8080)".into());
    };
    let host = match url.host() {
        Some(url::Host::Domain(host)) => host.to_string(),
        _ => {
            return Err(format!(
                "FORTIFILE_PUBLIC_URL {url} names an IP address, which cannot be a WebAuthn relying party; \
                 use a host name (e.g. http://localhost:{})",
                url.port_or_known_default().unwrap_or(8080)
            ));
        }
    };
    let origin = Url::parse(&url.origin().ascii_serialization()).map_err(|e| e.to_string())?;
    WebauthnBuilder::new(&host, &origin)
        .and_then(|b| b.rp_name("FortiFile").build())
        .map_err(|e| format!("the WebAuthn relying party for {url}: {e}"))
}

/// A passkey as the API lists it.
#[derive(Debug, Serialize, sqlx::FromRow, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct PasskeyView {
    pub id: Uuid,
    pub name: String,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339::option")]
    #[schema(required = true)]
    pub last_used_at: Option<OffsetDateTime>,
}

pub async fn list(tx: &mut TenantTx, user: Uuid) -> Result<Vec<PasskeyView>, sqlx::Error> {
    sqlx::query_as("SELECT id, name, created_at, last_used_at FROM mfa_webauthn WHERE user_id = $1 ORDER BY created_at")
        .bind(user)
        .fetch_all(tx.conn())
        .await
}

async fn stored(tx: &mut TenantTx, user: Uuid) -> Result<Vec<Passkey>, AppError> {
    let rows: Vec<sqlx::types::Json<Passkey>> =
        sqlx::query_scalar("SELECT passkey FROM mfa_webauthn WHERE user_id = $1 ORDER BY created_at")
            .bind(user)
            .fetch_all(tx.conn())
            .await?;
    Ok(rows.into_iter().map(|j| j.0).collect())
}

/// Keeps `state` for `session`'s ceremony of `kind`, replacing an unfinished one.
async fn keep<S: Serialize>(
    tx: &mut TenantTx,
    session: Uuid,
    kind: &str,
    state: &S,
    name: Option<&str>,
    now: OffsetDateTime,
) -> Result<(), AppError> {
    let state = serde_json::to_value(state).map_err(anyhow::Error::from)?;
    sqlx::query(
        "INSERT INTO mfa_ceremonies (session_id, tenant_id, kind, state, name, expires_at) VALUES ($1, $2, $3, $4, $5, $6) \
         ON CONFLICT (session_id, kind) DO UPDATE SET state = EXCLUDED.state, name = EXCLUDED.name, \
             expires_at = EXCLUDED.expires_at",
    )
    .bind(session)
    .bind(tx.tenant_id())
    .bind(kind)
    .bind(state)
    .bind(name)
    .bind(now + CEREMONY_FOR)
    .execute(tx.conn())
    .await?;
    Ok(())
}

/// Takes `session`'s ceremony of `kind`: once, and only before it expires.
async fn take<S: DeserializeOwned>(
    tx: &mut TenantTx,
    session: Uuid,
    kind: &str,
    now: OffsetDateTime,
) -> Result<Option<(S, Option<String>)>, AppError> {
    let row: Option<(serde_json::Value, Option<String>, OffsetDateTime)> = sqlx::query_as(
        "DELETE FROM mfa_ceremonies WHERE session_id = $1 AND kind = $2 RETURNING state, name, expires_at",
    )
    .bind(session)
    .bind(kind)
    .fetch_optional(tx.conn())
    .await?;
    match row {
        Some((state, name, expires)) if expires > now => {
            Ok(Some((serde_json::from_value(state).map_err(anyhow::Error::from)?, name)))
        }
        _ => Ok(None),
    }
}

/// Starts registering a passkey for `user` (its other credentials excluded).
pub async fn start_registration(
    rp: &Webauthn,
    tx: &mut TenantTx,
    session: Uuid,
    user: Uuid,
    username: &str,
    name: &str,
    now: OffsetDateTime,
) -> Result<CreationChallengeResponse, AppError> {
    let exclude: Vec<_> = stored(tx, user).await?.iter().map(|p| p.cred_id().clone()).collect();
    let (challenge, state) = rp
        .start_passkey_registration(user, username, username, Some(exclude).filter(|e| !e.is_empty()))
        .map_err(|e| anyhow::anyhow!("starting a passkey registration: {e}"))?;
    keep(tx, session, "register", &state, Some(name), now).await?;
    Ok(challenge)
}

/// Finishes the session's registration: the new credential's id, or `None`
/// when the ceremony is missing, expired, or the browser's answer fails.
pub async fn finish_registration(
    rp: &Webauthn,
    tx: &mut TenantTx,
    session: Uuid,
    user: Uuid,
    credential: &RegisterPublicKeyCredential,
    now: OffsetDateTime,
) -> Result<Result<(Uuid, String), &'static str>, AppError> {
    let Some((state, name)) = take::<PasskeyRegistration>(tx, session, "register", now).await? else {
        return Ok(Err("no passkey registration is in progress for this session (or it expired)"));
    };
    let passkey = match rp.finish_passkey_registration(credential, &state) {
        Ok(p) => p,
        Err(e) => {
            tracing::info!(error = %e, "a passkey registration failed its checks");
            return Ok(Err("the authenticator's answer did not verify"));
        }
    };
    let name = name.unwrap_or_else(|| "Passkey".into());
    let inserted = sqlx::query_scalar(
        "INSERT INTO mfa_webauthn (tenant_id, user_id, credential_id, name, passkey, created_at) \
         VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (credential_id) DO NOTHING RETURNING id",
    )
    .bind(tx.tenant_id())
    .bind(user)
    .bind(passkey.cred_id().as_slice())
    .bind(&name)
    .bind(sqlx::types::Json(&passkey))
    .bind(now)
    .fetch_optional(tx.conn())
    .await?;
    Ok(inserted.map(|id| (id, name)).ok_or("this authenticator is already registered"))
}

/// Starts an authentication with `user`'s passkeys, for `session`; `None`
/// when the user has none.
pub async fn start_authentication(
    rp: &Webauthn,
    tx: &mut TenantTx,
    session: Uuid,
    user: Uuid,
    now: OffsetDateTime,
) -> Result<Option<RequestChallengeResponse>, AppError> {
    let passkeys = stored(tx, user).await?;
    if passkeys.is_empty() {
        return Ok(None);
    }
    let (challenge, state) = rp
        .start_passkey_authentication(&passkeys)
        .map_err(|e| anyhow::anyhow!("starting a passkey authentication: {e}"))?;
    keep(tx, session, "authenticate", &state, None, now).await?;
    Ok(Some(challenge))
}

/// Checks an assertion against the session's authentication ceremony and
/// `user`'s credentials; true only when it verifies and its credential's state
/// (counter, backup flags, last use) was moved forward by this statement.
pub async fn authenticate(
    rp: &Webauthn,
    tx: &mut TenantTx,
    session: Uuid,
    user: Uuid,
    credential: &PublicKeyCredential,
    now: OffsetDateTime,
) -> Result<bool, AppError> {
    let Some((state, _)) = take::<PasskeyAuthentication>(tx, session, "authenticate", now).await? else {
        return Ok(false);
    };
    let result: AuthenticationResult = match rp.finish_passkey_authentication(credential, &state) {
        Ok(r) => r,
        Err(e) => {
            tracing::info!(error = %e, "a passkey assertion failed its checks");
            return Ok(false);
        }
    };
    let row: Option<(Uuid, sqlx::types::Json<Passkey>)> =
        sqlx::query_as("SELECT id, passkey FROM mfa_webauthn WHERE user_id = $1 AND credential_id = $2 FOR UPDATE")
            .bind(user)
            .bind(result.cred_id().as_slice())
            .fetch_optional(tx.conn())
            .await?;
    let Some((id, sqlx::types::Json(mut passkey))) = row else { return Ok(false) };
    passkey.update_credential(&result);
    let counter = i64::from(result.counter());
    let moved = sqlx::query(
        "UPDATE mfa_webauthn SET passkey = $2, counter = greatest(counter, $3), last_used_at = $4 \
         WHERE id = $1 AND ($3 = 0 OR counter < $3)",
    )
    .bind(id)
    .bind(sqlx::types::Json(&passkey))
    .bind(counter)
    .bind(now)
    .execute(tx.conn())
    .await?;
    Ok(moved.rows_affected() == 1)
}

pub async fn rename(tx: &mut TenantTx, user: Uuid, id: Uuid, name: &str) -> Result<bool, sqlx::Error> {
    let done = sqlx::query("UPDATE mfa_webauthn SET name = $3 WHERE id = $1 AND user_id = $2")
        .bind(id)
        .bind(user)
        .bind(name)
        .execute(tx.conn())
        .await?;
    Ok(done.rows_affected() == 1)
}

pub async fn delete(tx: &mut TenantTx, user: Uuid, id: Uuid) -> Result<bool, sqlx::Error> {
    let done = sqlx::query("DELETE FROM mfa_webauthn WHERE id = $1 AND user_id = $2")
        .bind(id)
        .bind(user)
        .execute(tx.conn())
        .await?;
    Ok(done.rows_affected() == 1)
}

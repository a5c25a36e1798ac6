//! Server-side sessions.
//!
//! The cookie holds `<tenant id>.<token>`; the token is 256 random bits and the
//! database keeps only its SHA-256. The session's CSRF token is derived from the
//! session token (a second, domain-separated SHA-256), so it needs no storage and
//! reveals nothing about the cookie.

use std::time::Duration;

use axum::http::{HeaderMap, HeaderValue, header};
use ring::{digest, rand::SecureRandom};
use secrecy::{ExposeSecret, SecretString};
use time::OffsetDateTime;
use uuid::Uuid;

use crate::{audit::Source, config::Config, db::TenantTx};

const TOKEN_BYTES: usize = 32;

/// A session's cookie value: the tenant it belongs to and its secret token.
#[derive(Clone)]
pub struct SessionCookie {
    pub tenant: Uuid,
    token: SecretString,
}

impl std::fmt::Debug for SessionCookie {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SessionCookie").field("tenant", &self.tenant).field("token", &"[redacted]").finish()
    }
}

impl SessionCookie {
    fn generate(tenant: Uuid) -> anyhow::Result<Self> {
        let mut bytes = [0u8; TOKEN_BYTES];
        ring::rand::SystemRandom::new()
            .fill(&mut bytes)
            .map_err(|_| anyhow::anyhow!("the system random generator failed"))?;
        Ok(SessionCookie { tenant, token: SecretString::from(hex::encode(bytes)) })
    }

    /// Parses a cookie value; anything malformed is simply no session.
    pub fn parse(value: &str) -> Option<Self> {
        let (tenant, token) = value.split_once('.')?;
        let tenant = Uuid::try_parse(tenant).ok()?;
        let valid = token.len() == TOKEN_BYTES * 2 && token.bytes().all(|b| b.is_ascii_hexdigit());
        valid.then(|| SessionCookie { tenant, token: SecretString::from(token.to_ascii_lowercase()) })
    }

    fn value(&self) -> String {
        format!("{}.{}", self.tenant.simple(), self.token.expose_secret())
    }

    /// What the database stores and looks sessions up by.
    pub fn token_hash(&self) -> Vec<u8> {
        digest::digest(&digest::SHA256, self.token.expose_secret().as_bytes()).as_ref().to_vec()
    }

    /// The anti-CSRF token for this session.
    pub fn csrf_token(&self) -> String {
        let mut ctx = digest::Context::new(&digest::SHA256);
        ctx.update(b"fortifile.csrf.v1\0");
        ctx.update(self.token.expose_secret().as_bytes());
        hex::encode(ctx.finish().as_ref())
    }

    /// Constant-time comparison of a presented CSRF token with this session's.
    pub fn csrf_matches(&self, presented: &str) -> bool {
        let expected = self.csrf_token();
        let (a, b) = (expected.as_bytes(), presented.as_bytes());
        a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
    }
}

pub fn cookie_name(config: &Config) -> &'static str {
    if config.secure_cookies() { "__Host-fortifile_session" } else { "fortifile_session" }
}

/// The values sent under the session cookie's name.
fn sent_values<'a>(config: &Config, headers: &'a HeaderMap) -> impl Iterator<Item = &'a str> {
    let name = cookie_name(config);
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .filter(move |(k, _)| *k == name)
        .map(|(_, v)| v)
}

/// Whether the request sent a cookie under the session cookie's name, well
/// formed or not.
pub fn cookie_sent(config: &Config, headers: &HeaderMap) -> bool {
    sent_values(config, headers).next().is_some()
}

/// The session cookie sent with a request, if any.
pub fn from_headers(config: &Config, headers: &HeaderMap) -> Option<SessionCookie> {
    sent_values(config, headers).next().and_then(SessionCookie::parse)
}

pub fn set_cookie(config: &Config, cookie: &SessionCookie) -> HeaderValue {
    let secure = if config.secure_cookies() { "; Secure" } else { "" };
    let value = format!(
        "{}={}; HttpOnly; SameSite=Lax; Path=/; Max-Age={}{secure}",
        cookie_name(config),
        cookie.value(),
        config.session_absolute_timeout.as_secs()
    );
    // Built from hex, a UUID and fixed text: always a valid header value.
    HeaderValue::from_str(&value).unwrap_or_else(|_| HeaderValue::from_static(""))
}

pub fn clear_cookie(config: &Config) -> HeaderValue {
    let secure = if config.secure_cookies() { "; Secure" } else { "" };
    let value = format!("{}=; HttpOnly; SameSite=Lax; Path=/; Max-Age=0{secure}", cookie_name(config));
    HeaderValue::from_str(&value).unwrap_or_else(|_| HeaderValue::from_static(""))
}

/// What a new session may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Opening {
    /// The password was right and the user has no second factor.
    Password,
    /// The password was right; a second factor is outstanding. Lasts
    /// [`PENDING_FOR`] and reaches only the second-factor routes.
    Pending,
    /// A second factor was verified now.
    Verified,
}

/// How long a pending session waits for its second factor.
pub const PENDING_FOR: Duration = Duration::from_secs(300);

/// Creates a session for `user_id` and returns its cookie.
pub async fn create(
    tx: &mut TenantTx,
    user_id: Uuid,
    now: OffsetDateTime,
    absolute: Duration,
    source: &Source,
    opening: Opening,
) -> anyhow::Result<SessionCookie> {
    let cookie = SessionCookie::generate(tx.tenant_id())?;
    let lifetime = if opening == Opening::Pending { PENDING_FOR.min(absolute) } else { absolute };
    sqlx::query(
        "INSERT INTO sessions (tenant_id, user_id, token_hash, created_at, last_seen_at, expires_at, ip, user_agent, \
                               mfa_pending, verified_at) \
         VALUES ($1, $2, $3, $4, $4, $5, $6, $7, $8, $9)",
    )
    .bind(tx.tenant_id())
    .bind(user_id)
    .bind(cookie.token_hash())
    .bind(now)
    .bind(now + lifetime)
    .bind(source.ip.map(ipnet::IpNet::from))
    .bind(source.user_agent.as_deref())
    .bind(opening == Opening::Pending)
    .bind((opening == Opening::Verified).then_some(now))
    .execute(tx.conn())
    .await?;
    Ok(cookie)
}

/// Records a second-factor verification on a full session (a step-up).
pub async fn mark_verified(tx: &mut TenantTx, session_id: Uuid, now: OffsetDateTime) -> Result<(), sqlx::Error> {
    sqlx::query("UPDATE sessions SET verified_at = $2 WHERE id = $1 AND NOT mfa_pending")
        .bind(session_id)
        .bind(now)
        .execute(tx.conn())
        .await
        .map(|_| ())
}

/// Claims one of a pending session's `max` tries at its second factor (counted
/// before the factor is checked; the row lock queues parallel tries): how many
/// it has used with this one, or `None` when none is left or it is gone.
pub async fn claim_try(tx: &mut TenantTx, session_id: Uuid, max: i32) -> Result<Option<i32>, sqlx::Error> {
    sqlx::query_scalar(
        "UPDATE sessions SET mfa_failures = mfa_failures + 1 \
         WHERE id = $1 AND mfa_pending AND mfa_failures < $2 RETURNING mfa_failures",
    )
    .bind(session_id)
    .bind(max)
    .fetch_optional(tx.conn())
    .await
}

/// Ends every session of `user` (their factors were reset).
pub async fn delete_all_of(tx: &mut TenantTx, user_id: Uuid) -> Result<u64, sqlx::Error> {
    let done = sqlx::query("DELETE FROM sessions WHERE user_id = $1").bind(user_id).execute(tx.conn()).await?;
    Ok(done.rows_affected())
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExpiredBy {
    Idle,
    Absolute,
}

impl ExpiredBy {
    pub fn as_str(self) -> &'static str {
        match self {
            ExpiredBy::Idle => "idle_timeout",
            ExpiredBy::Absolute => "absolute_timeout",
        }
    }
}

/// Extends a session's idle timer, unless a concurrent request of the same
/// session holds its row (that one is extending it already), so that no
/// request waits for another.
pub async fn touch(tx: &mut TenantTx, session_id: Uuid, now: OffsetDateTime) -> Result<(), sqlx::Error> {
    sqlx::query(
        "UPDATE sessions SET last_seen_at = $2 \
          WHERE id = (SELECT id FROM sessions WHERE id = $1 FOR UPDATE SKIP LOCKED) AND last_seen_at < $2",
    )
    .bind(session_id)
    .bind(now)
    .execute(tx.conn())
    .await
    .map(|_| ())
}

/// The session `cookie` names, if it exists (whatever its age): (session, user).
pub async fn find(tx: &mut TenantTx, cookie: &SessionCookie) -> Result<Option<(Uuid, Uuid)>, sqlx::Error> {
    sqlx::query_as("SELECT id, user_id FROM sessions WHERE token_hash = $1")
        .bind(cookie.token_hash())
        .fetch_optional(tx.conn())
        .await
}

/// Deletes a session; true if this call removed it.
pub async fn delete(tx: &mut TenantTx, session_id: Uuid) -> Result<bool, sqlx::Error> {
    let done = sqlx::query("DELETE FROM sessions WHERE id = $1").bind(session_id).execute(tx.conn()).await?;
    Ok(done.rows_affected() == 1)
}

/// Deletes the session `cookie` names, if it exists (login replaces it).
pub async fn delete_by_cookie(tx: &mut TenantTx, cookie: &SessionCookie) -> Result<(), sqlx::Error> {
    sqlx::query("DELETE FROM sessions WHERE token_hash = $1")
        .bind(cookie.token_hash())
        .execute(tx.conn())
        .await
        .map(|_| ())
}

/// Deletes up to 1000 sessions past their absolute expiry or idle for longer than
/// `idle` (or their user's shortest role timeout), returning what it removed. Rows another transaction is already
/// removing are skipped, so concurrent sweeps (several instances) never report
/// the same session twice.
pub async fn delete_expired(
    tx: &mut TenantTx,
    now: OffsetDateTime,
    idle: Duration,
) -> Result<Vec<(Uuid, Uuid, ExpiredBy)>, sqlx::Error> {
    let rows: Vec<(Uuid, Uuid, bool)> = sqlx::query_as(
        "DELETE FROM sessions WHERE id IN ( \
             SELECT s.id FROM sessions s WHERE s.expires_at <= $1 OR s.last_seen_at < $2 \
                OR s.last_seen_at < $1 - make_interval(mins => ( \
                    SELECT min(r.session_timeout_minutes) FROM user_roles ur JOIN roles r ON r.id = ur.role_id \
                    WHERE ur.user_id = s.user_id AND (ur.expires_at IS NULL OR ur.expires_at > $1))) \
             LIMIT 1000 FOR UPDATE OF s SKIP LOCKED) \
         RETURNING id, user_id, expires_at <= $1",
    )
    .bind(now)
    .bind(now - idle)
    .fetch_all(tx.conn())
    .await?;
    Ok(rows
        .into_iter()
        .map(|(id, user, absolute)| (id, user, if absolute { ExpiredBy::Absolute } else { ExpiredBy::Idle }))
        .collect())
}

//! Brute-force protection for logins (NIST SP 800-63B-4 §3.2.2, ASVS 6.3.1).
//!
//! Every login attempt first *claims* a try, per account and per client
//! address, in PostgreSQL (`throttles`, shared by every instance). A claim is
//! one upsert: it counts the attempt in its window and says whether the row
//! was free of a delay when it was taken, so parallel attempts queue on the
//! row lock and none slips past. Once a window holds the limit
//! (`FORTIFILE_LOGIN_LOCKOUT`, default 5 in 15 minutes per account;
//! `FORTIFILE_LOGIN_ADDRESS_LIMIT`, default 30 in 15 minutes per address) each
//! further attempt sets a delay that doubles, from one minute up to fifteen.
//! A full success (the password, and the second factor where there is one)
//! clears the account's count. The address counts failures only, and a
//! success takes nothing off it (one's own logins must not wear a spray's
//! count down). Step-up codes, second factors and current passwords claim
//! against the account too ([`check`]): none is guessed faster than a password.
//!
//! Separately, wrong passwords and second factors in a row are counted on the
//! account; at 100 it is locked until an administrator unlocks it.
//!
//! A browser that has signed in to an account before carries a device cookie
//! (HMAC of tenant and user under a key derived from the master key, as
//! OWASP's "device cookies" describe): for that account it is exempt from the
//! address limit, so an attacker sharing an office's address cannot lock its
//! people out, though never from the account's own.

use axum::http::{HeaderMap, HeaderValue, header};
use ring::hmac;
use serde_json::json;
use time::OffsetDateTime;
use uuid::Uuid;

use crate::{
    audit::{self, Action, Entry, Outcome, Source},
    config::{Config, Threshold},
    db::TenantTx,
};

/// Consecutive wrong passwords or second factors that lock an account until an
/// administrator unlocks it.
pub const HARD_LOCK_AFTER: i32 = 100;
/// What [`crate::files::crypto::MasterKey::derive`] derives the device key for.
pub const DEVICE_PURPOSE: &str = "login.device.v1";
const DEVICE_COOKIE: &str = "fortifile_device";
const DEVICE_DAYS: i64 = 365;

/// Why an attempt was not even tried.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Held {
    /// A delay of the account's or the address's window.
    Throttled,
    /// 100 failures in a row: until an administrator unlocks the account.
    Locked,
}

impl Held {
    pub fn reason(self) -> &'static str {
        match self {
            Held::Throttled => "throttled",
            Held::Locked => "locked",
        }
    }
}

#[derive(sqlx::FromRow)]
struct Claimed {
    admitted: bool,
    attempts: i32,
    blocked_until: Option<OffsetDateTime>,
    newly_blocked: bool,
}

/// Claims one try of `kind` for `subject`: whether it may go ahead, and
/// whether this claim started a delay (recorded as `auth.lockout`).
async fn claim(
    tx: &mut TenantTx,
    kind: &str,
    subject: &str,
    limit: Threshold,
    now: OffsetDateTime,
) -> Result<Claimed, sqlx::Error> {
    // A claim is admitted when no delay runs; a held claim changes nothing (a
    // delay is not stretched by knocking on it). An admitted one counts:
    // counting starts again only after a quiet window (the window over, and no
    // delay for a window's length), and from the limit's attempt on each sets
    // a delay of 2^(attempt - limit) minutes, at most 15: a slow guesser
    // climbs to fifteen minutes and stays there.
    // `admitted` is decided on the row as locked by this statement (a parallel
    // claim waits for the lock and then sees this one's delay), and the
    // admitted claim that reached the limit started the lockout.
    sqlx::query_as(
        "INSERT INTO throttles AS t (tenant_id, kind, subject, window_start, attempts, blocked_until, admitted) \
         VALUES ($1, $2, $3, $4, 1, CASE WHEN $6 <= 1 THEN $4 + interval '1 minute' END, true) \
         ON CONFLICT (tenant_id, kind, subject) DO UPDATE SET \
           admitted = t.blocked_until IS NULL OR t.blocked_until <= $4, \
           attempts = CASE WHEN t.blocked_until > $4 THEN t.attempts \
                           WHEN t.window_start <= $4 - make_interval(mins => $5) \
                            AND coalesce(t.blocked_until, '-infinity') <= $4 - make_interval(mins => $5) THEN 1 \
                           ELSE least(t.attempts, 1000000) + 1 END, \
           window_start = CASE WHEN t.blocked_until > $4 THEN t.window_start \
                               WHEN t.window_start <= $4 - make_interval(mins => $5) \
                                AND coalesce(t.blocked_until, '-infinity') <= $4 - make_interval(mins => $5) THEN $4 \
                               ELSE t.window_start END, \
           blocked_until = CASE WHEN t.blocked_until > $4 THEN t.blocked_until \
                                WHEN t.window_start <= $4 - make_interval(mins => $5) \
                                 AND coalesce(t.blocked_until, '-infinity') <= $4 - make_interval(mins => $5) \
                                    THEN CASE WHEN $6 <= 1 THEN $4 + interval '1 minute' END \
                                WHEN least(t.attempts, 1000000) + 1 >= $6 \
                                    THEN $4 + make_interval(mins => \
                                         least(15, power(2, least(least(t.attempts, 1000000) + 1 - $6, 4))::int)) \
                                ELSE t.blocked_until END \
         RETURNING t.admitted, t.attempts, t.blocked_until, \
                   (t.admitted AND t.blocked_until > $4 AND t.attempts = $6) AS newly_blocked",
    )
    .bind(tx.tenant_id())
    .bind(kind)
    .bind(subject)
    .bind(now)
    .bind(limit.minutes)
    .bind(limit.count)
    .fetch_one(tx.conn())
    .await
}

/// Claims a login attempt against `account` (when the name matched one) from
/// `source` (unless `device` exempts it), in `tx`; `Some` when it must not be
/// tried. The start of a delay is recorded as `auth.lockout`.
pub async fn admit(
    tx: &mut TenantTx,
    config: &Config,
    source: &Source,
    account: Option<(Uuid, Option<OffsetDateTime>)>,
    device: bool,
    now: OffsetDateTime,
) -> Result<Option<Held>, sqlx::Error> {
    let mut held = None;
    if let Some(ip) = source.ip.filter(|_| !device) {
        // The address counts failures (`address_failed`): here only its delay.
        let delayed: bool = sqlx::query_scalar(
            "SELECT EXISTS (SELECT 1 FROM throttles WHERE kind = 'login_address' AND subject = $1 AND blocked_until > $2)",
        )
        .bind(ip.to_string())
        .bind(now)
        .fetch_one(tx.conn())
        .await?;
        if delayed {
            held = Some(Held::Throttled);
        }
    }
    if let Some((user, locked_at)) = account {
        if locked_at.is_some() {
            return Ok(Some(Held::Locked));
        }
        let claimed = claim(tx, "login_account", &user.to_string(), config.login_lockout, now).await?;
        if claimed.newly_blocked {
            record_lockout(tx, source, Some(user), "account", &claimed).await?;
        }
        if !claimed.admitted {
            held = Some(Held::Throttled);
        }
    }
    Ok(held)
}

async fn record_lockout(
    tx: &mut TenantTx,
    source: &Source,
    user: Option<Uuid>,
    kind: &str,
    claimed: &Claimed,
) -> Result<(), sqlx::Error> {
    let until = claimed.blocked_until.and_then(|t| t.format(&time::format_description::well_known::Rfc3339).ok());
    let mut entry = Entry::new(Action::AuthLockout, Outcome::Success)
        .details(json!({ "by": kind, "until": until, "attempts": claimed.attempts }));
    if let Some(user) = user {
        entry = entry.user(user).target("user", user);
    }
    audit::record(tx, source, entry).await.map(|_| ())
}

/// Counts a failed login from `source` against its address (all usernames):
/// past `FORTIFILE_LOGIN_ADDRESS_LIMIT` the address waits like an account.
/// A browser with the account's device cookie is not counted (`device`).
pub async fn address_failed(
    tx: &mut TenantTx,
    config: &Config,
    source: &Source,
    device: bool,
    now: OffsetDateTime,
) -> Result<(), sqlx::Error> {
    let Some(ip) = source.ip.filter(|_| !device) else { return Ok(()) };
    let claimed = claim(tx, "login_address", &ip.to_string(), config.login_address_limit, now).await?;
    if claimed.newly_blocked {
        record_lockout(tx, source, None, "address", &claimed).await?;
    }
    Ok(())
}

/// Before a signed-in user's second factor or current password is checked:
/// claims a try against the account, as a login does, and says whether it must
/// be refused (a delay runs, or the account is locked).
pub async fn check(
    tx: &mut TenantTx,
    config: &Config,
    source: &Source,
    user: Uuid,
    now: OffsetDateTime,
) -> Result<Option<Held>, sqlx::Error> {
    let locked: bool = sqlx::query_scalar("SELECT locked_at IS NOT NULL FROM users WHERE id = $1")
        .bind(user)
        .fetch_optional(tx.conn())
        .await?
        .unwrap_or(true);
    if locked {
        return Ok(Some(Held::Locked));
    }
    let claimed = claim(tx, "login_account", &user.to_string(), config.login_lockout, now).await?;
    if claimed.newly_blocked {
        record_lockout(tx, source, Some(user), "account", &claimed).await?;
    }
    Ok((!claimed.admitted).then_some(Held::Throttled))
}

/// Counts a wrong password or second factor against `user`; at
/// [`HARD_LOCK_AFTER`] in a row the account locks (recorded as `auth.lockout`).
pub async fn failed(tx: &mut TenantTx, source: &Source, user: Uuid, now: OffsetDateTime) -> Result<(), sqlx::Error> {
    let (failures, newly_locked): (i32, bool) = sqlx::query_as(
        "UPDATE users SET failed_logins = least(failed_logins, 1000000) + 1, \
                          locked_at = CASE WHEN failed_logins + 1 >= $2 THEN coalesce(locked_at, $3) ELSE locked_at END \
         WHERE id = $1 RETURNING failed_logins, locked_at = $3 AND failed_logins = $2",
    )
    .bind(user)
    .bind(HARD_LOCK_AFTER)
    .bind(now)
    .fetch_one(tx.conn())
    .await?;
    if newly_locked {
        let entry = Entry::new(Action::AuthLockout, Outcome::Success)
            .user(user)
            .target("user", user)
            .details(json!({ "by": "account", "until": null, "consecutiveFailures": failures }));
        audit::record(tx, source, entry).await?;
    }
    Ok(())
}

/// A full success (or a verified second factor): the account's count and
/// delay are cleared. The address's count of failures stays.
pub async fn succeeded(tx: &mut TenantTx, user: Uuid) -> Result<(), sqlx::Error> {
    sqlx::query("UPDATE users SET failed_logins = 0 WHERE id = $1 AND failed_logins <> 0")
        .bind(user)
        .execute(tx.conn())
        .await?;
    sqlx::query("DELETE FROM throttles WHERE kind = 'login_account' AND subject = $1")
        .bind(user.to_string())
        .execute(tx.conn())
        .await?;
    Ok(())
}

/// Unlocks `user` (an administrator's `POST /api/users/{id}/unlock`): the hard
/// lock, the count in a row, and any running delay. True if anything was held.
pub async fn unlock(tx: &mut TenantTx, user: Uuid) -> Result<bool, sqlx::Error> {
    let was: Option<bool> = sqlx::query_scalar(
        "WITH old AS (SELECT locked_at FROM users WHERE id = $1 FOR UPDATE) \
         UPDATE users SET failed_logins = 0, locked_at = NULL FROM old WHERE users.id = $1 \
         RETURNING old.locked_at IS NOT NULL",
    )
    .bind(user)
    .fetch_optional(tx.conn())
    .await?;
    let delayed = sqlx::query("DELETE FROM throttles WHERE kind = 'login_account' AND subject = $1")
        .bind(user.to_string())
        .execute(tx.conn())
        .await?;
    Ok(was.unwrap_or(false) || delayed.rows_affected() > 0)
}

/// Signs device cookies.
#[derive(Clone)]
pub struct Devices {
    key: hmac::Key,
}

impl std::fmt::Debug for Devices {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Devices([redacted])")
    }
}

impl Devices {
    pub fn new(key: &[u8; 32]) -> Devices {
        Devices { key: hmac::Key::new(hmac::HMAC_SHA256, key) }
    }

    fn tag(&self, tenant: Uuid, user: Uuid) -> String {
        let tag = hmac::sign(&self.key, &[tenant.as_bytes().as_slice(), user.as_bytes()].concat());
        hex::encode(&tag.as_ref()[..16])
    }

    /// The `Set-Cookie` after a successful login of `user`.
    pub fn cookie(&self, config: &Config, tenant: Uuid, user: Uuid) -> HeaderValue {
        let secure = if config.secure_cookies() { "; Secure" } else { "" };
        let value = format!(
            "{DEVICE_COOKIE}={}.{}; HttpOnly; SameSite=Lax; Path=/; Max-Age={}{secure}",
            user.simple(),
            self.tag(tenant, user),
            DEVICE_DAYS * 86_400
        );
        HeaderValue::from_str(&value).unwrap_or_else(|_| HeaderValue::from_static(""))
    }

    /// Whether `headers` carry this browser's device cookie for `user` of `tenant`.
    pub fn recognises(&self, headers: &HeaderMap, tenant: Uuid, user: Uuid) -> bool {
        let expected = format!("{}.{}", user.simple(), self.tag(tenant, user));
        headers
            .get_all(header::COOKIE)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(';'))
            .filter_map(|pair| pair.trim().split_once('='))
            .filter(|(k, _)| *k == DEVICE_COOKIE)
            .any(|(_, v)| {
                v.len() == expected.len() && v.bytes().zip(expected.bytes()).fold(0u8, |acc, (a, b)| acc | (a ^ b)) == 0
            })
    }
}

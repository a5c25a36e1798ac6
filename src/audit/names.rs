//! What the log keeps of a name typed at login that matches no account.
//!
//! People type passwords into the username field. For an unknown account the
//! log therefore keeps a keyed hash of the name (HMAC-SHA256 under a key derived
//! from the master key, of the trimmed, lower-cased text) and its length, never
//! the text: equal names still hash equally, so password spraying is still
//! counted by distinct values, and an administrator who types a name into the
//! dashboard's filter finds its attempts, but nobody reading the log, an export
//! or a backup of the database learns what was typed. Known accounts are
//! recorded by their own username. Entries written before this rule are
//! rewritten the same way at start-up ([`hash_legacy_names`]).

use std::fmt;

use ring::hmac;
use sqlx::{Connection, PgConnection, postgres::PgConnectOptions};
use uuid::Uuid;

/// The purpose the key is derived for (see `MasterKey::derive`).
pub const PURPOSE: &str = "audit.login-name.v1";
/// Marks a stored value as a hash, not a name (names cannot contain `:`).
const PREFIX: &str = "hmac:";

#[derive(Clone)]
pub struct LoginNames {
    key: hmac::Key,
}

impl fmt::Debug for LoginNames {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("LoginNames([redacted])")
    }
}

impl LoginNames {
    pub fn new(secret: &[u8; 32]) -> Self {
        LoginNames { key: hmac::Key::new(hmac::HMAC_SHA256, secret) }
    }

    /// The stored form of a typed name: `hmac:` and 32 hex digits.
    pub fn digest(&self, typed: &str) -> String {
        let tag = hmac::sign(&self.key, typed.trim().to_lowercase().as_bytes());
        format!("{PREFIX}{}", hex::encode(&tag.as_ref()[..16]))
    }

    /// Whether `value` is a stored digest rather than a name.
    pub fn is_digest(value: &str) -> bool {
        value.strip_prefix(PREFIX).is_some_and(|h| h.len() == 32 && h.bytes().all(|b| b.is_ascii_hexdigit()))
    }
}

/// How many entries one pass of [`hash_legacy_names`] rewrites at a time.
const BATCH: i64 = 1000;

/// Rewrites failed-login entries written before names were hashed: the text
/// typed for no account becomes its keyed hash and length, as new entries have
/// it. Runs as the schema owner at start-up (the serving role cannot change
/// the log): the append-only trigger is off only inside each batch's
/// transaction, and nothing but those two fields changes. Returns how many
/// entries it rewrote; once there are none left it costs one query per tenant.
pub async fn hash_legacy_names(owner: &PgConnectOptions, names: &LoginNames) -> anyhow::Result<u64> {
    let mut conn = PgConnection::connect_with(owner).await?;
    let tenants: Vec<Uuid> = sqlx::query_scalar("SELECT id FROM tenants").fetch_all(&mut conn).await?;
    let mut rewritten = 0;
    for tenant in tenants {
        loop {
            let mut tx = conn.begin().await?;
            sqlx::query("SELECT set_config('app.tenant_id', $1, true)")
                .bind(tenant.to_string())
                .execute(&mut *tx)
                .await?;
            let rows: Vec<(Uuid, time::OffsetDateTime, String)> = sqlx::query_as(
                "SELECT id, created_at, details->>'username' FROM audit_logs \
                 WHERE tenant_id = $1 AND action = 'auth.login' AND details->>'reason' = 'unknown_user' \
                   AND details->>'username' IS NOT NULL AND details->>'username' !~ '^hmac:[0-9a-f]{32}$' \
                 LIMIT $2",
            )
            .bind(tenant)
            .bind(BATCH)
            .fetch_all(&mut *tx)
            .await?;
            if rows.is_empty() {
                break;
            }
            sqlx::raw_sql("ALTER TABLE audit_logs DISABLE TRIGGER audit_logs_append_only").execute(&mut *tx).await?;
            for (id, at, typed) in &rows {
                sqlx::query(
                    "UPDATE audit_logs SET details = details || jsonb_build_object('username', $3::text, \
                            'usernameLength', $4::integer) \
                     WHERE id = $1 AND created_at = $2",
                )
                .bind(id)
                .bind(at)
                .bind(names.digest(typed))
                .bind(typed.chars().count() as i32)
                .execute(&mut *tx)
                .await?;
            }
            sqlx::raw_sql("ALTER TABLE audit_logs ENABLE TRIGGER audit_logs_append_only").execute(&mut *tx).await?;
            tx.commit().await?;
            rewritten += rows.len() as u64;
        }
    }
    conn.close().await.ok();
    Ok(rewritten)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_typed_name_is_kept_only_as_a_keyed_hash_equal_for_equal_names() {
        let names = LoginNames::new(&[7; 32]);
        let d = names.digest("  Hunter2-Password ");
        assert!(LoginNames::is_digest(&d), "{d}");
        assert!(!d.to_lowercase().contains("hunter2"));
        assert_eq!(d, names.digest("hunter2-password"), "case and spaces do not make a new value");
        assert_ne!(d, names.digest("hunter3-password"));
        assert_ne!(d, LoginNames::new(&[8; 32]).digest("hunter2-password"), "the key matters");
        assert!(!LoginNames::is_digest("alice"));
        assert!(!format!("{names:?}").contains('7'));
    }
}

//! The second factors as rows: a user's TOTP factor and recovery codes, each
//! read and changed inside the request's transaction. Every check that must
//! hold under concurrency is one conditional statement: a TOTP step moves
//! forward only once, a recovery code is used only once.

use ring::{
    digest,
    rand::{SecureRandom, SystemRandom},
};
use time::OffsetDateTime;
use uuid::Uuid;
use zeroize::Zeroizing;

use super::totp::{self, Secret};
use crate::db::TenantTx;

/// How many recovery codes a set has.
pub const RECOVERY_CODES: usize = 10;
const CODE_ALPHABET: &[u8] = b"abcdefghjkmnpqrstuvwxyz23456789";

/// A user's TOTP factor as stored.
#[derive(sqlx::FromRow)]
pub struct TotpRow {
    pub secret: Vec<u8>,
    pub key_id: String,
    pub created_at: OffsetDateTime,
    pub confirmed_at: Option<OffsetDateTime>,
    pub last_used_at: Option<OffsetDateTime>,
}

impl std::fmt::Debug for TotpRow {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TotpRow").field("key_id", &self.key_id).field("confirmed_at", &self.confirmed_at).finish()
    }
}

pub async fn totp(tx: &mut TenantTx, user: Uuid) -> Result<Option<TotpRow>, sqlx::Error> {
    sqlx::query_as("SELECT secret, key_id, created_at, confirmed_at, last_used_at FROM mfa_totp WHERE user_id = $1")
        .bind(user)
        .fetch_optional(tx.conn())
        .await
}

/// Stores a new, unconfirmed secret for `user`, replacing an unconfirmed one.
/// False when a confirmed factor exists (remove it first).
pub async fn put_unconfirmed(
    tx: &mut TenantTx,
    user: Uuid,
    sealed: &[u8],
    key_id: &str,
    now: OffsetDateTime,
) -> Result<bool, sqlx::Error> {
    let done = sqlx::query(
        "INSERT INTO mfa_totp (tenant_id, user_id, secret, key_id, created_at) VALUES ($1, $2, $3, $4, $5) \
         ON CONFLICT (user_id) DO UPDATE SET secret = EXCLUDED.secret, key_id = EXCLUDED.key_id, \
             created_at = EXCLUDED.created_at, last_step = 0 \
         WHERE mfa_totp.confirmed_at IS NULL",
    )
    .bind(tx.tenant_id())
    .bind(user)
    .bind(sealed)
    .bind(key_id)
    .bind(now)
    .execute(tx.conn())
    .await?;
    Ok(done.rows_affected() == 1)
}

/// Accepts a TOTP `code` for `user` at `now`: true only for the one statement
/// that moves the factor's last accepted step forward to the code's step, so a
/// code (or an older one) is never accepted twice, even by two requests at once.
/// `confirming`: the code confirms an unconfirmed factor (and only such).
pub async fn accept_totp(
    tx: &mut TenantTx,
    key: &[u8; 32],
    user: Uuid,
    code: &str,
    now: OffsetDateTime,
    confirming: bool,
) -> anyhow::Result<bool> {
    let Some(row) = totp(tx, user).await? else { return Ok(false) };
    if row.confirmed_at.is_some() == confirming {
        return Ok(false);
    }
    let secret = Secret::open(key, tx.tenant_id(), user, &row.secret)?;
    let Some(step) = secret.matching_step(code, now) else { return Ok(false) };
    let moved = sqlx::query(
        "UPDATE mfa_totp SET last_step = $2, last_used_at = $3, confirmed_at = coalesce(confirmed_at, $3) \
         WHERE user_id = $1 AND last_step < $2 AND (confirmed_at IS NULL) = $4",
    )
    .bind(user)
    .bind(step)
    .bind(now)
    .bind(confirming)
    .execute(tx.conn())
    .await?;
    Ok(moved.rows_affected() == 1)
}

pub async fn delete_totp(tx: &mut TenantTx, user: Uuid) -> Result<bool, sqlx::Error> {
    let done = sqlx::query("DELETE FROM mfa_totp WHERE user_id = $1").bind(user).execute(tx.conn()).await?;
    Ok(done.rows_affected() == 1)
}

/// The user's confirmed methods, in the order the API lists them.
pub async fn methods(tx: &mut TenantTx, user: Uuid) -> Result<Vec<&'static str>, sqlx::Error> {
    let (totp, webauthn): (bool, bool) = sqlx::query_as(
        "SELECT EXISTS (SELECT 1 FROM mfa_totp WHERE user_id = $1 AND confirmed_at IS NOT NULL), \
                EXISTS (SELECT 1 FROM mfa_webauthn WHERE user_id = $1)",
    )
    .bind(user)
    .fetch_one(tx.conn())
    .await?;
    Ok([(totp, "totp"), (webauthn, "webauthn")].into_iter().filter(|(has, _)| *has).map(|(_, m)| m).collect())
}

/// Replaces `user`'s recovery codes with a fresh set and returns it (to show once).
pub async fn new_recovery_codes(
    tx: &mut TenantTx,
    user: Uuid,
    now: OffsetDateTime,
) -> anyhow::Result<Vec<Zeroizing<String>>> {
    sqlx::query("DELETE FROM mfa_recovery_codes WHERE user_id = $1").bind(user).execute(tx.conn()).await?;
    let codes = (0..RECOVERY_CODES).map(|_| recovery_code()).collect::<anyhow::Result<Vec<_>>>()?;
    let hashes: Vec<Vec<u8>> = codes.iter().map(|c| code_hash(c)).collect();
    sqlx::query(
        "INSERT INTO mfa_recovery_codes (tenant_id, user_id, code_hash, created_at) \
         SELECT $1, $2, h, $4 FROM unnest($3::bytea[]) AS h",
    )
    .bind(tx.tenant_id())
    .bind(user)
    .bind(&hashes)
    .bind(now)
    .execute(tx.conn())
    .await?;
    Ok(codes)
}

/// Uses one of `user`'s recovery codes: the number left when `code` was one of
/// them and unused (this statement used it), `None` otherwise.
pub async fn use_recovery_code(
    tx: &mut TenantTx,
    user: Uuid,
    code: &str,
    now: OffsetDateTime,
) -> Result<Option<i64>, sqlx::Error> {
    let Some(normal) = normalize(code) else { return Ok(None) };
    let used = sqlx::query(
        "UPDATE mfa_recovery_codes SET used_at = $3 WHERE user_id = $1 AND code_hash = $2 AND used_at IS NULL",
    )
    .bind(user)
    .bind(code_hash(&normal))
    .bind(now)
    .execute(tx.conn())
    .await?;
    if used.rows_affected() != 1 {
        return Ok(None);
    }
    recovery_codes_left(tx, user).await.map(Some)
}

pub async fn recovery_codes_left(tx: &mut TenantTx, user: Uuid) -> Result<i64, sqlx::Error> {
    sqlx::query_scalar("SELECT count(*) FROM mfa_recovery_codes WHERE user_id = $1 AND used_at IS NULL")
        .bind(user)
        .fetch_one(tx.conn())
        .await
}

pub async fn delete_recovery_codes(tx: &mut TenantTx, user: Uuid) -> Result<(), sqlx::Error> {
    sqlx::query("DELETE FROM mfa_recovery_codes WHERE user_id = $1").bind(user).execute(tx.conn()).await.map(|_| ())
}

/// Ten characters from an alphabet without look-alikes (≈ 49.5 bits), shown as
/// `xxxxx-xxxxx`.
fn recovery_code() -> anyhow::Result<Zeroizing<String>> {
    let mut raw = Zeroizing::new([0u8; 10]);
    let mut code = Zeroizing::new(String::with_capacity(11));
    SystemRandom::new().fill(raw.as_mut()).map_err(|_| anyhow::anyhow!("the system random generator failed"))?;
    for (i, byte) in raw.iter().enumerate() {
        if i == 5 {
            code.push('-');
        }
        // 256 is not a multiple of the alphabet's 31: draw again on the top bytes.
        let mut b = *byte;
        while b as usize >= 256 - 256 % CODE_ALPHABET.len() {
            let mut one = [0u8; 1];
            SystemRandom::new().fill(&mut one).map_err(|_| anyhow::anyhow!("the system random generator failed"))?;
            b = one[0];
        }
        code.push(CODE_ALPHABET[b as usize % CODE_ALPHABET.len()] as char);
    }
    Ok(code)
}

/// A typed recovery code in its stored form: lower case, without the dash or
/// spaces; `None` when it cannot be one.
fn normalize(code: &str) -> Option<Zeroizing<String>> {
    let normal: String =
        code.chars().filter(|c| !c.is_whitespace() && *c != '-').map(|c| c.to_ascii_lowercase()).collect();
    (normal.len() == 10 && normal.bytes().all(|b| CODE_ALPHABET.contains(&b))).then(|| {
        let mut shown = String::with_capacity(11);
        shown.push_str(&normal[..5]);
        shown.push('-');
        shown.push_str(&normal[5..]);
        Zeroizing::new(shown)
    })
}

/// Recovery codes are random and long enough that a plain SHA-256 is a fair
/// store: there is no dictionary to try.
fn code_hash(code: &str) -> Vec<u8> {
    digest::digest(&digest::SHA256, [b"fortifile.recovery.v1\0".as_slice(), code.as_bytes()].concat().as_slice())
        .as_ref()
        .to_vec()
}

/// The sealing key for TOTP secrets, and the master key's id to store with them.
pub fn sealing_key(master: &crate::files::crypto::MasterKey) -> ([u8; 32], String) {
    (master.derive(totp::PURPOSE), master.id().to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recovery_codes_are_distinct_and_normalize_as_typed() {
        let codes: Vec<_> = (0..200).map(|_| recovery_code().unwrap()).collect();
        let mut unique: Vec<&str> = codes.iter().map(|c| c.as_str()).collect();
        unique.sort();
        unique.dedup();
        assert_eq!(unique.len(), codes.len());
        for code in &codes {
            assert_eq!(code.len(), 11);
            assert_eq!(normalize(code).unwrap().as_str(), code.as_str());
            assert_eq!(normalize(&code.to_uppercase().replace('-', " ")).unwrap().as_str(), code.as_str());
        }
        assert!(normalize("abcde-fghi1").is_none(), "1 is not in the alphabet");
        assert!(normalize("abcd").is_none());
    }
}

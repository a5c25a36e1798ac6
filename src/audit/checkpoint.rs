//! Signed checkpoints: from time to time, and at shutdown, the head of each
//! tenant's chain (tenant, sequence, hash, time) is signed with the server's
//! Ed25519 audit key. Copied somewhere the database owner cannot reach, a
//! checkpoint proves that the chain once reached that far with that hash:
//! rewriting history or cutting its end off no longer verifies against it.

use std::path::Path;

use ring::signature::{ED25519, Ed25519KeyPair, KeyPair, UnparsedPublicKey};
use secrecy::SecretString;
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use uuid::Uuid;

use super::chain::{self, Hash};
use crate::db::{Database, TenantTx};

/// The audit signing key. Its `Debug` shows only its id.
pub struct AuditKey {
    pair: Ed25519KeyPair,
    id: String,
}

impl std::fmt::Debug for AuditKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "AuditKey({})", self.id)
    }
}

/// A public key that checks checkpoints: the server's own, or one given to
/// `fortifile audit verify --public-key`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PublicKey {
    bytes: [u8; 32],
}

impl PublicKey {
    pub fn from_hex(text: &str) -> Option<PublicKey> {
        Some(PublicKey { bytes: hex::decode(text.trim()).ok()?.try_into().ok()? })
    }

    pub fn to_hex(&self) -> String {
        hex::encode(self.bytes)
    }

    /// What checkpoints name the key by: the first 8 bytes of its SHA-256.
    pub fn id(&self) -> String {
        hex::encode(&ring::digest::digest(&ring::digest::SHA256, &self.bytes).as_ref()[..8])
    }

    fn verifies(&self, message: &[u8], signature: &[u8]) -> bool {
        UnparsedPublicKey::new(&ED25519, &self.bytes).verify(message, signature).is_ok()
    }
}

impl AuditKey {
    /// `FORTIFILE_AUDIT_SIGNING_KEY` (an Ed25519 seed) when set, else the key
    /// file `path`, created owner-only at first start.
    pub fn load(configured: Option<&SecretString>, path: &Path) -> anyhow::Result<AuditKey> {
        let seed = crate::keyfile::load_32(configured, "FORTIFILE_AUDIT_SIGNING_KEY", path, "audit signing key")?;
        let pair = Ed25519KeyPair::from_seed_unchecked(seed.as_ref())
            .map_err(|_| anyhow::anyhow!("the audit signing key is not a usable Ed25519 seed"))?;
        let id = PublicKey { bytes: public_bytes(&pair) }.id();
        Ok(AuditKey { pair, id })
    }

    pub fn public(&self) -> PublicKey {
        PublicKey { bytes: public_bytes(&self.pair) }
    }

    pub fn id(&self) -> &str {
        &self.id
    }
}

fn public_bytes(pair: &Ed25519KeyPair) -> [u8; 32] {
    pair.public_key().as_ref().try_into().expect("an Ed25519 public key is 32 bytes")
}

/// A checkpoint, as stored, listed and handed to `audit verify --checkpoint`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, sqlx::FromRow, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Checkpoint {
    pub tenant_id: Uuid,
    /// The last sequence number the checkpoint covers.
    pub seq: i64,
    /// The chain's hash at `seq`, hex.
    pub hash: String,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    /// Which key signed it (see `fortifile audit public-key`).
    pub key_id: String,
    /// Ed25519 over [`Checkpoint::message`], hex.
    pub signature: String,
}

impl Checkpoint {
    /// The signed bytes. Time in microseconds, as PostgreSQL keeps it.
    pub fn message(tenant: Uuid, seq: i64, hash: &str, created_at: OffsetDateTime) -> Vec<u8> {
        let micros = created_at.unix_timestamp_nanos() / 1000;
        format!("fortifile.audit.checkpoint.v1\n{tenant}\n{seq}\n{hash}\n{micros}").into_bytes()
    }

    /// Whether `key` signed this checkpoint.
    pub fn signed_by(&self, key: &PublicKey) -> bool {
        let Ok(signature) = hex::decode(&self.signature) else { return false };
        key.verifies(&Self::message(self.tenant_id, self.seq, &self.hash, self.created_at), &signature)
    }

    pub fn hash_bytes(&self) -> Option<Hash> {
        hex::decode(&self.hash).ok()?.try_into().ok()
    }
}

/// The columns of [`Checkpoint`] from `audit_checkpoints`.
macro_rules! checkpoint_select {
    () => {
        "SELECT tenant_id, seq, encode(hash, 'hex') AS hash, created_at, key_id, encode(signature, 'hex') AS signature \
         FROM audit_checkpoints WHERE tenant_id = $1"
    };
}

/// Signs the tenant's head in `tx` (which holds the head's lock) if it moved
/// since the last checkpoint, or the last one is older than `every` (`None`:
/// whenever it moved). Returns the new checkpoint.
pub async fn sign_head(
    tx: &mut TenantTx,
    key: &AuditKey,
    head: &chain::Head,
    every: Option<time::Duration>,
) -> Result<Option<Checkpoint>, sqlx::Error> {
    let last: Option<(i64, OffsetDateTime)> = sqlx::query_as(
        "SELECT seq, created_at FROM audit_checkpoints WHERE tenant_id = $1 ORDER BY created_at DESC LIMIT 1",
    )
    .bind(tx.tenant_id())
    .fetch_optional(tx.conn())
    .await?;
    let now = tx.now().await?;
    let due = match (last, every) {
        (None, _) => true,
        (Some((seq, _)), None) => seq != head.seq,
        (Some((seq, at)), Some(every)) => seq != head.seq && now - at >= every,
    };
    if !due {
        return Ok(None);
    }
    sign(tx, key, head.seq, &head.hash).await.map(Some)
}

/// Signs (tenant, `seq`, `hash`, the transaction's time) and stores it in `tx`.
pub async fn sign(tx: &mut TenantTx, key: &AuditKey, seq: i64, hash: &[u8]) -> Result<Checkpoint, sqlx::Error> {
    let now = tx.now().await?;
    let hex_hash = hex::encode(hash);
    let tenant = tx.tenant_id();
    let signature = key.pair.sign(&Checkpoint::message(tenant, seq, &hex_hash, now));
    let checkpoint = Checkpoint {
        tenant_id: tenant,
        seq,
        hash: hex_hash,
        created_at: now,
        key_id: key.id.clone(),
        signature: hex::encode(signature.as_ref()),
    };
    sqlx::query(
        "INSERT INTO audit_checkpoints (tenant_id, seq, hash, created_at, key_id, signature) \
         VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT DO NOTHING",
    )
    .bind(tenant)
    .bind(seq)
    .bind(hash)
    .bind(now)
    .bind(&checkpoint.key_id)
    .bind(signature.as_ref())
    .execute(tx.conn())
    .await?;
    Ok(checkpoint)
}

/// Seals `tenant`'s finished rows and signs its head when a checkpoint is due
/// (`every`; `None`: whenever the chain moved, as at shutdown).
pub async fn seal_and_sign(
    db: &Database,
    key: &AuditKey,
    tenant: Uuid,
    every: Option<time::Duration>,
) -> Result<Option<Checkpoint>, sqlx::Error> {
    chain::seal(db, tenant).await?;
    let mut tx = db.tenant_tx(tenant, None).await?;
    let Some(head) = chain::lock_head(&mut tx, false).await? else { return Ok(None) };
    let made = sign_head(&mut tx, key, &head, every).await?;
    tx.commit().await?;
    Ok(made)
}

/// The tenant's checkpoints, newest first; keyset-paged by `before` (a time).
pub async fn list(
    tx: &mut TenantTx,
    before: Option<OffsetDateTime>,
    limit: i64,
) -> Result<Vec<Checkpoint>, sqlx::Error> {
    sqlx::query_as(concat!(
        checkpoint_select!(),
        " AND ($2::timestamptz IS NULL OR created_at < $2) ORDER BY created_at DESC LIMIT $3"
    ))
    .bind(tx.tenant_id())
    .bind(before)
    .bind(limit)
    .fetch_all(tx.conn())
    .await
}

/// Every checkpoint of the tenant, in sequence order (for verification).
pub async fn all(tx: &mut TenantTx) -> Result<Vec<Checkpoint>, sqlx::Error> {
    sqlx::query_as(concat!(checkpoint_select!(), " ORDER BY seq, created_at"))
        .bind(tx.tenant_id())
        .fetch_all(tx.conn())
        .await
}

/// Checkpoints from a file: one checkpoint, a list, or `{"checkpoints": [...]}`
/// (what `GET /api/audit-logs/checkpoints` answers).
pub fn parse_file(text: &str) -> Result<Vec<Checkpoint>, String> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum File {
        One(Checkpoint),
        Many(Vec<Checkpoint>),
        Listed { checkpoints: Vec<Checkpoint> },
    }
    match serde_json::from_str::<File>(text) {
        Ok(File::One(c)) => Ok(vec![c]),
        Ok(File::Many(list) | File::Listed { checkpoints: list }) => Ok(list),
        Err(e) => Err(format!("not a checkpoint, a list of them, or a checkpoints listing: {e}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key() -> AuditKey {
        let secret = SecretString::from("11".repeat(32));
        AuditKey::load(Some(&secret), Path::new("/nonexistent")).unwrap()
    }

    #[test]
    fn a_checkpoint_verifies_with_its_key_and_not_after_any_change() {
        let key = key();
        let at = OffsetDateTime::from_unix_timestamp(1_700_000_000).unwrap();
        let tenant = Uuid::from_u128(9);
        let hash = "ab".repeat(32);
        let sig = key.pair.sign(&Checkpoint::message(tenant, 5, &hash, at));
        let cp = Checkpoint {
            tenant_id: tenant,
            seq: 5,
            hash: hash.clone(),
            created_at: at,
            key_id: key.id().to_string(),
            signature: hex::encode(sig.as_ref()),
        };
        assert!(cp.signed_by(&key.public()));
        assert!(!Checkpoint { seq: 6, ..cp.clone() }.signed_by(&key.public()));
        assert!(!Checkpoint { hash: "cd".repeat(32), ..cp.clone() }.signed_by(&key.public()));
        assert!(!Checkpoint { tenant_id: Uuid::from_u128(8), ..cp.clone() }.signed_by(&key.public()));
        let other = AuditKey::load(Some(&SecretString::from("22".repeat(32))), Path::new("/x")).unwrap();
        assert!(!cp.signed_by(&other.public()));
        let listed = serde_json::json!({ "checkpoints": [cp] }).to_string();
        assert_eq!(parse_file(&listed).unwrap(), vec![cp.clone()]);
        assert!(format!("{key:?}").starts_with("AuditKey("));
        assert_eq!(PublicKey::from_hex(&key.public().to_hex()), Some(key.public()));
    }
}

//! The tamper-evident chain: every audit row of a tenant, once its transaction
//! has committed, gets the next sequence number of the tenant's chain and a
//! hash over the previous hash and the row, stored as a seal (migration 0011).
//!
//! Rows are written unchained (a writer pays nothing) and sealed shortly after
//! by [`seal`], one sealer per tenant at a time across instances (the chain
//! head's row lock). The sealer only takes rows whose transaction is older than
//! every transaction still in flight (`pg_snapshot_xmin`): those are final, so
//! no row can commit later behind one already sealed. ARCHITECTURE.md "Audit
//! chain" says why this design and not a lock in the writing transaction.
//!
//! `digest = SHA-256("fortifile.audit.row.v1" || canonical row)` covers every
//! column; `hash = SHA-256(previous hash || seq || digest)`, starting from
//! [`genesis`], which names the tenant.

use ipnet::IpNet;
use ring::digest::{Context, SHA256};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use time::OffsetDateTime;
use uuid::Uuid;

use crate::db::{Database, TenantTx};

pub type Hash = [u8; 32];

/// Rows sealed per statement round.
const PAGE: i64 = 2000;

/// The hash a tenant's chain starts from.
pub fn genesis(tenant: Uuid) -> Hash {
    let mut c = Context::new(&SHA256);
    c.update(b"fortifile.audit.genesis.v1\0");
    c.update(tenant.as_bytes());
    finish(c)
}

/// Every column of a stored audit row, as sealed, archived and verified.
#[derive(Debug, Clone, PartialEq, sqlx::FromRow, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Row {
    pub id: Uuid,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    pub tenant_id: Uuid,
    pub user_id: Option<Uuid>,
    pub action: String,
    pub target_type: Option<String>,
    pub target_id: Option<String>,
    pub ip: Option<IpNet>,
    pub user_agent: Option<String>,
    pub result: String,
    pub details: Value,
    pub classification_rank: Option<i32>,
    /// The inserting transaction's id (`xid8`, as a number).
    pub txid: i64,
}

/// The columns of [`Row`], for `SELECT`s from `audit_logs` aliased `a`.
#[macro_export]
macro_rules! audit_row_columns {
    () => {
        "a.id, a.created_at, a.tenant_id, a.user_id, a.action, a.target_type, a.target_id, a.ip, a.user_agent, \
         a.result, a.details, a.classification_rank, (a.txid::text)::bigint AS txid"
    };
}

impl Row {
    /// SHA-256 of the row's canonical encoding: each column in a fixed order,
    /// absent (0) or present (1, 8-byte length, bytes); times in microseconds;
    /// details as canonical JSON (keys sorted, no spaces).
    pub fn digest(&self) -> Hash {
        let mut c = Context::new(&SHA256);
        c.update(b"fortifile.audit.row.v1\0");
        let micros = (self.created_at.unix_timestamp_nanos() / 1000) as i64;
        let ip = self.ip.map(|ip| ip.to_string());
        let details = canonical_json(&self.details);
        let rank = self.classification_rank.map(i32::to_be_bytes);
        let fields: [Option<&[u8]>; 13] = [
            Some(self.id.as_bytes()),
            Some(&micros.to_be_bytes()),
            Some(self.tenant_id.as_bytes()),
            self.user_id.as_ref().map(|u| u.as_bytes().as_slice()),
            Some(self.action.as_bytes()),
            self.target_type.as_deref().map(str::as_bytes),
            self.target_id.as_deref().map(str::as_bytes),
            ip.as_deref().map(str::as_bytes),
            self.user_agent.as_deref().map(str::as_bytes),
            Some(self.result.as_bytes()),
            Some(details.as_bytes()),
            rank.as_ref().map(|b| b.as_slice()),
            Some(&self.txid.to_be_bytes()),
        ];
        for field in fields {
            match field {
                None => c.update(&[0]),
                Some(bytes) => {
                    c.update(&[1]);
                    c.update(&(bytes.len() as u64).to_be_bytes());
                    c.update(bytes);
                }
            }
        }
        finish(c)
    }
}

/// The chain's next hash.
pub fn link(previous: &Hash, seq: i64, digest: &Hash) -> Hash {
    let mut c = Context::new(&SHA256);
    c.update(previous);
    c.update(&seq.to_be_bytes());
    c.update(digest);
    finish(c)
}

fn finish(c: Context) -> Hash {
    c.finish().as_ref().try_into().expect("SHA-256 is 32 bytes")
}

/// JSON with object keys sorted by their bytes and no insignificant spaces, so
/// the same value always encodes the same way.
pub fn canonical_json(value: &Value) -> String {
    fn write(value: &Value, out: &mut String) {
        match value {
            Value::Object(map) => {
                let mut keys: Vec<&String> = map.keys().collect();
                keys.sort();
                out.push('{');
                for (i, key) in keys.into_iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    out.push_str(&Value::String(key.clone()).to_string());
                    out.push(':');
                    write(&map[key], out);
                }
                out.push('}');
            }
            Value::Array(items) => {
                out.push('[');
                for (i, item) in items.iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    write(item, out);
                }
                out.push(']');
            }
            scalar => out.push_str(&scalar.to_string()),
        }
    }
    let mut out = String::new();
    write(value, &mut out);
    out
}

/// A tenant's chain head.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct Head {
    pub seq: i64,
    pub hash: Vec<u8>,
    pub horizon: i64,
    pub anchor_seq: i64,
    pub anchor_hash: Vec<u8>,
    pub legal_hold: bool,
    pub forwarded_seq: i64,
    pub sealed_at: Option<OffsetDateTime>,
}

macro_rules! head_select {
    () => {
        "SELECT seq, hash, (horizon::text)::bigint AS horizon, anchor_seq, anchor_hash, legal_hold, \
                forwarded_seq, sealed_at FROM audit_chain WHERE tenant_id = $1"
    };
}

/// Creates the tenant's chain head if it has none yet.
pub async fn ensure_head(tx: &mut TenantTx) -> Result<(), sqlx::Error> {
    let genesis = genesis(tx.tenant_id());
    sqlx::query(
        "INSERT INTO audit_chain (tenant_id, hash, anchor_hash) VALUES ($1, $2, $2) ON CONFLICT (tenant_id) DO NOTHING",
    )
    .bind(tx.tenant_id())
    .bind(&genesis[..])
    .execute(tx.conn())
    .await
    .map(|_| ())
}

/// The tenant's chain head; before the first seal, the empty chain at its genesis.
pub async fn head(tx: &mut TenantTx) -> Result<Head, sqlx::Error> {
    let found: Option<Head> = sqlx::query_as(head_select!()).bind(tx.tenant_id()).fetch_optional(tx.conn()).await?;
    Ok(found.unwrap_or_else(|| {
        let genesis = genesis(tx.tenant_id()).to_vec();
        Head {
            seq: 0,
            hash: genesis.clone(),
            horizon: 0,
            anchor_seq: 0,
            anchor_hash: genesis,
            legal_hold: false,
            forwarded_seq: 0,
            sealed_at: None,
        }
    }))
}

/// The head locked for this transaction, or `None` when another sealer,
/// archiver or forwarder holds it.
pub async fn lock_head(tx: &mut TenantTx, wait: bool) -> Result<Option<Head>, sqlx::Error> {
    let sql =
        if wait { concat!(head_select!(), " FOR UPDATE") } else { concat!(head_select!(), " FOR UPDATE SKIP LOCKED") };
    if let Some(head) = sqlx::query_as(sql).bind(tx.tenant_id()).fetch_optional(tx.conn()).await? {
        return Ok(Some(head));
    }
    let exists: bool = sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM audit_chain WHERE tenant_id = $1)")
        .bind(tx.tenant_id())
        .fetch_one(tx.conn())
        .await?;
    if exists {
        return Ok(None);
    }
    // The tenant's first seal: the head is created (once, whoever wins).
    ensure_head(tx).await?;
    sqlx::query_as(sql).bind(tx.tenant_id()).fetch_optional(tx.conn()).await
}

/// What one run of the sealer did for a tenant.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Sealed {
    pub rows: u64,
    pub seq: i64,
    /// Another sealer was at work on the tenant.
    pub busy: bool,
}

/// Seals every row of `tenant` whose transaction has ended, in one transaction.
pub async fn seal(db: &Database, tenant: Uuid) -> Result<Sealed, sqlx::Error> {
    let mut tx = db.tenant_tx(tenant, None).await?;
    // Before this transaction takes an id of its own, which would hold the
    // horizon back to itself.
    let xmin: i64 = sqlx::query_scalar("SELECT (pg_snapshot_xmin(pg_current_snapshot())::text)::bigint")
        .fetch_one(tx.conn())
        .await?;
    // Most seconds there is nothing to seal: find that out without a lock.
    let seen = head(&mut tx).await?;
    if xmin < seen.horizon {
        // Transaction ids behind the horizon: the database was restored into
        // another cluster. New rows cannot be sealed in order; verify names them.
        tracing::error!(%tenant, xmin, horizon = seen.horizon, "audit sealing: transaction ids are behind the horizon");
    }
    let pending: bool = sqlx::query_scalar(
        "SELECT EXISTS (SELECT 1 FROM audit_logs WHERE tenant_id = $1 AND txid >= ($2::text)::xid8 \
                        AND txid < ($3::text)::xid8)",
    )
    .bind(tenant)
    .bind(seen.horizon.to_string())
    .bind(xmin.to_string())
    .fetch_one(tx.conn())
    .await?;
    if !pending {
        return Ok(Sealed { seq: seen.seq, ..Sealed::default() });
    }
    let Some(head) = lock_head(&mut tx, false).await? else {
        return Ok(Sealed { busy: true, ..Sealed::default() });
    };
    if xmin <= head.horizon {
        return Ok(Sealed { seq: head.seq, ..Sealed::default() });
    }
    let mut prev: Hash = head.hash.as_slice().try_into().map_err(|_| corrupt("the chain head's hash"))?;
    let mut seq = head.seq;
    let mut after: Option<(OffsetDateTime, Uuid)> = None;
    let mut rows_sealed = 0u64;
    loop {
        let rows: Vec<Row> = sqlx::query_as(concat!(
            "SELECT ",
            crate::audit_row_columns!(),
            " FROM audit_logs a WHERE a.tenant_id = $1 AND a.txid >= ($2::text)::xid8 AND a.txid < ($3::text)::xid8 \
               AND ($4::timestamptz IS NULL OR (a.created_at, a.id) > ($4, $5)) \
             ORDER BY a.created_at, a.id LIMIT $6"
        ))
        .bind(tenant)
        .bind(head.horizon.to_string())
        .bind(xmin.to_string())
        .bind(after.map(|a| a.0))
        .bind(after.map(|a| a.1))
        .bind(PAGE)
        .fetch_all(tx.conn())
        .await?;
        let Some(last) = rows.last() else { break };
        after = Some((last.created_at, last.id));
        let n = rows.len();
        let (mut seqs, mut ids, mut times, mut digests, mut hashes) = (
            Vec::with_capacity(n),
            Vec::with_capacity(n),
            Vec::with_capacity(n),
            Vec::with_capacity(n),
            Vec::with_capacity(n),
        );
        for row in &rows {
            seq += 1;
            let digest = row.digest();
            prev = link(&prev, seq, &digest);
            seqs.push(seq);
            ids.push(row.id);
            times.push(row.created_at);
            digests.push(digest.to_vec());
            hashes.push(prev.to_vec());
        }
        sqlx::query(
            "INSERT INTO audit_seals (tenant_id, seq, log_id, log_created_at, digest, hash) \
             SELECT $1, * FROM UNNEST($2::bigint[], $3::uuid[], $4::timestamptz[], $5::bytea[], $6::bytea[])",
        )
        .bind(tenant)
        .bind(&seqs)
        .bind(&ids)
        .bind(&times)
        .bind(&digests)
        .bind(&hashes)
        .execute(tx.conn())
        .await?;
        rows_sealed += n as u64;
        if (n as i64) < PAGE {
            break;
        }
    }
    sqlx::query(
        "UPDATE audit_chain SET seq = $2, hash = $3, horizon = ($4::text)::xid8, \
                sealed_at = CASE WHEN $5 THEN now() ELSE sealed_at END WHERE tenant_id = $1",
    )
    .bind(tenant)
    .bind(seq)
    .bind(&prev[..])
    .bind(xmin.to_string())
    .bind(rows_sealed > 0)
    .execute(tx.conn())
    .await?;
    tx.commit().await?;
    Ok(Sealed { rows: rows_sealed, seq, busy: false })
}

/// Seals every tenant's finished rows; returns how many rows were sealed.
pub async fn seal_all(db: &Database) -> Result<u64, sqlx::Error> {
    let mut total = 0;
    for tenant in db.tenant_ids().await? {
        total += seal(db, tenant).await?.rows;
    }
    Ok(total)
}

/// Rows written but not sealed yet, and how old the oldest is (seconds): a
/// backlog older than a few seconds means sealing is stuck (an alarm).
pub async fn unsealed(tx: &mut TenantTx) -> Result<(i64, Option<f64>), sqlx::Error> {
    let head = head(tx).await?;
    sqlx::query_as(
        "SELECT count(*), EXTRACT(EPOCH FROM now() - min(created_at))::float8 FROM audit_logs \
         WHERE tenant_id = $1 AND txid >= ($2::text)::xid8",
    )
    .bind(tx.tenant_id())
    .bind(head.horizon.to_string())
    .fetch_one(tx.conn())
    .await
}

pub(crate) fn corrupt(what: &str) -> sqlx::Error {
    sqlx::Error::Protocol(format!("{what} is not a 32-byte hash"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn canonical_json_sorts_keys_at_every_depth_and_drops_spaces() {
        let v = json!({"b": 1, "a": {"d": [true, null, "x\"y"], "c": 2.5}});
        assert_eq!(canonical_json(&v), r#"{"a":{"c":2.5,"d":[true,null,"x\"y"]},"b":1}"#);
    }

    fn row() -> Row {
        Row {
            id: Uuid::from_u128(1),
            created_at: OffsetDateTime::from_unix_timestamp(1_700_000_000).unwrap(),
            tenant_id: Uuid::from_u128(2),
            user_id: None,
            action: "auth.login".into(),
            target_type: Some("user".into()),
            target_id: Some("x".into()),
            ip: Some("10.0.0.1/32".parse().unwrap()),
            user_agent: None,
            result: "success".into(),
            details: json!({"k": "v"}),
            classification_rank: None,
            txid: 7,
        }
    }

    #[test]
    fn the_digest_changes_with_every_column_and_tells_absent_from_empty() {
        let base = row().digest();
        let mut changed = Vec::new();
        let edits: Vec<fn(&mut Row)> = vec![
            |r| r.created_at += time::Duration::microseconds(1),
            |r| r.user_id = Some(Uuid::from_u128(3)),
            |r| r.action = "auth.logout".into(),
            |r| r.target_type = None,
            |r| r.target_id = Some(String::new()),
            |r| r.ip = None,
            |r| r.user_agent = Some(String::new()),
            |r| r.result = "fail".into(),
            |r| r.details = json!({"k": "w"}),
            |r| r.classification_rank = Some(0),
            |r| r.txid = 8,
        ];
        for edit in &edits {
            let mut r = row();
            edit(&mut r);
            changed.push(r.digest() != base);
        }
        assert!(changed.iter().all(|c| *c), "{changed:?}");
        // moving text between adjacent columns changes it too
        let mut a = row();
        a.target_type = Some("userx".into());
        a.target_id = Some(String::new());
        assert_ne!(a.digest(), base);
    }

    #[test]
    fn each_link_depends_on_the_previous_hash_and_the_sequence() {
        let d = row().digest();
        let g = genesis(Uuid::from_u128(2));
        assert_ne!(g, genesis(Uuid::from_u128(3)), "the genesis names the tenant");
        assert_ne!(link(&g, 1, &d), link(&g, 2, &d));
        assert_ne!(link(&g, 1, &d), link(&link(&g, 1, &d), 1, &d));
    }
}

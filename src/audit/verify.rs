//! Verification of a tenant's chain: walks the seals in sequence order with
//! their rows (streaming, constant memory), recomputes every digest and link,
//! and holds the chain against every checkpoint it knows (the database's and
//! those handed in from outside). The first problem found is named by tenant,
//! sequence number and row id.

use std::collections::BTreeMap;

use futures::TryStreamExt;
use serde::Serialize;
use sqlx::{FromRow, Row as _, postgres::PgRow};
use uuid::Uuid;

use super::{
    chain::{self, Hash, Row},
    checkpoint::{self, Checkpoint, PublicKey},
};
use crate::db::TenantTx;

/// A tenant whose chain verified.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Verified {
    pub tenant_id: Uuid,
    /// Rows whose seals were checked.
    pub rows: u64,
    /// The sequence the chain starts after (0, or the last archived one).
    pub anchor: i64,
    /// The last sequence checked.
    pub seq: i64,
    /// The chain's hash there, hex.
    pub hash: String,
    /// Checkpoints the chain was held against.
    pub checkpoints: usize,
    /// Rows written but not sealed yet (they are checked once sealed).
    pub unsealed: i64,
}

/// What is wrong, where.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Broken {
    pub tenant_id: Uuid,
    pub seq: i64,
    pub row_id: Option<Uuid>,
    pub problem: Problem,
    pub detail: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Problem {
    /// A row's content is not what was sealed.
    Changed,
    /// A sealed row is gone.
    Missing,
    /// A sequence number is missing.
    Gap,
    /// A row is intact but not in its place: seals were moved or altered.
    Reordered,
    /// The chain ends before a checkpoint it was given.
    Truncated,
    /// The chain's hash at a checkpoint's sequence is not the checkpoint's.
    Diverged,
    /// A checkpoint's signature does not verify.
    BadSignature,
    /// A row sits in the sealed range without a seal.
    Unsealed,
    /// The chain's head does not match its last seal.
    Head,
    /// An archive is missing, altered, or does not continue the chain.
    Archive,
}

impl std::fmt::Display for Broken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "tenant {} sequence {}", self.tenant_id, self.seq)?;
        if let Some(row) = self.row_id {
            write!(f, " row {row}")?;
        }
        write!(f, ": {}", self.detail)
    }
}

/// One seal with its row, if the row is still there.
pub struct Link {
    pub seq: i64,
    pub log_id: Uuid,
    pub digest: Vec<u8>,
    pub hash: Vec<u8>,
    pub row: Option<Row>,
}

/// The seals of tenant `$1` with sequence in (`$2`, `$3`], in order, as [`Link`]s.
#[macro_export]
macro_rules! link_select {
    () => {
        concat!(
            "SELECT s.seq AS seal_seq, s.log_id AS seal_log_id, s.digest AS seal_digest, s.hash AS seal_hash, ",
            $crate::audit_row_columns!(),
            " FROM audit_seals s LEFT JOIN audit_logs a \
                ON a.tenant_id = s.tenant_id AND a.id = s.log_id AND a.created_at = s.log_created_at \
             WHERE s.tenant_id = $1 AND s.seq > $2 AND s.seq <= $3 ORDER BY s.seq"
        )
    };
}

impl<'r> FromRow<'r, PgRow> for Link {
    fn from_row(r: &'r PgRow) -> Result<Self, sqlx::Error> {
        let present: Option<Uuid> = r.try_get("id")?;
        Ok(Link {
            seq: r.try_get("seal_seq")?,
            log_id: r.try_get("seal_log_id")?,
            digest: r.try_get("seal_digest")?,
            hash: r.try_get("seal_hash")?,
            row: if present.is_some() { Some(Row::from_row(r)?) } else { None },
        })
    }
}

/// Verifies `tx`'s tenant against `key`, with `outside` checkpoints (those of
/// other tenants are ignored).
pub async fn tenant(
    tx: &mut TenantTx,
    key: &PublicKey,
    outside: &[Checkpoint],
) -> Result<Result<Verified, Broken>, sqlx::Error> {
    let tenant = tx.tenant_id();
    let head = chain::head(tx).await?;
    let broken = |seq: i64, row_id: Option<Uuid>, problem: Problem, detail: String| {
        Ok(Err(Broken { tenant_id: tenant, seq, row_id, problem, detail }))
    };

    // Every checkpoint first: its signature, and whether the chain still reaches it.
    let mut known = checkpoint::all(tx).await?;
    known.extend(outside.iter().filter(|c| c.tenant_id == tenant).cloned());
    let mut pins: BTreeMap<i64, Vec<(Hash, String)>> = BTreeMap::new();
    for cp in &known {
        let when = cp.created_at.format(&time::format_description::well_known::Rfc3339).unwrap_or_default();
        let hash = cp.hash_bytes();
        if cp.key_id != key.id() || !cp.signed_by(key) || hash.is_none() {
            let detail = if cp.key_id != key.id() {
                format!("the checkpoint of {when} names key {}, not {}", cp.key_id, key.id())
            } else {
                format!("the checkpoint of {when} has a bad signature")
            };
            return broken(cp.seq, None, Problem::BadSignature, detail);
        }
        if cp.seq > head.seq {
            let detail = format!(
                "the chain ends at sequence {} but the checkpoint of {when} covers {}: rows were removed from its end",
                head.seq, cp.seq
            );
            return broken(cp.seq, None, Problem::Truncated, detail);
        }
        if cp.seq == head.anchor_seq && Some(head.anchor_hash.as_slice()) != hash.as_ref().map(|h| &h[..]) {
            let detail = format!("the archived chain's last hash is not the checkpoint's of {when}");
            return broken(cp.seq, None, Problem::Diverged, detail);
        }
        if cp.seq > head.anchor_seq {
            pins.entry(cp.seq).or_default().push((hash.unwrap_or_default(), when));
        }
    }

    // After a purge the chain starts from the last archive's last hash.
    if head.anchor_seq > 0 {
        let archived: Option<Vec<u8>> =
            sqlx::query_scalar("SELECT last_hash FROM audit_archives WHERE tenant_id = $1 AND last_seq = $2 LIMIT 1")
                .bind(tenant)
                .bind(head.anchor_seq)
                .fetch_optional(tx.conn())
                .await?;
        if archived.as_deref() != Some(head.anchor_hash.as_slice()) {
            let detail = "the chain starts from a hash no recorded archive ends with".to_string();
            return broken(head.anchor_seq, None, Problem::Diverged, detail);
        }
    }

    // Every row below the horizon carries a seal, and every seal a row: rows
    // slipped in behind the sealer (or given an old transaction id, as after a
    // restore into a new cluster) have none.
    let (in_range, seals): (i64, i64) = sqlx::query_as(
        "SELECT (SELECT count(*) FROM audit_logs WHERE tenant_id = $1 AND txid < ($2::text)::xid8), \
                (SELECT count(*) FROM audit_seals WHERE tenant_id = $1)",
    )
    .bind(tenant)
    .bind(head.horizon.to_string())
    .fetch_one(tx.conn())
    .await?;
    if in_range > seals {
        let stray: Option<Uuid> = sqlx::query_scalar(
            "SELECT a.id FROM audit_logs a WHERE a.tenant_id = $1 AND a.txid < ($2::text)::xid8 \
             AND NOT EXISTS (SELECT 1 FROM audit_seals s WHERE s.tenant_id = a.tenant_id AND s.log_id = a.id) \
             ORDER BY a.created_at LIMIT 1",
        )
        .bind(tenant)
        .bind(head.horizon.to_string())
        .fetch_optional(tx.conn())
        .await?;
        let detail = format!("{} rows in the sealed range carry no seal", in_range - seals);
        return broken(head.seq, stray, Problem::Unsealed, detail);
    }

    let mut prev: Hash = head.anchor_hash.as_slice().try_into().map_err(|_| chain::corrupt("the chain's anchor"))?;
    let mut expected = head.anchor_seq + 1;
    let mut rows = 0u64;
    {
        let mut links = sqlx::query_as::<_, Link>(crate::link_select!())
            .bind(tenant)
            .bind(head.anchor_seq)
            .bind(head.seq)
            .fetch(tx.conn());
        while let Some(link) = links.try_next().await? {
            if link.seq != expected {
                let detail = format!("sequence {expected} is missing: the next seal is {}", link.seq);
                return broken(expected, None, Problem::Gap, detail);
            }
            let Some(row) = &link.row else {
                let detail = format!("the row sealed as sequence {} is gone from the log", link.seq);
                return broken(link.seq, Some(link.log_id), Problem::Missing, detail);
            };
            let digest = row.digest();
            if link.digest != digest {
                let detail = "the row was changed after it was sealed".to_string();
                return broken(link.seq, Some(row.id), Problem::Changed, detail);
            }
            let hash = chain::link(&prev, link.seq, &digest);
            if link.hash != hash {
                let detail = "the row is intact but out of its place in the chain (seals moved or rewritten)".into();
                return broken(link.seq, Some(row.id), Problem::Reordered, detail);
            }
            if let Some(at) = pins.get(&link.seq) {
                for (pinned, when) in at {
                    if *pinned != hash {
                        let detail =
                            format!("the chain's hash differs from the checkpoint of {when}: history was rewritten");
                        return broken(link.seq, Some(row.id), Problem::Diverged, detail);
                    }
                }
            }
            prev = hash;
            expected += 1;
            rows += 1;
        }
    }
    if expected != head.seq + 1 || prev[..] != head.hash[..] {
        let detail = format!("the head says sequence {} but the seals end at {}", head.seq, expected - 1);
        return broken(expected - 1, None, Problem::Head, detail);
    }
    let (unsealed, _) = chain::unsealed(tx).await?;
    Ok(Ok(Verified {
        tenant_id: tenant,
        rows,
        anchor: head.anchor_seq,
        seq: head.seq,
        hash: hex::encode(prev),
        checkpoints: known.len(),
        unsealed,
    }))
}

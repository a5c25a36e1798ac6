//! The chain as administrators see it: its state (head, sealing backlog,
//! forwarding backlog, legal hold, last checkpoint) and the "Verify integrity"
//! action, which runs the same check as `fortifile audit verify` for the
//! request's tenant and records it as `audit.verify`.

use serde::Serialize;
use serde_json::json;
use time::OffsetDateTime;

use super::{
    Action, Entry, Outcome, Source,
    chain::{self},
    verify::{self, Broken, Verified},
};
use crate::{db::TenantTx, http::AppState};

/// A tenant's chain, for the dashboard and `GET /api/audit-logs/chain`.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ChainState {
    /// The last sealed sequence number.
    pub seq: i64,
    /// The chain's hash there, hex.
    pub hash: String,
    /// The last archived (and purged) sequence number; 0 before any purge.
    pub anchor_seq: i64,
    /// Rows written but not sealed yet.
    pub unsealed: i64,
    /// How long the oldest of them has waited, in seconds. Past
    /// [`STUCK_AFTER_SECONDS`] sealing is stuck: an alarm.
    pub oldest_unsealed_seconds: Option<f64>,
    /// Whether `unsealed` rows have waited too long.
    pub sealing_stuck: bool,
    /// Sealed rows not yet accepted by the syslog receiver (0 when none is set).
    pub forward_backlog: i64,
    /// Whether the tenant's audit data is under legal hold (no purge).
    pub legal_hold: bool,
    /// The newest checkpoint's sequence and time.
    pub last_checkpoint_seq: Option<i64>,
    #[serde(with = "time::serde::rfc3339::option")]
    pub last_checkpoint_at: Option<OffsetDateTime>,
    /// The key checkpoints are signed with: its id and public key, hex.
    pub key_id: String,
    pub public_key: String,
}

/// Unsealed rows older than this mean the sealer is not keeping up.
pub const STUCK_AFTER_SECONDS: f64 = 30.0;

pub async fn state(state: &AppState, tx: &mut TenantTx) -> Result<ChainState, sqlx::Error> {
    let head = chain::head(tx).await?;
    let (unsealed, oldest) = chain::unsealed(tx).await?;
    let last: Option<(i64, OffsetDateTime)> = sqlx::query_as(
        "SELECT seq, created_at FROM audit_checkpoints WHERE tenant_id = $1 ORDER BY created_at DESC LIMIT 1",
    )
    .bind(tx.tenant_id())
    .fetch_optional(tx.conn())
    .await?;
    let forwarding = state.config.audit.syslog.is_some();
    Ok(ChainState {
        seq: head.seq,
        hash: hex::encode(&head.hash),
        anchor_seq: head.anchor_seq,
        unsealed,
        oldest_unsealed_seconds: oldest,
        sealing_stuck: oldest.is_some_and(|s| s > STUCK_AFTER_SECONDS),
        forward_backlog: if forwarding { (head.seq - head.forwarded_seq.max(head.anchor_seq)).max(0) } else { 0 },
        legal_hold: head.legal_hold,
        last_checkpoint_seq: last.map(|l| l.0),
        last_checkpoint_at: last.map(|l| l.1),
        key_id: state.audit_key.id().to_string(),
        public_key: state.audit_key.public().to_hex(),
    })
}

/// What a verification found.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Verification {
    /// Whether the chain verified.
    pub ok: bool,
    pub verified: Option<Verified>,
    pub broken: Option<Broken>,
}

/// Verifies `tx`'s tenant with the server's key and records `audit.verify`
/// (success, or fail naming the sequence, row and problem) in `tx`.
pub async fn verify_and_record(
    state: &AppState,
    tx: &mut TenantTx,
    source: &Source,
) -> Result<Verification, sqlx::Error> {
    // As long as any read of the log may take (FORTIFILE_DASHBOARD_TIMEOUT):
    // past it the request is a 503 and the connection is free again.
    tx.for_log_reading(state.config.dashboard_timeout).await?;
    let found = verify::tenant(tx, &state.audit_key.public(), &[]).await?;
    let entry = match &found {
        Ok(v) => Entry::new(Action::AuditVerify, Outcome::Success)
            .details(json!({ "rows": v.rows, "seq": v.seq, "hash": v.hash, "checkpoints": v.checkpoints })),
        Err(b) => Entry::new(Action::AuditVerify, Outcome::Fail).details(json!({
            "seq": b.seq,
            "rowId": b.row_id,
            "problem": b.problem,
            "detail": b.detail,
        })),
    };
    super::record(tx, source, entry).await?;
    Ok(match found {
        Ok(v) => Verification { ok: true, verified: Some(v), broken: None },
        Err(b) => Verification { ok: false, verified: None, broken: Some(b) },
    })
}

//! The two audit operations under dual control: purging the data past
//! retention (`audit.purge`: the tenant's rows of every expired partition are
//! archived, verified and released, so the retention run can drop them), and
//! the legal hold (`audit.legal_hold`: while set, nothing of the tenant's log
//! is purged). Where the tenant's policy does not hold them they run at once.

use serde::{Deserialize, Serialize};
use serde_json::json;
use time::OffsetDateTime;
use utoipa::ToSchema;

use super::{
    Action, Entry, Outcome, Source, chain,
    retention::{self, ArchiveRecord},
};
use crate::{
    authz::{
        Denial, Permit,
        dual::{self, Done, Gate, Hold, Operation},
    },
    db::TenantTx,
    http::{AppState, error::AppError},
};

/// The routes, as stored with a held request.
pub const ROUTE_PURGE: &str = "POST /api/audit-logs/purge";
pub const ROUTE_LEGAL_HOLD: &str = "PUT /api/audit-logs/legal-hold";

/// `PUT /api/audit-logs/legal-hold`'s body.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct LegalHold {
    /// Set (`true`) or clear (`false`) the hold.
    pub hold: bool,
    /// Why (the matter, the order), 1 to 500 characters.
    #[schema(min_length = 1, max_length = 500)]
    pub reason: String,
}

/// An operation's answer: done or held, or a refusal to record.
pub type Gated<T> = Result<Result<Done<T>, Denial>, AppError>;

async fn pass(tx: &mut TenantTx, permit: &Permit, source: &Source, hold: Hold, now: OffsetDateTime) -> Gated<()> {
    Ok(match dual::gate(tx, permit, source, hold, now).await? {
        Ok(Gate::Proceed) => Ok(Done::Now(())),
        Ok(Gate::Held(approval)) => Ok(Done::Held(approval)),
        Err(denial) => Err(denial),
    })
}

/// `POST /api/audit-logs/purge`'s stored body: the partitions the request is
/// about, as its approvers saw them.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Purge {
    pub partitions: Vec<String>,
}

/// Releases the tenant's audit data past retention (after archiving it): the
/// partitions expired now (`None`, a new request) or those an approved request
/// named.
pub async fn purge_in(
    state: &AppState,
    permit: &Permit,
    source: &Source,
    tx: &mut TenantTx,
    now: OffsetDateTime,
    approved: Option<Purge>,
) -> Gated<Vec<ArchiveRecord>> {
    let days = state.config.audit.retention_days;
    let partitions = match approved {
        Some(purge) => purge.partitions,
        None => retention::expired(&state.db, now, days).await?.into_iter().map(|p| p.name).collect(),
    };
    if partitions.is_empty() {
        return Err(AppError::Conflict(format!("no audit data is past the retention of {days} days")));
    }
    if chain::head(tx).await?.legal_hold {
        return Err(AppError::Conflict("the audit log is under legal hold: nothing is purged".into()));
    }
    let summary = format!("Purge the audit data past {days} days ({})", partitions.join(", "));
    let body = Purge { partitions };
    let hold = Hold::new(Operation::AuditPurge, ROUTE_PURGE, summary)
        .body(&body)
        .change(json!({ "partitions": body.partitions, "retentionDays": days }));
    match pass(tx, permit, source, hold, now).await? {
        Err(denial) => return Ok(Err(denial)),
        Ok(Done::Held(approval)) => return Ok(Ok(Done::Held(approval))),
        Ok(Done::Now(())) => {}
    }
    let released = retention::release_expired(state, tx, source, now, &body.partitions).await?;
    let parts: Vec<&str> = released.iter().map(|r| r.partition.as_str()).collect();
    let entry = Entry::new(Action::AuditPurge, Outcome::Success)
        .details(json!({ "step": "release", "partitions": parts, "retentionDays": days }));
    super::record(tx, source, entry).await?;
    Ok(Ok(Done::Now(released)))
}

/// Sets or clears the tenant's legal hold.
pub async fn legal_hold_in(
    state: &AppState,
    permit: &Permit,
    source: &Source,
    tx: &mut TenantTx,
    input: LegalHold,
) -> Gated<bool> {
    let reason = input.reason.trim();
    if reason.is_empty() || reason.chars().count() > 500 {
        return Err(AppError::invalid("reason", "say why, in at most 500 characters"));
    }
    let now = state.clock.now();
    let before = chain::lock_head(tx, true).await?.ok_or(AppError::NotFound)?.legal_hold;
    let summary = if input.hold { "Place the audit log under legal hold" } else { "Lift the audit log's legal hold" };
    let hold = Hold::new(Operation::AuditLegalHold, ROUTE_LEGAL_HOLD, summary).body(&input).change(json!({
        "before": { "legalHold": before },
        "after": { "legalHold": input.hold },
        "reason": reason,
    }));
    match pass(tx, permit, source, hold, now).await? {
        Err(denial) => return Ok(Err(denial)),
        Ok(Done::Held(approval)) => return Ok(Ok(Done::Held(approval))),
        Ok(Done::Now(())) => {}
    }
    sqlx::query("UPDATE audit_chain SET legal_hold = $2 WHERE tenant_id = $1")
        .bind(tx.tenant_id())
        .bind(input.hold)
        .execute(tx.conn())
        .await?;
    let entry = Entry::new(Action::AuditLegalHold, Outcome::Success)
        .details(json!({ "before": before, "after": input.hold, "reason": reason }));
    super::record(tx, source, entry).await?;
    Ok(Ok(Done::Now(input.hold)))
}

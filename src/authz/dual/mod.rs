//! Dual control (four eyes): the decision whether an operation runs now or
//! waits for a second, eligible person (NIST SP 800-53 AC-3(2), AC-5).
//!
//! An operation under dual control calls [`gate`] after every check it makes
//! (permission, MAC, guard rails) and before its first write. With the
//! operation's policy off, the gate lets it proceed. With it on, the gate
//! stores the exact request (canonical JSON and its SHA-256) with what it
//! would change, records `approval.request`, and the operation answers
//! [`Done::Held`] (202). When the last approval arrives, the `approvals`
//! module runs the same operation again with the requester's rights and a
//! [`Mark`] on the permit; the gate then lets exactly that request (same
//! hash) proceed, and every audit row of the run names the approval.

use serde::Serialize;
use serde_json::{Value, json};
use time::OffsetDateTime;
use utoipa::ToSchema;
use uuid::Uuid;

mod approvers;

pub use approvers::{PRIVILEGED, any_privileged, approver_role, eligible, privileged_role, standing_votes};

use super::{Denial, Permit};
use crate::{
    audit::{self, Action, Entry, Outcome, Source},
    db::TenantTx,
};

/// The operations that can be put under dual control. Names are stable.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, ToSchema)]
pub enum Operation {
    #[serde(rename = "role.assign_privileged")]
    RoleAssignPrivileged,
    #[serde(rename = "role.widen")]
    RoleWiden,
    #[serde(rename = "user.clearance_raise")]
    UserClearanceRaise,
    #[serde(rename = "file.declassify")]
    FileDeclassify,
    #[serde(rename = "audit.export")]
    AuditExport,
    #[serde(rename = "user.delete")]
    UserDelete,
    #[serde(rename = "mfa.reset")]
    MfaReset,
    #[serde(rename = "policy.change")]
    PolicyChange,
    #[serde(rename = "audit.purge")]
    AuditPurge,
    #[serde(rename = "audit.legal_hold")]
    AuditLegalHold,
}

impl Operation {
    pub const ALL: [Operation; 10] = [
        Operation::RoleAssignPrivileged,
        Operation::RoleWiden,
        Operation::UserClearanceRaise,
        Operation::FileDeclassify,
        Operation::AuditExport,
        Operation::UserDelete,
        Operation::MfaReset,
        Operation::PolicyChange,
        Operation::AuditPurge,
        Operation::AuditLegalHold,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Operation::RoleAssignPrivileged => "role.assign_privileged",
            Operation::RoleWiden => "role.widen",
            Operation::UserClearanceRaise => "user.clearance_raise",
            Operation::FileDeclassify => "file.declassify",
            Operation::AuditExport => "audit.export",
            Operation::UserDelete => "user.delete",
            Operation::MfaReset => "mfa.reset",
            Operation::PolicyChange => "policy.change",
            Operation::AuditPurge => "audit.purge",
            Operation::AuditLegalHold => "audit.legal_hold",
        }
    }

    pub fn parse(name: &str) -> Option<Operation> {
        Operation::ALL.into_iter().find(|op| op.as_str() == name)
    }

    /// Seed 001's timeouts: 24 hours for exports and deletes, 48 for
    /// privileged assignment, 72 otherwise.
    pub fn default_timeout_hours(self) -> i32 {
        match self {
            Operation::AuditExport | Operation::UserDelete => 24,
            Operation::RoleAssignPrivileged => 48,
            _ => 72,
        }
    }

    /// What the operation is, for people.
    pub fn describe(self) -> &'static str {
        match self {
            Operation::RoleAssignPrivileged => "Assigning a role that administers users, roles, logs or incidents",
            Operation::RoleWiden => "Granting or widening an administrative permission on a role",
            Operation::UserClearanceRaise => "Raising a user's clearance to the highest level",
            Operation::FileDeclassify => "Lowering a document's classification",
            Operation::AuditExport => "Exporting the audit log",
            Operation::UserDelete => "Deleting a user",
            Operation::MfaReset => "Resetting another user's second factors",
            Operation::PolicyChange => "Changing a dual-control policy",
            Operation::AuditPurge => "Purging audit data past retention (after it is archived)",
            Operation::AuditLegalHold => "Setting or clearing the legal hold on the audit log",
        }
    }
}

/// The approval an operation is being run under: set on the requester's
/// permit by the `approvals` module when the last approval arrives.
#[derive(Debug, Clone)]
pub struct Mark {
    pub id: Uuid,
    pub request_sha256: Vec<u8>,
}

/// An operation that can be held, as it would run now.
pub struct Hold {
    /// The policies that apply (the first enabled one is the request's).
    pub operations: Vec<Operation>,
    /// The route, its path parameters and its parsed body: what is run again.
    pub route: &'static str,
    pub params: Value,
    pub body: Value,
    pub summary: String,
    /// Before and after, as the operation's audit row will record them.
    pub change: Value,
    pub target: Option<(&'static str, String)>,
    /// The classification rank of the document the operation is about.
    pub classification: Option<i32>,
}

impl Hold {
    pub fn new(operation: Operation, route: &'static str, summary: impl Into<String>) -> Hold {
        Hold {
            operations: vec![operation],
            route,
            params: json!({}),
            body: json!({}),
            summary: summary.into(),
            change: json!({}),
            target: None,
            classification: None,
        }
    }

    pub fn also(mut self, operation: Operation) -> Hold {
        self.operations.push(operation);
        self
    }

    pub fn params(mut self, params: Value) -> Hold {
        self.params = params;
        self
    }

    pub fn body(mut self, body: impl Serialize) -> Hold {
        self.body = serde_json::to_value(body).unwrap_or(Value::Null);
        self
    }

    pub fn change(mut self, change: Value) -> Hold {
        self.change = change;
        self
    }

    pub fn target(mut self, kind: &'static str, id: impl ToString) -> Hold {
        self.target = Some((kind, id.to_string()));
        self
    }

    pub fn classified(mut self, rank: i32) -> Hold {
        self.classification = Some(rank);
        self
    }

    /// The stored request: `{route, params, body}`.
    pub fn request(&self) -> Value {
        json!({ "route": self.route, "params": self.params, "body": self.body })
    }
}

/// Canonical JSON (keys sorted, no whitespace) and its SHA-256.
pub fn canonical(request: &Value) -> (String, Vec<u8>) {
    // serde_json's maps are ordered by key (no `preserve_order`), and
    // `to_string` writes no whitespace.
    let text = request.to_string();
    let hash = ring::digest::digest(&ring::digest::SHA256, text.as_bytes()).as_ref().to_vec();
    (text, hash)
}

/// An operation's policy, as the tenant has it.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct Policy {
    pub operation: String,
    pub enabled: bool,
    pub approvals_required: i32,
    pub approver_roles: Vec<String>,
    pub timeout_hours: i32,
}

pub async fn policy(tx: &mut TenantTx, operation: Operation) -> Result<Option<Policy>, sqlx::Error> {
    sqlx::query_as(
        "SELECT operation, enabled, approvals_required, approver_roles, timeout_hours \
         FROM approval_policies WHERE operation = $1",
    )
    .bind(operation.as_str())
    .fetch_optional(tx.conn())
    .await
}

/// Whether `operation`'s policy holds it in this tenant.
pub async fn holds(tx: &mut TenantTx, operation: Operation) -> Result<bool, sqlx::Error> {
    Ok(policy(tx, operation).await?.is_some_and(|p| p.enabled))
}

/// A request waiting for approval (or decided), as the API shows it.
#[derive(Debug, Clone, Serialize, ToSchema, sqlx::FromRow)]
#[serde(rename_all = "camelCase")]
pub struct ApprovalView {
    pub id: Uuid,
    #[schema(value_type = Operation)]
    pub operation: String,
    /// One line saying what would change.
    pub summary: String,
    #[schema(value_type = ApprovalStatus)]
    pub status: String,
    pub requester_id: Uuid,
    pub requester: Option<String>,
    /// Before and after, as the operation's audit row will record them.
    #[schema(value_type = Object)]
    pub change: Value,
    pub target_type: Option<String>,
    pub target_id: Option<String>,
    pub approvals_required: i32,
    /// Who approved so far, oldest first.
    #[schema(value_type = Vec<ApprovalVote>)]
    pub approvals: Value,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    pub expires_at: OffsetDateTime,
    /// Who denied or cancelled it.
    pub closed_by: Option<Uuid>,
    /// Why it was denied, or why its execution failed.
    pub reason: Option<String>,
    #[serde(with = "time::serde::rfc3339::option")]
    pub closed_at: Option<OffsetDateTime>,
    #[serde(skip)]
    pub classification_rank: Option<i32>,
}

/// The states of a request.
#[derive(ToSchema)]
#[schema(rename_all = "lowercase")]
#[allow(dead_code)]
pub enum ApprovalStatus {
    Pending,
    Approved,
    Executed,
    Failed,
    Denied,
    Cancelled,
    Expired,
}

/// One approval given.
#[derive(Serialize, ToSchema)]
#[allow(dead_code)]
#[serde(rename_all = "camelCase")]
pub struct ApprovalVote {
    approver_id: Uuid,
    approver: Option<String>,
    comment: Option<String>,
    #[schema(value_type = String, format = DateTime)]
    at: String,
}

/// `SELECT` of an [`ApprovalView`] `FROM approvals a`, for `concat!`.
#[macro_export]
macro_rules! approval_select {
    () => {
        "SELECT a.id, a.operation, a.summary, a.status, a.requester_id, \
     (SELECT username FROM users WHERE id = a.requester_id) AS requester, a.change, a.target_type, a.target_id, \
     a.approvals_required, \
     COALESCE((SELECT jsonb_agg(jsonb_build_object('approverId', v.approver_id, 'approver', u.username, \
                                                   'comment', v.comment, 'at', v.created_at) ORDER BY v.created_at) \
               FROM approval_votes v LEFT JOIN users u ON u.id = v.approver_id WHERE v.approval_id = a.id), \
              '[]'::jsonb) AS approvals, \
     a.created_at, a.expires_at, a.closed_by, a.reason, a.closed_at, a.classification_rank FROM approvals a "
    };
}

pub async fn view(tx: &mut TenantTx, id: Uuid) -> Result<Option<ApprovalView>, sqlx::Error> {
    sqlx::query_as(concat!(approval_select!(), "WHERE a.id = $1")).bind(id).fetch_optional(tx.conn()).await
}

/// What an operation under dual control did: ran now, or is waiting.
#[derive(Debug)]
pub enum Done<T> {
    Now(T),
    Held(Box<ApprovalView>),
}

impl<T> Done<T> {
    pub fn map<U>(self, f: impl FnOnce(T) -> U) -> Done<U> {
        match self {
            Done::Now(v) => Done::Now(f(v)),
            Done::Held(a) => Done::Held(a),
        }
    }
}

/// The gate's answer.
pub enum Gate {
    /// Run the operation now.
    Proceed,
    /// Stored for approval: answer 202 with this.
    Held(Box<ApprovalView>),
}

/// Decides whether the operation described by `hold` runs now (see the
/// module's documentation). A request made with an API key is refused: only
/// people request operations under dual control.
pub async fn gate(
    tx: &mut TenantTx,
    permit: &Permit,
    source: &Source,
    hold: Hold,
    now: OffsetDateTime,
) -> Result<Result<Gate, Denial>, sqlx::Error> {
    let (text, hash) = canonical(&hold.request());
    if let Some(mark) = permit.approval() {
        // Exactly the approved request runs; anything else is held anew.
        if mark.request_sha256 == hash {
            return Ok(Ok(Gate::Proceed));
        }
    }
    let mut held = None;
    for op in &hold.operations {
        if let Some(policy) = policy(tx, *op).await?.filter(|p| p.enabled) {
            held = Some((*op, policy));
            break;
        }
    }
    let Some((operation, policy)) = held else { return Ok(Ok(Gate::Proceed)) };
    if permit.subject().api_key().is_some() {
        let denial = permit.deny("api_key_under_dual_control", "This operation needs approval; request it in person");
        return Ok(Err(denial));
    }
    let expires = now + time::Duration::hours(policy.timeout_hours.into());
    let (target_type, target_id) = hold.target.clone().unzip();
    let id: Uuid = sqlx::query_scalar(
        "INSERT INTO approvals (tenant_id, operation, requester_id, request, request_sha256, summary, change, \
                                target_type, target_id, classification_rank, approvals_required, approver_roles, \
                                created_at, expires_at) \
         VALUES ($1, $2, $3, $4::jsonb, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14) RETURNING id",
    )
    .bind(permit.tenant_id())
    .bind(operation.as_str())
    .bind(permit.user_id())
    .bind(&text)
    .bind(&hash)
    .bind(&hold.summary)
    .bind(&hold.change)
    .bind(target_type)
    .bind(&target_id)
    .bind(hold.classification)
    .bind(policy.approvals_required)
    .bind(&policy.approver_roles)
    .bind(now)
    .bind(expires)
    .fetch_one(tx.conn())
    .await?;
    let mut entry = Entry::new(Action::ApprovalRequest, Outcome::Success).target("approval", id).details(json!({
        "approvalId": id,
        "operation": operation.as_str(),
        "summary": hold.summary,
        "change": hold.change,
        "requestSha256": hex::encode(&hash),
        "approvalsRequired": policy.approvals_required,
        "expiresAt": expires.format(&time::format_description::well_known::Rfc3339).ok(),
    }));
    if let Some(rank) = hold.classification {
        entry = entry.classified(rank);
    }
    audit::record(tx, source, entry).await?;
    let view = view(tx, id).await?.ok_or(sqlx::Error::RowNotFound)?;
    Ok(Ok(Gate::Held(Box::new(view))))
}

/// A request as its row lock holds it.
#[derive(Debug, sqlx::FromRow)]
pub struct Locked {
    pub id: Uuid,
    pub operation: String,
    pub requester_id: Uuid,
    pub status: String,
    pub request: Value,
    pub request_sha256: Vec<u8>,
    pub change: Value,
    pub target_type: Option<String>,
    pub target_id: Option<String>,
    pub classification_rank: Option<i32>,
    pub approvals_required: i32,
    pub expires_at: OffsetDateTime,
}

impl Locked {
    pub fn is_open(&self) -> bool {
        self.status == "pending" || self.status == "approved"
    }

    /// An audit entry about this request.
    pub fn entry(&self, action: Action, outcome: Outcome, details: Value) -> Entry {
        let mut details = details;
        if let Value::Object(map) = &mut details {
            map.insert("approvalId".into(), json!(self.id));
            map.insert("operation".into(), json!(self.operation));
            map.insert("requestedBy".into(), json!(self.requester_id));
        }
        let mut entry = Entry::new(action, outcome).target("approval", self.id).details(details);
        if let Some(rank) = self.classification_rank {
            entry = entry.classified(rank);
        }
        entry
    }
}

/// Request `id`, locked until `tx` ends: every change of a request's state
/// happens under this lock, so concurrent approvals, denials, cancellations,
/// expiries and runs are taken one after the other.
pub async fn lock(tx: &mut TenantTx, id: Uuid) -> Result<Option<Locked>, sqlx::Error> {
    sqlx::query_as(
        "SELECT id, operation, requester_id, status, request, request_sha256, change, target_type, target_id, \
                classification_rank, approvals_required, expires_at \
         FROM approvals WHERE id = $1 FOR UPDATE",
    )
    .bind(id)
    .fetch_optional(tx.conn())
    .await
}

/// Closes `request` as expired (it must be open and past its time), with its
/// `approval.expire` row.
pub async fn expire(
    tx: &mut TenantTx,
    source: &Source,
    request: &Locked,
    now: OffsetDateTime,
) -> Result<(), sqlx::Error> {
    sqlx::query("UPDATE approvals SET status = 'expired', closed_at = $2 WHERE id = $1")
        .bind(request.id)
        .bind(now)
        .execute(tx.conn())
        .await?;
    let expired_at = request.expires_at.format(&time::format_description::well_known::Rfc3339).ok();
    // The row names the requester: whoever happened to read the list did nothing.
    let entry = request
        .entry(Action::ApprovalExpire, Outcome::Success, json!({ "expiresAt": expired_at }))
        .user(request.requester_id);
    audit::record(tx, source, entry).await.map(|_| ())
}

/// The facts every audit row of a run under `request` carries.
pub async fn facts(tx: &mut TenantTx, request: &Locked) -> Result<serde_json::Map<String, Value>, sqlx::Error> {
    let approvers: Vec<Uuid> =
        sqlx::query_scalar("SELECT approver_id FROM approval_votes WHERE approval_id = $1 ORDER BY created_at")
            .bind(request.id)
            .fetch_all(tx.conn())
            .await?;
    let mut map = serde_json::Map::new();
    map.insert("approvalId".into(), json!(request.id));
    map.insert("requestedBy".into(), json!(request.requester_id));
    map.insert("approvedBy".into(), json!(approvers));
    Ok(map)
}

/// Why a request could not be run by its requester.
#[derive(Debug)]
pub struct Unredeemable {
    pub reason: &'static str,
    pub error: crate::http::error::AppError,
}

/// Runs approved request `id` once, for its requester (an export returns data
/// to them, so it is not run by the approval): under the row lock, it must
/// be this user's, approved, unexpired and for exactly `request`; it becomes
/// `executed` with its `approval.execute` row, and the facts to mark the
/// run's own audit rows with are returned. A refusal is recorded in `tx`
/// (as a failed `approval.execute`) for the caller to commit.
pub async fn redeem(
    tx: &mut TenantTx,
    permit: &Permit,
    source: &Source,
    id: Uuid,
    request: &Value,
    now: OffsetDateTime,
) -> Result<Result<serde_json::Map<String, Value>, Unredeemable>, sqlx::Error> {
    use crate::http::error::AppError;
    let Some(locked) = lock(tx, id).await? else {
        return Ok(Err(Unredeemable { reason: "not_found", error: AppError::NotFound }));
    };
    let (_, hash) = canonical(request);
    let refusal = if locked.requester_id != permit.user_id() {
        Some(("not_requester", AppError::forbidden("Only the person who requested it may run this approval")))
    } else if locked.status == "executed" {
        Some(("already_run", AppError::Conflict("This approval has been used".into())))
    } else if locked.is_open() && locked.expires_at <= now {
        expire(tx, source, &locked, now).await?;
        Some(("expired", AppError::Conflict("This approval has expired".into())))
    } else if locked.status != "approved" {
        Some(("not_approved", AppError::Conflict("This request is not approved".into())))
    } else if locked.request_sha256 != hash {
        Some(("different_request", AppError::Conflict("This approval is for a different request".into())))
    } else if standing_votes(tx, id, now).await? < i64::from(locked.approvals_required) {
        Some(("approvals_lapsed", AppError::Conflict("An approver has lost eligibility since: ask again".into())))
    } else {
        None
    };
    if let Some((reason, error)) = refusal {
        let entry = locked.entry(Action::ApprovalExecute, Outcome::Fail, json!({ "reason": reason }));
        audit::record(tx, source, entry).await?;
        return Ok(Err(Unredeemable { reason, error }));
    }
    sqlx::query("UPDATE approvals SET status = 'executed', closed_at = $2 WHERE id = $1")
        .bind(id)
        .bind(now)
        .execute(tx.conn())
        .await?;
    let facts = facts(tx, &locked).await?;
    let entry = locked.entry(Action::ApprovalExecute, Outcome::Success, json!({ "approvedBy": facts["approvedBy"] }));
    audit::record(tx, source, entry).await?;
    Ok(Ok(facts))
}

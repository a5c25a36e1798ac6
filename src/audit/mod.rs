//! The audit spine: one function appends an entry inside the caller's tenant
//! transaction, so an action and its record commit or roll back together.
//!
//! Action names are dotted and stable: they are what the dashboard, exports and
//! people's saved filters match on. Details never hold passwords, tokens or cookies;
//! callers put only the facts of the decision in them.

pub mod archive;
pub mod chain;
pub mod checkpoint;
pub mod export;
pub mod forward;
pub mod handlers;
pub mod highlights;
pub mod holds;
pub mod integrity;
pub mod jobs;
pub mod names;
pub mod query;
pub mod retention;
pub mod verify;

use std::net::IpAddr;

use serde_json::Value;
use uuid::Uuid;

use crate::db::{Database, TenantTx};

/// Every audited action. Add new ones here; never rename one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    AuthRegister,
    AuthLogin,
    AuthLogout,
    AuthSessionExpired,
    AuthCsrfDenied,
    UserCreate,
    RbacDenied,
    UserUpdate,
    UserDelete,
    UserApprove,
    UserReject,
    UserSuspend,
    RoleAssign,
    RoleRevoke,
    RoleCreate,
    RoleUpdate,
    RoleDelete,
    RolePermissionGrant,
    RolePermissionRevoke,
    DepartmentCreate,
    DepartmentUpdate,
    DepartmentDelete,
    ClearanceLevelCreate,
    ClearanceLevelUpdate,
    ClearanceLevelDelete,
    MacDenied,
    FileUpload,
    FileDownload,
    FileShare,
    FileUnshare,
    FileDelete,
    FileClassify,
    FileDeclassify,
    IncidentCreate,
    IncidentUpdate,
    AuditExport,
    AuthMfaEnroll,
    AuthMfaRemove,
    AuthMfaReset,
    AuthMfaVerify,
    AuthMfaRecoveryUsed,
    AuthMfaRecoveryRegenerated,
    AuthStepUp,
    AuthLockout,
    UserUnlock,
    AuthPasswordChange,
    AuthSessionEnd,
    ApiKeyCreate,
    ApiKeyRevoke,
    AuthApiKey,
    ApprovalRequest,
    ApprovalApprove,
    ApprovalDeny,
    ApprovalCancel,
    ApprovalExpire,
    ApprovalExecute,
    ApprovalPolicyChange,
    AuditVerify,
    AuditArchive,
    AuditPurge,
    AuditLegalHold,
}

impl Action {
    pub fn as_str(self) -> &'static str {
        match self {
            Action::AuthRegister => "auth.register",
            Action::AuthLogin => "auth.login",
            Action::AuthLogout => "auth.logout",
            Action::AuthSessionExpired => "auth.session_expired",
            Action::AuthCsrfDenied => "auth.csrf_denied",
            Action::UserCreate => "user.create",
            Action::RbacDenied => "rbac.denied",
            Action::UserUpdate => "user.update",
            Action::UserDelete => "user.delete",
            Action::UserApprove => "user.approve",
            Action::UserReject => "user.reject",
            Action::UserSuspend => "user.suspend",
            Action::RoleAssign => "role.assign",
            Action::RoleRevoke => "role.revoke",
            Action::RoleCreate => "role.create",
            Action::RoleUpdate => "role.update",
            Action::RoleDelete => "role.delete",
            Action::RolePermissionGrant => "role.permission_grant",
            Action::RolePermissionRevoke => "role.permission_revoke",
            Action::DepartmentCreate => "department.create",
            Action::DepartmentUpdate => "department.update",
            Action::DepartmentDelete => "department.delete",
            Action::ClearanceLevelCreate => "clearance_level.create",
            Action::ClearanceLevelUpdate => "clearance_level.update",
            Action::ClearanceLevelDelete => "clearance_level.delete",
            Action::MacDenied => "mac.denied",
            Action::FileUpload => "file.upload",
            Action::FileDownload => "file.download",
            Action::FileShare => "file.share",
            Action::FileUnshare => "file.unshare",
            Action::FileDelete => "file.delete",
            Action::FileClassify => "file.classify",
            Action::FileDeclassify => "file.declassify",
            Action::IncidentCreate => "incident.create",
            Action::IncidentUpdate => "incident.update",
            Action::AuditExport => "audit.export",
            Action::AuthMfaEnroll => "auth.mfa.enroll",
            Action::AuthMfaRemove => "auth.mfa.remove",
            Action::AuthMfaReset => "auth.mfa.reset",
            Action::AuthMfaVerify => "auth.mfa.verify",
            Action::AuthMfaRecoveryUsed => "auth.mfa.recovery_used",
            Action::AuthMfaRecoveryRegenerated => "auth.mfa.recovery_regenerated",
            Action::AuthStepUp => "auth.step_up",
            Action::AuthLockout => "auth.lockout",
            Action::UserUnlock => "user.unlock",
            Action::AuthPasswordChange => "auth.password_change",
            Action::AuthSessionEnd => "auth.session_end",
            Action::ApiKeyCreate => "apikey.create",
            Action::ApiKeyRevoke => "apikey.revoke",
            Action::AuthApiKey => "auth.api_key",
            Action::ApprovalRequest => "approval.request",
            Action::ApprovalApprove => "approval.approve",
            Action::ApprovalDeny => "approval.deny",
            Action::ApprovalCancel => "approval.cancel",
            Action::ApprovalExpire => "approval.expire",
            Action::ApprovalExecute => "approval.execute",
            Action::ApprovalPolicyChange => "approval.policy_change",
            Action::AuditVerify => "audit.verify",
            Action::AuditArchive => "audit.archive",
            Action::AuditPurge => "audit.purge",
            Action::AuditLegalHold => "audit.legal_hold",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Success,
    Fail,
}

impl Outcome {
    fn as_str(self) -> &'static str {
        match self {
            Outcome::Success => "success",
            Outcome::Fail => "fail",
        }
    }
}

/// Where a request came from: the client address (see `http::client`) and its
/// user agent. Empty for the CLI and background jobs.
#[derive(Debug, Clone, Default)]
pub struct Source {
    pub ip: Option<IpAddr>,
    pub user_agent: Option<String>,
}

/// The longest user agent kept; longer ones are cut (on a character boundary).
const MAX_USER_AGENT: usize = 512;

impl Source {
    pub fn new(ip: Option<IpAddr>, user_agent: Option<&str>) -> Self {
        let user_agent = user_agent.map(|ua| ua.chars().take(MAX_USER_AGENT).collect());
        Source { ip, user_agent }
    }
}

/// One entry to append.
#[derive(Debug)]
pub struct Entry {
    pub action: Action,
    pub outcome: Outcome,
    /// Overrides the transaction's actor: e.g. the account a failed login named.
    pub user_id: Option<Uuid>,
    pub target: Option<(&'static str, String)>,
    pub details: Value,
    /// The classification rank of the object the entry is about (a document),
    /// at the time of writing: readers cleared below it see the entry with its
    /// details redacted (mandatory access control covers the log too).
    pub classification: Option<i32>,
}

impl Entry {
    pub fn new(action: Action, outcome: Outcome) -> Self {
        Entry {
            action,
            outcome,
            user_id: None,
            target: None,
            details: Value::Object(Default::default()),
            classification: None,
        }
    }

    pub fn user(mut self, user_id: Uuid) -> Self {
        self.user_id = Some(user_id);
        self
    }

    pub fn target(mut self, kind: &'static str, id: impl ToString) -> Self {
        self.target = Some((kind, id.to_string()));
        self
    }

    pub fn details(mut self, details: Value) -> Self {
        self.details = details;
        self
    }

    /// Marks the entry as about an object classified at `rank`.
    pub fn classified(mut self, rank: i32) -> Self {
        self.classification = Some(rank);
        self
    }
}

/// Appends `entry` in a transaction of its own: for refusals, whose attempted
/// change was rolled back.
pub async fn record_alone(
    db: &Database,
    tenant: Uuid,
    actor: Option<Uuid>,
    source: &Source,
    entry: Entry,
) -> Result<Uuid, sqlx::Error> {
    let mut tx = db.tenant_tx(tenant, actor).await?;
    let id = record(&mut tx, source, entry).await?;
    tx.commit().await?;
    Ok(id)
}

/// Appends `entry` in `tx`. The row is visible to others only if `tx` commits.
pub async fn record(tx: &mut TenantTx, source: &Source, mut entry: Entry) -> Result<Uuid, sqlx::Error> {
    let user_id = entry.user_id.or(tx.actor());
    // A request made with an API key names the key in every row it writes.
    if let Some(key) = tx.api_key() {
        match &mut entry.details {
            Value::Object(map) => {
                map.insert("apiKey".into(), Value::String(key.to_string()));
            }
            Value::Null => entry.details = serde_json::json!({ "apiKey": key }),
            _ => {}
        }
    }
    // An operation run under an approval names it, its requester and approvers.
    if let Some(facts) = tx.approval_facts() {
        if entry.details.is_null() {
            entry.details = Value::Object(Default::default());
        }
        if let Value::Object(map) = &mut entry.details {
            for (k, v) in facts {
                map.entry(k.clone()).or_insert_with(|| v.clone());
            }
        }
    }
    let (target_type, target_id) = match entry.target {
        Some((kind, id)) => (Some(kind), Some(id)),
        None => (None, None),
    };
    let tenant = tx.tenant_id();
    sqlx::query_scalar(
        "INSERT INTO audit_logs (tenant_id, user_id, action, target_type, target_id, ip, user_agent, result, details, \
                                 classification_rank) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10) RETURNING id",
    )
    .bind(tenant)
    .bind(user_id)
    .bind(entry.action.as_str())
    .bind(target_type)
    .bind(target_id)
    .bind(source.ip.map(ipnet::IpNet::from))
    .bind(source.user_agent.as_deref())
    .bind(entry.outcome.as_str())
    .bind(entry.details)
    .bind(entry.classification)
    .fetch_one(tx.conn())
    .await
    .inspect(|_| crate::telemetry::audit_row())
}

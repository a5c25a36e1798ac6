//! The per-tenant dual-control policies: `GET /api/approval-policies` and
//! `GET/PUT /api/approval-policies/{operation}` (guard `admin.manage_roles`).
//! A `PUT` is itself the `policy.change` operation: with that policy on, any
//! change (disabling a policy included) waits for approval, so nobody
//! switches the rule off alone.

use serde::{Deserialize, Serialize};
use serde_json::json;
use utoipa::ToSchema;

use crate::{
    audit::{self, Action, Entry, Outcome, Source},
    authz::{
        Permit,
        dual::{self, Done, Operation, Policy},
    },
    db::TenantTx,
    directory::{self, Attempt, Gate, Hold},
    http::{AppState, error::AppError},
};

/// An operation's policy.
#[derive(Debug, Clone, Serialize, ToSchema, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct PolicyView {
    pub operation: Operation,
    /// What the operation is.
    pub description: &'static str,
    pub enabled: bool,
    /// Approvers needed besides the requester (1: two people in all).
    pub approvals_required: i32,
    /// The roles whose holders may approve; empty: holders of
    /// `admin.manage_roles` at tenant scope.
    pub approver_roles: Vec<String>,
    pub timeout_hours: i32,
}

impl PolicyView {
    fn of(operation: Operation, policy: Option<Policy>) -> PolicyView {
        let policy = policy.unwrap_or(Policy {
            operation: operation.as_str().into(),
            enabled: false,
            approvals_required: 1,
            approver_roles: Vec::new(),
            timeout_hours: operation.default_timeout_hours(),
        });
        PolicyView {
            operation,
            description: operation.describe(),
            enabled: policy.enabled,
            approvals_required: policy.approvals_required,
            approver_roles: policy.approver_roles,
            timeout_hours: policy.timeout_hours,
        }
    }
}

/// Every operation's policy, in the catalogue's order.
pub async fn list(tx: &mut TenantTx) -> Result<Vec<PolicyView>, AppError> {
    let mut out = Vec::new();
    for op in Operation::ALL {
        out.push(PolicyView::of(op, dual::policy(tx, op).await?));
    }
    Ok(out)
}

fn operation(name: &str) -> Result<Operation, AppError> {
    Operation::parse(name).ok_or(AppError::NotFound)
}

pub async fn get(tx: &mut TenantTx, name: &str) -> Result<PolicyView, AppError> {
    let op = operation(name)?;
    Ok(PolicyView::of(op, dual::policy(tx, op).await?))
}

/// A policy change: fields absent are left as they are.
#[derive(Debug, Deserialize, Serialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PolicyInput {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enabled: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(minimum = 1, maximum = 5)]
    pub approvals_required: Option<i32>,
    /// Role names (each must exist); empty: holders of `admin.manage_roles`
    /// at tenant scope.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(max_items = 20)]
    pub approver_roles: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(minimum = 1, maximum = 720)]
    pub timeout_hours: Option<i32>,
}

/// The route of [`put`], as stored with a held request.
pub const ROUTE_PUT: &str = "PUT /api/approval-policies/{operation}";

pub async fn put(
    state: &AppState,
    permit: &Permit,
    source: &Source,
    mut tx: TenantTx,
    name: &str,
    input: PolicyInput,
) -> Result<Done<PolicyView>, AppError> {
    let outcome = put_attempt(state, permit, source, &mut tx, name, input).await;
    directory::settle(tx, permit, source, outcome).await
}

pub async fn put_attempt(
    state: &AppState,
    permit: &Permit,
    source: &Source,
    tx: &mut TenantTx,
    name: &str,
    input: PolicyInput,
) -> Attempt<Done<PolicyView>> {
    let op = operation(name)?;
    let now = state.clock.now();
    let permit = &directory::begin(tx, permit, now).await?;
    let before = PolicyView::of(op, dual::policy(tx, op).await?);
    let approvals_required = input.approvals_required.unwrap_or(before.approvals_required);
    if !(1..=5).contains(&approvals_required) {
        return Err(AppError::invalid("approvalsRequired", "must be between 1 and 5").into());
    }
    let timeout_hours = input.timeout_hours.unwrap_or(before.timeout_hours);
    if !(1..=720).contains(&timeout_hours) {
        return Err(AppError::invalid("timeoutHours", "must be between 1 and 720 hours").into());
    }
    let approver_roles = match &input.approver_roles {
        None => before.approver_roles.clone(),
        Some(names) if names.len() > 20 => return Err(AppError::invalid("approverRoles", "at most 20 roles").into()),
        Some(names) => {
            let mut found = Vec::new();
            for name in names {
                let role = directory::roles::find_by_name(tx, name.trim()).await?;
                let role = role.ok_or_else(|| AppError::invalid("approverRoles", format!("no role named {name:?}")))?;
                if !found.contains(&role.name) {
                    found.push(role.name);
                }
            }
            found
        }
    };
    let after = PolicyView {
        enabled: input.enabled.unwrap_or(before.enabled),
        approvals_required,
        approver_roles,
        timeout_hours,
        ..before.clone()
    };
    if after == before {
        return Ok(Done::Now(after));
    }
    let change = json!({ "operation": op.as_str(), "before": before, "after": after });
    let summary = format!("Change the dual-control policy for {}", op.as_str());
    let hold = Hold::new(Operation::PolicyChange, ROUTE_PUT, summary)
        .params(json!({ "operation": op.as_str() }))
        .body(&input)
        .change(change.clone())
        .target("approval_policy", op.as_str());
    if let Gate::Held(approval) = directory::gate(tx, permit, source, hold, now).await? {
        return Ok(Done::Held(approval));
    }
    save(tx, op, &after, now).await?;
    let entry = Entry::new(Action::ApprovalPolicyChange, Outcome::Success)
        .target("approval_policy", op.as_str())
        .details(change);
    audit::record(tx, source, entry).await?;
    Ok(Done::Now(after))
}

async fn save(
    tx: &mut TenantTx,
    op: Operation,
    policy: &PolicyView,
    now: time::OffsetDateTime,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO approval_policies (tenant_id, operation, enabled, approvals_required, approver_roles, \
                                        timeout_hours, updated_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7) \
         ON CONFLICT (tenant_id, operation) DO UPDATE SET enabled = EXCLUDED.enabled, \
             approvals_required = EXCLUDED.approvals_required, approver_roles = EXCLUDED.approver_roles, \
             timeout_hours = EXCLUDED.timeout_hours, updated_at = EXCLUDED.updated_at",
    )
    .bind(tx.tenant_id())
    .bind(op.as_str())
    .bind(policy.enabled)
    .bind(policy.approvals_required)
    .bind(&policy.approver_roles)
    .bind(policy.timeout_hours)
    .bind(now)
    .execute(tx.conn())
    .await
    .map(|_| ())
}

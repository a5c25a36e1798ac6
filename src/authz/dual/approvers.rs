//! Who may approve: the eligibility of an approver (in SQL, decided at the
//! moment of approval), the votes that still count, and which roles are
//! privileged because they grant administrative permissions or make their
//! holders approvers.

use time::OffsetDateTime;
use uuid::Uuid;

use crate::{authz::Permission, db::TenantTx};

/// The permissions whose assignment or widening is privileged.
pub const PRIVILEGED: [Permission; 5] = [
    Permission::AdminManageRoles,
    Permission::AdminViewLogs,
    Permission::UsersEdit,
    Permission::UsersDelete,
    Permission::IncidentManage,
];

/// Whether any of `permissions` is privileged.
pub fn any_privileged(mut permissions: impl Iterator<Item = Permission>) -> bool {
    permissions.any(|p| PRIVILEGED.contains(&p))
}

/// Whether the role `name` with `grants` is privileged: it carries a
/// privileged permission, or it makes its holders approvers (a policy, or a
/// request still open, names it among its approver roles). Assigning such a
/// role is held like any privileged assignment, so nobody makes a second
/// approver alone.
pub async fn privileged_role(
    tx: &mut TenantTx,
    name: &str,
    grants: impl Iterator<Item = Permission>,
) -> Result<bool, sqlx::Error> {
    Ok(any_privileged(grants) || approver_role(tx, name).await?)
}

/// Whether an enabled policy or an open request names the role `name` among
/// its approver roles.
pub async fn approver_role(tx: &mut TenantTx, name: &str) -> Result<bool, sqlx::Error> {
    sqlx::query_scalar(
        "SELECT EXISTS (SELECT 1 FROM approval_policies WHERE enabled \
                          AND lower($1) = ANY (SELECT lower(x) FROM unnest(approver_roles) x)) \
             OR EXISTS (SELECT 1 FROM approvals WHERE status IN ('pending', 'approved') \
                          AND lower($1) = ANY (SELECT lower(x) FROM unnest(approver_roles) x))",
    )
    .bind(name)
    .fetch_one(tx.conn())
    .await
}

/// The condition for user `$1` to be eligible, at `$2`, to approve request
/// `a`: active, cleared at least to the request's document, and holding one
/// of the request's approver roles (none named: `admin.manage_roles` at
/// tenant scope), through a current assignment.
#[macro_export]
macro_rules! approval_eligible {
    () => {
        "EXISTS (SELECT 1 FROM users eu JOIN clearance_levels ec ON ec.id = eu.clearance_level_id \
       WHERE eu.id = $1 AND eu.status = 'active' AND ec.level >= COALESCE(a.classification_rank, 0) \
         AND CASE WHEN cardinality(a.approver_roles) = 0 THEN EXISTS ( \
                 SELECT 1 FROM user_roles ur JOIN role_permissions rp ON rp.role_id = ur.role_id \
                 JOIN permissions p ON p.id = rp.permission_id \
                 WHERE ur.user_id = eu.id AND (ur.expires_at IS NULL OR ur.expires_at > $2) \
                   AND p.name = 'admin.manage_roles' AND rp.scope = 'tenant') \
             ELSE EXISTS ( \
                 SELECT 1 FROM user_roles ur JOIN roles r ON r.id = ur.role_id \
                 WHERE ur.user_id = eu.id AND (ur.expires_at IS NULL OR ur.expires_at > $2) \
                   AND lower(r.name) = ANY (SELECT lower(x) FROM unnest(a.approver_roles) x)) END) "
    };
}

/// Whether `user` may approve request `id` now (see [`approval_eligible`]).
pub async fn eligible(tx: &mut TenantTx, id: Uuid, user: Uuid, now: OffsetDateTime) -> Result<bool, sqlx::Error> {
    sqlx::query_scalar(concat!("SELECT ", approval_eligible!(), "FROM approvals a WHERE a.id = $3"))
        .bind(user)
        .bind(now)
        .bind(id)
        .fetch_one(tx.conn())
        .await
}

/// Approvals that count now: votes of people still eligible to give them (a
/// vote from someone since demoted or suspended no longer counts).
pub async fn standing_votes(tx: &mut TenantTx, id: Uuid, now: OffsetDateTime) -> Result<i64, sqlx::Error> {
    let voters: Vec<Uuid> = sqlx::query_scalar("SELECT approver_id FROM approval_votes WHERE approval_id = $1")
        .bind(id)
        .fetch_all(tx.conn())
        .await?;
    let mut count = 0;
    for voter in voters {
        if eligible(tx, id, voter, now).await? {
            count += 1;
        }
    }
    Ok(count)
}

//! Authorization: the one place access is decided.
//!
//! For now it answers "which roles and permissions does this user hold right now"
//! (roles whose assignment has expired do not count). Every answer is read fresh
//! from the database inside the caller's tenant transaction, so a change to roles
//! or grants applies to the user's very next request. Route guards (RBAC), the
//! clearance rule (MAC) and scopes build on these functions.

use time::OffsetDateTime;
use uuid::Uuid;

use crate::db::TenantTx;

/// The names of the roles `user_id` holds at `now`, oldest assignment first (the
/// first is the user's primary role).
pub async fn effective_roles(
    tx: &mut TenantTx,
    user_id: Uuid,
    now: OffsetDateTime,
) -> Result<Vec<String>, sqlx::Error> {
    sqlx::query_scalar(
        "SELECT r.name FROM user_roles ur JOIN roles r ON r.id = ur.role_id \
         WHERE ur.user_id = $1 AND (ur.expires_at IS NULL OR ur.expires_at > $2) \
         ORDER BY ur.assigned_at, r.name",
    )
    .bind(user_id)
    .bind(now)
    .fetch_all(tx.conn())
    .await
}

/// The names of the permissions `user_id` holds at `now` through any current role.
pub async fn effective_permissions(
    tx: &mut TenantTx,
    user_id: Uuid,
    now: OffsetDateTime,
) -> Result<Vec<String>, sqlx::Error> {
    sqlx::query_scalar(
        "SELECT DISTINCT p.name FROM user_roles ur \
         JOIN role_permissions rp ON rp.role_id = ur.role_id \
         JOIN permissions p ON p.id = rp.permission_id \
         WHERE ur.user_id = $1 AND (ur.expires_at IS NULL OR ur.expires_at > $2) ORDER BY p.name",
    )
    .bind(user_id)
    .bind(now)
    .fetch_all(tx.conn())
    .await
}

//! Whom and what an administrator may act on: a user in scope and no more
//! powerful than the caller, a role the caller could grant in full, and the
//! audit snapshot of a user before a change. Shared by `users` (the account
//! itself) and `membership` (its roles).

use serde_json::{Value, json};
use time::OffsetDateTime;
use uuid::Uuid;

use super::{
    Attempt, Refused,
    roles::{self, NamedRole},
};
use crate::{
    auth::user::{self, UserView},
    authz::{self, Permit},
    db::TenantTx,
    http::error::AppError,
};

pub(super) async fn in_scope(tx: &mut TenantTx, permit: &Permit, id: Uuid, now: OffsetDateTime) -> Attempt<UserView> {
    let view = user::load_view(tx, id, now).await?.ok_or(AppError::NotFound)?;
    if !permit.covers(view.id, view.department_id) {
        return Err(permit.deny("outside_scope", authz::INSUFFICIENT).target("user", id).into());
    }
    Ok(view)
}

/// The user `id`, in scope, and one the caller may manage: no clearance above
/// the caller's and no permission the caller could not grant. The caller
/// themselves only where `allow_self` (status and deletion; never roles,
/// clearance, department or password).
pub(super) async fn manageable(
    tx: &mut TenantTx,
    permit: &Permit,
    id: Uuid,
    now: OffsetDateTime,
    allow_self: bool,
) -> Attempt<UserView> {
    let view = in_scope(tx, permit, id, now).await?;
    if view.id == permit.user_id() && !allow_self {
        return Err(self_change(permit, id));
    }
    let subject = permit.subject();
    let grants = authz::grants(tx, id, now).await?;
    if view.clearance_rank > subject.clearance_rank || !roles::within_own(subject, &grants) {
        let denial = permit.deny("target_outranks", "You cannot manage a user with more access than you");
        return Err(denial.target("user", id).into());
    }
    Ok(view)
}

pub(super) fn self_change(permit: &Permit, id: Uuid) -> Refused {
    permit
        .deny("self_change", "You cannot change your own roles, clearance, department or password here")
        .target("user", id)
        .into()
}

/// The role `name` (422 when unknown), if the caller could grant all of it.
pub(super) async fn grantable_role(tx: &mut TenantTx, permit: &Permit, name: &str) -> Attempt<NamedRole> {
    let role = roles::find_by_name(tx, name.trim())
        .await?
        .ok_or_else(|| AppError::invalid("role", format!("no role named {:?}", name.trim())))?;
    if !roles::within_own(permit.subject(), &role.grants) {
        return Err(permit
            .deny("grant_exceeds_own", "You cannot assign a role with permissions you do not hold")
            .into());
    }
    Ok(role)
}

pub(super) fn snapshot(view: &UserView) -> Value {
    json!({
        "username": view.username,
        "email": view.email,
        "status": view.status,
        "roles": view.roles,
        "department": view.department,
        "clearanceLevel": view.clearance_level,
        "requestedRole": view.requested_role,
    })
}

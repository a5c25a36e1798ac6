//! Who holds which role: assignment (with an optional expiry) and revocation,
//! and approval or rejection of self-registered accounts (seed 003).

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use time::OffsetDateTime;
use utoipa::ToSchema;
use uuid::Uuid;

use super::{
    Attempt, Refused,
    roles::{self, NamedRole},
    targets::{grantable_role, manageable, snapshot},
};
use crate::{
    audit::{self, Action, Entry, Outcome, Source},
    auth::user::{self, UserView},
    authz::{
        Permit,
        dual::{self, Done, Gate, Hold, Operation},
    },
    db::TenantTx,
    http::{AppState, error::AppError},
};

/// Makes `role` the user's only role, auditing each assignment and revocation.
pub(super) async fn replace_roles(
    tx: &mut TenantTx,
    permit: &Permit,
    source: &Source,
    user_id: Uuid,
    role: &NamedRole,
) -> Attempt<()> {
    let held: Vec<(Uuid, String, Option<OffsetDateTime>)> = sqlx::query_as(
        "SELECT r.id, r.name, ur.expires_at FROM user_roles ur JOIN roles r ON r.id = ur.role_id WHERE ur.user_id = $1",
    )
    .bind(user_id)
    .fetch_all(tx.conn())
    .await?;
    for (old_id, old_name, expires_at) in &held {
        if *old_id == role.id {
            continue;
        }
        let grants = roles::grants_of(tx, *old_id).await?;
        if !roles::within_own(permit.subject(), &grants) {
            let denial = permit.deny("grant_exceeds_own", "You cannot revoke a role with permissions you do not hold");
            return Err(denial.target("user", user_id).into());
        }
        sqlx::query("DELETE FROM user_roles WHERE user_id = $1 AND role_id = $2")
            .bind(user_id)
            .bind(old_id)
            .execute(tx.conn())
            .await?;
        let entry = Entry::new(Action::RoleRevoke, Outcome::Success).target("user", user_id).details(json!({
            "role": old_name,
            "before": { "expiresAt": rfc3339(*expires_at) },
            "after": null,
        }));
        audit::record(tx, source, entry).await?;
    }
    let previous = held.iter().find(|(id, _, _)| *id == role.id).map(|(_, _, e)| *e);
    if previous != Some(None) {
        assign(tx, permit, user_id, role.id, None).await?;
        let entry = Entry::new(Action::RoleAssign, Outcome::Success).target("user", user_id).details(json!({
            "role": role.name,
            "before": previous.map(|e| json!({ "expiresAt": rfc3339(e) })),
            "after": { "expiresAt": null },
        }));
        audit::record(tx, source, entry).await?;
    }
    Ok(())
}

async fn assign(
    tx: &mut TenantTx,
    permit: &Permit,
    user_id: Uuid,
    role_id: Uuid,
    expires_at: Option<OffsetDateTime>,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO user_roles (tenant_id, user_id, role_id, assigned_by, expires_at) VALUES ($1, $2, $3, $4, $5) \
         ON CONFLICT (user_id, role_id) DO UPDATE \
         SET assigned_by = EXCLUDED.assigned_by, expires_at = EXCLUDED.expires_at, assigned_at = now()",
    )
    .bind(permit.tenant_id())
    .bind(user_id)
    .bind(role_id)
    .bind(permit.user_id())
    .bind(expires_at)
    .execute(tx.conn())
    .await
    .map(|_| ())
}

fn rfc3339(t: Option<OffsetDateTime>) -> Value {
    match t.and_then(|t| t.format(&time::format_description::well_known::Rfc3339).ok()) {
        Some(s) => Value::String(s),
        None => Value::Null,
    }
}

/// A role to give a user, with an optional expiry.
#[derive(Deserialize, Serialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AssignRole {
    /// The role's name (matched case-insensitively after trimming; 422 when
    /// there is none); the caller must hold everything it grants.
    #[schema(pattern = r"^[^\x00]*$", example = "student")]
    pub role: String,
    /// When the assignment ends; in the future. Absent or `null`: never.
    #[serde(default, with = "time::serde::rfc3339::option")]
    pub expires_at: Option<OffsetDateTime>,
}

/// Gives the user a role (or changes the expiry of one they hold). True when the
/// assignment is new. A privileged role waits for approval where the tenant's
/// `role.assign_privileged` policy says so.
pub async fn assign_role(
    state: &AppState,
    permit: &Permit,
    source: &Source,
    mut tx: TenantTx,
    id: Uuid,
    input: AssignRole,
) -> Result<Done<(UserView, bool)>, AppError> {
    let outcome = assign_attempt(state, permit, source, &mut tx, id, input).await;
    super::settle(tx, permit, source, outcome).await
}

pub async fn assign_attempt(
    state: &AppState,
    permit: &Permit,
    source: &Source,
    tx: &mut TenantTx,
    id: Uuid,
    input: AssignRole,
) -> Attempt<Done<(UserView, bool)>> {
    let now = state.clock.now();
    if input.expires_at.is_some_and(|e| e <= now) {
        return Err(AppError::invalid("expiresAt", "must be in the future").into());
    }
    let permit = &super::begin(tx, permit, now).await?;
    let target = manageable(tx, permit, id, now, false).await?;
    let role = grantable_role(tx, permit, &input.role).await?;
    let admins_before = super::administrator_count(tx).await?;
    let before: Option<Option<OffsetDateTime>> =
        sqlx::query_scalar("SELECT expires_at FROM user_roles WHERE user_id = $1 AND role_id = $2")
            .bind(id)
            .bind(role.id)
            .fetch_optional(tx.conn())
            .await?;
    let change = json!({
        "role": role.name,
        "before": before.map(|e| json!({ "expiresAt": rfc3339(e) })),
        "after": { "expiresAt": rfc3339(input.expires_at) },
    });
    if dual::privileged_role(tx, &role.name, role.grants.keys().copied()).await? {
        let summary = format!("Assign the role {} to {}", role.name, target.username);
        let hold = Hold::new(Operation::RoleAssignPrivileged, ROUTE_ASSIGN, summary)
            .params(json!({ "id": id }))
            .body(&input)
            .change(change.clone())
            .target("user", id);
        if let Gate::Held(approval) = super::gate(tx, permit, source, hold, now).await? {
            return Ok(Done::Held(approval));
        }
    }
    assign(tx, permit, id, role.id, input.expires_at).await?;
    // An expiry on the last permanent administrator's assignment is a demotion in waiting.
    super::keep_an_administrator(tx, admins_before, Action::RoleAssign, ("user", id)).await?;
    let entry = Entry::new(Action::RoleAssign, Outcome::Success).target("user", id).details(change);
    audit::record(tx, source, entry).await?;
    let view = user::load_view(tx, id, now).await?.ok_or(AppError::NotFound)?;
    Ok(Done::Now((view, before.is_none())))
}

/// The route of [`assign_role`], as stored with a held request.
pub const ROUTE_ASSIGN: &str = "POST /api/users/{id}/roles";

pub async fn revoke_role(
    state: &AppState,
    permit: &Permit,
    source: &Source,
    mut tx: TenantTx,
    id: Uuid,
    role_name: &str,
) -> Result<(), AppError> {
    let outcome = async {
        let now = state.clock.now();
        let permit = &super::begin(&mut tx, permit, now).await?;
        manageable(&mut tx, permit, id, now, false).await?;
        let role = roles::find_by_name(&mut tx, role_name).await?.ok_or(AppError::NotFound)?;
        if !roles::within_own(permit.subject(), &role.grants) {
            let denial = permit.deny("grant_exceeds_own", "You cannot revoke a role with permissions you do not hold");
            return Err(Refused::Denied(denial.target("user", id)));
        }
        let admins_before = super::administrator_count(&mut tx).await?;
        let removed: Option<Option<OffsetDateTime>> =
            sqlx::query_scalar("DELETE FROM user_roles WHERE user_id = $1 AND role_id = $2 RETURNING expires_at")
                .bind(id)
                .bind(role.id)
                .fetch_optional(tx.conn())
                .await?;
        let Some(expires_at) = removed else { return Err(AppError::NotFound.into()) };
        super::keep_an_administrator(&mut tx, admins_before, Action::RoleRevoke, ("user", id)).await?;
        let entry = Entry::new(Action::RoleRevoke, Outcome::Success).target("user", id).details(json!({
            "role": role.name,
            "before": { "expiresAt": rfc3339(expires_at) },
            "after": null,
        }));
        audit::record(&mut tx, source, entry).await?;
        Ok(())
    }
    .await;
    super::settle(tx, permit, source, outcome).await
}

/// Approval of a pending account (the body may be left out).
#[derive(Deserialize, Default, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(as = ApproveUser)]
pub struct Approve {
    /// The role to give; default: the role the account asked for, else the
    /// one it registered with (422 when there is neither).
    #[serde(default)]
    #[schema(pattern = r"^[^\x00]*$", example = "student")]
    pub role: Option<String>,
}

/// Activates a pending account with `role`, else the role it asked for when that
/// exists, else the role it registered with.
pub async fn approve(
    state: &AppState,
    permit: &Permit,
    source: &Source,
    mut tx: TenantTx,
    id: Uuid,
    input: Approve,
) -> Result<UserView, AppError> {
    let outcome = async {
        let now = state.clock.now();
        let permit = &super::begin(&mut tx, permit, now).await?;
        let before = pending(&mut tx, permit, id, now).await?;
        let requested = match &before.requested_role {
            Some(r) => roles::find_by_name(&mut tx, r).await?.map(|r| r.name),
            None => None,
        };
        let role_name = input.role.clone().or(requested).or_else(|| before.role.clone());
        let Some(role_name) = role_name else {
            return Err(AppError::invalid("role", "name the role to give this account").into());
        };
        let role = grantable_role(&mut tx, permit, &role_name).await?;
        // Like a new account, an approved one is not born with what dual control would hold.
        if dual::privileged_role(&mut tx, &role.name, role.grants.keys().copied()).await?
            && dual::holds(&mut tx, Operation::RoleAssignPrivileged).await?
        {
            return Err(AppError::Conflict(
                "Privileged roles are assigned under dual control: approve the account with another role, then \
                 assign this one"
                    .into(),
            )
            .into());
        }
        sqlx::query("UPDATE users SET status = 'active', requested_role = NULL WHERE id = $1")
            .bind(id)
            .execute(tx.conn())
            .await?;
        let held: Vec<Uuid> = sqlx::query_scalar("SELECT role_id FROM user_roles WHERE user_id = $1")
            .bind(id)
            .fetch_all(tx.conn())
            .await?;
        sqlx::query("DELETE FROM user_roles WHERE user_id = $1 AND role_id <> $2")
            .bind(id)
            .bind(role.id)
            .execute(tx.conn())
            .await?;
        if !held.contains(&role.id) {
            assign(&mut tx, permit, id, role.id, None).await?;
        }
        let entry = Entry::new(Action::UserApprove, Outcome::Success).target("user", id).details(json!({
            "username": before.username,
            "requestedRole": before.requested_role,
            "before": { "status": before.status, "roles": before.roles },
            "after": { "status": "active", "roles": [role.name] },
        }));
        audit::record(&mut tx, source, entry).await?;
        let view = user::load_view(&mut tx, id, now).await?.ok_or(AppError::NotFound)?;
        Ok(view)
    }
    .await;
    super::settle(tx, permit, source, outcome).await
}

/// Deletes a pending account; the audit row keeps what it was.
pub async fn reject(
    state: &AppState,
    permit: &Permit,
    source: &Source,
    mut tx: TenantTx,
    id: Uuid,
) -> Result<(), AppError> {
    let outcome = async {
        let now = state.clock.now();
        let permit = &super::begin(&mut tx, permit, now).await?;
        let before = pending(&mut tx, permit, id, now).await?;
        sqlx::query("DELETE FROM users WHERE id = $1").bind(id).execute(tx.conn()).await?;
        let entry = Entry::new(Action::UserReject, Outcome::Success).target("user", id).details(json!({
            "before": snapshot(&before)
        }));
        audit::record(&mut tx, source, entry).await?;
        Ok(())
    }
    .await;
    super::settle(tx, permit, source, outcome).await
}

async fn pending(tx: &mut TenantTx, permit: &Permit, id: Uuid, now: OffsetDateTime) -> Attempt<UserView> {
    let view = manageable(tx, permit, id, now, false).await?;
    if view.status != "pending" {
        return Err(Refused::App(AppError::Conflict("This account is not waiting for approval".into())));
    }
    Ok(view)
}

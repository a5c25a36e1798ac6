//! Roles and their grants: `/api/roles`, `/api/permissions`.
//!
//! A role's `permissions` is seed 002's nested object built from the
//! `resource.action` names (`{"file": {"upload": true}}`), covering the whole
//! catalogue; `scopes` gives each granted permission's scope in the same shape.
//! On write, a permission's value is `true` (keep the grant's scope, or `tenant`
//! for a new grant), `false` (no grant) or a scope name.
//!
//! Any edit of a role (its name, description, session timeout, MFA, portal or
//! tier as much as its grants) needs the caller to hold every grant the role
//! carries at the same or a wider scope, like granting it would.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use time::OffsetDateTime;
use utoipa::ToSchema;
use uuid::Uuid;

use super::{Attempt, Gate, Hold, Refused, clean_description, clean_name, conflict_on_duplicate, nullable};
use crate::{
    audit::{self, Action, Entry, Outcome, Source},
    authz::{
        Permission, Permit, Scope, Subject,
        dual::{self, Done, Operation},
    },
    db::{
        TenantTx,
        seed::{DEFAULT_ROLE, insert_grant},
    },
    http::{AppState, error::AppError},
};

/// A role as the API shows it.
#[derive(Debug, Clone, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct RoleView {
    pub id: Uuid,
    pub name: String,
    pub description: String,
    /// Every permission of the catalogue by resource and action
    /// (`{"file": {"upload": true, ...}, ...}`): whether the role grants it.
    pub permissions: BTreeMap<String, BTreeMap<String, bool>>,
    /// The scope of each granted permission, in the same shape.
    pub scopes: BTreeMap<String, BTreeMap<String, Scope>>,
    /// Users holding the role now (expired assignments do not count).
    pub user_count: i64,
    /// Sessions of holders end after this many idle minutes; `null`: the server's default.
    #[schema(required = true)]
    pub session_timeout_minutes: Option<i32>,
    pub requires_mfa: bool,
    /// The kind of second factor required; `null`: any (when `requiresMfa`).
    #[schema(value_type = Option<super::role_schema::MfaType>, required = true)]
    pub mfa_type: Option<String>,
    #[schema(required = true)]
    pub portal: Option<String>,
    #[schema(required = true)]
    pub tier: Option<i32>,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    pub updated_at: OffsetDateTime,
}

#[derive(sqlx::FromRow)]
struct RoleRow {
    id: Uuid,
    name: String,
    description: String,
    session_timeout_minutes: Option<i32>,
    requires_mfa: bool,
    mfa_type: Option<String>,
    portal: Option<String>,
    tier: Option<i32>,
    created_at: OffsetDateTime,
    updated_at: OffsetDateTime,
    user_count: i64,
}

/// `$1` is now: only current assignments count as users of a role.
const ROLE_SELECT: &str = "SELECT r.id, r.name, r.description, r.session_timeout_minutes, r.requires_mfa, r.mfa_type, \
        r.portal, r.tier, r.created_at, r.updated_at, \
        (SELECT count(*) FROM user_roles ur WHERE ur.role_id = r.id \
           AND (ur.expires_at IS NULL OR ur.expires_at > $1)) AS user_count \
     FROM roles r WHERE ($2::uuid IS NULL OR r.id = $2) ORDER BY lower(r.name)";

/// A role's grants.
pub type Grants = BTreeMap<Permission, Scope>;

pub async fn grants_of(tx: &mut TenantTx, role_id: Uuid) -> Result<Grants, sqlx::Error> {
    let rows: Vec<(String, String)> = sqlx::query_as(
        "SELECT p.name, rp.scope FROM role_permissions rp JOIN permissions p ON p.id = rp.permission_id \
         WHERE rp.role_id = $1",
    )
    .bind(role_id)
    .fetch_all(tx.conn())
    .await?;
    Ok(rows.into_iter().filter_map(|(p, s)| Some((Permission::parse(&p)?, Scope::parse(&s)?))).collect())
}

/// A role found by name (case-insensitively), with its grants.
pub struct NamedRole {
    pub id: Uuid,
    pub name: String,
    pub grants: Grants,
}

pub async fn find_by_name(tx: &mut TenantTx, name: &str) -> Result<Option<NamedRole>, sqlx::Error> {
    let row: Option<(Uuid, String)> = sqlx::query_as("SELECT id, name FROM roles WHERE lower(name) = lower($1)")
        .bind(name)
        .fetch_optional(tx.conn())
        .await?;
    let Some((id, name)) = row else { return Ok(None) };
    let grants = grants_of(tx, id).await?;
    Ok(Some(NamedRole { id, name, grants }))
}

/// Whether `subject` may hand on (or take away) every grant in `grants`.
pub fn within_own(subject: &Subject, grants: &Grants) -> bool {
    grants.iter().all(|(p, s)| subject.may_delegate(*p, *s))
}

fn nest<T: Clone>(entries: impl Iterator<Item = (Permission, T)>) -> BTreeMap<String, BTreeMap<String, T>> {
    let mut out: BTreeMap<String, BTreeMap<String, T>> = BTreeMap::new();
    for (p, v) in entries {
        let (resource, action) = p.as_str().split_once('.').unwrap_or((p.as_str(), ""));
        out.entry(resource.to_string()).or_default().insert(action.to_string(), v);
    }
    out
}

async fn views(tx: &mut TenantTx, now: OffsetDateTime, id: Option<Uuid>) -> Result<Vec<RoleView>, sqlx::Error> {
    let rows: Vec<RoleRow> = sqlx::query_as(ROLE_SELECT).bind(now).bind(id).fetch_all(tx.conn()).await?;
    let mut out = Vec::with_capacity(rows.len());
    for row in rows {
        let grants = grants_of(tx, row.id).await?;
        out.push(RoleView {
            id: row.id,
            name: row.name,
            description: row.description,
            permissions: nest(Permission::ALL.iter().map(|p| (*p, grants.contains_key(p)))),
            scopes: nest(grants.iter().map(|(p, s)| (*p, *s))),
            user_count: row.user_count,
            session_timeout_minutes: row.session_timeout_minutes,
            requires_mfa: row.requires_mfa,
            mfa_type: row.mfa_type,
            portal: row.portal,
            tier: row.tier,
            created_at: row.created_at,
            updated_at: row.updated_at,
        });
    }
    Ok(out)
}

pub async fn list(state: &AppState, tx: &mut TenantTx) -> Result<Vec<RoleView>, AppError> {
    Ok(views(tx, state.clock.now(), None).await?)
}

pub async fn get(state: &AppState, tx: &mut TenantTx, id: Uuid) -> Result<RoleView, AppError> {
    views(tx, state.clock.now(), Some(id)).await?.pop().ok_or(AppError::NotFound)
}

/// A permission's value in a written `permissions` object.
#[derive(Debug, Clone, Copy, Deserialize, Serialize)]
#[serde(untagged)]
pub enum GrantValue {
    Flag(bool),
    Scope(Scope),
}

pub type PermissionsInput = BTreeMap<String, BTreeMap<String, GrantValue>>;

/// The grants a written `permissions` object asks for, given the current ones.
pub fn parse_grants(input: &PermissionsInput, current: &Grants) -> Result<Grants, AppError> {
    let mut out = Grants::new();
    for (resource, actions) in input {
        for (action, value) in actions {
            let name = format!("{resource}.{action}");
            let permission = Permission::parse(&name)
                .ok_or_else(|| AppError::invalid("permissions", format!("unknown permission {name:?}")))?;
            match value {
                GrantValue::Flag(false) => {}
                GrantValue::Flag(true) => {
                    out.insert(permission, current.get(&permission).copied().unwrap_or(Scope::Tenant));
                }
                GrantValue::Scope(scope) => {
                    out.insert(permission, *scope);
                }
            }
        }
    }
    Ok(out)
}

fn clean_timeout(minutes: Option<i32>) -> Result<Option<i32>, AppError> {
    match minutes {
        Some(m) if !(1..=1440).contains(&m) => {
            Err(AppError::invalid("sessionTimeoutMinutes", "must be between 1 and 1440 minutes"))
        }
        m => Ok(m),
    }
}

fn clean_mfa_type(kind: Option<&str>) -> Result<Option<String>, AppError> {
    match kind {
        None => Ok(None),
        Some(k @ ("totp" | "fido2" | "any")) => Ok(Some(k.to_string())),
        Some(_) => Err(AppError::invalid("mfaType", "must be totp, fido2 or any")),
    }
}

fn clean_tier(tier: Option<i32>) -> Result<Option<i32>, AppError> {
    match tier {
        Some(t) if !(1..=9).contains(&t) => Err(AppError::invalid("tier", "must be between 1 and 9")),
        t => Ok(t),
    }
}

/// A new role. The caller must hold every permission it grants, at the same or
/// a wider scope (403 otherwise).
#[derive(Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CreateRole {
    /// 1 to 64 characters after trimming, without control characters.
    #[schema(max_length = 64, pattern = "@text")]
    pub name: String,
    /// At most 1000 characters after trimming.
    #[serde(default)]
    #[schema(max_length = 1000, pattern = r"^[^\x00]*$")]
    pub description: Option<String>,
    /// Default: no permissions.
    #[serde(default)]
    #[schema(schema_with = super::role_schema::permissions_schema)]
    pub permissions: PermissionsInput,
    /// Idle minutes before a holder's session ends, 1 to 1440.
    #[serde(default)]
    #[schema(minimum = 1, maximum = 1440)]
    pub session_timeout_minutes: Option<i32>,
    /// Holders must enrol a second factor. Default `false`.
    #[serde(default)]
    pub requires_mfa: bool,
    #[serde(default)]
    #[schema(value_type = Option<super::role_schema::MfaType>)]
    pub mfa_type: Option<String>,
    /// 1 to 64 characters after trimming, without control characters.
    #[serde(default)]
    #[schema(max_length = 64, pattern = "@text")]
    pub portal: Option<String>,
    /// 1 to 9.
    #[serde(default)]
    #[schema(minimum = 1, maximum = 9)]
    pub tier: Option<i32>,
}

pub async fn create(
    state: &AppState,
    permit: &Permit,
    source: &Source,
    mut tx: TenantTx,
    input: CreateRole,
) -> Result<RoleView, AppError> {
    let outcome = create_attempt(state, permit, source, &mut tx, input).await;
    super::settle(tx, permit, source, outcome).await
}

async fn create_attempt(
    state: &AppState,
    permit: &Permit,
    source: &Source,
    tx: &mut TenantTx,
    input: CreateRole,
) -> Attempt<RoleView> {
    let name = clean_name("name", &input.name, 64)?;
    let description = clean_description(input.description.as_deref().unwrap_or(""))?;
    let timeout = clean_timeout(input.session_timeout_minutes)?;
    let mfa_type = clean_mfa_type(input.mfa_type.as_deref())?;
    let tier = clean_tier(input.tier)?;
    let portal = input.portal.as_deref().map(|p| clean_name("portal", p, 64)).transpose()?;
    let grants = parse_grants(&input.permissions, &Grants::new())?;
    let permit = &super::begin(tx, permit, state.clock.now()).await?;
    if !within_own(permit.subject(), &grants) {
        return Err(permit.deny("grant_exceeds_own", "You cannot grant permissions you do not hold").into());
    }

    let inserted = sqlx::query_scalar(
        "INSERT INTO roles (tenant_id, name, description, session_timeout_minutes, requires_mfa, mfa_type, portal, tier) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8) RETURNING id",
    )
    .bind(permit.tenant_id())
    .bind(&name)
    .bind(&description)
    .bind(timeout)
    .bind(input.requires_mfa)
    .bind(&mfa_type)
    .bind(&portal)
    .bind(tier)
    .fetch_one(tx.conn())
    .await;
    let id: Uuid = conflict_on_duplicate(inserted, "A role with that name already exists")?;
    for (permission, scope) in &grants {
        insert_grant(tx, id, *permission, *scope).await?;
    }
    let entry = Entry::new(Action::RoleCreate, Outcome::Success).target("role", id).details(json!({
        "after": {
            "name": name,
            "description": description,
            "permissions": grant_list(&grants),
            "sessionTimeoutMinutes": timeout,
            "requiresMfa": input.requires_mfa,
            "mfaType": mfa_type,
            "portal": portal,
            "tier": tier,
        }
    }));
    audit::record(tx, source, entry).await?;
    let view = views(tx, state.clock.now(), Some(id)).await?.pop().ok_or(AppError::NotFound)?;
    Ok(view)
}

fn grant_list(grants: &Grants) -> Value {
    grants.iter().map(|(p, s)| json!({ "permission": p.as_str(), "scope": s.as_str() })).collect()
}

/// Changes to a role. `name`, `description`, `permissions` and `requiresMfa`
/// absent or `null` are left as they are; `sessionTimeoutMinutes`, `mfaType`,
/// `portal` and `tier` absent are left, `null` clears them. The caller must
/// hold everything the role grants (before and after) to change anything.
#[derive(Deserialize, Serialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct UpdateRole {
    /// As in `CreateRole`; the default role of registrations keeps its name (409).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(max_length = 64, pattern = "@text")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(max_length = 1000, pattern = r"^[^\x00]*$")]
    pub description: Option<String>,
    /// When present, the role's whole permission set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(schema_with = super::role_schema::permissions_or_null_schema)]
    pub permissions: Option<PermissionsInput>,
    #[serde(default, deserialize_with = "nullable", skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<i32>, minimum = 1, maximum = 1440)]
    pub session_timeout_minutes: Option<Option<i32>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub requires_mfa: Option<bool>,
    #[serde(default, deserialize_with = "nullable", skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<super::role_schema::MfaType>)]
    pub mfa_type: Option<Option<String>>,
    #[serde(default, deserialize_with = "nullable", skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<String>, max_length = 64, pattern = "@text")]
    pub portal: Option<Option<String>>,
    #[serde(default, deserialize_with = "nullable", skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<i32>, minimum = 1, maximum = 9)]
    pub tier: Option<Option<i32>>,
}

pub async fn update(
    state: &AppState,
    permit: &Permit,
    source: &Source,
    mut tx: TenantTx,
    id: Uuid,
    input: UpdateRole,
) -> Result<Done<RoleView>, AppError> {
    let outcome = update_attempt(state, permit, source, &mut tx, id, input).await;
    super::settle(tx, permit, source, outcome).await
}

/// The route of [`update`], as stored with a held request.
pub const ROUTE_UPDATE: &str = "PUT /api/roles/{id}";

pub async fn update_attempt(
    state: &AppState,
    permit: &Permit,
    source: &Source,
    tx: &mut TenantTx,
    id: Uuid,
    input: UpdateRole,
) -> Attempt<Done<RoleView>> {
    let now = state.clock.now();
    let permit = &super::begin(tx, permit, now).await?;
    let before_view = views(tx, now, Some(id)).await?.pop().ok_or(AppError::NotFound)?;
    let admins_before = super::administrator_count(tx).await?;
    if let Some(wanted) = &input.permissions {
        let current = grants_of(tx, id).await?;
        let wanted = parse_grants(wanted, &current)?;
        let widened: Vec<Value> = dual::PRIVILEGED
            .iter()
            .filter_map(|p| {
                let after = wanted.get(p)?;
                let before = current.get(p);
                (before < Some(after)).then(|| json!({ "permission": p.as_str(), "before": before, "after": after }))
            })
            .collect();
        if !widened.is_empty() {
            let summary = format!("Widen the role {}", before_view.name);
            let hold = Hold::new(Operation::RoleWiden, ROUTE_UPDATE, summary)
                .params(json!({ "id": id }))
                .body(&input)
                .change(json!({ "role": before_view.name, "widened": widened }))
                .target("role", id);
            if let Gate::Held(approval) = super::gate(tx, permit, source, hold, now).await? {
                return Ok(Done::Held(approval));
            }
        }
    }
    let mut changes = serde_json::Map::new();
    let mut change = |field: &str, before: Value, after: Value| {
        if before != after {
            changes.insert(field.to_string(), json!({ "before": before, "after": after }));
        }
    };

    let name = match &input.name {
        Some(n) => {
            let n = clean_name("name", n, 64)?;
            if before_view.name.eq_ignore_ascii_case(DEFAULT_ROLE) && !n.eq_ignore_ascii_case(DEFAULT_ROLE) {
                return Err(AppError::Conflict(format!(
                    "The role {DEFAULT_ROLE:?} is given to new registrations and cannot be renamed"
                ))
                .into());
            }
            // A policy names its approvers by role name: renaming one of those
            // roles, or another role to one of those names, would move who may
            // approve without dual control.
            if !n.eq_ignore_ascii_case(&before_view.name)
                && (dual::approver_role(tx, &before_view.name).await? || dual::approver_role(tx, &n).await?)
            {
                return Err(AppError::Conflict(
                    "A dual-control policy names this role (or that name) among its approvers: change the policy \
                     first"
                        .into(),
                )
                .into());
            }
            n
        }
        None => before_view.name.clone(),
    };
    change("name", json!(before_view.name), json!(name));
    let description = match &input.description {
        Some(d) => clean_description(d)?,
        None => before_view.description.clone(),
    };
    change("description", json!(before_view.description), json!(description));
    let timeout = match input.session_timeout_minutes {
        Some(t) => clean_timeout(t)?,
        None => before_view.session_timeout_minutes,
    };
    change("sessionTimeoutMinutes", json!(before_view.session_timeout_minutes), json!(timeout));
    let requires_mfa = input.requires_mfa.unwrap_or(before_view.requires_mfa);
    change("requiresMfa", json!(before_view.requires_mfa), json!(requires_mfa));
    let mfa_type = match &input.mfa_type {
        Some(k) => clean_mfa_type(k.as_deref())?,
        None => before_view.mfa_type.clone(),
    };
    change("mfaType", json!(before_view.mfa_type), json!(mfa_type));
    let portal = match &input.portal {
        Some(p) => p.as_deref().map(|p| clean_name("portal", p, 64)).transpose()?,
        None => before_view.portal.clone(),
    };
    change("portal", json!(before_view.portal), json!(portal));
    let tier = match input.tier {
        Some(t) => clean_tier(t)?,
        None => before_view.tier,
    };
    change("tier", json!(before_view.tier), json!(tier));

    if !changes.is_empty() {
        // Renaming a role, or changing its timeout or MFA policy, changes what its
        // holders live with: only someone who could grant all of it may.
        if !within_own(permit.subject(), &grants_of(tx, id).await?) {
            let denial = permit.deny("grant_exceeds_own", "You cannot edit a role with permissions you do not hold");
            return Err(Refused::Denied(denial.target("role", id)));
        }
        let updated = sqlx::query(
            "UPDATE roles SET name = $2, description = $3, session_timeout_minutes = $4, requires_mfa = $5, \
             mfa_type = $6, portal = $7, tier = $8 WHERE id = $1",
        )
        .bind(id)
        .bind(&name)
        .bind(&description)
        .bind(timeout)
        .bind(requires_mfa)
        .bind(&mfa_type)
        .bind(&portal)
        .bind(tier)
        .execute(tx.conn())
        .await;
        conflict_on_duplicate(updated, "A role with that name already exists")?;
        let entry = Entry::new(Action::RoleUpdate, Outcome::Success)
            .target("role", id)
            .details(json!({ "role": name, "changes": changes }));
        audit::record(tx, source, entry).await?;
    }

    if let Some(input) = &input.permissions {
        let current = grants_of(tx, id).await?;
        let wanted = parse_grants(input, &current)?;
        change_grants(tx, permit, source, id, &name, &current, &wanted).await?;
        super::keep_an_administrator(tx, admins_before, Action::RolePermissionRevoke, ("role", id)).await?;
    }

    let view = views(tx, now, Some(id)).await?.pop().ok_or(AppError::NotFound)?;
    Ok(Done::Now(view))
}

/// Moves a role from `current` to `wanted` grants, one audit row per change.
async fn change_grants(
    tx: &mut TenantTx,
    permit: &Permit,
    source: &Source,
    role: Uuid,
    role_name: &str,
    current: &Grants,
    wanted: &Grants,
) -> Attempt<()> {
    let subject = permit.subject();
    for permission in Permission::ALL {
        let (before, after) = (current.get(permission).copied(), wanted.get(permission).copied());
        if before == after {
            continue;
        }
        let allowed = before.is_none_or(|s| subject.may_delegate(*permission, s))
            && after.is_none_or(|s| subject.may_delegate(*permission, s));
        if !allowed {
            let denial = permit.deny("grant_exceeds_own", "You cannot grant or revoke permissions you do not hold");
            return Err(Refused::Denied(denial.target("role", role)));
        }
        let entry = match after {
            Some(scope) => {
                insert_grant(tx, role, *permission, scope).await?;
                Entry::new(Action::RolePermissionGrant, Outcome::Success).details(json!({
                    "role": role_name,
                    "permission": permission.as_str(),
                    "before": before.map(|s| json!({ "scope": s })),
                    "after": { "scope": scope },
                }))
            }
            None => {
                sqlx::query(
                    "DELETE FROM role_permissions rp USING permissions p \
                     WHERE rp.role_id = $1 AND rp.permission_id = p.id AND p.name = $2",
                )
                .bind(role)
                .bind(permission.as_str())
                .execute(tx.conn())
                .await?;
                Entry::new(Action::RolePermissionRevoke, Outcome::Success).details(json!({
                    "role": role_name,
                    "permission": permission.as_str(),
                    "before": before.map(|s| json!({ "scope": s })),
                    "after": null,
                }))
            }
        };
        audit::record(tx, source, entry.target("role", role)).await?;
    }
    Ok(())
}

pub async fn delete(
    state: &AppState,
    permit: &Permit,
    source: &Source,
    mut tx: TenantTx,
    id: Uuid,
) -> Result<(), AppError> {
    let outcome = delete_attempt(state, permit, source, &mut tx, id).await;
    super::settle(tx, permit, source, outcome).await
}

async fn delete_attempt(
    state: &AppState,
    permit: &Permit,
    source: &Source,
    tx: &mut TenantTx,
    id: Uuid,
) -> Attempt<()> {
    let now = state.clock.now();
    let permit = &super::begin(tx, permit, now).await?;
    let role = views(tx, now, Some(id)).await?.pop().ok_or(AppError::NotFound)?;
    if role.name.eq_ignore_ascii_case(DEFAULT_ROLE) {
        return Err(AppError::Conflict(format!(
            "The role {DEFAULT_ROLE:?} is given to new registrations and cannot be deleted"
        ))
        .into());
    }
    if role.user_count > 0 {
        return Err(AppError::Conflict(format!("This role is still assigned to {} user(s)", role.user_count)).into());
    }
    let grants = grants_of(tx, id).await?;
    if !within_own(permit.subject(), &grants) {
        let denial = permit.deny("grant_exceeds_own", "You cannot delete a role with permissions you do not hold");
        return Err(Refused::Denied(denial.target("role", id)));
    }
    sqlx::query("DELETE FROM roles WHERE id = $1").bind(id).execute(tx.conn()).await?;
    let entry = Entry::new(Action::RoleDelete, Outcome::Success).target("role", id).details(json!({
        "before": {
            "name": role.name,
            "description": role.description,
            "permissions": grant_list(&grants),
            "sessionTimeoutMinutes": role.session_timeout_minutes,
            "requiresMfa": role.requires_mfa,
        }
    }));
    audit::record(tx, source, entry).await?;
    Ok(())
}

/// One entry of `GET /api/permissions`.
#[derive(Debug, Serialize, sqlx::FromRow, ToSchema)]
pub struct PermissionView {
    pub name: String,
    pub resource: String,
    pub action: String,
    pub description: String,
}

pub async fn catalogue(tx: &mut TenantTx) -> Result<Vec<PermissionView>, AppError> {
    let list = sqlx::query_as(
        "SELECT name, split_part(name, '.', 1) AS resource, split_part(name, '.', 2) AS action, description \
         FROM permissions ORDER BY name",
    )
    .fetch_all(tx.conn())
    .await?;
    Ok(list)
}

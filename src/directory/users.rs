//! User accounts: `/api/users` (seed 002). Role assignment and approval of
//! self-registered accounts are in `membership`.

use secrecy::SecretString;
use serde::{Deserialize, Serialize};
use serde_json::{Map, json};
use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;

use super::{
    Attempt, Gate, Hold,
    targets::{grantable_role, in_scope, manageable, self_change, snapshot},
};
use crate::{
    audit::{self, Action, Entry, Outcome, Source},
    auth::{
        account::{validate_email, validate_username},
        password::check_policy,
        user::{self, CreateUserError, ListFilter, NewUser, UserView},
    },
    authz::{
        Permit, Scope,
        dual::{self, Done, Operation},
    },
    db::TenantTx,
    http::{AppState, error::AppError},
};

const STATUSES: &[&str] = &["active", "inactive", "suspended", "pending"];

fn clean_status(status: &str) -> Result<&'static str, AppError> {
    STATUSES
        .iter()
        .copied()
        .find(|s| *s == status)
        .ok_or_else(|| AppError::invalid("status", "must be active, inactive, suspended or pending"))
}

/// An account's status (the values `clean_status` accepts), for the OpenAPI
/// description.
#[derive(ToSchema)]
#[schema(rename_all = "lowercase", description = "An account's status.")]
pub enum UserStatus {
    Active,
    Inactive,
    Suspended,
    Pending,
}

#[derive(Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct ListQuery {
    /// Only accounts with this status.
    #[serde(default)]
    #[param(value_type = Option<UserStatus>)]
    pub status: Option<String>,
    /// The `nextCursor` of the previous page.
    #[serde(default)]
    #[param(pattern = r"^[^\x00]*$")]
    pub after: Option<String>,
    /// Accounts per page (default 100).
    #[serde(default)]
    #[param(minimum = 1, maximum = 500)]
    pub limit: Option<i64>,
}

/// A page of users within the caller's `users.view` scope, and the cursor of the
/// next page when there is one.
pub async fn list(
    state: &AppState,
    permit: &Permit,
    tx: &mut TenantTx,
    query: ListQuery,
) -> Result<(Vec<UserView>, Option<String>), AppError> {
    let status = query.status.as_deref().map(clean_status).transpose()?;
    let limit = query.limit.unwrap_or(100);
    if !(1..=500).contains(&limit) {
        return Err(AppError::invalid("limit", "must be between 1 and 500"));
    }
    let subject = permit.subject();
    let filter = ListFilter {
        status,
        after: query.after.as_deref(),
        department: (permit.scope() == Scope::Department).then_some((subject.department_id, subject.user_id)),
        only: (permit.scope() == Scope::Own).then_some(subject.user_id),
        limit: limit + 1,
    };
    let mut users = user::list_views(tx, state.clock.now(), &filter).await?;
    let next = if users.len() as i64 > limit {
        users.truncate(limit as usize);
        users.last().map(|u| u.username.to_lowercase())
    } else {
        None
    };
    Ok((users, next))
}

pub async fn get(
    state: &AppState,
    permit: &Permit,
    source: &Source,
    mut tx: TenantTx,
    id: Uuid,
) -> Result<UserView, AppError> {
    let outcome = async {
        let view = in_scope(&mut tx, permit, id, state.clock.now()).await?;
        Ok(view)
    }
    .await;
    super::settle(tx, permit, source, outcome).await
}

/// The user `id`, if it exists (404) and the permit's scope covers it (403).
/// A department by name (422 when unknown) that the permit may place users in.
async fn placeable_department(tx: &mut TenantTx, permit: &Permit, name: &str) -> Attempt<(Uuid, String)> {
    let found: Option<(Uuid, String)> =
        sqlx::query_as("SELECT id, name FROM departments WHERE lower(name) = lower($1)")
            .bind(name.trim())
            .fetch_optional(tx.conn())
            .await?;
    let (id, name) =
        found.ok_or_else(|| AppError::invalid("department", format!("no department named {:?}", name.trim())))?;
    if !permit.covers_department(id) {
        return Err(permit.deny("outside_scope", "You cannot place users in that department").into());
    }
    Ok((id, name))
}

/// A clearance level by name (422 when unknown) no higher than the caller's own.
async fn grantable_clearance(tx: &mut TenantTx, permit: &Permit, name: &str) -> Attempt<(Uuid, String, i32)> {
    let found: Option<(Uuid, String, i32)> =
        sqlx::query_as("SELECT id, name, level FROM clearance_levels WHERE lower(name) = lower($1)")
            .bind(name.trim())
            .fetch_optional(tx.conn())
            .await?;
    let level = found
        .ok_or_else(|| AppError::invalid("clearanceLevel", format!("no clearance level named {:?}", name.trim())))?;
    if level.2 > permit.subject().clearance_rank {
        return Err(permit.deny("clearance_above_own", "You cannot grant a clearance above your own").into());
    }
    Ok(level)
}

/// A new account. Names of the role, department and clearance level are
/// matched case-insensitively after trimming (422 when there is none).
#[derive(Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CreateUser {
    /// 3 to 64 letters, digits, `.`, `_` or `-`, starting with a letter or a
    /// digit (surrounding whitespace is trimmed).
    #[schema(pattern = "@username")]
    pub username: String,
    /// An address with one `@`, no whitespace or control characters, at most
    /// 254 bytes (surrounding whitespace is trimmed).
    #[schema(max_length = 254, pattern = "@email")]
    pub email: String,
    /// At least 8 characters and at most 1024 bytes, neither the username nor
    /// the email, and not common or easy to guess (422 otherwise).
    #[schema(value_type = String, format = Password, min_length = 8, max_length = 1024, pattern = r"^[^\x00]*$")]
    pub password: SecretString,
    /// The role's name; the caller must hold everything it grants.
    #[schema(pattern = r"^[^\x00]*$", example = "student")]
    pub role: String,
    /// The department's name, within the caller's scope.
    #[schema(pattern = r"^[^\x00]*$", example = "General")]
    pub department: String,
    /// The clearance level's name, no higher than the caller's own.
    #[schema(pattern = r"^[^\x00]*$", example = "public")]
    pub clearance_level: String,
    /// Default `active`.
    #[serde(default)]
    #[schema(value_type = Option<UserStatus>)]
    pub status: Option<String>,
}

pub async fn create(
    state: &AppState,
    permit: &Permit,
    source: &Source,
    mut tx: TenantTx,
    input: CreateUser,
) -> Result<UserView, AppError> {
    let outcome = create_attempt(state, permit, source, &mut tx, input).await;
    super::settle(tx, permit, source, outcome).await
}

async fn create_attempt(
    state: &AppState,
    permit: &Permit,
    source: &Source,
    tx: &mut TenantTx,
    input: CreateUser,
) -> Attempt<UserView> {
    let username = input.username.trim();
    let email = input.email.trim();
    validate_username(username)?;
    validate_email(email)?;
    check_policy(&input.password, username, email).map_err(|v| AppError::invalid("password", v.0))?;
    let status = clean_status(input.status.as_deref().unwrap_or("active"))?;

    let hash = state.passwords.hash(&input.password).await?;

    let now = state.clock.now();
    let permit = &super::begin(tx, permit, now).await?;
    let role = grantable_role(tx, permit, &input.role).await?;
    let (_, department) = placeable_department(tx, permit, &input.department).await?;
    let (_, clearance, rank) = grantable_clearance(tx, permit, &input.clearance_level).await?;
    // An account is not born with what dual control would hold for an existing one.
    if dual::privileged_role(tx, &role.name, role.grants.keys().copied()).await?
        && dual::holds(tx, Operation::RoleAssignPrivileged).await?
    {
        return Err(AppError::Conflict(
            "Privileged roles are assigned under dual control: create the account with another role, then \
             assign this one"
                .into(),
        )
        .into());
    }
    if rank >= highest_clearance(tx).await? && dual::holds(tx, Operation::UserClearanceRaise).await? {
        return Err(AppError::Conflict(
            "The highest clearance is given under dual control: create the account with a lower one, then raise it"
                .into(),
        )
        .into());
    }
    let new = NewUser {
        username,
        email,
        password_hash: &hash,
        status,
        requested_role: None,
        role: &role.name,
        department: &department,
        clearance_level: &clearance,
    };
    let id = match user::create(tx, &new).await {
        Ok(id) => id,
        Err(CreateUserError::Duplicate) => {
            return Err(AppError::Conflict("That username or email is already taken".into()).into());
        }
        Err(CreateUserError::MissingReference(kind, name)) => {
            return Err(AppError::invalid("body", format!("no {kind} named {name:?}")).into());
        }
        Err(CreateUserError::Db(e)) => return Err(e.into()),
    };
    let entry = Entry::new(Action::UserCreate, Outcome::Success).target("user", id).details(json!({
        "after": {
            "username": username,
            "email": email,
            "roles": [role.name],
            "department": department,
            "clearanceLevel": clearance,
            "status": status,
        }
    }));
    audit::record(tx, source, entry).await?;
    let view = user::load_view(tx, id, now).await?.ok_or(AppError::NotFound)?;
    Ok(view)
}

/// Changes to an account: each field absent or `null` is left as it is. Nobody
/// changes their own password, role, department or clearance level here (403).
#[derive(Deserialize, Serialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct UpdateUser {
    /// As in `CreateUser`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(pattern = "@username")]
    pub username: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(max_length = 254, pattern = "@email")]
    pub email: Option<String>,
    /// A new password (as in `CreateUser`): ends every session of the user.
    #[serde(default, skip_serializing)]
    #[schema(value_type = Option<String>, format = Password, min_length = 8, max_length = 1024, pattern = r"^[^\x00]*$")]
    pub password: Option<SecretString>,
    /// Replaces every role the user holds with this one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(pattern = r"^[^\x00]*$", example = "student")]
    pub role: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(pattern = r"^[^\x00]*$", example = "General")]
    pub department: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(pattern = r"^[^\x00]*$", example = "public")]
    pub clearance_level: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<UserStatus>)]
    pub status: Option<String>,
}

impl UpdateUser {
    /// Whether the body touches what nobody may change about themselves.
    fn touches_access(&self) -> bool {
        self.password.is_some() || self.role.is_some() || self.department.is_some() || self.clearance_level.is_some()
    }
}

pub async fn update(
    state: &AppState,
    permit: &Permit,
    source: &Source,
    mut tx: TenantTx,
    id: Uuid,
    input: UpdateUser,
) -> Result<Done<UserView>, AppError> {
    let outcome = update_attempt(state, permit, source, &mut tx, id, input).await;
    super::settle(tx, permit, source, outcome).await
}

/// The route of [`update`], as stored with a held request.
pub const ROUTE_UPDATE: &str = "PUT /api/users/{id}";

pub async fn update_attempt(
    state: &AppState,
    permit: &Permit,
    source: &Source,
    tx: &mut TenantTx,
    id: Uuid,
    input: UpdateUser,
) -> Attempt<Done<UserView>> {
    let now = state.clock.now();
    // A new password is hashed before the administration lock is taken, so the
    // tenant's other changes of authority never wait on Argon2.
    let password_hash = match &input.password {
        Some(pw) => {
            let current: Option<(String, String)> = sqlx::query_as("SELECT username, email FROM users WHERE id = $1")
                .bind(id)
                .fetch_optional(tx.conn())
                .await?;
            let (username, email) = current.ok_or(AppError::NotFound)?;
            let username = input.username.as_deref().map(str::trim).unwrap_or(&username);
            let email = input.email.as_deref().map(str::trim).unwrap_or(&email);
            check_policy(pw, username, email).map_err(|v| AppError::invalid("password", v.0))?;
            Some(state.passwords.hash(pw).await?)
        }
        None => None,
    };
    let permit = &super::begin(tx, permit, now).await?;
    if id == permit.user_id() && input.touches_access() {
        return Err(self_change(permit, id));
    }
    let before = manageable(tx, permit, id, now, true).await?;
    let admins_before = super::administrator_count(tx).await?;
    let mut changes = Map::new();
    let mut change = |field: &str, before: &str, after: &str| {
        if before != after {
            changes.insert(field.into(), json!({ "before": before, "after": after }));
        }
    };

    let username = match &input.username {
        Some(u) => {
            validate_username(u.trim())?;
            u.trim().to_string()
        }
        None => before.username.clone(),
    };
    change("username", &before.username, &username);
    let email = match &input.email {
        Some(e) => {
            validate_email(e.trim())?;
            e.trim().to_string()
        }
        None => before.email.clone(),
    };
    change("email", &before.email, &email);
    let department = match &input.department {
        Some(name) => placeable_department(tx, permit, name).await?,
        None => (before.department_id, before.department.clone()),
    };
    change("department", &before.department, &department.1);
    let clearance = match &input.clearance_level {
        Some(name) => Some(grantable_clearance(tx, permit, name).await?),
        None => None,
    };
    if let Some((_, name, _)) = &clearance {
        change("clearanceLevel", &before.clearance_level, name);
    }
    let status = match &input.status {
        Some(s) => clean_status(s)?,
        None => clean_status(&before.status)?,
    };
    let suspending = status == "suspended" && before.status != "suspended";
    if !suspending {
        change("status", &before.status, status);
    }
    let new_role = match &input.role {
        Some(name) => Some(grantable_role(tx, permit, name).await?),
        None => None,
    };
    // What dual control holds: a privileged role, or the highest clearance.
    let mut held = Vec::new();
    if let Some(role) = &new_role
        && dual::privileged_role(tx, &role.name, role.grants.keys().copied()).await?
    {
        held.push(Operation::RoleAssignPrivileged);
    }
    if let Some((_, _, rank)) = &clearance
        && *rank > before.clearance_rank
        && *rank >= highest_clearance(tx).await?
    {
        held.push(Operation::UserClearanceRaise);
    }
    if let Some((&first, rest)) = held.split_first() {
        let mut parts = Vec::new();
        if let Some(role) = &new_role {
            parts.push(format!("make {} their only role (now {})", role.name, before.roles.join(", ")));
        }
        if let Some((_, name, _)) = &clearance {
            parts.push(format!("clearance {} (now {})", name, before.clearance_level));
        }
        let summary = format!("Change the account {}: {}", before.username, parts.join("; "));
        let mut hold = Hold::new(first, ROUTE_UPDATE, summary)
            .params(json!({ "id": id }))
            .body(&input)
            .change(json!({ "username": username, "changes": changes.clone(), "role": input.role }))
            .target("user", id);
        for op in rest {
            hold = hold.also(*op);
        }
        if input.password.is_some() {
            for op in &held {
                if dual::holds(tx, *op).await? {
                    let message = "this change waits for approval, and a password never does: set it on its own";
                    return Err(AppError::invalid("password", message).into());
                }
            }
        }
        if let Gate::Held(approval) = super::gate(tx, permit, source, hold, now).await? {
            return Ok(Done::Held(approval));
        }
    }
    let updated = sqlx::query(
        "UPDATE users SET username = $2, email = $3, department_id = $4, \
             clearance_level_id = COALESCE($5, clearance_level_id), status = $6, \
             password_hash = COALESCE($7, password_hash) \
         WHERE id = $1",
    )
    .bind(id)
    .bind(&username)
    .bind(&email)
    .bind(department.0)
    .bind(clearance.as_ref().map(|c| c.0))
    .bind(status)
    .bind(password_hash.as_deref())
    .execute(tx.conn())
    .await;
    super::conflict_on_duplicate(updated, "That username or email is already taken")?;
    if password_hash.is_some() {
        // A reset password ends every session opened with the old one.
        sqlx::query("DELETE FROM sessions WHERE user_id = $1").bind(id).execute(tx.conn()).await?;
        changes.insert("password".into(), json!("changed"));
    }
    if !changes.is_empty() {
        let entry = Entry::new(Action::UserUpdate, Outcome::Success)
            .target("user", id)
            .details(json!({ "username": username, "changes": changes }));
        audit::record(tx, source, entry).await?;
    }
    if suspending {
        let entry = Entry::new(Action::UserSuspend, Outcome::Success).target("user", id).details(json!({
            "username": username,
            "before": { "status": before.status },
            "after": { "status": "suspended" },
        }));
        audit::record(tx, source, entry).await?;
    }
    if let Some(role) = &new_role {
        super::membership::replace_roles(tx, permit, source, id, role).await?;
    }

    let action = if suspending {
        Action::UserSuspend
    } else if input.role.is_some() {
        Action::RoleRevoke
    } else {
        Action::UserUpdate
    };
    super::keep_an_administrator(tx, admins_before, action, ("user", id)).await?;
    let view = user::load_view(tx, id, now).await?.ok_or(AppError::NotFound)?;
    Ok(Done::Now(view))
}

/// The rank of the tenant's highest clearance level.
async fn highest_clearance(tx: &mut TenantTx) -> Result<i32, sqlx::Error> {
    sqlx::query_scalar("SELECT COALESCE(max(level), 0) FROM clearance_levels").fetch_one(tx.conn()).await
}

pub async fn delete(
    state: &AppState,
    permit: &Permit,
    source: &Source,
    mut tx: TenantTx,
    id: Uuid,
) -> Result<Done<()>, AppError> {
    let outcome = delete_attempt(state, permit, source, &mut tx, id).await;
    super::settle(tx, permit, source, outcome).await
}

/// The route of [`delete`], as stored with a held request.
pub const ROUTE_DELETE: &str = "DELETE /api/users/{id}";

pub async fn delete_attempt(
    state: &AppState,
    permit: &Permit,
    source: &Source,
    tx: &mut TenantTx,
    id: Uuid,
) -> Attempt<Done<()>> {
    let now = state.clock.now();
    let permit = &super::begin(tx, permit, now).await?;
    let before = manageable(tx, permit, id, now, true).await?;
    let admins_before = super::administrator_count(tx).await?;
    let change = json!({ "before": snapshot(&before) });
    let hold = Hold::new(Operation::UserDelete, ROUTE_DELETE, format!("Delete the account {}", before.username))
        .params(json!({ "id": id }))
        .change(change.clone())
        .target("user", id);
    if let Gate::Held(approval) = super::gate(tx, permit, source, hold, now).await? {
        return Ok(Done::Held(approval));
    }
    let deleted = sqlx::query("DELETE FROM users WHERE id = $1").bind(id).execute(tx.conn()).await;
    if let Err(sqlx::Error::Database(e)) = &deleted
        && e.is_foreign_key_violation()
    {
        return Err(AppError::Conflict(
            "This account still owns documents; suspend it, or delete its documents first".into(),
        )
        .into());
    }
    deleted?;
    super::keep_an_administrator(tx, admins_before, Action::UserDelete, ("user", id)).await?;
    let entry = Entry::new(Action::UserDelete, Outcome::Success).target("user", id).details(change);
    audit::record(tx, source, entry).await?;
    Ok(Done::Now(()))
}

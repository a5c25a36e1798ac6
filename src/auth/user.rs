//! Users as the API shows them (seed 002's shape, camelCase), and the lookups the
//! authentication flows need. The password hash never leaves this module except
//! to the verifier.

use serde::Serialize;
use time::OffsetDateTime;
use uuid::Uuid;

use crate::{authz, db::TenantTx};

/// The user JSON: `id, username, email, status, role, roles, permissions,
/// department, clearanceLevel, lastLogin, createdAt`.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct UserView {
    pub id: Uuid,
    pub username: String,
    pub email: String,
    pub status: String,
    /// The primary (longest-held) role, if any.
    pub role: Option<String>,
    pub roles: Vec<String>,
    pub permissions: Vec<String>,
    pub department: String,
    pub clearance_level: String,
    #[serde(with = "time::serde::rfc3339::option")]
    pub last_login: Option<OffsetDateTime>,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
}

#[derive(sqlx::FromRow)]
struct UserRow {
    id: Uuid,
    username: String,
    email: String,
    status: String,
    department: String,
    clearance_level: String,
    last_login: Option<OffsetDateTime>,
    created_at: OffsetDateTime,
}

/// Loads the view of `user_id`, with roles and permissions as of `now`.
pub async fn load_view(tx: &mut TenantTx, user_id: Uuid, now: OffsetDateTime) -> Result<Option<UserView>, sqlx::Error> {
    let row: Option<UserRow> = sqlx::query_as(
        "SELECT u.id, u.username, u.email, u.status, d.name AS department, c.name AS clearance_level, \
                u.last_login, u.created_at \
         FROM users u JOIN departments d ON d.id = u.department_id \
         JOIN clearance_levels c ON c.id = u.clearance_level_id WHERE u.id = $1",
    )
    .bind(user_id)
    .fetch_optional(tx.conn())
    .await?;
    let Some(row) = row else { return Ok(None) };
    let roles = authz::effective_roles(tx, user_id, now).await?;
    let permissions = authz::effective_permissions(tx, user_id, now).await?;
    Ok(Some(UserView {
        id: row.id,
        username: row.username,
        email: row.email,
        status: row.status,
        role: roles.first().cloned(),
        roles,
        permissions,
        department: row.department,
        clearance_level: row.clearance_level,
        last_login: row.last_login,
        created_at: row.created_at,
    }))
}

/// What a login attempt needs to know about an account.
#[derive(sqlx::FromRow)]
pub struct Credentials {
    pub id: Uuid,
    pub status: String,
    pub password_hash: String,
}

/// Finds an account by username or email, case-insensitively.
pub async fn find_credentials(tx: &mut TenantTx, login: &str) -> Result<Option<Credentials>, sqlx::Error> {
    sqlx::query_as(
        "SELECT id, status, password_hash FROM users WHERE lower(username) = lower($1) OR lower(email) = lower($1) \
         ORDER BY lower(username) = lower($1) DESC LIMIT 1",
    )
    .bind(login)
    .fetch_optional(tx.conn())
    .await
}

/// A new account's fields; names of role, department and clearance are resolved
/// inside the tenant.
pub struct NewUser<'a> {
    pub username: &'a str,
    pub email: &'a str,
    pub password_hash: &'a str,
    pub status: &'a str,
    pub requested_role: Option<&'a str>,
    pub role: &'a str,
    pub department: &'a str,
    pub clearance_level: &'a str,
}

#[derive(Debug, thiserror::Error)]
pub enum CreateUserError {
    #[error("that username or email is already taken")]
    Duplicate,
    #[error("the tenant has no {0} named {1:?}")]
    MissingReference(&'static str, String),
    #[error(transparent)]
    Db(#[from] sqlx::Error),
}

/// Inserts a user and its role. Returns the new id.
pub async fn create(tx: &mut TenantTx, new: &NewUser<'_>) -> Result<Uuid, CreateUserError> {
    let tenant = tx.tenant_id();
    let department: Option<Uuid> = sqlx::query_scalar("SELECT id FROM departments WHERE lower(name) = lower($1)")
        .bind(new.department)
        .fetch_optional(tx.conn())
        .await?;
    let department =
        department.ok_or_else(|| CreateUserError::MissingReference("department", new.department.into()))?;
    let clearance: Option<Uuid> = sqlx::query_scalar("SELECT id FROM clearance_levels WHERE lower(name) = lower($1)")
        .bind(new.clearance_level)
        .fetch_optional(tx.conn())
        .await?;
    let clearance =
        clearance.ok_or_else(|| CreateUserError::MissingReference("clearance level", new.clearance_level.into()))?;
    let role: Option<Uuid> = sqlx::query_scalar("SELECT id FROM roles WHERE lower(name) = lower($1)")
        .bind(new.role)
        .fetch_optional(tx.conn())
        .await?;
    let role = role.ok_or_else(|| CreateUserError::MissingReference("role", new.role.into()))?;

    let inserted = sqlx::query_scalar(
        "INSERT INTO users (tenant_id, username, email, password_hash, status, requested_role, department_id, clearance_level_id) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8) RETURNING id",
    )
    .bind(tenant)
    .bind(new.username)
    .bind(new.email)
    .bind(new.password_hash)
    .bind(new.status)
    .bind(new.requested_role)
    .bind(department)
    .bind(clearance)
    .fetch_one(tx.conn())
    .await;
    let id: Uuid = match inserted {
        Ok(id) => id,
        Err(e) if crate::db::unique_violation(&e).is_some() => return Err(CreateUserError::Duplicate),
        Err(e) => return Err(e.into()),
    };
    sqlx::query("INSERT INTO user_roles (tenant_id, user_id, role_id, assigned_by) VALUES ($1, $2, $3, $4)")
        .bind(tenant)
        .bind(id)
        .bind(role)
        .bind(tx.actor())
        .execute(tx.conn())
        .await?;
    Ok(id)
}

pub async fn record_login(tx: &mut TenantTx, user_id: Uuid, now: OffsetDateTime) -> Result<(), sqlx::Error> {
    sqlx::query("UPDATE users SET last_login = $2 WHERE id = $1")
        .bind(user_id)
        .bind(now)
        .execute(tx.conn())
        .await
        .map(|_| ())
}

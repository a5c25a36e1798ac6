//! Users as the API shows them (seed 002's shape, camelCase), and the lookups the
//! authentication flows need. The password hash never leaves this module except
//! to the verifier.

use serde::Serialize;
use time::OffsetDateTime;
use utoipa::ToSchema;
use uuid::Uuid;

use crate::db::TenantTx;

/// The user JSON: `id, username, email, status, role, roles, permissions,
/// department, clearanceLevel, requestedRole, lastLogin, createdAt`.
#[derive(Debug, Clone, Serialize, sqlx::FromRow, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct UserView {
    pub id: Uuid,
    pub username: String,
    pub email: String,
    #[schema(schema_with = status_schema)]
    pub status: String,
    /// The primary (longest-held) role, if any.
    #[sqlx(skip)]
    #[schema(required = true)]
    pub role: Option<String>,
    pub roles: Vec<String>,
    pub permissions: Vec<String>,
    pub department: String,
    pub clearance_level: String,
    /// What a self-registered user asked to be (seed 003), until approved.
    #[schema(required = true)]
    pub requested_role: Option<String>,
    /// Whether a second factor is enrolled (a confirmed TOTP or a passkey).
    pub mfa_enabled: bool,
    /// Locked by too many failed logins in a row, until an administrator unlocks it.
    pub locked: bool,
    #[serde(with = "time::serde::rfc3339::option")]
    #[schema(required = true)]
    pub last_login: Option<OffsetDateTime>,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    #[serde(skip)]
    pub department_id: Uuid,
    #[serde(skip)]
    pub clearance_rank: i32,
}

/// The statuses `users.status` may hold (its CHECK constraint).
fn status_schema() -> utoipa::openapi::Object {
    utoipa::openapi::ObjectBuilder::new()
        .schema_type(utoipa::openapi::Type::String)
        .enum_values(Some(["active", "pending", "suspended", "inactive"]))
        .description(Some("`pending`: waiting for an administrator's approval"))
        .build()
}

/// The one query behind every user view; `$1` is "now" (expired role
/// assignments do not count), and the tail adds the filter.
macro_rules! user_view_sql {
    ($tail:literal) => {
        concat!(
            "SELECT u.id, u.username, u.email, u.status, u.requested_role, u.department_id, \
                    d.name AS department, c.name AS clearance_level, c.level AS clearance_rank, \
                    u.last_login, u.created_at, \
                    (EXISTS (SELECT 1 FROM mfa_totp t WHERE t.user_id = u.id AND t.confirmed_at IS NOT NULL) \
                     OR EXISTS (SELECT 1 FROM mfa_webauthn w WHERE w.user_id = u.id)) AS mfa_enabled, \
                    u.locked_at IS NOT NULL AS locked, \
                    ARRAY(SELECT r.name FROM user_roles ur JOIN roles r ON r.id = ur.role_id \
                          WHERE ur.user_id = u.id AND (ur.expires_at IS NULL OR ur.expires_at > $1) \
                          ORDER BY ur.assigned_at, r.name) AS roles, \
                    ARRAY(SELECT DISTINCT p.name FROM user_roles ur \
                          JOIN role_permissions rp ON rp.role_id = ur.role_id \
                          JOIN permissions p ON p.id = rp.permission_id \
                          WHERE ur.user_id = u.id AND (ur.expires_at IS NULL OR ur.expires_at > $1) \
                          ORDER BY p.name) AS permissions \
             FROM users u JOIN departments d ON d.id = u.department_id \
             JOIN clearance_levels c ON c.id = u.clearance_level_id ",
            $tail
        )
    };
}

fn finish(mut view: UserView) -> UserView {
    view.role = view.roles.first().cloned();
    view
}

/// Loads the view of `user_id`, with roles and permissions as of `now`.
pub async fn load_view(tx: &mut TenantTx, user_id: Uuid, now: OffsetDateTime) -> Result<Option<UserView>, sqlx::Error> {
    let view: Option<UserView> =
        sqlx::query_as(user_view_sql!("WHERE u.id = $2")).bind(now).bind(user_id).fetch_optional(tx.conn()).await?;
    Ok(view.map(finish))
}

/// Which users a listing shows.
#[derive(Debug, Default)]
pub struct ListFilter<'a> {
    pub status: Option<&'a str>,
    /// Only users after this username (lower-cased) in name order: the cursor.
    pub after: Option<&'a str>,
    /// Only users of this department, plus this user (a department-scoped grant).
    pub department: Option<(Uuid, Uuid)>,
    /// Only this user (an own-scoped grant).
    pub only: Option<Uuid>,
    pub limit: i64,
}

/// Lists users in name order, as of `now`.
pub async fn list_views(
    tx: &mut TenantTx,
    now: OffsetDateTime,
    filter: &ListFilter<'_>,
) -> Result<Vec<UserView>, sqlx::Error> {
    let views: Vec<UserView> = sqlx::query_as(user_view_sql!(
        "WHERE ($2::text IS NULL OR u.status = $2) \
           AND ($3::text IS NULL OR lower(u.username) > $3) \
           AND ($4::uuid IS NULL OR u.department_id = $4 OR u.id = $5) \
           AND ($6::uuid IS NULL OR u.id = $6) \
         ORDER BY lower(u.username) LIMIT $7"
    ))
    .bind(now)
    .bind(filter.status)
    .bind(filter.after)
    .bind(filter.department.map(|(department, _)| department))
    .bind(filter.department.map(|(_, me)| me))
    .bind(filter.only)
    .bind(filter.limit)
    .fetch_all(tx.conn())
    .await?;
    Ok(views.into_iter().map(finish).collect())
}

/// What a login attempt needs to know about an account.
#[derive(sqlx::FromRow)]
pub struct Credentials {
    pub id: Uuid,
    pub username: String,
    pub status: String,
    pub password_hash: String,
    /// Locked after too many failures in a row, until an administrator unlocks it.
    pub locked_at: Option<OffsetDateTime>,
}

/// Finds an account by username or email, case-insensitively.
pub async fn find_credentials(tx: &mut TenantTx, login: &str) -> Result<Option<Credentials>, sqlx::Error> {
    sqlx::query_as(
        "SELECT id, username, status, password_hash, locked_at FROM users WHERE lower(username) = lower($1) OR lower(email) = lower($1) \
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

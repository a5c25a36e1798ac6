//! Default data: the `default` tenant, and in each tenant the roles, department
//! and clearance levels that registration and `create-admin` rely on.
//!
//! Idempotent and non-destructive: it adds what is missing and never changes what
//! exists, so an administrator's edits (say, removing a permission from `staff`)
//! survive the seed that `serve` runs at every start. A role's default grants are
//! added only when the seed creates the role.

use anyhow::Context;
use sqlx::{Connection, PgConnection, postgres::PgConnectOptions};
use uuid::Uuid;

use super::Database;

pub const DEFAULT_TENANT: &str = "default";

/// A grant's scope: which objects it covers (used by the files work).
#[derive(Debug, Clone, Copy)]
pub enum Scope {
    Tenant,
    Department,
    Own,
}

impl Scope {
    pub fn as_str(self) -> &'static str {
        match self {
            Scope::Tenant => "tenant",
            Scope::Department => "department",
            Scope::Own => "own",
        }
    }
}

struct RoleSeed {
    name: &'static str,
    description: &'static str,
    /// `None`: every permission in the catalogue.
    permissions: Option<&'static [&'static str]>,
    scope: Scope,
}

const ROLES: &[RoleSeed] = &[
    RoleSeed {
        name: "admin",
        description: "Administrator: every permission, tenant-wide",
        permissions: None,
        scope: Scope::Tenant,
    },
    RoleSeed {
        name: "staff",
        description: "Staff: upload, download and share their department's documents",
        permissions: Some(&["file.upload", "file.download", "file.share"]),
        scope: Scope::Department,
    },
    RoleSeed {
        name: "student",
        description: "Student: upload and download their own documents",
        permissions: Some(&["file.upload", "file.download"]),
        scope: Scope::Own,
    },
];

/// (name, rank, colour, description)
const CLEARANCE_LEVELS: &[(&str, i32, &str, &str)] = &[
    ("public", 1, "#16a34a", "Anyone in the organisation may read"),
    ("confidential", 2, "#d97706", "Restricted to people with a need to know"),
    ("restricted", 3, "#dc2626", "Highest sensitivity"),
];

pub const DEFAULT_DEPARTMENT: &str = "General";
pub const DEFAULT_ROLE: &str = "student";
pub const DEFAULT_CLEARANCE: &str = "public";

/// What a seed run added.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct SeedReport {
    pub tenant_created: bool,
    pub roles: Vec<String>,
    pub clearance_levels: Vec<String>,
    pub departments: Vec<String>,
}

impl std::fmt::Display for SeedReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let list = |v: &Vec<String>| if v.is_empty() { "none".to_string() } else { v.join(", ") };
        write!(
            f,
            "tenant created: {}; roles added: {}; clearance levels added: {}; departments added: {}",
            if self.tenant_created { "yes" } else { "no" },
            list(&self.roles),
            list(&self.clearance_levels),
            list(&self.departments)
        )
    }
}

/// Creates the tenant `slug` if missing (as the owner: the serving role cannot
/// write the tenant registry). Returns its id and whether it was created.
pub async fn ensure_tenant(owner: &PgConnectOptions, slug: &str, name: &str) -> anyhow::Result<(Uuid, bool)> {
    let mut conn = PgConnection::connect_with(owner).await.context("connecting as the schema owner")?;
    let created: Option<Uuid> = sqlx::query_scalar(
        "INSERT INTO tenants (slug, name) VALUES ($1, $2) ON CONFLICT (slug) DO NOTHING RETURNING id",
    )
    .bind(slug)
    .bind(name)
    .fetch_optional(&mut conn)
    .await
    .with_context(|| format!("creating tenant {slug:?}"))?;
    let id = match created {
        Some(id) => id,
        None => sqlx::query_scalar("SELECT id FROM tenants WHERE slug = $1").bind(slug).fetch_one(&mut conn).await?,
    };
    conn.close().await.ok();
    Ok((id, created.is_some()))
}

/// Adds the default roles, clearance levels and department to `tenant`, through
/// the tenant-scoped transaction.
pub async fn apply_defaults(db: &Database, tenant: Uuid) -> anyhow::Result<SeedReport> {
    let mut report = SeedReport::default();
    let mut tx = db.tenant_tx(tenant, None).await?;

    let dept: Option<String> = sqlx::query_scalar(
        "INSERT INTO departments (tenant_id, name, description) VALUES ($1, $2, 'Default department') \
         ON CONFLICT (tenant_id, lower(name)) DO NOTHING RETURNING name",
    )
    .bind(tenant)
    .bind(DEFAULT_DEPARTMENT)
    .fetch_optional(tx.conn())
    .await?;
    report.departments.extend(dept);

    for (name, level, color, description) in CLEARANCE_LEVELS {
        let added: Option<String> = sqlx::query_scalar(
            "INSERT INTO clearance_levels (tenant_id, name, level, color, description) VALUES ($1, $2, $3, $4, $5) \
             ON CONFLICT DO NOTHING RETURNING name",
        )
        .bind(tenant)
        .bind(name)
        .bind(level)
        .bind(color)
        .bind(description)
        .fetch_optional(tx.conn())
        .await?;
        report.clearance_levels.extend(added);
    }

    for role in ROLES {
        let added: Option<Uuid> = sqlx::query_scalar(
            "INSERT INTO roles (tenant_id, name, description) VALUES ($1, $2, $3) \
             ON CONFLICT (tenant_id, lower(name)) DO NOTHING RETURNING id",
        )
        .bind(tenant)
        .bind(role.name)
        .bind(role.description)
        .fetch_optional(tx.conn())
        .await?;
        let Some(role_id) = added else { continue };
        sqlx::query(
            "INSERT INTO role_permissions (tenant_id, role_id, permission_id, scope) \
             SELECT $1, $2, p.id, $3 FROM permissions p WHERE $4::text[] IS NULL OR p.name = ANY($4)",
        )
        .bind(tenant)
        .bind(role_id)
        .bind(role.scope.as_str())
        .bind(role.permissions.map(|p| p.iter().map(|s| s.to_string()).collect::<Vec<_>>()))
        .execute(tx.conn())
        .await?;
        report.roles.push(role.name.to_string());
    }

    tx.commit().await?;
    Ok(report)
}

/// The whole default seed: the `default` tenant and its defaults.
pub async fn seed_default(owner: &PgConnectOptions, db: &Database) -> anyhow::Result<SeedReport> {
    let (tenant, created) = ensure_tenant(owner, DEFAULT_TENANT, "Default organisation").await?;
    let mut report = apply_defaults(db, tenant).await?;
    report.tenant_created = created;
    Ok(report)
}

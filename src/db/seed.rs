//! Default data and role presets: the `default` tenant, and in each tenant the
//! roles, department and clearance levels that registration and `create-admin`
//! rely on. Role sets are data, in `presets/*.toml` (compiled in): `fortifile`
//! (the default), `compliance` (seed 001) and `engineering` (seed 003).
//!
//! Idempotent and non-destructive: it adds what is missing and never changes what
//! exists, so an administrator's edits (say, removing a permission from `staff`)
//! survive the seed that `serve` runs at every start. A role's default grants are
//! added only when the seed creates the role.

use std::collections::BTreeMap;

use anyhow::Context;
use serde::Deserialize;
use sqlx::{Connection, PgConnection, postgres::PgConnectOptions};
use uuid::Uuid;

use super::{Database, TenantTx};
use crate::authz::{Permission, Scope, dual::Operation};

pub const DEFAULT_TENANT: &str = "default";

/// The role sets that `fortifile seed --preset NAME` loads, from `presets/`.
pub const PRESETS: &[(&str, &str)] = &[
    ("fortifile", include_str!("../../presets/fortifile.toml")),
    ("compliance", include_str!("../../presets/compliance.toml")),
    ("engineering", include_str!("../../presets/engineering.toml")),
];
/// Applied before every preset: clearance levels and the default department.
const BASE: &str = include_str!("../../presets/base.toml");
pub const DEFAULT_PRESET: &str = "fortifile";

/// What registration gives a new account (all three are in every tenant that
/// the default preset was loaded into; the directory refuses to rename or
/// delete them).
pub const DEFAULT_DEPARTMENT: &str = "General";
pub const DEFAULT_ROLE: &str = "student";
pub const DEFAULT_CLEARANCE: &str = "public";

/// A preset file: roles with their grants and policy, and optionally clearance
/// levels and departments.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Preset {
    pub description: String,
    #[serde(default)]
    pub clearance_levels: Vec<LevelSeed>,
    #[serde(default)]
    pub departments: Vec<DepartmentSeed>,
    #[serde(default)]
    pub roles: Vec<RoleSeed>,
    /// Operations put under dual control (see `authz::dual`).
    #[serde(default)]
    pub dual_control: Option<DualControlSeed>,
}

/// A preset's dual control: which operations it puts under approval, and by
/// whom (operation → role names; unnamed: holders of `admin.manage_roles`
/// tenant-wide). Seeding only ever turns a policy on.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DualControlSeed {
    /// Operation names; `"*"` stands for every operation.
    pub enabled: Vec<String>,
    #[serde(default)]
    pub approver_roles: BTreeMap<String, Vec<String>>,
}

impl DualControlSeed {
    fn operations(&self) -> anyhow::Result<Vec<Operation>> {
        for name in self.enabled.iter().chain(self.approver_roles.keys()) {
            if name != "*" && Operation::parse(name).is_none() {
                anyhow::bail!("dual_control names an unknown operation {name:?}");
            }
        }
        let all = self.enabled.iter().any(|n| n == "*");
        Ok(Operation::ALL.into_iter().filter(|op| all || self.enabled.iter().any(|n| n == op.as_str())).collect())
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LevelSeed {
    pub name: String,
    pub level: i32,
    pub color: String,
    #[serde(default)]
    pub description: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DepartmentSeed {
    pub name: String,
    #[serde(default)]
    pub description: String,
    #[serde(default = "default_color")]
    pub color: String,
}

fn default_color() -> String {
    "#64748b".into()
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RoleSeed {
    pub name: String,
    #[serde(default)]
    pub description: String,
    #[serde(default)]
    pub portal: Option<String>,
    #[serde(default)]
    pub tier: Option<i32>,
    #[serde(default)]
    pub session_timeout_minutes: Option<i32>,
    #[serde(default)]
    pub requires_mfa: bool,
    #[serde(default)]
    pub mfa_type: Option<String>,
    /// Permission name → scope; `"*"` stands for the whole catalogue.
    #[serde(default)]
    pub permissions: BTreeMap<String, Scope>,
}

impl RoleSeed {
    /// The role's grants, checked against the catalogue.
    pub fn grants(&self) -> anyhow::Result<Vec<(Permission, Scope)>> {
        let mut out = BTreeMap::new();
        for (name, scope) in &self.permissions {
            if name == "*" {
                out.extend(Permission::ALL.iter().map(|p| (*p, *scope)));
            } else {
                let p = Permission::parse(name)
                    .with_context(|| format!("role {:?}: unknown permission {name:?}", self.name))?;
                out.insert(p, *scope);
            }
        }
        Ok(out.into_iter().collect())
    }
}

impl Preset {
    /// Parses and checks a preset file.
    pub fn parse(text: &str) -> anyhow::Result<Preset> {
        let preset: Preset = toml::from_str(text)?;
        for role in &preset.roles {
            role.grants()?;
        }
        if let Some(dual) = &preset.dual_control {
            dual.operations()?;
        }
        Ok(preset)
    }

    /// The preset called `name`.
    pub fn named(name: &str) -> anyhow::Result<Preset> {
        let Some((_, text)) = PRESETS.iter().find(|(n, _)| *n == name) else {
            let known: Vec<&str> = PRESETS.iter().map(|(n, _)| *n).collect();
            anyhow::bail!("no preset {name:?}; the presets are: {}", known.join(", "));
        };
        Preset::parse(text).with_context(|| format!("presets/{name}.toml"))
    }
}

/// What a seed run added, and what it found already there.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct SeedReport {
    pub tenant_created: bool,
    pub roles: Vec<String>,
    pub roles_present: Vec<String>,
    pub clearance_levels: Vec<String>,
    pub departments: Vec<String>,
    /// Dual-control policies turned on.
    pub policies: Vec<String>,
}

impl std::fmt::Display for SeedReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let list = |v: &Vec<String>| if v.is_empty() { "none".to_string() } else { v.join(", ") };
        write!(
            f,
            "tenant created: {}; roles added: {}; roles already present (unchanged): {}; \
             clearance levels added: {}; departments added: {}; dual-control policies turned on: {}",
            if self.tenant_created { "yes" } else { "no" },
            list(&self.roles),
            list(&self.roles_present),
            list(&self.clearance_levels),
            list(&self.departments),
            list(&self.policies)
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

/// Adds the default clearance levels, department and roles to `tenant`.
pub async fn apply_defaults(db: &Database, tenant: Uuid) -> anyhow::Result<SeedReport> {
    apply_preset(db, tenant, DEFAULT_PRESET).await
}

/// Loads the preset `name` (after the base levels and department) into `tenant`,
/// through the tenant-scoped transaction. Adds what is missing and changes
/// nothing that exists; a role gets the preset's grants only when created here.
pub async fn apply_preset(db: &Database, tenant: Uuid, name: &str) -> anyhow::Result<SeedReport> {
    let base = Preset::parse(BASE).context("presets/base.toml")?;
    let preset = Preset::named(name)?;
    let mut report = SeedReport::default();
    let mut tx = db.tenant_tx(tenant, None).await?;
    for p in [&base, &preset] {
        apply(&mut tx, p, &mut report).await?;
    }
    tx.commit().await?;
    Ok(report)
}

async fn apply(tx: &mut TenantTx, preset: &Preset, report: &mut SeedReport) -> anyhow::Result<()> {
    let tenant = tx.tenant_id();
    for level in &preset.clearance_levels {
        let added: Option<String> = sqlx::query_scalar(
            "INSERT INTO clearance_levels (tenant_id, name, level, color, description) VALUES ($1, $2, $3, $4, $5) \
             ON CONFLICT DO NOTHING RETURNING name",
        )
        .bind(tenant)
        .bind(&level.name)
        .bind(level.level)
        .bind(&level.color)
        .bind(&level.description)
        .fetch_optional(tx.conn())
        .await?;
        report.clearance_levels.extend(added);
    }
    for dept in &preset.departments {
        let added: Option<String> = sqlx::query_scalar(
            "INSERT INTO departments (tenant_id, name, description, color) VALUES ($1, $2, $3, $4) \
             ON CONFLICT (tenant_id, lower(name)) DO NOTHING RETURNING name",
        )
        .bind(tenant)
        .bind(&dept.name)
        .bind(&dept.description)
        .bind(&dept.color)
        .fetch_optional(tx.conn())
        .await?;
        report.departments.extend(added);
    }
    for role in &preset.roles {
        let added: Option<Uuid> = sqlx::query_scalar(
            "INSERT INTO roles (tenant_id, name, description, portal, tier, session_timeout_minutes, requires_mfa, mfa_type) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8) \
             ON CONFLICT (tenant_id, lower(name)) DO NOTHING RETURNING id",
        )
        .bind(tenant)
        .bind(&role.name)
        .bind(&role.description)
        .bind(&role.portal)
        .bind(role.tier)
        .bind(role.session_timeout_minutes)
        .bind(role.requires_mfa)
        .bind(&role.mfa_type)
        .fetch_optional(tx.conn())
        .await
        .with_context(|| format!("adding role {:?}", role.name))?;
        let Some(role_id) = added else {
            report.roles_present.push(role.name.clone());
            continue;
        };
        for (permission, scope) in role.grants()? {
            insert_grant(tx, role_id, permission, scope).await?;
        }
        report.roles.push(role.name.clone());
    }
    if let Some(dual) = &preset.dual_control {
        for op in dual.operations()? {
            let approvers = dual.approver_roles.get(op.as_str()).cloned().unwrap_or_default();
            // Turns a policy on (with the preset's approvers when it had none); never off.
            let changed = sqlx::query(
                "INSERT INTO approval_policies (tenant_id, operation, enabled, approver_roles, timeout_hours) \
                 VALUES ($1, $2, true, $3, $4) \
                 ON CONFLICT (tenant_id, operation) DO UPDATE SET enabled = true WHERE NOT approval_policies.enabled",
            )
            .bind(tenant)
            .bind(op.as_str())
            .bind(&approvers)
            .bind(op.default_timeout_hours())
            .execute(tx.conn())
            .await?;
            if changed.rows_affected() > 0 {
                report.policies.push(op.as_str().to_string());
            }
        }
    }
    Ok(())
}

/// The whole default seed: the `default` tenant and its defaults.
pub async fn seed_default(owner: &PgConnectOptions, db: &Database) -> anyhow::Result<SeedReport> {
    let (tenant, created) = ensure_tenant(owner, DEFAULT_TENANT, "Default organisation").await?;
    let mut report = apply_defaults(db, tenant).await?;
    report.tenant_created = created;
    Ok(report)
}

/// Grants `permission` at `scope` to `role` (or changes the scope of the grant).
pub async fn insert_grant(
    tx: &mut TenantTx,
    role: Uuid,
    permission: Permission,
    scope: Scope,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO role_permissions (tenant_id, role_id, permission_id, scope) \
         SELECT $1, $2, p.id, $4 FROM permissions p WHERE p.name = $3 \
         ON CONFLICT (role_id, permission_id) DO UPDATE SET scope = EXCLUDED.scope, granted_at = now()",
    )
    .bind(tx.tenant_id())
    .bind(role)
    .bind(permission.as_str())
    .bind(scope.as_str())
    .execute(tx.conn())
    .await
    .map(|_| ())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_preset_parses_and_names_only_catalogue_permissions() {
        Preset::parse(BASE).unwrap();
        for (name, _) in PRESETS {
            let preset = Preset::named(name).unwrap();
            assert!(!preset.roles.is_empty(), "{name} has no roles");
        }
    }

    #[test]
    fn the_compliance_preset_has_seed_001s_eleven_roles_with_their_policy() {
        let preset = Preset::named("compliance").unwrap();
        assert_eq!(preset.roles.len(), 11);
        let admin = preset.roles.iter().find(|r| r.name == "CompanyAdmin").unwrap();
        assert_eq!(admin.session_timeout_minutes, Some(15));
        assert_eq!(admin.mfa_type.as_deref(), Some("fido2"));
        assert_eq!(admin.grants().unwrap().len(), Permission::ALL.len());
    }

    #[test]
    fn a_preset_naming_an_unknown_permission_is_refused() {
        let text = "description = \"x\"\n[[roles]]\nname = \"r\"\n[roles.permissions]\n\"file.burn\" = \"own\"\n";
        assert!(Preset::parse(text).unwrap_err().to_string().contains("file.burn"));
    }

    #[test]
    fn an_unknown_preset_lists_the_known_ones() {
        let err = Preset::named("nope").unwrap_err().to_string();
        assert!(err.contains("fortifile") && err.contains("engineering"), "{err}");
    }
}

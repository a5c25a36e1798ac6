//! `fortifile create-admin`.

use std::io::IsTerminal;

use anyhow::{Context, bail};
use secrecy::{ExposeSecret, SecretString};
use serde_json::json;

use crate::{
    audit::{self, Action, Entry, Outcome, Source},
    auth::{
        account::{validate_email, validate_username},
        password::{Passwords, check_policy},
        user::{self, CreateUserError, NewUser},
    },
    authz::{Permission, Scope},
    db::{DbTarget, seed},
    directory::roles,
};

pub struct NewAdmin {
    pub username: String,
    pub email: String,
    pub tenant: String,
    pub role: String,
}

/// Creates an active user with `role` (which must grant `admin.manage_roles` at
/// tenant scope) and the tenant's highest clearance level.
pub async fn create_admin(target: &DbTarget, new_admin: &NewAdmin) -> anyhow::Result<()> {
    let (username, email, tenant_slug) =
        (new_admin.username.as_str(), new_admin.email.as_str(), new_admin.tenant.as_str());
    super::check_slug(tenant_slug)?;
    validate_username(username).map_err(|e| anyhow::anyhow!("--username: {e}"))?;
    validate_email(email).map_err(|e| anyhow::anyhow!("--email: {e}"))?;
    let password = read_password()?;
    check_policy(&password, username, email).map_err(|v| anyhow::anyhow!("the password {}", v.0))?;

    let db = super::connect(target, 2).await?;
    if tenant_slug == seed::DEFAULT_TENANT {
        seed::seed_default(&target.owner, &db).await?;
    }
    let tenant = db.tenant_by_slug(tenant_slug).await?.with_context(|| {
        format!("no tenant {tenant_slug:?}: create it with `fortifile seed --tenant {tenant_slug}`")
    })?;
    let hash = Passwords::new().await?.hash(&password).await?;

    let mut tx = db.tenant_tx(tenant.id, None).await?;
    let role = roles::find_by_name(&mut tx, &new_admin.role).await?.with_context(|| {
        format!("tenant {tenant_slug:?} has no role {:?}: load a preset with `fortifile seed`", new_admin.role)
    })?;
    if role.grants.get(&Permission::AdminManageRoles) != Some(&Scope::Tenant) {
        bail!("the role {:?} does not grant admin.manage_roles tenant-wide, so it cannot administer", role.name);
    }
    let clearance: Option<String> = sqlx::query_scalar("SELECT name FROM clearance_levels ORDER BY level DESC LIMIT 1")
        .fetch_optional(tx.conn())
        .await?;
    let clearance =
        clearance.with_context(|| format!("tenant {tenant_slug:?} has no clearance levels: run `fortifile seed`"))?;
    let new = NewUser {
        username,
        email,
        password_hash: &hash,
        status: "active",
        requested_role: None,
        role: &role.name,
        department: seed::DEFAULT_DEPARTMENT,
        clearance_level: &clearance,
    };
    let id = match user::create(&mut tx, &new).await {
        Ok(id) => id,
        Err(CreateUserError::Duplicate) => {
            bail!("a user with that username or email already exists in {tenant_slug:?}")
        }
        Err(CreateUserError::MissingReference(kind, name)) => {
            bail!("tenant {tenant_slug:?} has no {kind} {name:?}: run `fortifile seed --tenant {tenant_slug}`")
        }
        Err(CreateUserError::Db(e)) => return Err(e.into()),
    };
    let entry = Entry::new(Action::UserCreate, Outcome::Success).target("user", id).details(json!({
        "via": "cli",
        "username": username,
        "roles": [role.name],
        "clearanceLevel": clearance,
    }));
    audit::record(&mut tx, &Source::default(), entry).await?;
    tx.commit().await?;
    db.close().await;
    println!("created administrator {username:?} ({id}) in tenant {tenant_slug:?}");
    Ok(())
}

/// The password from FORTIFILE_ADMIN_PASSWORD, else a hidden prompt (asked twice).
fn read_password() -> anyhow::Result<SecretString> {
    if let Ok(pw) = std::env::var("FORTIFILE_ADMIN_PASSWORD")
        && !pw.is_empty()
    {
        return Ok(SecretString::from(pw));
    }
    if !std::io::stdin().is_terminal() {
        bail!("set FORTIFILE_ADMIN_PASSWORD, or run create-admin in a terminal to be prompted");
    }
    let first = SecretString::from(rpassword::prompt_password("Password for the new administrator: ")?);
    let second = SecretString::from(rpassword::prompt_password("Repeat the password: ")?);
    if first.expose_secret() != second.expose_secret() {
        bail!("the passwords did not match");
    }
    Ok(first)
}

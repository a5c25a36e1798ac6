//! Schema setup as the owner, and the start-up check that the serving role has no
//! more power than it needs.

use anyhow::{Context, bail};
use sqlx::{Connection, PgConnection, postgres::PgConnectOptions};

use super::{Database, EMBEDDED_DATABASE};

pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations");

/// Creates the embedded cluster's database when it does not exist yet.
pub async fn ensure_embedded_database(owner: &PgConnectOptions) -> anyhow::Result<()> {
    let mut conn = PgConnection::connect_with(&owner.clone().database("postgres"))
        .await
        .context("connecting to the embedded PostgreSQL")?;
    let exists: bool = sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = $1)")
        .bind(EMBEDDED_DATABASE)
        .fetch_one(&mut conn)
        .await?;
    if !exists {
        // A constant identifier: CREATE DATABASE takes no bind parameters.
        let created =
            sqlx::raw_sql("CREATE DATABASE fortifile ENCODING 'UTF8' TEMPLATE template0").execute(&mut conn).await;
        if let Err(e) = created {
            // Lost a race with another command creating it: fine.
            let duplicate = matches!(&e, sqlx::Error::Database(d) if d.code().as_deref() == Some("42P04"));
            if !duplicate {
                return Err(e).context("creating the embedded database");
            }
        }
    }
    conn.close().await.ok();
    Ok(())
}

/// How many client connections other than this one the server has: other
/// FortiFile processes attached to a cluster we started.
pub async fn other_clients(owner: &PgConnectOptions) -> anyhow::Result<i64> {
    let mut conn = PgConnection::connect_with(&owner.clone().database("postgres")).await?;
    let n = sqlx::query_scalar(
        "SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'client backend' AND pid <> pg_backend_pid()",
    )
    .fetch_one(&mut conn)
    .await?;
    conn.close().await.ok();
    Ok(n)
}

/// Held by the instance that is setting the database up (migrations,
/// retention, default data), so that instances started together do it one
/// after the other: a session-level advisory lock on the owner's connection,
/// released by [`StartupLock::release`] or when the process dies.
pub struct StartupLock(PgConnection);

impl StartupLock {
    /// Waits until no other instance is setting up.
    pub async fn take(owner: &PgConnectOptions) -> anyhow::Result<StartupLock> {
        let mut conn = PgConnection::connect_with(owner)
            .await
            .context("connecting to PostgreSQL as the schema owner (DATABASE_URL)")?;
        sqlx::query("SELECT pg_advisory_lock($1, $2)")
            .bind(STARTUP_LOCK.0)
            .bind(STARTUP_LOCK.1)
            .execute(&mut conn)
            .await?;
        Ok(StartupLock(conn))
    }

    pub async fn release(mut self) {
        let _ = sqlx::query("SELECT pg_advisory_unlock($1, $2)")
            .bind(STARTUP_LOCK.0)
            .bind(STARTUP_LOCK.1)
            .execute(&mut self.0)
            .await;
        self.0.close().await.ok();
    }
}

/// The start-up lock's key (class 7262 is the jobs', [`crate::jobs`]).
const STARTUP_LOCK: (i32, i32) = (7263, 1);

/// Applies pending migrations as the owner. Idempotent.
pub async fn migrate(owner: &PgConnectOptions) -> anyhow::Result<()> {
    let mut conn = PgConnection::connect_with(owner)
        .await
        .context("connecting to PostgreSQL as the schema owner (DATABASE_URL)")?;
    MIGRATOR.run(&mut conn).await.context("applying migrations")?;
    conn.close().await.ok();
    Ok(())
}

/// Records, as the owner, the audit retention the server runs with: the
/// partition drop (migration 0011) refuses anything younger, whoever asks.
pub async fn record_audit_retention(owner: &PgConnectOptions, days: u32) -> anyhow::Result<()> {
    let mut conn = PgConnection::connect_with(owner).await.context("connecting as the schema owner")?;
    sqlx::query(
        "INSERT INTO audit_retention (days) VALUES ($1) ON CONFLICT (only_row) DO UPDATE SET days = EXCLUDED.days",
    )
    .bind(days as i32)
    .execute(&mut conn)
    .await?;
    conn.close().await.ok();
    Ok(())
}

/// Refuses to serve unless the serving role is not superuser, has no BYPASSRLS,
/// owns no table, cannot change the audit log, and every tenant table has forced
/// row-level security.
pub async fn verify_least_privilege(db: &Database) -> anyhow::Result<()> {
    let pool = db.pool();
    let (role, superuser, bypass): (String, bool, bool) =
        sqlx::query_as("SELECT rolname::text, rolsuper, rolbypassrls FROM pg_roles WHERE rolname = current_user")
            .fetch_one(pool)
            .await?;
    if superuser || bypass {
        bail!("refusing to serve: the database role {role:?} is superuser or has BYPASSRLS");
    }
    let owned: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace \
         WHERE n.nspname = 'public' AND c.relkind IN ('r', 'p') AND pg_get_userbyid(c.relowner) = current_user",
    )
    .fetch_one(pool)
    .await?;
    if owned > 0 {
        bail!("refusing to serve: the database role {role:?} owns tables (row-level security would not bind it)");
    }
    let audit_writable: bool = sqlx::query_scalar(
        "SELECT has_table_privilege('audit_logs', 'UPDATE') OR has_table_privilege('audit_logs', 'DELETE') \
         OR has_table_privilege('audit_logs', 'TRUNCATE')",
    )
    .fetch_one(pool)
    .await?;
    if audit_writable {
        bail!("refusing to serve: the database role {role:?} may change or delete audit_logs");
    }
    let unprotected: Vec<String> = sqlx::query_scalar(
        "SELECT c.relname::text FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace \
         JOIN pg_attribute a ON a.attrelid = c.oid AND a.attname = 'tenant_id' AND NOT a.attisdropped \
         WHERE n.nspname = 'public' AND c.relkind IN ('r', 'p') AND NOT c.relispartition \
           AND NOT (c.relrowsecurity AND c.relforcerowsecurity) ORDER BY 1",
    )
    .fetch_all(pool)
    .await?;
    if !unprotected.is_empty() {
        bail!("refusing to serve: tenant tables without forced row-level security: {}", unprotected.join(", "));
    }
    Ok(())
}

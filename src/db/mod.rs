//! The database: where it is (embedded or given), the serving pool, and the one
//! door to tenant data, [`TenantTx`].
//!
//! The serving pool is private to this module. Code outside reaches tenant rows
//! only through [`Database::tenant_tx`], which pins the transaction to a tenant with
//! a bound `set_config` so PostgreSQL's row-level security applies to every
//! statement in it. The few global reads (tenant registry, health) are methods here.

pub mod embedded;
pub mod seed;
pub mod setup;
mod target;

use std::time::Duration;

use anyhow::Context;
use sqlx::{
    Connection, PgConnection, PgPool, Postgres, Transaction,
    postgres::{PgConnectOptions, PgPoolOptions},
};
use uuid::Uuid;

pub use target::DbTarget;

/// The role the server runs its queries as (see migrations/0001).
pub const APP_ROLE: &str = "fortifile_app";

/// The database name inside the embedded cluster.
pub const EMBEDDED_DATABASE: &str = "fortifile";

/// A tenant in the global registry.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct Tenant {
    pub id: Uuid,
    pub slug: String,
    pub name: String,
}

/// How long a pooled connection may sit idle before it is checked when taken.
const IDLE_PING_AFTER: Duration = Duration::from_secs(30);

/// The serving role's pool.
#[derive(Clone, Debug)]
pub struct Database {
    pool: PgPool,
}

impl Database {
    /// Connects as the serving role. Call [`setup::verify_least_privilege`] before
    /// serving with it.
    pub async fn connect(options: PgConnectOptions, max_connections: u32) -> anyhow::Result<Self> {
        // sqlx pings a connection (one more round trip) each time it is taken
        // from the pool and again each time it goes back. The ping on return
        // stays: it flushes what a dropped transaction left (its `ROLLBACK`) and
        // finds broken connections. The ping on taking is only worth its round
        // trip after a connection sat idle long enough for the server or a
        // middlebox to have dropped it.
        let pool = PgPoolOptions::new()
            .max_connections(max_connections)
            .acquire_timeout(Duration::from_secs(10))
            .test_before_acquire(false)
            .before_acquire(|conn, meta| {
                Box::pin(async move {
                    if meta.idle_for > IDLE_PING_AFTER {
                        conn.ping().await?;
                    }
                    Ok(true)
                })
            })
            .connect_with(options)
            .await
            .context("connecting to PostgreSQL as the serving role (fortifile_app)")?;
        Ok(Database { pool })
    }

    /// Opens a transaction in which only `tenant`'s rows exist, acting for `actor`
    /// (the signed-in user, when there is one).
    pub async fn tenant_tx(&self, tenant: Uuid, actor: Option<Uuid>) -> Result<TenantTx, sqlx::Error> {
        let mut tx = begin(&self.pool).await?;
        let actor_text = actor.map(|a| a.to_string()).unwrap_or_default();
        sqlx::query("SELECT set_config('app.tenant_id', $1, true), set_config('app.user_id', $2, true)")
            .bind(tenant.to_string())
            .bind(actor_text)
            .execute(&mut *tx)
            .await?;
        Ok(TenantTx::new(tx, tenant, actor))
    }

    /// Opens a request's transaction in one round trip after `BEGIN`: the
    /// tenant is set for the rest of the transaction and the session `token_hash`
    /// names is looked up with everything authorization needs (see migration
    /// 0006), as `R`. The transaction acts for the session's user when found.
    pub async fn open_request<R>(
        &self,
        tenant: Uuid,
        token_hash: &[u8],
        now: time::OffsetDateTime,
        user_of: impl Fn(&R) -> Uuid,
    ) -> Result<(TenantTx, Option<R>), sqlx::Error>
    where
        R: for<'r> sqlx::FromRow<'r, sqlx::postgres::PgRow> + Send + Unpin,
    {
        self.open_with("SELECT * FROM fortifile_open_request($1, $2, $3)", tenant, token_hash, now, user_of).await
    }

    /// Opens a request made with an API key, like [`Database::open_request`]
    /// (migration 0008): the key `key_hash` names, with its owner.
    pub async fn open_key_request<R>(
        &self,
        tenant: Uuid,
        key_hash: &[u8],
        now: time::OffsetDateTime,
        user_of: impl Fn(&R) -> Uuid,
    ) -> Result<(TenantTx, Option<R>), sqlx::Error>
    where
        R: for<'r> sqlx::FromRow<'r, sqlx::postgres::PgRow> + Send + Unpin,
    {
        self.open_with("SELECT * FROM fortifile_open_key_request($1, $2, $3)", tenant, key_hash, now, user_of).await
    }

    async fn open_with<R>(
        &self,
        sql: &'static str,
        tenant: Uuid,
        hash: &[u8],
        now: time::OffsetDateTime,
        user_of: impl Fn(&R) -> Uuid,
    ) -> Result<(TenantTx, Option<R>), sqlx::Error>
    where
        R: for<'r> sqlx::FromRow<'r, sqlx::postgres::PgRow> + Send + Unpin,
    {
        let mut tx = begin(&self.pool).await?;
        let row: Option<R> = sqlx::query_as(sql).bind(tenant).bind(hash).bind(now).fetch_optional(&mut *tx).await?;
        let actor = row.as_ref().map(&user_of);
        Ok((TenantTx::new(tx, tenant, actor), row))
    }

    pub async fn tenant_by_slug(&self, slug: &str) -> Result<Option<Tenant>, sqlx::Error> {
        sqlx::query_as("SELECT id, slug, name FROM tenants WHERE slug = $1").bind(slug).fetch_optional(&self.pool).await
    }

    pub async fn tenant_exists(&self, id: Uuid) -> Result<bool, sqlx::Error> {
        sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM tenants WHERE id = $1)").bind(id).fetch_one(&self.pool).await
    }

    pub async fn tenants(&self) -> Result<Vec<Tenant>, sqlx::Error> {
        sqlx::query_as("SELECT id, slug, name FROM tenants ORDER BY created_at").fetch_all(&self.pool).await
    }

    pub async fn tenant_ids(&self) -> Result<Vec<Uuid>, sqlx::Error> {
        sqlx::query_scalar("SELECT id FROM tenants ORDER BY created_at").fetch_all(&self.pool).await
    }

    /// The database's clock: what audit rows are timestamped with.
    pub async fn now(&self) -> Result<time::OffsetDateTime, sqlx::Error> {
        sqlx::query_scalar("SELECT now()").fetch_one(&self.pool).await
    }

    /// `/readyz`: can we run a statement?
    pub async fn ping(&self) -> Result<(), sqlx::Error> {
        sqlx::query("SELECT 1").execute(&self.pool).await.map(|_| ())
    }

    /// Keeps the audit log's monthly partitions `months_ahead` months ahead.
    pub async fn ensure_audit_partitions(&self, months_ahead: i32) -> Result<i32, sqlx::Error> {
        sqlx::query_scalar("SELECT audit_ensure_partitions($1)").bind(months_ahead).fetch_one(&self.pool).await
    }

    /// Forgets job runs started more than `days` days ago, finished or left
    /// unfinished by an instance that died (`job_runs` is the deployment's,
    /// not tenant data).
    pub async fn forget_job_runs(&self, days: i32) -> Result<u64, sqlx::Error> {
        sqlx::query("DELETE FROM job_runs WHERE started_at < now() - make_interval(days => $1)")
            .bind(days)
            .execute(&self.pool)
            .await
            .map(|r| r.rows_affected())
    }

    /// The audit log's partitions, by name (the catalogue, not tenant data).
    pub async fn audit_partitions(&self) -> Result<Vec<String>, sqlx::Error> {
        sqlx::query_scalar(
            "SELECT c.relname::text FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid \
             WHERE i.inhparent = 'audit_logs'::regclass ORDER BY 1",
        )
        .fetch_all(&self.pool)
        .await
    }

    /// A connection of its own (outside the pool) holding the session-level
    /// advisory lock `key`, or `None` when another holds it. The lock lasts as
    /// long as the connection: an instance that dies lets it go.
    pub async fn hold_advisory_lock(&self, key: (i32, i32)) -> Result<Option<PgConnection>, sqlx::Error> {
        let mut conn = self.dedicated_connection().await?;
        let got: bool = sqlx::query_scalar("SELECT pg_try_advisory_lock($1, $2)")
            .bind(key.0)
            .bind(key.1)
            .fetch_one(&mut conn)
            .await?;
        if got {
            Ok(Some(conn))
        } else {
            conn.close().await.ok();
            Ok(None)
        }
    }

    /// A connection as the serving role outside the pool, for work that holds
    /// session-level advisory locks (the job scheduler, the syslog forwarder).
    /// Not for tenant data: that goes through [`Database::tenant_tx`].
    pub async fn dedicated_connection(&self) -> Result<PgConnection, sqlx::Error> {
        PgConnection::connect_with(&self.pool.connect_options()).await
    }

    /// The pool's connections, and how many of them are idle (for metrics).
    pub fn pool_use(&self) -> (u32, u32) {
        (self.pool.size(), u32::try_from(self.pool.num_idle()).unwrap_or(u32::MAX))
    }

    pub(crate) fn pool(&self) -> &PgPool {
        &self.pool
    }

    pub async fn close(&self) {
        self.pool.close().await;
    }
}

/// `BEGIN` on a pooled connection, safe to abandon. sqlx 0.9.0's `Pool::begin`
/// is not: dropped after sending `BEGIN` but before its answer (a client that
/// hangs up mid-request), it returns the connection to the pool inside a
/// transaction nothing will end, and the next request's statements run in it
/// (transact-rs/sqlx#4393, fixed upstream after 0.9.0). Beginning in a task of
/// its own lets the `BEGIN` always finish; a caller gone by then drops the task's
/// transaction, which rolls back as every dropped transaction does.
async fn begin(pool: &PgPool) -> Result<Transaction<'static, Postgres>, sqlx::Error> {
    let pool = pool.clone();
    let asked = std::time::Instant::now();
    tokio::spawn(async move {
        // A pooled connection the database closed since its last use (it
        // restarted) fails at its first statement, BEGIN: nothing has happened
        // yet, so another connection is tried. The pool drops the dead one.
        // Every idle connection may be such a one: try past all of them.
        let mut tx = pool.begin().await;
        for _ in 0..pool.options().get_max_connections() {
            match &tx {
                Err(e) if unreachable(e) && !matches!(e, sqlx::Error::PoolTimedOut) => {
                    tx = pool.begin().await;
                }
                _ => break,
            }
        }
        crate::telemetry::pool_wait(asked.elapsed());
        tx
    })
    .await
    .map_err(|e| sqlx::Error::Io(std::io::Error::other(e)))?
}

/// A transaction pinned to one tenant. Commit it, or dropping it rolls back.
#[derive(Debug)]
pub struct TenantTx {
    tx: Transaction<'static, Postgres>,
    tenant: Uuid,
    actor: Option<Uuid>,
    /// The API key the request was made with: every audit row names it.
    api_key: Option<Uuid>,
    /// The approval an operation runs under: its facts go into every audit
    /// row written while it is set.
    approval: Option<serde_json::Map<String, serde_json::Value>>,
    /// Whether [`TenantTx::savepoint`] marked an attempt.
    attempt: bool,
    /// Whether [`TenantTx::for_log_reading`] ran.
    log_reading: bool,
    /// Whether opening the request wrote in it ([`TenantTx::opened_with_write`]).
    opened_with_write: bool,
}

impl TenantTx {
    fn new(tx: Transaction<'static, Postgres>, tenant: Uuid, actor: Option<Uuid>) -> TenantTx {
        TenantTx {
            tx,
            tenant,
            actor,
            api_key: None,
            approval: None,
            attempt: false,
            log_reading: false,
            opened_with_write: false,
        }
    }

    pub fn tenant_id(&self) -> Uuid {
        self.tenant
    }

    /// The user this transaction acts for, if any.
    pub fn actor(&self) -> Option<Uuid> {
        self.actor
    }

    /// The API key this transaction acts through, if any.
    pub fn api_key(&self) -> Option<Uuid> {
        self.api_key
    }

    /// Marks this transaction as acting through API key `key`.
    pub fn through_key(&mut self, key: Uuid) {
        self.api_key = Some(key);
    }

    /// Runs the next statements for `actor` under an approval whose facts
    /// (`approvalId`, `requestedBy`, `approvedBy`) every audit row then
    /// carries; [`TenantTx::end_approval`] gives back the previous actor.
    pub fn under_approval(&mut self, actor: Uuid, facts: serde_json::Map<String, serde_json::Value>) -> Option<Uuid> {
        self.approval = Some(facts);
        self.actor.replace(actor)
    }

    pub fn end_approval(&mut self, actor: Option<Uuid>) {
        self.approval = None;
        self.actor = actor;
    }

    /// The approval facts audit rows carry now (see [`TenantTx::under_approval`]).
    pub fn approval_facts(&self) -> Option<&serde_json::Map<String, serde_json::Value>> {
        self.approval.as_ref()
    }

    /// Prepares this transaction for reading the audit log: every later
    /// statement is planned for its actual parameters, and cancelled after
    /// `timeout`. Queries with optional filters (`$1 IS NULL OR …`) need the
    /// first: a cached generic plan cannot drop the absent filters, so it walks
    /// the whole table in order instead of using the index of the filter that is
    /// present; the highlights' sorts get 32 MB of memory instead of spilling to
    /// disk. The timeout bounds what any range can cost: a cancelled statement
    /// is a 503 (see `AppError`), and the connection is free again.
    pub async fn for_log_reading(&mut self, timeout: Duration) -> Result<(), sqlx::Error> {
        if self.log_reading {
            return Ok(());
        }
        self.log_reading = true;
        let millis = timeout.as_millis().clamp(1, i32::MAX as u128).to_string();
        sqlx::query(
            "SELECT set_config('plan_cache_mode', 'force_custom_plan', true), \
                    set_config('statement_timeout', $1, true), set_config('work_mem', '32MB', true)",
        )
        .bind(millis)
        .execute(&mut *self.tx)
        .await
        .map(|_| ())
    }

    /// The database's clock at the start of this transaction: what its audit
    /// rows are timestamped with.
    pub async fn now(&mut self) -> Result<time::OffsetDateTime, sqlx::Error> {
        sqlx::query_scalar("SELECT now()").fetch_one(&mut *self.tx).await
    }

    /// The connection, for running statements inside the transaction.
    pub fn conn(&mut self) -> &mut PgConnection {
        &mut self.tx
    }

    /// Marks that opening the request wrote in this transaction (an API key's
    /// last use, an idempotency claim), so that [`TenantTx::end_read_only`]
    /// commits it.
    pub fn opened_with_write(&mut self) {
        self.opened_with_write = true;
    }

    /// Ends a transaction in which its caller wrote nothing. What opening the
    /// request wrote in it ([`TenantTx::opened_with_write`]) commits. Otherwise
    /// it rolls back, which is what its commit would have done, without waiting
    /// for the database: sqlx sends the `ROLLBACK` together with the check it
    /// makes when the connection goes back to the pool, so a read costs no
    /// round trip for its end. Only for a caller that knows it wrote (and
    /// locked) nothing: anything it wrote is undone. Debug builds, which every
    /// test runs, ask the database first and panic if the transaction has a
    /// transaction id, which any write or row lock takes.
    pub async fn end_read_only(mut self) -> Result<(), sqlx::Error> {
        if self.opened_with_write {
            return self.commit().await;
        }
        if cfg!(debug_assertions) {
            let wrote: bool =
                sqlx::query_scalar("SELECT txid_current_if_assigned() IS NOT NULL").fetch_one(&mut *self.tx).await?;
            assert!(!wrote, "a transaction that wrote was ended as read-only; commit it");
        }
        drop(self);
        Ok(())
    }

    pub async fn commit(self) -> Result<(), sqlx::Error> {
        self.tx.commit().await
    }

    /// Marks where an attempted change starts, so that a refusal can undo the
    /// change and still record itself in this transaction.
    pub async fn savepoint(&mut self) -> Result<(), sqlx::Error> {
        sqlx::query("SAVEPOINT attempt").execute(&mut *self.tx).await?;
        self.attempt = true;
        Ok(())
    }

    /// Undoes everything since [`TenantTx::savepoint`] (nothing to undo without one).
    pub async fn undo_attempt(&mut self) -> Result<(), sqlx::Error> {
        if self.attempt {
            sqlx::query("ROLLBACK TO SAVEPOINT attempt").execute(&mut *self.tx).await?;
        }
        Ok(())
    }
}

/// The name of the unique constraint or index a statement violated, if that is
/// why it failed.
pub fn unique_violation(err: &sqlx::Error) -> Option<&str> {
    match err {
        sqlx::Error::Database(db) if db.is_unique_violation() => Some(db.constraint().unwrap_or("")),
        _ => None,
    }
}

/// Whether a statement failed because its `statement_timeout` cancelled it
/// (SQLSTATE 57014, `query_canceled`).
pub fn timed_out(err: &sqlx::Error) -> bool {
    matches!(err, sqlx::Error::Database(db) if db.code().as_deref() == Some("57014"))
}

/// Whether `err` means the database is not there (down, restarting, its
/// connection gone) rather than that the request was wrong: I/O and protocol
/// failures, no connection within the pool's timeout, and SQLSTATE class 57P
/// (shutdown, crash shutdown, cannot connect now) and 08 (connection exceptions).
pub fn unreachable(err: &sqlx::Error) -> bool {
    match err {
        // A closed pool is this server's own state (shutting down): not this.
        sqlx::Error::Io(_) | sqlx::Error::Protocol(_) | sqlx::Error::PoolTimedOut => true,
        sqlx::Error::Database(db) => db.code().is_some_and(|c| c.starts_with("57P") || c.starts_with("08")),
        _ => false,
    }
}

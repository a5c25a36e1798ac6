//! Where the database is: the server given by `DATABASE_URL`, or the embedded
//! cluster under the data directory.

use anyhow::Context;
use secrecy::ExposeSecret;
use sqlx::postgres::PgConnectOptions;
use url::Url;

use super::{APP_ROLE, EMBEDDED_DATABASE, embedded::EmbeddedPostgres};
use crate::config::Config;

/// The database FortiFile's commands talk to.
#[derive(Debug)]
pub struct DbTarget {
    /// The schema owner: migrations and the tenant registry.
    pub owner: PgConnectOptions,
    /// The serving role: everything else.
    pub app: PgConnectOptions,
    /// Set when we use (and may have started) the embedded cluster.
    pub embedded: Option<EmbeddedPostgres>,
}

impl DbTarget {
    /// Resolves the target, starting the embedded cluster if `DATABASE_URL` is unset.
    /// Blocking (it may run `initdb` and `pg_ctl`): call from `spawn_blocking` or
    /// before the server's work starts.
    pub fn resolve(config: &Config) -> anyhow::Result<Self> {
        match &config.database_url {
            Some(url) => {
                let owner: PgConnectOptions =
                    url.expose_secret().parse().context("DATABASE_URL: not a usable PostgreSQL URL")?;
                let app = match &config.app_database_url {
                    Some(app) => app
                        .expose_secret()
                        .parse()
                        .context("FORTIFILE_APP_DATABASE_URL: not a usable PostgreSQL URL")?,
                    None => app_url_from_owner(url.expose_secret())?,
                };
                Ok(DbTarget { owner, app, embedded: None })
            }
            None => {
                let pg = EmbeddedPostgres::ensure(&config.data_dir)?;
                let owner = pg.connect_options(EMBEDDED_DATABASE);
                let app = owner.clone().username(APP_ROLE);
                Ok(DbTarget { owner, app, embedded: Some(pg) })
            }
        }
    }

    /// Stops the embedded cluster if this process started it and no other process
    /// is still using it (a `serve` may have attached while a short command ran).
    pub async fn shutdown(&mut self) {
        let Some(pg) = self.embedded.take() else { return };
        if !pg.started_here() {
            tracing::info!(
                data = %pg.root().display(),
                "embedded PostgreSQL left running: this process attached to a cluster it did not start \
                 (stop it with the process that started it, or pg_ctl stop)"
            );
            return;
        }
        // Backends of connections this process just closed take a moment to
        // leave pg_stat_activity: count again for up to two seconds.
        let mut clients = super::setup::other_clients(&self.owner).await;
        for _ in 0..20 {
            if !matches!(clients, Ok(n) if n > 0) {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
            clients = super::setup::other_clients(&self.owner).await;
        }
        match clients {
            Ok(0) => stop(pg).await,
            Ok(n) => tracing::info!(clients = n, "embedded PostgreSQL left running for the processes attached to it"),
            Err(e) => {
                tracing::warn!(error = %e, "could not check for other clients; stopping the embedded PostgreSQL");
                stop(pg).await;
            }
        }
    }
}

async fn stop(pg: EmbeddedPostgres) {
    // pg_ctl waits for the shutdown: keep it off the async workers.
    if tokio::task::spawn_blocking(move || pg.stop()).await.is_err() {
        tracing::warn!("stopping the embedded PostgreSQL panicked");
    }
}

/// Same server and database as the owner, as the serving role with no password
/// (works with trust or peer authentication; otherwise set FORTIFILE_APP_DATABASE_URL).
fn app_url_from_owner(owner: &str) -> anyhow::Result<PgConnectOptions> {
    let mut url = Url::parse(owner).context("DATABASE_URL: not a URL")?;
    url.set_username(APP_ROLE)
        .and_then(|_| url.set_password(None))
        .map_err(|_| anyhow::anyhow!("DATABASE_URL: cannot derive the serving role's URL"))?;
    url.as_str().parse().context("DATABASE_URL: not a usable PostgreSQL URL")
}

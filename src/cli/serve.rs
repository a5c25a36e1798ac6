//! `fortifile serve`.

use std::sync::Arc;

use anyhow::Context;
use tokio::net::TcpListener;

use crate::{
    app, audit,
    clock::SystemClock,
    config::Config,
    db::{DbTarget, seed, setup},
    http::AppState,
    jobs::{Scheduler, instance_name},
    telemetry,
};

pub async fn run(config: &Config, target: &DbTarget) -> anyhow::Result<()> {
    // Several instances may start at once on one database: one at a time
    // migrates, records the retention and seeds (migrations also take sqlx's
    // own lock); the others wait, then find the work done.
    if target.embedded.is_some() {
        setup::ensure_embedded_database(&target.owner).await?;
    }
    let startup = setup::StartupLock::take(&target.owner).await?;
    let db = super::connect(target, config.db_pool_size).await?;
    setup::verify_least_privilege(&db).await?;
    setup::record_audit_retention(&target.owner, config.audit.retention_days).await?;
    let report = seed::seed_default(&target.owner, &db).await?;
    tracing::info!(%report, "default data checked");

    let state = AppState::new(db.clone(), config.clone(), Arc::new(SystemClock)).await?;
    let rewritten = audit::names::hash_legacy_names(&target.owner, &state.login_names).await?;
    if rewritten > 0 {
        tracing::info!(
            entries = rewritten,
            "names typed at failed logins in older audit entries replaced by keyed hashes"
        );
    }
    startup.release().await;
    let listener = TcpListener::bind(config.bind)
        .await
        .with_context(|| format!("FORTIFILE_BIND: cannot listen on {}", config.bind))?;
    tracing::info!("FortiFile listening on http://{}", listener.local_addr()?);
    let metrics = match config.ops.metrics_bind {
        Some(bind) => {
            let pool = db.clone();
            Some(telemetry::install(bind, Arc::new(move || pool.pool_use())).await?)
        }
        None => None,
    };

    // Checked before anything starts, so a bad forwarding setting stops here.
    let forwarder = match &config.audit.syslog {
        Some(target) => Some(
            audit::forward::Forwarder::new(db.clone(), target.clone(), config.audit.syslog_ca.as_deref())
                .context("FORTIFILE_AUDIT_SYSLOG")?,
        ),
        None => None,
    };
    // SIGTERM (or Ctrl-C) is seen by both the server, which drains, and the
    // job scheduler, which takes no new run from then on.
    let (stop, stopping) = tokio::sync::watch::channel(false);
    let stop = Arc::new(stop);
    let signalled = stop.clone();
    tokio::spawn(async move {
        shutdown_signal().await;
        signalled.send_replace(true);
    });
    let stopped = |mut rx: tokio::sync::watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|s| *s).await;
    };
    let instance = instance_name(listener.local_addr()?);
    let scheduler = Scheduler::new(db.clone(), super::jobs::all(&state), instance);
    let scheduling = tokio::spawn(scheduler.run(stopped(stopping.clone())));
    let mut background = vec![tokio::spawn(audit::jobs::keep_sealed(state.clone()))];
    if let Some(keeper) = target.embedded.as_ref().and_then(|pg| pg.keeper()) {
        background.push(tokio::spawn(keep_running(keeper)));
    }
    if let Some(forwarder) = forwarder {
        background.push(tokio::spawn(forwarder.run()));
    }
    let served = app::serve(listener, state.clone(), stopped(stopping)).await;
    stop.send_replace(true); // also when serving failed
    // The scheduler has cancelled, recorded and unlocked its runs; the rest
    // is cancelled and waited for, so that its connections are back in the
    // pool before it closes.
    let _ = scheduling.await;
    for task in &background {
        task.abort();
    }
    for task in background {
        let _ = task.await;
    }
    audit::jobs::final_checkpoints(&state).await;
    db.close().await;
    if let Some(metrics) = metrics {
        metrics.abort();
    }
    served.context("serving HTTP")?;
    tracing::info!("shut down cleanly");
    Ok(())
}

/// The embedded cluster this process started is started again when it stops
/// (a crash, an operator's `pg_ctl stop`): requests fail and `/readyz` answers
/// 503 meanwhile, and the pool reconnects once it is back.
async fn keep_running(keeper: crate::db::embedded::EmbeddedPostgres) {
    let keeper = Arc::new(std::sync::Mutex::new(keeper));
    let mut every = tokio::time::interval(std::time::Duration::from_secs(1));
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        every.tick().await;
        let keeper = keeper.clone();
        let checked =
            tokio::task::spawn_blocking(move || keeper.lock().unwrap_or_else(|e| e.into_inner()).restart_if_stopped())
                .await;
        match checked {
            Ok(Ok(true)) => tracing::warn!("the embedded PostgreSQL had stopped: started it again"),
            Ok(Ok(false)) => {}
            Ok(Err(e)) => {
                tracing::error!(error = format!("{e:#}"), "the embedded PostgreSQL is down and would not start")
            }
            Err(_) => tracing::error!("checking the embedded PostgreSQL panicked"),
        }
    }
}

/// Resolves on Ctrl-C or SIGTERM.
async fn shutdown_signal() {
    let ctrl_c = async {
        if tokio::signal::ctrl_c().await.is_err() {
            std::future::pending::<()>().await;
        }
    };
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        _ = ctrl_c => {},
        _ = term => {},
    }
    tracing::info!("shutting down");
}

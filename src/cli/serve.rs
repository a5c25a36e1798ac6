//! `fortifile serve`.

use std::{sync::Arc, time::Duration};

use anyhow::Context;
use tokio::net::TcpListener;

use crate::{
    app, audit,
    auth::{account, throttle},
    clock::SystemClock,
    config::Config,
    db::{DbTarget, seed, setup},
    files,
    http::AppState,
};

/// How often partitions are kept ahead, expired sessions swept, and stored
/// objects that no file references removed.
const MAINTENANCE_EVERY: Duration = Duration::from_secs(300);
const AUDIT_MONTHS_AHEAD: i32 = 12;

pub async fn run(config: &Config, target: &DbTarget) -> anyhow::Result<()> {
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
    let listener = TcpListener::bind(config.bind)
        .await
        .with_context(|| format!("FORTIFILE_BIND: cannot listen on {}", config.bind))?;
    tracing::info!("FortiFile listening on http://{}", listener.local_addr()?);

    let maintenance = tokio::spawn(maintain(state.clone()));
    let sealing = tokio::spawn(audit::jobs::keep_sealed(state.clone()));
    let forwarding = match &config.audit.syslog {
        Some(target) => {
            let forwarder =
                audit::forward::Forwarder::new(db.clone(), target.clone(), config.audit.syslog_ca.as_deref())
                    .context("FORTIFILE_AUDIT_SYSLOG")?;
            Some(tokio::spawn(forwarder.run()))
        }
        None => None,
    };
    let served = app::serve(listener, state.clone(), shutdown_signal()).await;
    // Background work is cancelled and waited for, so that its connections
    // are back in the pool before it closes.
    maintenance.abort();
    sealing.abort();
    let _ = maintenance.await;
    let _ = sealing.await;
    if let Some(forwarding) = forwarding {
        forwarding.abort();
        let _ = forwarding.await;
    }
    audit::jobs::final_checkpoints(&state).await;
    db.close().await;
    served.context("serving HTTP")?;
    tracing::info!("shut down cleanly");
    Ok(())
}

async fn maintain(state: AppState) {
    let mut tick = tokio::time::interval(MAINTENANCE_EVERY);
    loop {
        tick.tick().await;
        if let Err(e) = state.db.ensure_audit_partitions(AUDIT_MONTHS_AHEAD).await {
            tracing::warn!(error = %e, "could not create audit partitions ahead");
        }
        match account::sweep_expired_sessions(&state).await {
            Ok(0) => {}
            Ok(n) => tracing::info!(sessions = n, "expired sessions swept"),
            Err(e) => tracing::warn!(error = %e, "session sweep failed"),
        }
        match files::sweep_unreferenced(&state, files::ORPHAN_AGE).await {
            Ok(0) => {}
            Ok(n) => tracing::info!(objects = n, "objects left by interrupted uploads and deletes settled"),
            Err(e) => tracing::warn!(error = format!("{e:#}"), "sweep of stored objects failed"),
        }
        match crate::http::idempotency::sweep(&state).await {
            Ok(0) => {}
            Ok(n) => tracing::info!(keys = n, "idempotency keys past 24 hours swept"),
            Err(e) => tracing::warn!(error = %e, "sweep of idempotency keys failed"),
        }
        match crate::approvals::sweep(&state).await {
            Ok(0) => {}
            Ok(n) => tracing::info!(requests = n, "dual-control requests past their time expired"),
            Err(e) => tracing::warn!(error = %e, "expiry of dual-control requests failed"),
        }
        match audit::retention::run(&state, state.clock.now()).await {
            Ok(r) if r.archived.is_empty() && r.dropped.is_empty() => {}
            Ok(r) => {
                tracing::info!(archived = ?r.archived, dropped = ?r.dropped, waiting = ?r.waiting, "audit retention")
            }
            Err(e) => tracing::warn!(error = %e, "audit retention failed"),
        }
        if let Err(e) = throttle::forget_old(&state).await {
            tracing::warn!(error = %e, "could not forget old attempt counters");
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
    tracing::info!("shutting down: finishing in-flight requests");
}

//! The audit log's background work in `fortifile serve`: sealing finished rows
//! into the chain every second, signing each tenant's head every
//! `FORTIFILE_AUDIT_CHECKPOINT_MINUTES` and once more at shutdown. Every step
//! is safe to run on several instances at once: the chain head's row lock
//! lets one of them work on a tenant at a time, and a checkpoint is only
//! written when the last one is old enough (decided under that lock).

use std::time::Duration;

use super::{chain, checkpoint, integrity::STUCK_AFTER_SECONDS};
use crate::http::AppState;

/// How often finished rows are sealed.
pub const SEAL_EVERY: Duration = Duration::from_secs(1);

/// Seals and signs until the task is dropped.
pub async fn keep_sealed(state: AppState) {
    let every = time::Duration::try_from(state.config.audit.checkpoint_every).unwrap_or(time::Duration::HOUR);
    let mut tick = tokio::time::interval(SEAL_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut warned_stuck = false;
    for round in 0u64.. {
        tick.tick().await;
        let tenants = match state.db.tenant_ids().await {
            Ok(t) => t,
            Err(e) => {
                tracing::warn!(error = %e, "audit sealing: cannot list tenants");
                continue;
            }
        };
        // Sealing every second; checkpoints looked at every minute, the
        // backlog every ten seconds: a few statements per tenant per second.
        let (sign, watch) = (round % 60 == 0, round % 10 == 0);
        let mut stuck = false;
        for tenant in tenants {
            let sealed = if sign {
                checkpoint::seal_and_sign(&state.db, &state.audit_key, tenant, Some(every)).await.map(|_| ())
            } else {
                chain::seal(&state.db, tenant).await.map(|_| ())
            };
            if let Err(e) = sealed {
                tracing::warn!(error = %e, %tenant, "audit sealing failed");
                continue;
            }
            // AU-5: rows that stay unsealed are an alarm.
            if watch
                && let Ok(mut tx) = state.db.tenant_tx(tenant, None).await
                && let Ok((n, Some(age))) = chain::unsealed(&mut tx).await
                && age > STUCK_AFTER_SECONDS
            {
                stuck = true;
                if !warned_stuck {
                    tracing::error!(%tenant, rows = n, seconds = age, "audit rows are not being sealed");
                }
            }
        }
        if watch {
            warned_stuck = stuck;
        }
    }
}

/// At shutdown: seal what has finished and sign every head that moved.
pub async fn final_checkpoints(state: &AppState) {
    let Ok(tenants) = state.db.tenant_ids().await else { return };
    for tenant in tenants {
        match checkpoint::seal_and_sign(&state.db, &state.audit_key, tenant, None).await {
            Ok(Some(cp)) => tracing::info!(%tenant, seq = cp.seq, "audit checkpoint signed at shutdown"),
            Ok(None) => {}
            Err(e) => tracing::warn!(error = %e, %tenant, "audit checkpoint at shutdown failed"),
        }
    }
}

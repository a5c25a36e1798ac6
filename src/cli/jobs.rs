//! The periodic jobs of `fortifile serve`, each run by one instance at a time
//! under its advisory lock ([`crate::jobs`]). ARCHITECTURE.md lists them with
//! their periods and locks; keep the two in step.

use std::time::Duration;

use crate::{
    approvals,
    audit::retention,
    auth::{account, throttle},
    files,
    http::{AppState, idempotency},
    jobs::{self, Job},
};

const MINUTES_5: Duration = Duration::from_secs(300);
const HOUR: Duration = Duration::from_secs(3600);

/// How far ahead the audit log's monthly partitions are kept.
const AUDIT_MONTHS_AHEAD: i32 = 12;

/// How long the history of job runs is kept.
const RUN_HISTORY_DAYS: i32 = 30;

/// A run still going after this long is cancelled and recorded as failed (a
/// month's audit archive to a slow store is the longest expected).
const RUN_TIMEOUT: Duration = Duration::from_secs(2 * 3600);

/// Every periodic job, with its period (its lock is derived from its name).
pub fn all(state: &AppState) -> Vec<Job> {
    vec![
        job(state, "audit.partitions", HOUR, partitions),
        job(state, "sessions.sweep", MINUTES_5, sessions),
        job(state, "objects.sweep", MINUTES_5, objects),
        job(state, "idempotency.sweep", MINUTES_5, idempotency_keys),
        job(state, "approvals.expire", MINUTES_5, approvals_expire),
        job(state, "audit.retention", MINUTES_5, audit_retention),
        job(state, "throttles.forget", MINUTES_5, throttles),
        job(state, "jobs.history", HOUR, history),
    ]
}

fn job<Fut>(state: &AppState, name: &'static str, every: Duration, run: fn(AppState) -> Fut) -> Job
where
    Fut: std::future::Future<Output = jobs::Outcome> + Send + 'static,
{
    let state = state.clone();
    Job::new(name, every, RUN_TIMEOUT, move || run(state.clone()))
}

async fn partitions(s: AppState) -> jobs::Outcome {
    let made = s.db.ensure_audit_partitions(AUDIT_MONTHS_AHEAD).await?;
    Ok(if made > 0 { format!("{made} audit partitions created ahead") } else { String::new() })
}

async fn sessions(s: AppState) -> jobs::Outcome {
    let n = account::sweep_expired_sessions(&s).await.map_err(|e| anyhow::anyhow!("{e}"))?;
    Ok(if n > 0 { format!("{n} expired sessions swept") } else { String::new() })
}

async fn objects(s: AppState) -> jobs::Outcome {
    let n = files::sweep_unreferenced(&s, files::ORPHAN_AGE).await?;
    Ok(if n > 0 { format!("{n} objects left by interrupted uploads and deletes settled") } else { String::new() })
}

async fn idempotency_keys(s: AppState) -> jobs::Outcome {
    let n = idempotency::sweep(&s).await?;
    Ok(if n > 0 { format!("{n} idempotency keys past 24 hours swept") } else { String::new() })
}

async fn approvals_expire(s: AppState) -> jobs::Outcome {
    let n = approvals::sweep(&s).await?;
    Ok(if n > 0 { format!("{n} dual-control requests past their time expired") } else { String::new() })
}

async fn audit_retention(s: AppState) -> jobs::Outcome {
    let r = retention::run(&s, s.clock.now()).await.map_err(|e| anyhow::anyhow!("{e}"))?;
    if !r.failed.is_empty() {
        anyhow::bail!("audit retention failed for {:?} (archived {:?}, dropped {:?})", r.failed, r.archived, r.dropped);
    }
    if r.archived.is_empty() && r.dropped.is_empty() {
        return Ok(String::new());
    }
    Ok(format!("audit retention: archived {:?}, dropped {:?}, waiting {:?}", r.archived, r.dropped, r.waiting))
}

async fn throttles(s: AppState) -> jobs::Outcome {
    let n = throttle::forget_old(&s).await?;
    Ok(if n > 0 { format!("{n} old attempt counters forgotten") } else { String::new() })
}

async fn history(s: AppState) -> jobs::Outcome {
    let n = s.db.forget_job_runs(RUN_HISTORY_DAYS).await?;
    Ok(if n > 0 { format!("{n} job runs older than {RUN_HISTORY_DAYS} days forgotten") } else { String::new() })
}

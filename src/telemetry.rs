//! What operators see of a running instance: the process log (text or one
//! JSON object per line) and Prometheus metrics on a listener of their own
//! (`FORTIFILE_METRICS_BIND`).
//!
//! Every metric FortiFile records is named here, so the list in
//! docs/deploy.md can be checked against one file. Until [`install`] runs
//! (metrics off), recording is a no-op costing an atomic load.

use std::{net::SocketAddr, time::Duration};

use anyhow::Context;
use axum::{Router, routing::get};
use metrics::{counter, describe_counter, describe_gauge, describe_histogram, gauge, histogram};
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use tokio::net::TcpListener;

use crate::config::LogFormat;

/// Latency buckets, in seconds: 1 ms to 30 s.
const SECONDS_BUCKETS: &[f64] = &[0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0];

/// Starts the process log on stderr: `RUST_LOG` levels (default `info`,
/// sqlx at `warn`), in `format`. With JSON, each line carries the fields of
/// the spans it was logged in (the request's id, method and path).
pub fn init_log(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,sqlx=warn"));
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().with_current_span(true).with_span_list(false).flatten_event(true).init(),
    }
}

/// How many connections the serving pool has, and how many of them are idle.
pub type PoolUse = std::sync::Arc<dyn Fn() -> (u32, u32) + Send + Sync>;

/// Installs the Prometheus recorder and serves `GET /metrics` on `bind` until
/// the returned task is aborted. Fails when the address cannot be listened on.
pub async fn install(bind: SocketAddr, pool: PoolUse) -> anyhow::Result<tokio::task::JoinHandle<()>> {
    let listener =
        TcpListener::bind(bind).await.with_context(|| format!("FORTIFILE_METRICS_BIND: cannot listen on {bind}"))?;
    let handle = PrometheusBuilder::new()
        .set_buckets(SECONDS_BUCKETS)
        .context("metrics buckets")?
        .install_recorder()
        .context("installing the metrics recorder")?;
    describe();
    tracing::info!("metrics on http://{}/metrics", listener.local_addr()?);
    Ok(tokio::spawn(serve(listener, handle, pool)))
}

async fn serve(listener: TcpListener, handle: PrometheusHandle, pool: PoolUse) {
    let upkeep = handle.clone();
    // Histograms are summarised on upkeep; without it they grow.
    let upkeeping = tokio::spawn(async move {
        let mut every = tokio::time::interval(Duration::from_secs(5));
        loop {
            every.tick().await;
            upkeep.run_upkeep();
        }
    });
    let app = Router::new().route(
        "/metrics",
        get(move || {
            let (handle, pool) = (handle.clone(), pool.clone());
            async move {
                let (size, idle) = pool();
                gauge!(POOL_CONNECTIONS, "state" => "idle").set(f64::from(idle));
                gauge!(POOL_CONNECTIONS, "state" => "in_use").set(f64::from(size.saturating_sub(idle)));
                ([("content-type", "text/plain; version=0.0.4")], handle.render())
            }
        }),
    );
    if let Err(e) = axum::serve(listener, app).await {
        tracing::warn!(error = %e, "the metrics listener stopped");
    }
    upkeeping.abort();
}

const REQUESTS: &str = "fortifile_http_requests_total";
const REQUEST_SECONDS: &str = "fortifile_http_request_duration_seconds";
const POOL_CONNECTIONS: &str = "fortifile_db_pool_connections";
const POOL_WAIT: &str = "fortifile_db_pool_wait_seconds";
const ARGON2_QUEUE: &str = "fortifile_argon2_queue";
const UPLOADED: &str = "fortifile_upload_bytes_total";
const DOWNLOADED: &str = "fortifile_download_bytes_total";
const AUDIT_ROWS: &str = "fortifile_audit_rows_total";
const JOB_RUNS: &str = "fortifile_job_runs_total";
const SYSLOG_BACKLOG: &str = "fortifile_syslog_backlog";

fn describe() {
    describe_counter!(REQUESTS, "HTTP requests answered, by method, route pattern and status");
    describe_histogram!(REQUEST_SECONDS, metrics::Unit::Seconds, "Time to answer an HTTP request (headers)");
    describe_gauge!(POOL_CONNECTIONS, "The serving pool's connections, idle or in use");
    describe_histogram!(
        POOL_WAIT,
        metrics::Unit::Seconds,
        "Time to take a pooled connection and begin a transaction (BEGIN's round trip included)"
    );
    describe_gauge!(ARGON2_QUEUE, "Password hashes waiting for or holding a hashing permit");
    describe_counter!(UPLOADED, metrics::Unit::Bytes, "Document bytes received in accepted uploads");
    describe_counter!(DOWNLOADED, metrics::Unit::Bytes, "Document bytes sent in downloads");
    describe_counter!(AUDIT_ROWS, "Audit rows written (committed or not)");
    describe_counter!(JOB_RUNS, "Background job runs, by job and outcome");
    describe_gauge!(SYSLOG_BACKLOG, "Audit rows sealed but not yet confirmed by the syslog receiver");
}

/// One answered request. `route` is the matched pattern (`/api/files/{id}`),
/// never the path itself, so identifiers do not become label values.
pub fn request(method: &str, route: &str, status: u16, took: Duration) {
    let labels = [("method", method.to_string()), ("route", route.to_string()), ("status", status.to_string())];
    counter!(REQUESTS, &labels).increment(1);
    histogram!(REQUEST_SECONDS, &labels[..2]).record(took.as_secs_f64());
}

pub fn pool_wait(took: Duration) {
    histogram!(POOL_WAIT).record(took.as_secs_f64());
}

/// Hashes waiting or running: call with +1 when one starts to wait, -1 when it is done.
pub fn argon2_queue(delta: f64) {
    gauge!(ARGON2_QUEUE).increment(delta);
}

pub fn uploaded(bytes: u64) {
    counter!(UPLOADED).increment(bytes);
}

pub fn downloaded(bytes: u64) {
    counter!(DOWNLOADED).increment(bytes);
}

pub fn audit_row() {
    counter!(AUDIT_ROWS).increment(1);
}

pub fn job_run(job: &'static str, outcome: &'static str) {
    counter!(JOB_RUNS, "job" => job, "outcome" => outcome).increment(1);
}

pub fn syslog_backlog(rows: i64) {
    gauge!(SYSLOG_BACKLOG).set(rows as f64);
}

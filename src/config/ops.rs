//! `FORTIFILE_METRICS_BIND`, `FORTIFILE_SHUTDOWN_DRAIN_SECONDS` and
//! `FORTIFILE_LOG_FORMAT`: how an instance is run among others.

use std::{net::SocketAddr, time::Duration};

use super::{ConfigError, bad};

/// The process log's format (`FORTIFILE_LOG_FORMAT`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LogFormat {
    /// Human-readable lines (the default).
    #[default]
    Text,
    /// One JSON object per line, with the request's span fields on each.
    Json,
}

impl LogFormat {
    pub fn parse(value: Option<&str>) -> Result<LogFormat, ConfigError> {
        match value.map(str::trim) {
            None | Some("") | Some("text") => Ok(LogFormat::Text),
            Some("json") => Ok(LogFormat::Json),
            Some(other) => Err(bad("FORTIFILE_LOG_FORMAT", format!("expected text or json, got {other:?}"))),
        }
    }

    /// Read straight from the environment: the log starts before the rest of
    /// the configuration is read. A bad value is reported by [`super::Config::from_env`].
    pub fn from_env() -> LogFormat {
        LogFormat::parse(std::env::var("FORTIFILE_LOG_FORMAT").ok().as_deref()).unwrap_or_default()
    }
}

/// Operating an instance behind a load balancer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Operations {
    /// `FORTIFILE_METRICS_BIND`: where Prometheus metrics are served, on a
    /// listener of their own (`None`: no metrics).
    pub metrics_bind: Option<SocketAddr>,
    /// `FORTIFILE_SHUTDOWN_DRAIN_SECONDS`: after SIGTERM, how long `/readyz`
    /// answers 503 while requests are still served, so that the balancer
    /// stops sending before the listener closes.
    pub shutdown_drain: Duration,
    /// `FORTIFILE_LOG_FORMAT`.
    pub log_format: LogFormat,
}

impl Default for Operations {
    fn default() -> Self {
        Operations { metrics_bind: None, shutdown_drain: Duration::from_secs(5), log_format: LogFormat::Text }
    }
}

impl Operations {
    pub fn read(get: impl Fn(&str) -> Option<String>) -> Result<Operations, ConfigError> {
        let metrics_bind = get("FORTIFILE_METRICS_BIND")
            .map(|v| {
                v.trim().parse::<SocketAddr>().map_err(|_| {
                    bad(
                        "FORTIFILE_METRICS_BIND",
                        format!("expected an address and port such as 127.0.0.1:9464, got {v:?}"),
                    )
                })
            })
            .transpose()?;
        let shutdown_drain = match get("FORTIFILE_SHUTDOWN_DRAIN_SECONDS") {
            None => Duration::from_secs(5),
            Some(v) => {
                v.trim().parse::<u64>().ok().filter(|s| *s <= 600).map(Duration::from_secs).ok_or_else(|| {
                    bad("FORTIFILE_SHUTDOWN_DRAIN_SECONDS", format!("expected whole seconds from 0 to 600, got {v:?}"))
                })?
            }
        };
        let log_format = LogFormat::parse(get("FORTIFILE_LOG_FORMAT").as_deref())?;
        Ok(Operations { metrics_bind, shutdown_drain, log_format })
    }
}

//! Configuration, read once from the environment at start.
//!
//! Every variable is documented in the README with its default. A bad value stops
//! the program with a message naming the variable ([`ConfigError`]), never a panic.

use std::{net::SocketAddr, path::PathBuf, time::Duration};

use ipnet::IpNet;
use secrecy::SecretString;
use url::Url;

#[derive(Debug, thiserror::Error)]
#[error("{var}: {message}")]
pub struct ConfigError {
    pub var: &'static str,
    pub message: String,
}

fn bad(var: &'static str, message: impl Into<String>) -> ConfigError {
    ConfigError { var, message: message.into() }
}

/// Who may create an account through `POST /auth/register`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Registration {
    /// Accounts are active at once.
    Open,
    /// Accounts are created `pending` until an administrator approves them.
    Approval,
    /// Registration answers 403.
    Closed,
}

#[derive(Debug, Clone)]
pub struct Config {
    pub bind: SocketAddr,
    pub data_dir: PathBuf,
    /// The schema owner's connection (migrations). `None`: the embedded cluster.
    pub database_url: Option<SecretString>,
    /// The serving role's connection; derived from `database_url` when unset.
    pub app_database_url: Option<SecretString>,
    /// The URL users reach. `None`: `http://{bind}`, and the request's own Host.
    pub public_url: Option<Url>,
    pub session_idle_timeout: Duration,
    pub session_absolute_timeout: Duration,
    pub registration: Registration,
    pub trusted_proxies: Vec<IpNet>,
}

impl Config {
    /// Reads the process environment.
    pub fn from_env() -> Result<Self, ConfigError> {
        Self::from_lookup(|name| std::env::var(name).ok())
    }

    /// Reads configuration through `lookup` (the environment, or a test's map).
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        let get = |name: &str| lookup(name).filter(|v| !v.trim().is_empty());

        let bind = match get("FORTIFILE_BIND") {
            None => SocketAddr::from(([127, 0, 0, 1], 8080)),
            Some(v) => v
                .trim()
                .parse()
                .map_err(|_| bad("FORTIFILE_BIND", format!("expected IP:PORT such as 127.0.0.1:8080, got {v:?}")))?,
        };
        let data_dir = PathBuf::from(get("FORTIFILE_DATA_DIR").unwrap_or_else(|| "./data".into()));

        let database_url = get("DATABASE_URL").map(|v| check_pg_url("DATABASE_URL", v)).transpose()?;
        let app_database_url =
            get("FORTIFILE_APP_DATABASE_URL").map(|v| check_pg_url("FORTIFILE_APP_DATABASE_URL", v)).transpose()?;

        let public_url = get("FORTIFILE_PUBLIC_URL").map(parse_public_url).transpose()?;

        let session_idle_timeout = seconds(&get, "FORTIFILE_SESSION_IDLE_TIMEOUT", 1800)?;
        let session_absolute_timeout = seconds(&get, "FORTIFILE_SESSION_ABSOLUTE_TIMEOUT", 43200)?;
        if session_absolute_timeout < session_idle_timeout {
            return Err(bad(
                "FORTIFILE_SESSION_ABSOLUTE_TIMEOUT",
                "must not be shorter than FORTIFILE_SESSION_IDLE_TIMEOUT",
            ));
        }

        let registration = match get("FORTIFILE_REGISTRATION").as_deref().map(str::trim) {
            None | Some("open") => Registration::Open,
            Some("approval") => Registration::Approval,
            Some("closed") => Registration::Closed,
            Some(other) => {
                return Err(bad("FORTIFILE_REGISTRATION", format!("expected open, approval or closed, got {other:?}")));
            }
        };

        let trusted_proxies = match get("FORTIFILE_TRUSTED_PROXIES") {
            None => Vec::new(),
            Some(v) => v
                .split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(|s| {
                    s.parse::<IpNet>()
                        .or_else(|_| s.parse::<std::net::IpAddr>().map(IpNet::from))
                        .map_err(|_| bad("FORTIFILE_TRUSTED_PROXIES", format!("not a CIDR or IP address: {s:?}")))
                })
                .collect::<Result<_, _>>()?,
        };

        Ok(Config {
            bind,
            data_dir,
            database_url,
            app_database_url,
            public_url,
            session_idle_timeout,
            session_absolute_timeout,
            registration,
            trusted_proxies,
        })
    }

    /// Whether cookies carry `Secure` (and the `__Host-` name prefix).
    pub fn secure_cookies(&self) -> bool {
        self.public_url.as_ref().is_some_and(|u| u.scheme() == "https")
    }

    /// The origin browsers must send for unsafe requests, when one is configured.
    pub fn allowed_origin(&self) -> Option<String> {
        self.public_url.as_ref().map(|u| u.origin().ascii_serialization())
    }
}

fn check_pg_url(var: &'static str, value: String) -> Result<SecretString, ConfigError> {
    // Never echo the value: it may hold a password.
    match Url::parse(&value) {
        Ok(u) if matches!(u.scheme(), "postgres" | "postgresql") => Ok(SecretString::from(value)),
        _ => Err(bad(var, "expected a postgres:// or postgresql:// URL")),
    }
}

fn parse_public_url(value: String) -> Result<Url, ConfigError> {
    const VAR: &str = "FORTIFILE_PUBLIC_URL";
    let url = Url::parse(value.trim()).map_err(|e| bad(VAR, format!("not a URL ({e})")))?;
    if !matches!(url.scheme(), "http" | "https") || url.host().is_none() {
        return Err(bad(VAR, "expected an http:// or https:// URL with a host"));
    }
    if url.path() != "/" || url.query().is_some() || url.fragment().is_some() {
        return Err(bad(VAR, "must be an origin such as https://files.example.org (no path)"));
    }
    Ok(url)
}

fn seconds(get: &impl Fn(&str) -> Option<String>, var: &'static str, default: u64) -> Result<Duration, ConfigError> {
    let secs = match get(var) {
        None => default,
        Some(v) => v
            .trim()
            .parse::<u64>()
            .ok()
            .filter(|s| (1..=31_536_000).contains(s))
            .ok_or_else(|| bad(var, format!("expected whole seconds from 1 to 31536000, got {v:?}")))?,
    };
    Ok(Duration::from_secs(secs))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn with(pairs: &[(&str, &str)]) -> Result<Config, ConfigError> {
        let map: HashMap<String, String> = pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        Config::from_lookup(|k| map.get(k).cloned())
    }

    #[test]
    fn defaults_apply_when_nothing_is_set() {
        let c = with(&[]).unwrap();
        assert_eq!(c.bind.to_string(), "127.0.0.1:8080");
        assert_eq!(c.session_idle_timeout, Duration::from_secs(1800));
        assert_eq!(c.session_absolute_timeout, Duration::from_secs(43200));
        assert_eq!(c.registration, Registration::Open);
        assert!(!c.secure_cookies());
    }

    #[test]
    fn each_bad_value_names_its_variable() {
        for (var, value) in [
            ("FORTIFILE_BIND", "localhost"),
            ("FORTIFILE_SESSION_IDLE_TIMEOUT", "soon"),
            ("FORTIFILE_SESSION_ABSOLUTE_TIMEOUT", "0"),
            ("FORTIFILE_REGISTRATION", "maybe"),
            ("FORTIFILE_TRUSTED_PROXIES", "10.0.0.0/99"),
            ("FORTIFILE_PUBLIC_URL", "ftp://x"),
            ("DATABASE_URL", "mysql://u:secretpw@h/db"),
        ] {
            let err = with(&[(var, value)]).unwrap_err();
            assert_eq!(err.var, var);
            assert!(err.to_string().starts_with(var));
            assert!(!err.to_string().contains("secretpw"), "a URL's password is never echoed");
        }
    }

    #[test]
    fn an_https_public_url_makes_cookies_secure() {
        let c = with(&[("FORTIFILE_PUBLIC_URL", "https://files.example.org")]).unwrap();
        assert!(c.secure_cookies());
        assert_eq!(c.allowed_origin().as_deref(), Some("https://files.example.org"));
    }

    #[test]
    fn trusted_proxies_accept_cidrs_and_single_addresses() {
        let c = with(&[("FORTIFILE_TRUSTED_PROXIES", "10.0.0.0/8, 127.0.0.1")]).unwrap();
        assert_eq!(c.trusted_proxies.len(), 2);
    }
}

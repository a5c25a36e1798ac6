//! Configuration, read once from the environment at start.
//!
//! Every variable is documented in the README with its default. A bad value stops
//! the program with a message naming the variable ([`ConfigError`]), never a panic.

mod ops;

use std::{net::SocketAddr, path::PathBuf, time::Duration};

pub use ops::{LogFormat, Operations};

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
    /// Where file objects are kept (`FORTIFILE_STORAGE`).
    pub storage: StorageSpec,
    /// `FORTIFILE_MASTER_KEY`; `None`: the key file under the data directory.
    pub master_key: Option<SecretString>,
    /// `FORTIFILE_MAX_UPLOAD_BYTES`: larger uploads answer 413.
    pub max_upload_bytes: u64,
    /// The security dashboard's suspicious-activity rules.
    pub highlights: Highlights,
    /// `FORTIFILE_DASHBOARD_TIMEOUT`: the `statement_timeout` of every read of
    /// the audit log, so no range ties up a connection after the browser left.
    pub dashboard_timeout: Duration,
    /// `FORTIFILE_REGISTRATION_LIMIT`: registration attempts per client address.
    pub registration_limit: Threshold,
    /// `FORTIFILE_STEP_UP_MINUTES`: how long a second-factor verification
    /// counts for sensitive actions.
    pub step_up: Duration,
    /// `FORTIFILE_API_KEY_MAX_DAYS`: how far ahead an API key may expire.
    pub api_key_max_days: u32,
    /// `FORTIFILE_LOGIN_LOCKOUT`: failed logins per account before delays start.
    pub login_lockout: Threshold,
    /// `FORTIFILE_LOGIN_ADDRESS_LIMIT`: failed logins per client address (all
    /// usernames) before delays start; devices that signed in before are exempt.
    pub login_address_limit: Threshold,
    /// `FORTIFILE_DB_POOL_SIZE`: connections to PostgreSQL. Every request holds
    /// one for its whole transaction, so this bounds the requests in the
    /// database at once; past what the database's cores can run, more only
    /// make PostgreSQL switch between backends (see ARCHITECTURE.md).
    pub db_pool_size: u32,
    /// `FORTIFILE_RATE_LIMIT`: requests per session or API key (`None`: off).
    pub rate_limit: Option<RateLimit>,
    /// `FORTIFILE_ANON_RATE_LIMIT`: requests without a credential per client
    /// address (`None`: off).
    pub anon_rate_limit: Option<RateLimit>,
    /// The audit chain's signing key, checkpoints, retention and forwarding.
    pub audit: AuditSettings,
    /// Metrics, shutdown drain and log format.
    pub ops: Operations,
}

/// `FORTIFILE_AUDIT_*`.
#[derive(Debug, Clone)]
pub struct AuditSettings {
    /// `FORTIFILE_AUDIT_SIGNING_KEY` (an Ed25519 seed, 64 hex characters);
    /// `None`: `audit-signing.key` under the data directory.
    pub signing_key: Option<SecretString>,
    /// `FORTIFILE_AUDIT_CHECKPOINT_MINUTES`: how often the chain's head is signed.
    pub checkpoint_every: Duration,
    /// `FORTIFILE_AUDIT_RETENTION_DAYS`: how long rows are kept (at least 365).
    pub retention_days: u32,
    /// `FORTIFILE_AUDIT_SYSLOG`: where every row is forwarded, if anywhere.
    pub syslog: Option<SyslogTarget>,
    /// `FORTIFILE_AUDIT_SYSLOG_CA`: the PEM certificate authorities that sign
    /// the receiver's TLS certificate (default: the system's).
    pub syslog_ca: Option<PathBuf>,
}

/// A syslog receiver: `tcp://HOST:PORT`, `tls://HOST:PORT` or `udp://HOST:PORT`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SyslogTarget {
    pub transport: SyslogTransport,
    pub host: String,
    pub port: u16,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SyslogTransport {
    Tcp,
    Tls,
    Udp,
}

impl SyslogTarget {
    pub fn parse(value: &str) -> Result<SyslogTarget, String> {
        let url = Url::parse(value.trim())
            .map_err(|_| format!("expected tcp://HOST:PORT, tls:// or udp://, got {value:?}"))?;
        let transport = match url.scheme() {
            "tcp" => SyslogTransport::Tcp,
            "tls" => SyslogTransport::Tls,
            "udp" => SyslogTransport::Udp,
            other => return Err(format!("the scheme must be tcp, tls or udp, got {other:?}")),
        };
        let host = url.host_str().filter(|h| !h.is_empty()).ok_or("the URL names no host")?;
        let port = url.port().ok_or("the URL names no port")?;
        if url.path().len() > 1 || url.query().is_some() || !url.username().is_empty() {
            return Err("only a scheme, host and port are expected".into());
        }
        Ok(SyslogTarget { transport, host: host.trim_matches(['[', ']']).to_string(), port })
    }
}

/// "At most `requests` requests within `seconds` seconds" (`REQUESTS/SECONDS`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateLimit {
    pub requests: u32,
    pub seconds: u32,
}

impl RateLimit {
    /// `REQUESTS/SECONDS` such as `600/60`, or `0` for no limit.
    pub fn parse(value: &str) -> Result<Option<RateLimit>, String> {
        let value = value.trim();
        if value == "0" {
            return Ok(None);
        }
        let parsed = value.split_once('/').and_then(|(r, s)| Some((r.trim().parse().ok()?, s.trim().parse().ok()?)));
        match parsed {
            Some((requests, seconds)) if (1..=1_000_000).contains(&requests) && (1..=86_400).contains(&seconds) => {
                Ok(Some(RateLimit { requests, seconds }))
            }
            _ => Err(format!("expected REQUESTS/SECONDS such as 600/60, or 0 for none, got {value:?}")),
        }
    }
}

/// "At least `count` events within `minutes` minutes", for one highlight rule.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Threshold {
    pub count: i64,
    pub minutes: i32,
}

/// Thresholds of the suspicious-activity highlights, each `FORTIFILE_HIGHLIGHT_*`
/// as `COUNT/MINUTES`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Highlights {
    /// Failed logins for one username (seed 000: 5 in 15 minutes).
    pub failed_logins: Threshold,
    /// Failed logins against distinct usernames from one address (spraying).
    pub password_spraying: Threshold,
    /// `mac.denied` for one user (3 in 60 minutes).
    pub mac_denials: Threshold,
    /// `rbac.denied` for one user.
    pub rbac_denials: Threshold,
    /// `file.download` by one user.
    pub bulk_downloads: Threshold,
    /// Wrong second factors at login for one account.
    pub mfa_failures: Threshold,
}

/// A storage backend as configured.
#[derive(Debug, Clone, PartialEq)]
pub enum StorageSpec {
    /// A directory on local disk.
    Local(PathBuf),
    /// An S3-compatible bucket, with the standard `AWS_*` settings found.
    S3 { bucket: String, prefix: String, settings: S3Settings },
}

/// The `AWS_*` variables passed to the S3 client. `Debug` shows names only:
/// the values include credentials.
#[derive(Clone, Default, PartialEq)]
pub struct S3Settings(pub Vec<(&'static str, String)>);

impl std::fmt::Debug for S3Settings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list().entries(self.0.iter().map(|(name, _)| name)).finish()
    }
}

/// The standard AWS variables the S3 backend reads (`object_store` config keys).
pub const S3_VARIABLES: &[&str] = &[
    "AWS_ENDPOINT_URL",
    "AWS_ENDPOINT",
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
    "AWS_SESSION_TOKEN",
    "AWS_REGION",
    "AWS_DEFAULT_REGION",
    "AWS_ALLOW_HTTP",
    "AWS_VIRTUAL_HOSTED_STYLE_REQUEST",
    "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI",
    "AWS_CONTAINER_CREDENTIALS_FULL_URI",
    "AWS_WEB_IDENTITY_TOKEN_FILE",
    "AWS_ROLE_ARN",
    "AWS_ROLE_SESSION_NAME",
];

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

        let storage = match get("FORTIFILE_STORAGE") {
            None => StorageSpec::Local(data_dir.join("files")),
            Some(v) => parse_storage(v.trim(), &get)?,
        };
        let master_key = get("FORTIFILE_MASTER_KEY").map(SecretString::from);
        let max_upload_bytes = match get("FORTIFILE_MAX_UPLOAD_BYTES") {
            None => 100 * 1024 * 1024,
            Some(v) => v.trim().parse::<u64>().ok().filter(|n| (1..=1 << 40).contains(n)).ok_or_else(|| {
                bad("FORTIFILE_MAX_UPLOAD_BYTES", format!("expected a number of bytes from 1 to 2^40, got {v:?}"))
            })?,
        };

        let threshold = |var: &'static str, count: i64, minutes: i32| -> Result<Threshold, ConfigError> {
            let Some(v) = get(var) else { return Ok(Threshold { count, minutes }) };
            let parsed =
                v.trim().split_once('/').and_then(|(c, m)| Some((c.trim().parse().ok()?, m.trim().parse().ok()?)));
            match parsed {
                Some((count, minutes)) if (1..=1_000_000).contains(&count) && (1..=10_080).contains(&minutes) => {
                    Ok(Threshold { count, minutes })
                }
                _ => Err(bad(var, format!("expected COUNT/MINUTES such as 5/15, got {v:?}"))),
            }
        };
        let login_lockout = threshold("FORTIFILE_LOGIN_LOCKOUT", 5, 15)?;
        let api_key_max_days = match get("FORTIFILE_API_KEY_MAX_DAYS") {
            None => 365,
            Some(v) => v.trim().parse::<u32>().ok().filter(|d| (1..=3650).contains(d)).ok_or_else(|| {
                bad("FORTIFILE_API_KEY_MAX_DAYS", format!("expected whole days from 1 to 3650, got {v:?}"))
            })?,
        };
        let login_address_limit = threshold("FORTIFILE_LOGIN_ADDRESS_LIMIT", 30, 15)?;
        let rate_limit = |var: &'static str, default: &str| {
            RateLimit::parse(&get(var).unwrap_or_else(|| default.to_string())).map_err(|m| bad(var, m))
        };
        let anon_rate_limit = rate_limit("FORTIFILE_ANON_RATE_LIMIT", "300/60")?;
        let rate_limit = rate_limit("FORTIFILE_RATE_LIMIT", "600/60")?;
        let highlights = Highlights {
            failed_logins: threshold("FORTIFILE_HIGHLIGHT_FAILED_LOGINS", 5, 15)?,
            password_spraying: threshold("FORTIFILE_HIGHLIGHT_PASSWORD_SPRAYING", 5, 15)?,
            mac_denials: threshold("FORTIFILE_HIGHLIGHT_MAC_DENIALS", 3, 60)?,
            rbac_denials: threshold("FORTIFILE_HIGHLIGHT_RBAC_DENIALS", 5, 15)?,
            bulk_downloads: threshold("FORTIFILE_HIGHLIGHT_BULK_DOWNLOADS", 50, 10)?,
            mfa_failures: threshold("FORTIFILE_HIGHLIGHT_MFA_FAILURES", 5, 15)?,
        };
        let dashboard_timeout = seconds(&get, "FORTIFILE_DASHBOARD_TIMEOUT", 30)?;
        let registration_limit = threshold("FORTIFILE_REGISTRATION_LIMIT", 20, 60)?;
        let step_up = match get("FORTIFILE_STEP_UP_MINUTES") {
            None => Duration::from_secs(600),
            Some(v) => v
                .trim()
                .parse::<u64>()
                .ok()
                .filter(|m| (1..=1440).contains(m))
                .map(|m| Duration::from_secs(m * 60))
                .ok_or_else(|| {
                    bad("FORTIFILE_STEP_UP_MINUTES", format!("expected whole minutes from 1 to 1440, got {v:?}"))
                })?,
        };
        let whole = |var: &'static str, default: u64, range: std::ops::RangeInclusive<u64>, unit: &str| match get(var) {
            None => Ok(default),
            Some(v) => v.trim().parse::<u64>().ok().filter(|n| range.contains(n)).ok_or_else(|| {
                bad(var, format!("expected whole {unit} from {} to {}, got {v:?}", range.start(), range.end()))
            }),
        };
        let audit = AuditSettings {
            signing_key: get("FORTIFILE_AUDIT_SIGNING_KEY").map(SecretString::from),
            checkpoint_every: Duration::from_secs(
                60 * whole("FORTIFILE_AUDIT_CHECKPOINT_MINUTES", 60, 1..=1440, "minutes")?,
            ),
            retention_days: whole("FORTIFILE_AUDIT_RETENTION_DAYS", 2557, 365..=36525, "days")? as u32,
            syslog: get("FORTIFILE_AUDIT_SYSLOG")
                .map(|v| SyslogTarget::parse(&v).map_err(|m| bad("FORTIFILE_AUDIT_SYSLOG", m)))
                .transpose()?,
            syslog_ca: get("FORTIFILE_AUDIT_SYSLOG_CA").map(|p| PathBuf::from(p.trim())),
        };
        let cores = std::thread::available_parallelism().map(|n| n.get() as u32).unwrap_or(2);
        let db_pool_size = match get("FORTIFILE_DB_POOL_SIZE") {
            None => (2 * cores + 2).clamp(4, 64),
            Some(v) => v.trim().parse::<u32>().ok().filter(|n| (1..=1000).contains(n)).ok_or_else(|| {
                bad("FORTIFILE_DB_POOL_SIZE", format!("expected a number of connections from 1 to 1000, got {v:?}"))
            })?,
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
            storage,
            master_key,
            max_upload_bytes,
            highlights,
            dashboard_timeout,
            registration_limit,
            step_up,
            api_key_max_days,
            login_lockout,
            login_address_limit,
            rate_limit,
            anon_rate_limit,
            db_pool_size,
            audit,
            ops: Operations::read(get)?,
        })
    }

    /// The audit signing key file used when `FORTIFILE_AUDIT_SIGNING_KEY` is unset.
    pub fn audit_signing_key_file(&self) -> PathBuf {
        self.data_dir.join("audit-signing.key")
    }

    /// The master key file used when `FORTIFILE_MASTER_KEY` is unset.
    pub fn master_key_file(&self) -> PathBuf {
        self.data_dir.join("master.key")
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

fn parse_storage(value: &str, get: &impl Fn(&str) -> Option<String>) -> Result<StorageSpec, ConfigError> {
    const VAR: &str = "FORTIFILE_STORAGE";
    if let Some(path) = value.strip_prefix("file://") {
        if path.is_empty() {
            return Err(bad(VAR, "file:// needs a directory, e.g. file:///var/lib/fortifile/files"));
        }
        return Ok(StorageSpec::Local(PathBuf::from(path)));
    }
    if let Some(rest) = value.strip_prefix("s3://") {
        let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
        let bucket_ok = (3..=63).contains(&bucket.len())
            && bucket.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.');
        if !bucket_ok {
            return Err(bad(VAR, format!("not an S3 bucket name: {bucket:?}")));
        }
        let settings =
            S3_VARIABLES.iter().filter_map(|name| get(name).map(|v| (*name, v.trim().to_string()))).collect();
        let prefix = prefix.trim_matches('/').to_string();
        return Ok(StorageSpec::S3 { bucket: bucket.to_string(), prefix, settings: S3Settings(settings) });
    }
    Err(bad(VAR, "expected file://PATH or s3://BUCKET/PREFIX"))
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
            ("FORTIFILE_STORAGE", "/var/files"),
            ("FORTIFILE_STORAGE", "s3://B/x"),
            ("FORTIFILE_MAX_UPLOAD_BYTES", "lots"),
            ("FORTIFILE_HIGHLIGHT_MAC_DENIALS", "3 per hour"),
            ("FORTIFILE_HIGHLIGHT_FAILED_LOGINS", "0/15"),
            ("FORTIFILE_DASHBOARD_TIMEOUT", "forever"),
            ("FORTIFILE_REGISTRATION_LIMIT", "twenty"),
            ("FORTIFILE_DB_POOL_SIZE", "0"),
            ("FORTIFILE_AUDIT_RETENTION_DAYS", "364"),
            ("FORTIFILE_AUDIT_CHECKPOINT_MINUTES", "0"),
            ("FORTIFILE_AUDIT_SYSLOG", "http://siem:514"),
            ("FORTIFILE_AUDIT_SYSLOG", "tcp://siem"),
            ("FORTIFILE_METRICS_BIND", "9464"),
            ("FORTIFILE_SHUTDOWN_DRAIN_SECONDS", "-1"),
            ("FORTIFILE_LOG_FORMAT", "xml"),
        ] {
            let err = with(&[(var, value)]).unwrap_err();
            assert_eq!(err.var, var);
            assert!(err.to_string().starts_with(var));
            assert!(!err.to_string().contains("secretpw"), "a URL's password is never echoed");
        }
    }

    #[test]
    fn storage_defaults_to_the_data_directory_and_takes_s3_with_its_aws_settings() {
        let c = with(&[("FORTIFILE_DATA_DIR", "/srv/ff")]).unwrap();
        assert_eq!(c.storage, StorageSpec::Local(PathBuf::from("/srv/ff/files")));
        assert_eq!(c.max_upload_bytes, 100 * 1024 * 1024);
        let c = with(&[
            ("FORTIFILE_STORAGE", "s3://docs-bucket/fortifile/prod/"),
            ("AWS_ENDPOINT_URL", "http://127.0.0.1:9000"),
            ("AWS_SECRET_ACCESS_KEY", "very-secret-key"),
        ])
        .unwrap();
        let StorageSpec::S3 { bucket, prefix, settings } = &c.storage else { panic!("not s3") };
        assert_eq!((bucket.as_str(), prefix.as_str()), ("docs-bucket", "fortifile/prod"));
        assert_eq!(settings.0.len(), 2);
        assert!(!format!("{c:?}").contains("very-secret-key"), "credentials never reach Debug output");
    }

    #[test]
    fn highlight_thresholds_default_to_the_brief_and_can_be_changed() {
        let c = with(&[("FORTIFILE_HIGHLIGHT_BULK_DOWNLOADS", "100/5")]).unwrap();
        assert_eq!(c.highlights.failed_logins, Threshold { count: 5, minutes: 15 });
        assert_eq!(c.highlights.mac_denials, Threshold { count: 3, minutes: 60 });
        assert_eq!(c.highlights.bulk_downloads, Threshold { count: 100, minutes: 5 });
    }

    #[test]
    fn audit_settings_default_to_seven_years_and_hourly_checkpoints_and_take_a_syslog_receiver() {
        let c = with(&[]).unwrap();
        assert_eq!(c.audit.retention_days, 2557);
        assert_eq!(c.audit.checkpoint_every, Duration::from_secs(3600));
        assert!(c.audit.syslog.is_none());
        let c =
            with(&[("FORTIFILE_AUDIT_SYSLOG", "udp://[::1]:5514"), ("FORTIFILE_AUDIT_RETENTION_DAYS", "365")]).unwrap();
        let target = c.audit.syslog.unwrap();
        assert_eq!((target.transport, target.host.as_str(), target.port), (SyslogTransport::Udp, "::1", 5514));
        assert_eq!(c.audit.retention_days, 365);
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

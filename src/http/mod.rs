//! What handlers use: the shared state ([`AppState`]), the one error type, the
//! extractors, the reply shapes, the route builder and its guard, and the
//! cross-cutting middleware. The route table itself lives above every handler,
//! in `crate::app`, so that nothing a handler imports imports the handlers.

pub mod apidoc;
pub mod client;
pub mod error;
pub mod guard;
pub mod idempotency;
pub mod input;
pub mod json;
pub mod middleware;
pub mod params;
pub mod ratelimit;
pub mod reply;
pub mod routes;

use std::sync::{
    Arc,
    atomic::{AtomicBool, Ordering},
};

use crate::{
    audit::names::LoginNames, auth::password::Passwords, clock::Clock, config::Config, db::Database, files::Vault,
};
pub use routes::{Access, RouteRule, Routes};

/// What every handler can reach: one shared [`Shared`], so that the layers
/// and extractors that take the state per request copy one pointer.
#[derive(Clone)]
pub struct AppState(Arc<Shared>);

impl std::ops::Deref for AppState {
    type Target = Shared;

    fn deref(&self) -> &Shared {
        &self.0
    }
}

/// The server's state, built once by [`AppState::new`].
pub struct Shared {
    pub db: Database,
    pub config: Arc<Config>,
    pub passwords: Passwords,
    pub clock: Arc<dyn Clock>,
    pub files: Arc<Vault>,
    /// Keyed hashes of names typed at login that match no account.
    pub login_names: LoginNames,
    /// Signs the device cookies that exempt known browsers from the address limit.
    pub devices: crate::auth::lockout::Devices,
    /// The WebAuthn relying party, or why passkeys are unavailable.
    pub passkeys: Arc<Result<webauthn_rs::Webauthn, String>>,
    /// This instance's request rate limits.
    pub limits: Arc<ratelimit::RateLimits>,
    /// Keys the fingerprints of requests sent with an `Idempotency-Key`.
    pub fingerprints: idempotency::Fingerprints,
    /// Signs the audit chain's checkpoints.
    pub audit_key: Arc<crate::audit::checkpoint::AuditKey>,
    /// Whether this instance still wants new work (`/readyz`).
    pub readiness: Readiness,
}

/// Set once at shutdown: from then on `/readyz` answers 503 so that a load
/// balancer stops sending, while requests that still arrive are served.
#[derive(Clone, Debug, Default)]
pub struct Readiness(Arc<AtomicBool>);

impl Readiness {
    pub fn drain(&self) {
        self.0.store(true, Ordering::Release);
    }

    pub fn is_draining(&self) -> bool {
        self.0.load(Ordering::Acquire)
    }
}

impl AppState {
    /// The state of a server on `db`: opens the file vault (master key and
    /// storage) and the password hasher, and derives the keys the log needs.
    pub async fn new(db: Database, config: Config, clock: Arc<dyn Clock>) -> anyhow::Result<AppState> {
        let files = Vault::open(&config)?;
        let login_names = LoginNames::new(&files.master.derive(crate::audit::names::PURPOSE));
        let passkeys = crate::auth::mfa::passkeys::relying_party(&config);
        match &passkeys {
            Ok(_) => tracing::info!("passkeys available"),
            Err(why) => tracing::warn!("passkeys unavailable: {why}"),
        }
        let audit_key = crate::audit::checkpoint::AuditKey::load(
            config.audit.signing_key.as_ref(),
            &config.audit_signing_key_file(),
        )?;
        let passwords = Passwords::new().await?;
        let limits = ratelimit::RateLimits::new(config.rate_limit, config.anon_rate_limit, clock.clone());
        let files_master_device_key = files.master.derive(crate::auth::lockout::DEVICE_PURPOSE);
        let fingerprints = idempotency::Fingerprints::new(&files.master.derive(idempotency::PURPOSE));
        Ok(AppState(Arc::new(Shared {
            db,
            config: Arc::new(config),
            passwords,
            clock,
            files,
            login_names,
            devices: crate::auth::lockout::Devices::new(&files_master_device_key),
            passkeys: Arc::new(passkeys),
            limits: Arc::new(limits),
            fingerprints,
            audit_key: Arc::new(audit_key),
            readiness: Readiness::default(),
        })))
    }
}

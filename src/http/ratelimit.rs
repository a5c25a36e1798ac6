//! Request rate limits (seed 001): `FORTIFILE_RATE_LIMIT` per session or API
//! key, `FORTIFILE_ANON_RATE_LIMIT` per client address for requests without a
//! credential. Over a limit the answer is 429 with `Retry-After`.
//!
//! A credential earns its own bucket alone only once it proves real: a request
//! that presents one the guard has not verified lately is charged to its
//! address as well, up front, before any work (a session lookup, a CSRF
//! refusal's audit row). So inventing a new key or cookie per request does not
//! escape the address limit, and a signed-in browser does not use up its
//! office's address budget. IPv6 addresses are counted per /64, the block one
//! subscriber gets.
//!
//! The buckets are GCRA (`governor`) on the server's injected clock, so a test
//! moves time instead of sleeping. They live in this instance's memory: behind
//! a balancer each instance counts on its own. What protects accounts (login
//! lockout) is in PostgreSQL and holds across instances; this only keeps one
//! client from flooding a server.

use std::{
    net::{IpAddr, Ipv6Addr, SocketAddr},
    num::NonZeroU32,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use axum::{
    extract::{ConnectInfo, Request, State},
    http::{Extensions, HeaderMap, Method, header},
    middleware::Next,
    response::{IntoResponse, Response},
};
use dashmap::DashMap;
use governor::{Quota, RateLimiter, middleware::NoOpMiddleware, nanos::Nanos, state::keyed::DashMapStateStore};
use ring::digest;

use super::{AppState, client::client_ip, error::AppError};
use crate::{auth::session, clock::Clock, config::RateLimit};

/// The server's clock, as governor reads time.
#[derive(Clone)]
struct ServerClock(Arc<dyn Clock>);

impl governor::clock::Clock for ServerClock {
    type Instant = Nanos;

    fn now(&self) -> Nanos {
        Nanos::from(u64::try_from(self.0.now().unix_timestamp_nanos()).unwrap_or(0))
    }
}

type Limiter<K> = RateLimiter<K, DashMapStateStore<K>, ServerClock, NoOpMiddleware<Nanos>>;

/// Forget buckets back at full every this many checks, so idle clients cost
/// no memory.
const TIDY_EVERY: u64 = 4096;

/// How long a credential the guard verified counts as verified here.
const VERIFIED_FOR: Duration = Duration::from_secs(600);

/// This instance's request buckets.
pub struct RateLimits {
    credentialed: Option<(Limiter<[u8; 32]>, RateLimit)>,
    anonymous: Option<(Limiter<IpAddr>, RateLimit)>,
    /// Credentials (their SHA-256) the guard verified lately, with the time
    /// (server clock, nanoseconds) until which they count as verified. Only
    /// verified credentials get in, so its size is bounded by live sessions.
    verified: DashMap<[u8; 32], u64>,
    clock: ServerClock,
    checks: AtomicU64,
}

/// The credential a request presented (its SHA-256), for the guard to mark
/// verified once it opens.
#[derive(Clone, Copy)]
pub struct Presented([u8; 32]);

fn limiter<K: std::hash::Hash + Eq + Clone>(
    limit: Option<RateLimit>,
    clock: &ServerClock,
) -> Option<(Limiter<K>, RateLimit)> {
    let limit = limit?;
    let quota = Quota::with_period(Duration::from_secs(limit.seconds.into()) / limit.requests)?
        .allow_burst(NonZeroU32::new(limit.requests)?);
    Some((RateLimiter::new(quota, DashMapStateStore::default(), clock.clone()), limit))
}

impl RateLimits {
    pub fn new(credentialed: Option<RateLimit>, anonymous: Option<RateLimit>, clock: Arc<dyn Clock>) -> Self {
        let clock = ServerClock(clock);
        RateLimits {
            credentialed: limiter(credentialed, &clock),
            anonymous: limiter(anonymous, &clock),
            verified: DashMap::new(),
            clock,
            checks: AtomicU64::new(0),
        }
    }

    fn now(&self) -> u64 {
        governor::clock::Clock::now(&self.clock).as_u64()
    }

    /// The guard opened a session or key with `presented`: for a while its
    /// requests are charged to it alone.
    pub fn verified(&self, presented: Presented) {
        if self.anonymous.is_some() {
            self.verified.insert(presented.0, self.now() + VERIFIED_FOR.as_nanos() as u64);
        }
    }

    fn is_verified(&self, hash: &[u8; 32]) -> bool {
        self.verified.get(hash).is_some_and(|until| *until > self.now())
    }

    fn tidy(&self) {
        if self.checks.fetch_add(1, Ordering::Relaxed) % TIDY_EVERY == TIDY_EVERY - 1 {
            if let Some((l, _)) = &self.credentialed {
                l.retain_recent();
                l.shrink_to_fit();
            }
            if let Some((l, _)) = &self.anonymous {
                l.retain_recent();
                l.shrink_to_fit();
            }
            let now = self.now();
            self.verified.retain(|_, until| *until > now);
        }
    }
}

/// The credential a request presents, hashed (the bucket never holds it).
fn credential(state: &AppState, headers: &HeaderMap) -> Option<[u8; 32]> {
    let bearer =
        headers.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok()).and_then(|v| v.strip_prefix("Bearer "));
    let hash = match (bearer, session::from_headers(&state.config, headers)) {
        (Some(key), _) => digest::digest(&digest::SHA256, key.trim().as_bytes()).as_ref().to_vec(),
        (None, Some(cookie)) => cookie.token_hash(),
        (None, None) => return None,
    };
    hash.try_into().ok()
}

/// Static assets and the health probes are not counted (reading them only).
fn exempt(method: &Method, path: &str) -> bool {
    matches!(*method, Method::GET | Method::HEAD)
        && matches!(path, "/static/app.css" | "/static/app.js" | "/healthz" | "/readyz")
}

/// The bucket of a client address: an IPv4 address alone, an IPv6 address by
/// its /64 (an IPv4-mapped one as the IPv4 address).
pub fn address_bucket(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => IpAddr::V6(Ipv6Addr::from(u128::from(v6) & !((1u128 << 64) - 1))),
        },
        v4 => v4,
    }
}

fn refusal(state: &AppState, not_until: governor::NotUntil<Nanos>, limit: &RateLimit) -> AppError {
    let wait = not_until.wait_time_from(Nanos::from(state.limits.now())).as_secs_f64().ceil().max(1.0) as u64;
    AppError::RateLimited { retry_after_secs: wait, requests: limit.requests, seconds: limit.seconds }
}

/// Charges the request's client address; 429 once its bucket is empty.
fn charge_address(state: &AppState, headers: &HeaderMap, extensions: &Extensions) -> Result<(), AppError> {
    let Some((limiter, limit)) = state.limits.anonymous.as_ref() else { return Ok(()) };
    let Some(peer) = extensions.get::<ConnectInfo<SocketAddr>>().map(|ci| ci.0.ip()) else { return Ok(()) };
    let ip = address_bucket(client_ip(peer, headers, &state.config.trusted_proxies));
    limiter.check_key(&ip).map_err(|not_until| refusal(state, not_until, limit))
}

/// The middleware: 429 with `Retry-After` once one of the request's buckets
/// is empty: its credential's if it presents one, and its address's unless
/// that credential was verified lately.
pub async fn limit(State(state): State<AppState>, mut req: Request, next: Next) -> Response {
    if exempt(req.method(), req.uri().path()) {
        return next.run(req).await;
    }
    let limits = &state.limits;
    limits.tidy();
    let presented = credential(&state, req.headers());
    if let (Some(hash), Some((limiter, limit))) = (&presented, limits.credentialed.as_ref())
        && let Err(not_until) = limiter.check_key(hash)
    {
        return refusal(&state, not_until, limit).into_response();
    }
    if !presented.is_some_and(|hash| limits.is_verified(&hash))
        && let Err(e) = charge_address(&state, req.headers(), req.extensions())
    {
        return e.into_response();
    }
    if let Some(hash) = presented {
        req.extensions_mut().insert(Presented(hash));
    }
    next.run(req).await
}

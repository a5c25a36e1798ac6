//! Request rate limits (seed 001): `FORTIFILE_RATE_LIMIT` per session or API
//! key, `FORTIFILE_ANON_RATE_LIMIT` per client address for requests without a
//! credential. Over a limit the answer is 429 with `Retry-After`.
//!
//! The buckets are GCRA (`governor`) on the server's injected clock, so a test
//! moves time instead of sleeping. They live in this instance's memory: behind
//! a balancer each instance counts on its own. What protects accounts (login
//! lockout) is in PostgreSQL and holds across instances; this only keeps one
//! client from flooding a server.

use std::{
    net::{IpAddr, SocketAddr},
    num::NonZeroU32,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use axum::{
    extract::{ConnectInfo, Request, State},
    http::{HeaderMap, header},
    middleware::Next,
    response::{IntoResponse, Response},
};
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

/// This instance's request buckets.
pub struct RateLimits {
    credentialed: Option<(Limiter<[u8; 32]>, RateLimit)>,
    anonymous: Option<(Limiter<IpAddr>, RateLimit)>,
    checks: AtomicU64,
}

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
            checks: AtomicU64::new(0),
        }
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

/// Static assets and the health probes are not counted.
fn exempt(path: &str) -> bool {
    path.starts_with("/static/") || path == "/healthz" || path == "/readyz"
}

/// The middleware: 429 with `Retry-After` once the request's bucket is empty.
pub async fn limit(State(state): State<AppState>, req: Request, next: Next) -> Response {
    if exempt(req.uri().path()) {
        return next.run(req).await;
    }
    let limits = &state.limits;
    limits.tidy();
    let outcome = match credential(&state, req.headers()) {
        Some(key) => limits.credentialed.as_ref().map(|(l, lim)| (l.check_key(&key), lim)),
        None => {
            let peer = req.extensions().get::<ConnectInfo<SocketAddr>>().map(|ci| ci.0.ip());
            let ip = peer.map(|p| client_ip(p, req.headers(), &state.config.trusted_proxies));
            match (ip, limits.anonymous.as_ref()) {
                (Some(ip), Some((l, lim))) => Some((l.check_key(&ip), lim)),
                _ => None,
            }
        }
    };
    if let Some((Err(not_until), limit)) = outcome {
        let now = governor::clock::Clock::now(&ServerClock(state.clock.clone()));
        let wait = not_until.wait_time_from(now).as_secs_f64().ceil().max(1.0) as u64;
        return AppError::RateLimited { retry_after_secs: wait, requests: limit.requests, seconds: limit.seconds }
            .into_response();
    }
    next.run(req).await
}

//! `Idempotency-Key` on the routes that create something (IETF draft "The
//! Idempotency-Key HTTP Header Field", Stripe's semantics).
//!
//! A create sent with a key claims it in the request's own transaction before
//! acting: the claim row commits with the action or not at all, so a retry can
//! never run an action twice, and a key never names an action that did not
//! happen. Right after the commit the answer (status and body) is stored on the
//! row; a retry with the same key and the same request gets it back with
//! `Idempotency-Replayed: true`, the same key with a different request is 422,
//! and a retry while the first is still running is 409. Keys live for 24 hours
//! in the tenant's rows (row-level security) and are swept after that.
//!
//! The fingerprint is an HMAC-SHA256, under a key derived from the master key,
//! of the method, the path with its query and the body: a create's body may
//! hold a password (`POST /api/users`), and whoever reads the table (a backup,
//! a replica) must not be able to test guesses against it. An upload's body is
//! streamed, so its handler claims the key once the stored bytes' SHA-256 is
//! known (see [`Idempotency::claim`]).
//!
//! A refusal is not kept: one answered after the claim committed (a refusal
//! commits its audit row) gives the key back, so the retry is decided again.
//! A success whose answer is larger than [`ANSWER_LIMIT`] (none is) is kept
//! without its body: a replay gets its status and `Location`.

use axum::{
    body::{Body, to_bytes},
    http::{HeaderMap, HeaderName, HeaderValue, StatusCode, header},
    response::{IntoResponse, Response},
};
use ring::hmac;
use uuid::Uuid;

use super::{AppState, error::AppError};
use crate::db::TenantTx;

pub const HEADER: HeaderName = HeaderName::from_static("idempotency-key");
pub const REPLAYED: HeaderName = HeaderName::from_static("idempotency-replayed");

/// How long a key and its answer are kept.
pub const KEEP: time::Duration = time::Duration::hours(24);

/// The largest answer kept for a replay (creates answer small JSON).
const ANSWER_LIMIT: usize = 256 * 1024;

/// Parts of an answer that are shown once and never stored: an API key's
/// secret. A replay of its creation carries everything else.
const WITHHELD: &[(&str, &str)] = &[("apiKey", "key")];

/// What [`crate::files::MasterKey::derive`] derives the fingerprint key for.
pub const PURPOSE: &str = "idempotency-fingerprint";

/// The server's key for request fingerprints. Its `Debug` shows nothing.
#[derive(Clone)]
pub struct Fingerprints(hmac::Key);

impl Fingerprints {
    pub fn new(key: &[u8; 32]) -> Self {
        Fingerprints(hmac::Key::new(hmac::HMAC_SHA256, key))
    }
}

impl std::fmt::Debug for Fingerprints {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Fingerprints([redacted])")
    }
}

/// The key a create request came with, and whose it is.
#[derive(Clone)]
pub struct Idempotency {
    /// The user, or the API key the request was made with.
    principal: Uuid,
    key: String,
    method: String,
    /// Path and query, as sent.
    target: String,
    /// This request's claim: only its own answer is stored on its row.
    token: Uuid,
}

impl std::fmt::Debug for Idempotency {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Idempotency").field("principal", &self.principal).field("target", &self.target).finish()
    }
}

impl Idempotency {
    /// The request's `Idempotency-Key`, if it sent one: 1 to 255 visible ASCII
    /// characters, else 422.
    pub fn from_request(
        headers: &HeaderMap,
        principal: Uuid,
        method: &str,
        target: &str,
    ) -> Result<Option<Idempotency>, AppError> {
        let mut values = headers.get_all(&HEADER).iter();
        let Some(value) = values.next() else { return Ok(None) };
        if values.next().is_some() {
            return Err(AppError::invalid("Idempotency-Key", "send the header once"));
        }
        let key =
            value.to_str().ok().filter(|k| (1..=255).contains(&k.len()) && k.bytes().all(|b| b.is_ascii_graphic()));
        let Some(key) = key else {
            return Err(AppError::invalid("Idempotency-Key", "must be 1 to 255 visible ASCII characters"));
        };
        Ok(Some(Idempotency {
            principal,
            key: key.to_string(),
            method: method.to_string(),
            target: target.to_string(),
            token: Uuid::new_v4(),
        }))
    }

    /// The fingerprint of this request with `body` (a JSON body as sent, or an
    /// upload's summary: its bytes' SHA-256 and its form fields).
    fn fingerprint(&self, key: &Fingerprints, body: &[u8]) -> [u8; 32] {
        let mut ctx = hmac::Context::with_key(&key.0);
        for part in [self.method.as_bytes(), self.target.as_bytes(), body] {
            ctx.update(&(part.len() as u64).to_be_bytes());
            ctx.update(part);
        }
        ctx.sign().as_ref().try_into().expect("HMAC-SHA256 is 32 bytes")
    }

    /// Claims the key for the request with `body` in `tx`, the transaction
    /// the action will commit in.
    /// `Ok(None)`: go on (the claim commits with the action). `Ok(Some(answer))`:
    /// the stored answer of the first request, to send instead of acting.
    /// 409 while the first request with this key is still running, 422 when the
    /// key was used for a different request.
    pub async fn claim(&self, tx: &mut TenantTx, state: &AppState, body: &[u8]) -> Result<Option<Response>, AppError> {
        let fingerprint = self.fingerprint(&state.fingerprints, body);
        let now = state.clock.now();
        // One request per key at a time, across instances: the second is told
        // at once instead of waiting on the first's uncommitted row.
        let lock = format!("idempotency:{}:{}:{}", tx.tenant_id(), self.principal, self.key);
        let (locked,): (bool,) = sqlx::query_as("SELECT pg_try_advisory_xact_lock(hashtextextended($1, 0))")
            .bind(&lock)
            .fetch_one(tx.conn())
            .await?;
        if !locked {
            return Err(still_running());
        }
        type Stored = (Vec<u8>, Option<i16>, Option<String>, Option<String>, Option<Vec<u8>>);
        let stored: Option<Stored> = sqlx::query_as(
            "SELECT fingerprint, status, content_type, location, body FROM idempotency_keys \
             WHERE principal = $1 AND key = $2 AND created_at > $3",
        )
        .bind(self.principal)
        .bind(&self.key)
        .bind(now - KEEP)
        .fetch_optional(tx.conn())
        .await?;
        match stored {
            Some((stored_fingerprint, ..)) if stored_fingerprint != fingerprint => {
                Err(AppError::invalid("Idempotency-Key", "was already used for a different request"))
            }
            Some((_, Some(status), content_type, location, body)) => {
                Ok(Some(replay(status, content_type, location, body.unwrap_or_default())))
            }
            Some((_, None, ..)) => Err(still_running()),
            None => {
                sqlx::query(
                    "INSERT INTO idempotency_keys \
                         (tenant_id, principal, key, token, fingerprint, method, path, created_at) \
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8) \
                     ON CONFLICT (tenant_id, principal, key) DO UPDATE SET \
                         token = EXCLUDED.token, fingerprint = EXCLUDED.fingerprint, method = EXCLUDED.method, \
                         path = EXCLUDED.path, created_at = EXCLUDED.created_at, status = NULL, content_type = NULL, \
                         location = NULL, body = NULL",
                )
                .bind(tx.tenant_id())
                .bind(self.principal)
                .bind(&self.key)
                .bind(self.token)
                .bind(&fingerprint[..])
                .bind(&self.method)
                .bind(&self.target)
                .bind(now)
                .execute(tx.conn())
                .await?;
                Ok(None)
            }
        }
    }

    /// Keeps `response` as the answer to this key, if the request's action
    /// committed its claim, and passes it on. A refusal (4xx: its audit row
    /// committed with the claim, its attempt undone) gives the key back:
    /// nothing was created, so the retry is decided again. Anything else is
    /// kept, a 5xx too: it may have come after the action committed.
    pub async fn record(&self, state: &AppState, tenant: Uuid, response: Response) -> Response {
        if response.status().is_client_error() {
            let released = async {
                let mut tx = state.db.tenant_tx(tenant, None).await?;
                sqlx::query("DELETE FROM idempotency_keys WHERE token = $1 AND status IS NULL")
                    .bind(self.token)
                    .execute(tx.conn())
                    .await?;
                tx.commit().await
            };
            if let Err(e) = released.await {
                // Nothing was created; a retry answers 409 until the key expires.
                tracing::error!(error = %e, "could not give back the key of a refused idempotent request");
            }
            return response;
        }
        let (parts, body) = response.into_parts();
        let fits = axum::body::HttpBody::size_hint(&body).upper().is_some_and(|n| n <= ANSWER_LIMIT as u64);
        let (body, kept) = if fits {
            match to_bytes(body, ANSWER_LIMIT).await {
                Ok(bytes) => (Body::from(bytes.clone()), Some(bytes)),
                Err(e) => {
                    // The action committed; its status and headers still say so.
                    tracing::error!(error = %e, "could not read the answer to an idempotent request");
                    (Body::empty(), None)
                }
            }
        } else {
            // Creates answer small JSON; a larger answer is passed on unread,
            // and a replay gets its status and `Location` without a body.
            (body, None)
        };
        let header = |name: header::HeaderName| parts.headers.get(name).and_then(|v| v.to_str().ok());
        let stored_body = kept.as_ref().map(|bytes| withhold(bytes).unwrap_or_else(|| bytes.to_vec()));
        let stored = async {
            let mut tx = state.db.tenant_tx(tenant, None).await?;
            sqlx::query(
                "UPDATE idempotency_keys SET status = $2, content_type = $3, location = $4, body = $5 \
                 WHERE token = $1 AND status IS NULL",
            )
            .bind(self.token)
            .bind(parts.status.as_u16() as i16)
            .bind(stored_body.as_ref().and(header(header::CONTENT_TYPE)))
            .bind(header(header::LOCATION))
            .bind(stored_body.as_deref().unwrap_or_default())
            .execute(tx.conn())
            .await?;
            tx.commit().await
        };
        if let Err(e) = stored.await {
            // The action stands; a retry answers 409 until the key expires.
            tracing::error!(error = %e, "could not store the answer to an idempotent request");
        }
        Response::from_parts(parts, body)
    }
}

/// Removes what is never stored from a JSON answer; `None` when nothing was.
fn withhold(body: &[u8]) -> Option<Vec<u8>> {
    let mut value: serde_json::Value = serde_json::from_slice(body).ok()?;
    let mut changed = false;
    for (object, field) in WITHHELD {
        if let Some(inner) = value.get_mut(*object).and_then(|o| o.as_object_mut()) {
            changed |= inner.remove(*field).is_some();
        }
    }
    changed.then(|| serde_json::to_vec(&value).expect("a JSON value serializes"))
}

fn still_running() -> AppError {
    AppError::Conflict("A request with this Idempotency-Key is still being processed; retry shortly".into())
}

fn replay(status: i16, content_type: Option<String>, location: Option<String>, body: Vec<u8>) -> Response {
    let status = StatusCode::from_u16(status as u16).unwrap_or(StatusCode::OK);
    let mut response = (status, body).into_response();
    let headers = response.headers_mut();
    headers.insert(REPLAYED, HeaderValue::from_static("true"));
    for (name, value) in [(header::CONTENT_TYPE, content_type), (header::LOCATION, location)] {
        if let Some(value) = value.and_then(|v| HeaderValue::from_str(&v).ok()) {
            headers.insert(name, value);
        } else if name == header::CONTENT_TYPE {
            headers.remove(name);
        }
    }
    response
}

/// Deletes keys older than [`KEEP`] in every tenant; returns how many.
pub async fn sweep(state: &AppState) -> Result<u64, sqlx::Error> {
    let before = state.clock.now() - KEEP;
    let mut swept = 0;
    for tenant in state.db.tenant_ids().await? {
        let mut tx = state.db.tenant_tx(tenant, None).await?;
        swept += sqlx::query("DELETE FROM idempotency_keys WHERE created_at <= $1")
            .bind(before)
            .execute(tx.conn())
            .await?
            .rows_affected();
        tx.commit().await?;
    }
    Ok(swept)
}

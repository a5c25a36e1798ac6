//! The MFA flows, each in the request's one transaction with its audit rows:
//! the login's second step, step-up, TOTP enrolment, removal, and recovery
//! codes.

use serde::{Deserialize, Serialize};
use serde_json::json;
use utoipa::ToSchema;
use uuid::Uuid;
use zeroize::Zeroizing;

use webauthn_rs::prelude::{PublicKeyCredential, RegisterPublicKeyCredential};

use super::{Stage, passkeys, second_step_methods, store, totp::Secret};
use crate::{
    audit::{self, Action, Entry, Outcome, Source},
    auth::{
        Authenticated, lockout,
        session::{self, Opening, SessionCookie},
        user::{self, UserView},
    },
    db::TenantTx,
    http::{AppState, error::AppError},
};

/// Wrong second factors a pending session may make; the last ends it.
pub const MAX_FAILURES: i32 = 5;

/// A second factor: `{"method": "totp" | "recovery", "code": "…"}`, or
/// `{"method": "webauthn", "credential": …}` (the browser's assertion, after a
/// `…/webauthn/start` of the same session).
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FactorInput {
    #[serde(default = "totp_method")]
    pub method: String,
    #[serde(default)]
    pub code: Option<Zeroizing<String>>,
    #[serde(default)]
    pub credential: Option<Box<PublicKeyCredential>>,
}

impl std::fmt::Debug for FactorInput {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FactorInput").field("method", &self.method).field("code", &"[redacted]").finish()
    }
}

fn totp_method() -> String {
    "totp".into()
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Method {
    Totp,
    Recovery,
    Webauthn,
}

impl Method {
    fn parse(input: &FactorInput) -> Result<Method, AppError> {
        let method = match input.method.as_str() {
            "totp" => Method::Totp,
            "recovery" => Method::Recovery,
            "webauthn" => Method::Webauthn,
            _ => return Err(AppError::invalid("method", "expected totp, recovery or webauthn")),
        };
        match (method, &input.code, &input.credential) {
            (Method::Webauthn, None, Some(_)) => Ok(method),
            (Method::Webauthn, _, _) => Err(AppError::invalid("credential", "a passkey answers with a credential")),
            (_, Some(_), None) => Ok(method),
            _ => Err(AppError::invalid("code", "give the code")),
        }
    }

    fn as_str(self) -> &'static str {
        match self {
            Method::Totp => "totp",
            Method::Recovery => "recovery",
            Method::Webauthn => "webauthn",
        }
    }
}

/// Checks `input` against the user's factors (a passkey against the ceremony
/// `who`'s session started); a used recovery code is recorded with how many
/// are left.
async fn check(
    state: &AppState,
    source: &Source,
    tx: &mut TenantTx,
    who: &Authenticated,
    input: &FactorInput,
) -> Result<Result<(), ()>, AppError> {
    let method = Method::parse(input)?;
    let now = state.clock.now();
    let user = who.user_id;
    let code = input.code.as_deref().map(String::as_str).unwrap_or_default();
    match method {
        Method::Totp => {
            let (key, _) = store::sealing_key(&state.files.master);
            Ok(store::accept_totp(tx, &key, user, code, now, false).await?.then_some(()).ok_or(()))
        }
        Method::Webauthn => {
            let rp = relying_party(state)?;
            let Some(credential) = input.credential.as_deref() else { return Ok(Err(())) };
            Ok(passkeys::authenticate(rp, tx, who.session_id, user, credential, now).await?.then_some(()).ok_or(()))
        }
        Method::Recovery => match store::use_recovery_code(tx, user, code, now).await? {
            Some(left) => {
                let entry = Entry::new(Action::AuthMfaRecoveryUsed, Outcome::Success)
                    .user(user)
                    .target("user", user)
                    .details(json!({ "remaining": left }));
                audit::record(tx, source, entry).await?;
                Ok(Ok(()))
            }
            None => Ok(Err(())),
        },
    }
}

async fn count_account_failure(tx: &mut TenantTx, user: Uuid) -> Result<i32, sqlx::Error> {
    sqlx::query_scalar("UPDATE users SET mfa_failures = mfa_failures + 1 WHERE id = $1 RETURNING mfa_failures")
        .bind(user)
        .fetch_optional(tx.conn())
        .await
        .map(|n| n.unwrap_or(0))
}

async fn clear_account_failures(tx: &mut TenantTx, user: Uuid) -> Result<(), sqlx::Error> {
    sqlx::query("UPDATE users SET mfa_failures = 0 WHERE id = $1 AND mfa_failures <> 0")
        .bind(user)
        .execute(tx.conn())
        .await
        .map(|_| ())
}

/// What a wrong second factor answers.
pub struct WrongFactor {
    /// The pending session ended with it (the fifth failure).
    pub ended: bool,
}

/// The login's second step on a pending session: the right factor replaces the
/// pending session by a new full one (a new token: nothing carries over); a
/// wrong one is counted, and the fifth ends the pending session.
pub async fn second_step(
    state: &AppState,
    source: &Source,
    mut tx: TenantTx,
    who: &Authenticated,
    input: FactorInput,
) -> Result<Result<(UserView, SessionCookie, axum::http::HeaderValue), WrongFactor>, AppError> {
    let method = Method::parse(&input)?;
    let now = state.clock.now();
    // The try is counted before the factor is checked, on the session row: of
    // parallel tries on one pending session only the first five are checked.
    let Some(failures) = session::claim_try(&mut tx, who.session_id, MAX_FAILURES).await? else {
        tx.commit().await?;
        return Err(AppError::Unauthorized);
    };
    let held = lockout::check(&mut tx, &state.config, source, who.user_id, now).await?;
    let right = held.is_none() && check(state, source, &mut tx, who, &input).await?.is_ok();
    if !right {
        let account_failures = count_account_failure(&mut tx, who.user_id).await?;
        if held.is_none() {
            lockout::failed(&mut tx, source, who.user_id, now).await?;
        }
        let ended = failures >= MAX_FAILURES;
        if ended {
            session::delete(&mut tx, who.session_id).await?;
        }
        let entry = Entry::new(Action::AuthMfaVerify, Outcome::Fail)
            .user(who.user_id)
            .target("user", who.user_id)
            .details(json!({ "method": method.as_str(), "step": "login", "failures": failures,
                    "accountFailures": account_failures, "sessionEnded": ended,
                    "held": held.map(|h| h.reason()) }));
        audit::record(&mut tx, source, entry).await?;
        tx.commit().await?;
        return Ok(Err(WrongFactor { ended }));
    }
    // Only the request whose delete ended the pending session opens the full one.
    if !session::delete(&mut tx, who.session_id).await? {
        return Err(AppError::Unauthorized);
    }
    let cookie =
        session::create(&mut tx, who.user_id, now, state.config.session_absolute_timeout, source, Opening::Verified)
            .await?;
    user::record_login(&mut tx, who.user_id, now).await?;
    clear_account_failures(&mut tx, who.user_id).await?;
    lockout::succeeded(&mut tx, who.user_id).await?;
    let entry = Entry::new(Action::AuthMfaVerify, Outcome::Success)
        .user(who.user_id)
        .target("user", who.user_id)
        .details(json!({ "method": method.as_str(), "step": "login" }));
    audit::record(&mut tx, source, entry).await?;
    let view = user::load_view(&mut tx, who.user_id, now).await?;
    tx.commit().await?;
    let view = view.ok_or_else(|| anyhow::anyhow!("the user vanished during their second step"))?;
    let device = state.devices.cookie(&state.config, who.tenant_id, who.user_id);
    Ok(Ok((view, cookie, device)))
}

/// `POST /auth/step-up`: a second factor again, so that sensitive actions may
/// go ahead for the next `FORTIFILE_STEP_UP_MINUTES`.
pub async fn step_up(
    state: &AppState,
    source: &Source,
    mut tx: TenantTx,
    who: &Authenticated,
    input: FactorInput,
) -> Result<(), AppError> {
    let method = Method::parse(&input)?;
    if !who.mfa.enabled() {
        return Err(AppError::Conflict("No second factor is enrolled: there is nothing to step up with".into()));
    }
    // Each try claims against the account's login limits first: a stolen
    // session cannot guess codes faster than a password.
    let now = state.clock.now();
    let held = lockout::check(&mut tx, &state.config, source, who.user_id, now).await?;
    let right = held.is_none() && check(state, source, &mut tx, who, &input).await?.is_ok();
    let details = json!({ "method": method.as_str() });
    if !right {
        let account_failures = count_account_failure(&mut tx, who.user_id).await?;
        if held.is_none() {
            lockout::failed(&mut tx, source, who.user_id, now).await?;
        }
        let entry = Entry::new(Action::AuthStepUp, Outcome::Fail).target("user", who.user_id).details(json!({
            "method": method.as_str(), "accountFailures": account_failures, "held": held.map(|h| h.reason())
        }));
        audit::record(&mut tx, source, entry).await?;
        tx.commit().await?;
        return Err(AppError::WrongSecondFactor);
    }
    session::mark_verified(&mut tx, who.session_id, now).await?;
    clear_account_failures(&mut tx, who.user_id).await?;
    lockout::succeeded(&mut tx, who.user_id).await?;
    audit::record(
        &mut tx,
        source,
        Entry::new(Action::AuthStepUp, Outcome::Success).target("user", who.user_id).details(details),
    )
    .await?;
    tx.commit().await?;
    Ok(())
}

/// What `POST /me/mfa/totp/setup` shows once: the secret, its URI, and the URI
/// as a QR code (SVG, rendered here).
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct TotpSetup {
    /// The secret in base32, to type into an authenticator app.
    pub secret: String,
    /// The `otpauth://totp/…` key URI.
    pub uri: String,
    /// The URI as a QR code: an `<svg>` element.
    pub qr_svg: String,
}

impl std::fmt::Debug for TotpSetup {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TotpSetup([redacted])")
    }
}

/// Starts a TOTP enrolment: a fresh secret, stored sealed and unconfirmed
/// (replacing an unconfirmed one) until a code from it confirms it.
pub async fn setup_totp(state: &AppState, mut tx: TenantTx, who: &Authenticated) -> Result<TotpSetup, AppError> {
    let secret = Secret::generate()?;
    let (key, key_id) = store::sealing_key(&state.files.master);
    let sealed = secret.seal(&key, who.tenant_id, who.user_id)?;
    if !store::put_unconfirmed(&mut tx, who.user_id, &sealed, &key_id, state.clock.now()).await? {
        return Err(AppError::Conflict("An authenticator app is already enrolled; remove it first".into()));
    }
    let username: String =
        sqlx::query_scalar("SELECT username FROM users WHERE id = $1").bind(who.user_id).fetch_one(tx.conn()).await?;
    tx.commit().await?;
    Ok(view(&secret, &username)?)
}

fn view(secret: &Secret, username: &str) -> anyhow::Result<TotpSetup> {
    let uri = secret.uri("FortiFile", username);
    let svg = qrcode::QrCode::new(uri.as_bytes())
        .map_err(|e| anyhow::anyhow!("rendering the enrolment QR code: {e}"))?
        .render::<qrcode::render::svg::Color>()
        .min_dimensions(200, 200)
        .build();
    // The SVG element alone, to sit inside a page.
    let qr_svg = svg.find("<svg").map(|at| svg[at..].to_string()).unwrap_or(svg);
    Ok(TotpSetup { secret: secret.base32(), uri, qr_svg })
}

/// The setup view of a secret given back by the setup page (after a wrong code).
pub fn setup_view(secret: &str, username: &str) -> Option<TotpSetup> {
    view(&Secret::from_base32(secret)?, username).ok()
}

/// The first factor of an account: its recovery codes, and every other session
/// ends (they were opened with a password alone, perhaps by someone else).
async fn first_factor(
    tx: &mut TenantTx,
    source: &Source,
    who: &Authenticated,
    now: time::OffsetDateTime,
) -> anyhow::Result<Vec<Zeroizing<String>>> {
    let ended: Vec<Uuid> = sqlx::query_scalar("DELETE FROM sessions WHERE user_id = $1 AND id <> $2 RETURNING id")
        .bind(who.user_id)
        .bind(who.session_id)
        .fetch_all(tx.conn())
        .await?;
    if !ended.is_empty() {
        crate::auth::own::record_ended(tx, source, who.user_id, "first_factor", &ended).await?;
    }
    store::new_recovery_codes(tx, who.user_id, now).await
}

/// What confirming the first factor shows once: the recovery codes.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Enrolled {
    /// `totp` or `webauthn`.
    #[schema(value_type = String)]
    pub method: &'static str,
    /// The recovery codes (`xxxxx-xxxxx`), shown once: only when this is the
    /// account's first factor.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Vec<String>)]
    pub recovery_codes: Option<Vec<Zeroizing<String>>>,
}

/// Confirms the unconfirmed TOTP factor with a code from it. The first factor
/// also gets a set of recovery codes; the confirmation counts as a verification
/// of the session.
pub async fn confirm_totp(
    state: &AppState,
    source: &Source,
    mut tx: TenantTx,
    who: &Authenticated,
    code: &str,
) -> Result<Enrolled, AppError> {
    let now = state.clock.now();
    let (key, _) = store::sealing_key(&state.files.master);
    let first = store::methods(&mut tx, who.user_id).await?.is_empty();
    if !store::accept_totp(&mut tx, &key, who.user_id, code, now, true).await? {
        let entry = Entry::new(Action::AuthMfaEnroll, Outcome::Fail)
            .target("user", who.user_id)
            .details(json!({ "method": "totp", "reason": "wrong_code" }));
        audit::record(&mut tx, source, entry).await?;
        tx.commit().await?;
        return Err(AppError::invalid("code", "that code does not match the authenticator being set up"));
    }
    let recovery_codes = if first { Some(first_factor(&mut tx, source, who, now).await?) } else { None };
    session::mark_verified(&mut tx, who.session_id, now).await?;
    let entry = Entry::new(Action::AuthMfaEnroll, Outcome::Success)
        .target("user", who.user_id)
        .details(json!({ "method": "totp", "recoveryCodesIssued": recovery_codes.is_some() }));
    audit::record(&mut tx, source, entry).await?;
    tx.commit().await?;
    Ok(Enrolled { method: "totp", recovery_codes })
}

/// Removes the caller's TOTP factor; with it gone and no other, the recovery
/// codes go too.
pub async fn remove_totp(source: &Source, mut tx: TenantTx, who: &Authenticated) -> Result<(), AppError> {
    if !store::delete_totp(&mut tx, who.user_id).await? {
        return Err(AppError::NotFound);
    }
    let remaining = store::methods(&mut tx, who.user_id).await?;
    if remaining.is_empty() {
        store::delete_recovery_codes(&mut tx, who.user_id).await?;
    }
    let entry = Entry::new(Action::AuthMfaRemove, Outcome::Success)
        .target("user", who.user_id)
        .details(json!({ "method": "totp", "remaining": remaining }));
    audit::record(&mut tx, source, entry).await?;
    tx.commit().await?;
    Ok(())
}

/// A fresh set of recovery codes, voiding the old one.
pub async fn regenerate_recovery_codes(
    state: &AppState,
    source: &Source,
    mut tx: TenantTx,
    who: &Authenticated,
) -> Result<Vec<Zeroizing<String>>, AppError> {
    if store::methods(&mut tx, who.user_id).await?.is_empty() {
        return Err(AppError::Conflict("Enrol a second factor first; recovery codes come with it".into()));
    }
    let codes = store::new_recovery_codes(&mut tx, who.user_id, state.clock.now()).await?;
    let entry = Entry::new(Action::AuthMfaRecoveryRegenerated, Outcome::Success)
        .target("user", who.user_id)
        .details(json!({ "count": codes.len() }));
    audit::record(&mut tx, source, entry).await?;
    tx.commit().await?;
    Ok(codes)
}

/// `GET /me/mfa`: where the caller stands.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct MfaStatus {
    pub enabled: bool,
    /// The confirmed methods: `totp`, `webauthn`.
    pub methods: Vec<String>,
    /// The strictest factor the caller's roles require: `any`, `totp` (TOTP
    /// or a passkey) or `fido2` (a passkey only); `null`: none.
    #[schema(required = true)]
    pub required: Option<String>,
    pub compliant: bool,
    pub enrollment_required: bool,
    /// The authenticator app, confirmed or being set up; `null`: none.
    #[schema(required = true)]
    pub totp: Option<TotpStatus>,
    pub passkeys: Vec<passkeys::PasskeyView>,
    /// Why passkeys cannot be used on this server, when they cannot.
    #[schema(required = true)]
    pub passkeys_unavailable: Option<String>,
    pub recovery_codes_remaining: i64,
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct TotpStatus {
    pub confirmed: bool,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: time::OffsetDateTime,
    #[serde(with = "time::serde::rfc3339::option")]
    #[schema(required = true)]
    pub last_used_at: Option<time::OffsetDateTime>,
}

pub async fn status(state: &AppState, mut tx: TenantTx, who: &Authenticated) -> Result<MfaStatus, AppError> {
    let totp = store::totp(&mut tx, who.user_id).await?.map(|row| TotpStatus {
        confirmed: row.confirmed_at.is_some(),
        created_at: row.created_at,
        last_used_at: row.last_used_at,
    });
    let recovery_codes_remaining = store::recovery_codes_left(&mut tx, who.user_id).await?;
    let passkeys = passkeys::list(&mut tx, who.user_id).await?;
    tx.commit().await?;
    Ok(MfaStatus {
        enabled: who.mfa.enabled(),
        methods: who.mfa.methods.clone(),
        required: who.mfa.required.clone(),
        compliant: who.mfa.compliant(),
        enrollment_required: who.mfa.stage == Stage::Enrolment,
        totp,
        passkeys,
        passkeys_unavailable: state.passkeys.as_ref().as_ref().err().cloned(),
        recovery_codes_remaining,
    })
}

/// The answer to a right password for a user with a factor: the second step.
pub fn second_step_answer(methods: &[&str]) -> serde_json::Value {
    json!({ "mfaRequired": true, "methods": second_step_methods(methods) })
}

/// The relying party, or a 409 that says why passkeys are unavailable here.
fn relying_party(state: &AppState) -> Result<&webauthn_rs::Webauthn, AppError> {
    state.passkeys.as_ref().as_ref().map_err(|why| AppError::Conflict(format!("Passkeys are unavailable: {why}")))
}

/// Starts a passkey ceremony of the login's second step or of a step-up.
pub async fn start_passkey_check(
    state: &AppState,
    mut tx: TenantTx,
    who: &Authenticated,
) -> Result<webauthn_rs::prelude::RequestChallengeResponse, AppError> {
    let rp = relying_party(state)?;
    let challenge = passkeys::start_authentication(rp, &mut tx, who.session_id, who.user_id, state.clock.now())
        .await?
        .ok_or_else(|| AppError::Conflict("No passkey is registered for this account".into()))?;
    tx.commit().await?;
    Ok(challenge)
}

/// Starts registering a passkey named `name` for the caller.
pub async fn start_passkey_registration(
    state: &AppState,
    mut tx: TenantTx,
    who: &Authenticated,
    name: &str,
) -> Result<webauthn_rs::prelude::CreationChallengeResponse, AppError> {
    let rp = relying_party(state)?;
    let name = crate::directory::clean_name("name", name, 100)?;
    let username: String =
        sqlx::query_scalar("SELECT username FROM users WHERE id = $1").bind(who.user_id).fetch_one(tx.conn()).await?;
    let now = state.clock.now();
    let challenge =
        passkeys::start_registration(rp, &mut tx, who.session_id, who.user_id, &username, &name, now).await?;
    tx.commit().await?;
    Ok(challenge)
}

/// Finishes the caller's passkey registration. The first factor also gets
/// recovery codes; registering counts as a verification of the session.
pub async fn finish_passkey_registration(
    state: &AppState,
    source: &Source,
    mut tx: TenantTx,
    who: &Authenticated,
    credential: &RegisterPublicKeyCredential,
) -> Result<Enrolled, AppError> {
    let rp = relying_party(state)?;
    let now = state.clock.now();
    let first = store::methods(&mut tx, who.user_id).await?.is_empty();
    let (id, name) =
        match passkeys::finish_registration(rp, &mut tx, who.session_id, who.user_id, credential, now).await? {
            Ok(done) => done,
            Err(reason) => {
                let entry = Entry::new(Action::AuthMfaEnroll, Outcome::Fail)
                    .target("user", who.user_id)
                    .details(json!({ "method": "webauthn", "reason": reason }));
                audit::record(&mut tx, source, entry).await?;
                tx.commit().await?;
                return Err(AppError::invalid("credential", reason));
            }
        };
    let recovery_codes = if first { Some(first_factor(&mut tx, source, who, now).await?) } else { None };
    session::mark_verified(&mut tx, who.session_id, now).await?;
    let entry = Entry::new(Action::AuthMfaEnroll, Outcome::Success).target("user", who.user_id).details(json!({
        "method": "webauthn", "passkey": id, "name": name, "recoveryCodesIssued": recovery_codes.is_some()
    }));
    audit::record(&mut tx, source, entry).await?;
    tx.commit().await?;
    Ok(Enrolled { method: "webauthn", recovery_codes })
}

/// Renames one of the caller's passkeys.
pub async fn rename_passkey(mut tx: TenantTx, who: &Authenticated, id: Uuid, name: &str) -> Result<(), AppError> {
    let name = crate::directory::clean_name("name", name, 100)?;
    if !passkeys::rename(&mut tx, who.user_id, id, &name).await? {
        return Err(AppError::NotFound);
    }
    tx.commit().await?;
    Ok(())
}

/// Removes one of the caller's passkeys; with no factor left, the recovery codes go too.
pub async fn remove_passkey(source: &Source, mut tx: TenantTx, who: &Authenticated, id: Uuid) -> Result<(), AppError> {
    if !passkeys::delete(&mut tx, who.user_id, id).await? {
        return Err(AppError::NotFound);
    }
    let remaining = store::methods(&mut tx, who.user_id).await?;
    if remaining.is_empty() {
        store::delete_recovery_codes(&mut tx, who.user_id).await?;
    }
    let entry = Entry::new(Action::AuthMfaRemove, Outcome::Success)
        .target("user", who.user_id)
        .details(json!({ "method": "webauthn", "passkey": id, "remaining": remaining }));
    audit::record(&mut tx, source, entry).await?;
    tx.commit().await?;
    Ok(())
}

//! HTTP handlers for the second factor: the login's second step
//! (`/auth/mfa/*`), step-up (`/auth/step-up`) and the caller's own factors
//! (`/me/mfa/*`). Which sessions reach each, and which need a step-up, is
//! declared in the route table.

use axum::{
    Json,
    extract::State,
    http::{StatusCode, header},
    response::{IntoResponse, Response},
};
use serde::Deserialize;
use serde_json::json;
use utoipa::ToSchema;
use uuid::Uuid;
use webauthn_rs::prelude::{PublicKeyCredential, RegisterPublicKeyCredential};
use zeroize::Zeroizing;

use super::flow::{self, Enrolled, FactorInput, MfaStatus, TotpSetup};
use crate::{
    auth::{Authenticated, session, user::UserView},
    http::{
        AppState,
        apidoc::{Op, Reply},
        client::ClientSource,
        error::AppError,
        guard::Tx,
        json::ApiJson,
        params::ApiPath,
    },
};

/// A TOTP code on its own (`/auth/mfa/totp`, `/me/mfa/totp/confirm`).
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TotpCodeInput {
    #[schema(schema_with = super::schema::totp_code_schema)]
    code: Zeroizing<String>,
}

/// A recovery code on its own (`/auth/mfa/recovery`).
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RecoveryCodeInput {
    #[schema(schema_with = super::schema::recovery_code_schema)]
    code: Zeroizing<String>,
}

async fn second_step(
    state: AppState,
    source: crate::audit::Source,
    who: Authenticated,
    tx: Tx,
    input: FactorInput,
) -> Response {
    match flow::second_step(&state, &source, tx.0, &who, input).await {
        Ok(Ok((user, cookie, device))) => {
            let body = Json(json!({ "user": user, "csrfToken": cookie.csrf_token() }));
            let mut response =
                ([(header::SET_COOKIE, session::set_cookie(&state.config, &cookie))], body).into_response();
            response.headers_mut().append(header::SET_COOKIE, device);
            response
        }
        Ok(Err(wrong)) => {
            let mut response = AppError::WrongSecondFactor.into_response();
            if wrong.ended {
                response.headers_mut().insert(header::SET_COOKIE, session::clear_cookie(&state.config));
            }
            response
        }
        Err(e) => e.into_response(),
    }
}

/// `POST /auth/mfa/totp {code}`.
pub async fn login_totp(
    State(state): State<AppState>,
    ClientSource(source): ClientSource,
    who: Authenticated,
    tx: Tx,
    ApiJson(input): ApiJson<TotpCodeInput>,
) -> Response {
    second_step(state, source, who, tx, FactorInput { method: "totp".into(), code: Some(input.code), credential: None })
        .await
}

/// `POST /auth/mfa/recovery {code}`.
pub async fn login_recovery(
    State(state): State<AppState>,
    ClientSource(source): ClientSource,
    who: Authenticated,
    tx: Tx,
    ApiJson(input): ApiJson<RecoveryCodeInput>,
) -> Response {
    second_step(
        state,
        source,
        who,
        tx,
        FactorInput { method: "recovery".into(), code: Some(input.code), credential: None },
    )
    .await
}

/// `POST /auth/step-up {method, code}`.
pub async fn step_up(
    State(state): State<AppState>,
    ClientSource(source): ClientSource,
    who: Authenticated,
    Tx(tx): Tx,
    ApiJson(input): ApiJson<FactorInput>,
) -> Result<Response, AppError> {
    flow::step_up(&state, &source, tx, &who, input).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// `POST /me/mfa/totp/setup`: the secret, its URI and QR code, shown once.
pub async fn totp_setup(State(state): State<AppState>, who: Authenticated, Tx(tx): Tx) -> Result<Response, AppError> {
    let setup = flow::setup_totp(&state, tx, &who).await?;
    Ok((StatusCode::CREATED, Json(json!({ "totp": setup }))).into_response())
}

/// `POST /me/mfa/totp/confirm {code}`: the recovery codes, when it is the first factor.
pub async fn totp_confirm(
    State(state): State<AppState>,
    ClientSource(source): ClientSource,
    who: Authenticated,
    Tx(tx): Tx,
    ApiJson(input): ApiJson<TotpCodeInput>,
) -> Result<Response, AppError> {
    let enrolled = flow::confirm_totp(&state, &source, tx, &who, &input.code).await?;
    Ok(Json(json!({ "enrolled": enrolled })).into_response())
}

/// `DELETE /me/mfa/totp`.
pub async fn totp_remove(
    ClientSource(source): ClientSource,
    who: Authenticated,
    Tx(tx): Tx,
) -> Result<Response, AppError> {
    flow::remove_totp(&source, tx, &who).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// `POST /me/mfa/recovery-codes`: a new set, shown once; the old set is void.
pub async fn recovery_regenerate(
    State(state): State<AppState>,
    ClientSource(source): ClientSource,
    who: Authenticated,
    Tx(tx): Tx,
) -> Result<Response, AppError> {
    let codes = flow::regenerate_recovery_codes(&state, &source, tx, &who).await?;
    Ok((StatusCode::CREATED, Json(json!({ "recoveryCodes": codes }))).into_response())
}

/// A passkey's answer (`/auth/mfa/webauthn/finish`).
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AssertionInput {
    /// The browser's `PublicKeyCredential` (WebAuthn JSON) from
    /// `navigator.credentials.get`, after `POST /auth/mfa/webauthn/start`.
    #[schema(value_type = Object)]
    credential: Box<PublicKeyCredential>,
}

/// `POST /auth/mfa/webauthn/start` (login) and `POST /auth/step-up/webauthn/start`:
/// the browser's `PublicKeyCredentialRequestOptions` (`{"publicKey": …}`).
pub async fn passkey_start(
    State(state): State<AppState>,
    who: Authenticated,
    Tx(tx): Tx,
) -> Result<Response, AppError> {
    Ok(Json(flow::start_passkey_check(&state, tx, &who).await?).into_response())
}

/// `POST /auth/mfa/webauthn/finish {credential}`.
pub async fn login_passkey(
    State(state): State<AppState>,
    ClientSource(source): ClientSource,
    who: Authenticated,
    tx: Tx,
    ApiJson(input): ApiJson<AssertionInput>,
) -> Response {
    let factor = FactorInput { method: "webauthn".into(), code: None, credential: Some(input.credential) };
    second_step(state, source, who, tx, factor).await
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NameInput {
    /// The passkey's name: 1 to 100 characters once trimmed, without control
    /// characters; absent or `null`: `Passkey`.
    #[serde(default)]
    #[schema(pattern = "@text-100")]
    name: Option<String>,
}

/// `POST /me/mfa/webauthn/register/start {name?}`: `{"publicKey": …}` for `navigator.credentials.create`.
pub async fn passkey_register_start(
    State(state): State<AppState>,
    who: Authenticated,
    Tx(tx): Tx,
    ApiJson(input): ApiJson<NameInput>,
) -> Result<Response, AppError> {
    let name = input.name.unwrap_or_else(|| "Passkey".into());
    Ok(Json(flow::start_passkey_registration(&state, tx, &who, &name).await?).into_response())
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RegistrationInput {
    /// The browser's `PublicKeyCredential` (WebAuthn JSON) from
    /// `navigator.credentials.create`, after `POST /me/mfa/webauthn/register/start`.
    #[schema(value_type = Object)]
    credential: Box<RegisterPublicKeyCredential>,
}

/// `POST /me/mfa/webauthn/register/finish {credential}`.
pub async fn passkey_register_finish(
    State(state): State<AppState>,
    ClientSource(source): ClientSource,
    who: Authenticated,
    Tx(tx): Tx,
    ApiJson(input): ApiJson<RegistrationInput>,
) -> Result<Response, AppError> {
    let enrolled = flow::finish_passkey_registration(&state, &source, tx, &who, &input.credential).await?;
    Ok((StatusCode::CREATED, Json(json!({ "enrolled": enrolled }))).into_response())
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RenameInput {
    /// 1 to 100 characters once trimmed, without control characters.
    #[schema(pattern = "@text-100")]
    name: String,
}

/// `PATCH /me/mfa/webauthn/{id} {name}`.
pub async fn passkey_rename(
    who: Authenticated,
    Tx(tx): Tx,
    ApiPath(id): ApiPath<Uuid>,
    ApiJson(input): ApiJson<RenameInput>,
) -> Result<Response, AppError> {
    flow::rename_passkey(tx, &who, id, &input.name).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// `DELETE /me/mfa/webauthn/{id}`.
pub async fn passkey_remove(
    ClientSource(source): ClientSource,
    who: Authenticated,
    Tx(tx): Tx,
    ApiPath(id): ApiPath<Uuid>,
) -> Result<Response, AppError> {
    flow::remove_passkey(&source, tx, &who, id).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// The answer of a right second factor: the full session (cookie in `Set-Cookie`).
fn signed_in() -> Reply {
    Reply::new()
        .field::<UserView>("user")
        .field::<String>("csrfToken")
        .describe("Signed in: the pending session is replaced by a full one (a new cookie)")
}

/// WebAuthn options or credentials as webauthn-rs writes and reads them: JSON
/// objects this document leaves free-form.
pub struct WebauthnJson;

impl utoipa::PartialSchema for WebauthnJson {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        utoipa::openapi::ObjectBuilder::new().schema_type(utoipa::openapi::Type::Object).into()
    }
}

impl ToSchema for WebauthnJson {
    fn name() -> std::borrow::Cow<'static, str> {
        "WebauthnJson".into()
    }
}

/// The browser's WebAuthn options, `{"publicKey": …}`.
fn webauthn_options(description: &str) -> Reply {
    Reply::new().field::<WebauthnJson>("publicKey").describe(description)
}

/// This module's operations, for the OpenAPI document.
pub fn api() -> Vec<Op> {
    const SECOND_STEP: &str = "For a pending session (after `POST /auth/login` answered `mfaRequired`). Each \
                               wrong factor counts against the session (the fifth ends it and clears its \
                               cookie) and against the account's login limits; an attempt held by those \
                               limits answers like a wrong factor.";
    vec![
        Op::post("/auth/mfa/totp", "Second step: a TOTP code")
            .describe(SECOND_STEP)
            .json::<TotpCodeInput>()
            .answers(200, signed_in())
            .error(
                401,
                "the code is wrong or already used, or the attempt is held (the fifth ends the pending session)",
            ),
        Op::post("/auth/mfa/recovery", "Second step: a recovery code")
            .describe(SECOND_STEP)
            .json::<RecoveryCodeInput>()
            .answers(200, signed_in())
            .error(
                401,
                "the code is wrong or already used, or the attempt is held (the fifth ends the pending session)",
            ),
        Op::post("/auth/mfa/webauthn/start", "Second step: start a passkey check")
            .describe("The options for `navigator.credentials.get`; the ceremony is kept for five minutes.")
            .answers(200, webauthn_options("`PublicKeyCredentialRequestOptions` for `navigator.credentials.get`"))
            .error(409, "passkeys are unavailable on this server, or the account has no passkey"),
        Op::post("/auth/mfa/webauthn/finish", "Second step: a passkey's answer")
            .describe(SECOND_STEP)
            .json::<AssertionInput>()
            .answers(200, signed_in())
            .error(
                401,
                "the assertion does not verify, no check was started, or the attempt is held (the fifth ends the \
                 pending session)",
            )
            .error(409, "passkeys are unavailable on this server")
            .error(422, "`credential` is not a WebAuthn `PublicKeyCredential`"),
        Op::post("/auth/step-up", "Verify the second factor again")
            .describe(
                "Lets sensitive actions go ahead for the next `FORTIFILE_STEP_UP_MINUTES`. Each try counts \
                 against the account's login limits; a try held by them answers like a wrong factor.",
            )
            .json::<FactorInput>()
            .no_content()
            .error(401, "the code or assertion is wrong or already used (or the try is held)")
            .error(409, "the caller has no second factor to step up with, or passkeys are unavailable here")
            .error(
                422,
                "`method` is not `totp`, `recovery` or `webauthn`, or the `code` or `credential` it needs is missing \
                 or comes with the other",
            ),
        Op::post("/auth/step-up/webauthn/start", "Step-up: start a passkey check")
            .describe("The options for `navigator.credentials.get`; then `POST /auth/step-up` with the credential.")
            .answers(200, webauthn_options("`PublicKeyCredentialRequestOptions` for `navigator.credentials.get`"))
            .error(409, "passkeys are unavailable on this server, or the account has no passkey"),
        Op::get("/me/mfa", "My second factors")
            .describe(
                "Where the caller stands: methods, requirement, TOTP, passkeys, recovery codes left. Browsers \
                 asking for `text/html` get the page.",
            )
            .ok::<MfaStatus>("mfa"),
        Op::post("/me/mfa/totp/setup", "Start enrolling an authenticator app")
            .describe("A fresh secret (replacing one not yet confirmed), shown once; confirm it with `…/totp/confirm`.")
            .created::<TotpSetup>("totp")
            .error(409, "an authenticator app is already enrolled: remove it first"),
        Op::post("/me/mfa/totp/confirm", "Confirm the authenticator app")
            .describe(
                "Confirms the secret being set up with a code from it; this counts as a verification of the \
                 session. For the account's first factor the answer carries recovery codes (shown once) and every \
                 other session ends.",
            )
            .json::<TotpCodeInput>()
            .ok::<Enrolled>("enrolled")
            .error(422, "the code does not match the authenticator being set up, or no setup is pending"),
        Op::delete("/me/mfa/totp", "Remove the authenticator app")
            .describe("With no other factor left, the recovery codes go too.")
            .no_content()
            .error(404, "no authenticator app is enrolled or being set up"),
        Op::post("/me/mfa/recovery-codes", "New recovery codes")
            .describe("A new set (shown once); the old set is void.")
            .created::<Vec<String>>("recoveryCodes")
            .error(409, "no second factor is enrolled: recovery codes come with the first"),
        Op::post("/me/mfa/webauthn/register/start", "Start registering a passkey")
            .describe("The options for `navigator.credentials.create`; the ceremony is kept for five minutes.")
            .json::<NameInput>()
            .answers(200, webauthn_options("`PublicKeyCredentialCreationOptions` for `navigator.credentials.create`"))
            .error(409, "passkeys are unavailable on this server")
            .error(422, "`name` is empty, over 100 characters or holds control characters"),
        Op::post("/me/mfa/webauthn/register/finish", "Finish registering a passkey")
            .describe(
                "Registering counts as a verification of the session. For the account's first factor the answer \
                 carries recovery codes (shown once) and every other session ends.",
            )
            .json::<RegistrationInput>()
            .created::<Enrolled>("enrolled")
            .error(409, "passkeys are unavailable on this server")
            .error(
                422,
                "`credential` is not a WebAuthn `PublicKeyCredential`, no registration is in progress for this \
                 session (or it expired), the authenticator's answer does not verify, or the authenticator is \
                 already registered",
            ),
        Op::patch("/me/mfa/webauthn/{id}", "Rename a passkey")
            .json::<RenameInput>()
            .no_content()
            .error(404, "the caller has no such passkey")
            .error(422, "`name` is empty, over 100 characters or holds control characters"),
        Op::delete("/me/mfa/webauthn/{id}", "Remove a passkey")
            .describe("With no factor left, the recovery codes go too.")
            .no_content()
            .error(404, "the caller has no such passkey"),
    ]
}

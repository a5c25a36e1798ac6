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
use uuid::Uuid;
use webauthn_rs::prelude::{PublicKeyCredential, RegisterPublicKeyCredential};
use zeroize::Zeroizing;

use super::flow::{self, FactorInput};
use crate::{
    auth::{Authenticated, session},
    http::{AppState, client::ClientSource, error::AppError, guard::Tx, json::ApiJson, params::ApiPath},
};

/// A code on its own (`/auth/mfa/totp`, `/auth/mfa/recovery`, `/me/mfa/totp/confirm`).
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CodeInput {
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
    ApiJson(input): ApiJson<CodeInput>,
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
    ApiJson(input): ApiJson<CodeInput>,
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
    ApiJson(input): ApiJson<CodeInput>,
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
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AssertionInput {
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

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NameInput {
    #[serde(default)]
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

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RegistrationInput {
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

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RenameInput {
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

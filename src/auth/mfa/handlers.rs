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
use zeroize::Zeroizing;

use super::flow::{self, FactorInput};
use crate::{
    auth::{Authenticated, session},
    http::{AppState, client::ClientSource, error::AppError, guard::Tx, json::ApiJson},
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
        Ok(Ok((user, cookie))) => {
            let body = Json(json!({ "user": user, "csrfToken": cookie.csrf_token() }));
            ([(header::SET_COOKIE, session::set_cookie(&state.config, &cookie))], body).into_response()
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
    second_step(state, source, who, tx, FactorInput { method: "totp".into(), code: input.code }).await
}

/// `POST /auth/mfa/recovery {code}`.
pub async fn login_recovery(
    State(state): State<AppState>,
    ClientSource(source): ClientSource,
    who: Authenticated,
    tx: Tx,
    ApiJson(input): ApiJson<CodeInput>,
) -> Response {
    second_step(state, source, who, tx, FactorInput { method: "recovery".into(), code: input.code }).await
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

/// `GET /me/mfa`.
pub async fn status(who: Authenticated, Tx(tx): Tx) -> Result<Response, AppError> {
    Ok(Json(json!({ "mfa": flow::status(tx, &who).await? })).into_response())
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

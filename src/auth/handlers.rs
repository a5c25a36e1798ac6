//! HTTP handlers for `/auth/*` and `/me`: parse, call the flow, shape the answer.

use axum::{
    Json,
    extract::State,
    http::{HeaderMap, StatusCode, header},
    response::{IntoResponse, Response},
};
use serde_json::json;

use super::{
    account::{self, LoggedIn, LoginInput, RegisterInput},
    apikeys,
    extractor::{Authenticated, Me},
    mfa, own, session,
};
use crate::http::{AppState, client::ClientSource, error::AppError, guard::Tx, json::ApiJson, params::ApiPath};

pub async fn register(
    State(state): State<AppState>,
    ClientSource(source): ClientSource,
    ApiJson(input): ApiJson<RegisterInput>,
) -> Result<Response, AppError> {
    let user = account::register(&state, &source, input).await?;
    Ok((StatusCode::CREATED, Json(json!({ "user": user }))).into_response())
}

pub async fn login(
    State(state): State<AppState>,
    ClientSource(source): ClientSource,
    headers: HeaderMap,
    ApiJson(input): ApiJson<LoginInput>,
) -> Result<Response, AppError> {
    let (body, cookie, device) = match account::login(&state, &source, input, &headers).await? {
        LoggedIn::Full(user, cookie, device) => {
            (json!({ "user": user, "csrfToken": cookie.csrf_token() }), cookie, Some(device))
        }
        LoggedIn::SecondStep { cookie, methods } => {
            let mut body = mfa::flow::second_step_answer(&methods);
            body["csrfToken"] = cookie.csrf_token().into();
            (body, cookie, None)
        }
    };
    let mut response =
        ([(header::SET_COOKIE, session::set_cookie(&state.config, &cookie))], Json(body)).into_response();
    if let Some(device) = device {
        response.headers_mut().append(header::SET_COOKIE, device);
    }
    Ok(response)
}

pub async fn logout(
    State(state): State<AppState>,
    ClientSource(source): ClientSource,
    who: Authenticated,
    Tx(tx): Tx,
) -> Result<Response, AppError> {
    account::logout(&source, tx, &who).await?;
    Ok((StatusCode::NO_CONTENT, [(header::SET_COOKIE, session::clear_cookie(&state.config))]).into_response())
}

/// `POST /me/password {currentPassword, newPassword}`: every other session ends.
pub async fn change_password(
    State(state): State<AppState>,
    ClientSource(source): ClientSource,
    who: Authenticated,
    Tx(tx): Tx,
    ApiJson(input): ApiJson<own::PasswordChange>,
) -> Result<Response, AppError> {
    let ended = own::change_password(&state, &source, tx, &who, input).await?;
    Ok(Json(json!({ "otherSessionsEnded": ended })).into_response())
}

/// `GET /me/sessions`.
pub async fn sessions(State(state): State<AppState>, who: Authenticated, Tx(mut tx): Tx) -> Result<Response, AppError> {
    let list = own::sessions(&mut tx, who.user_id, Some(who.session_id), state.clock.now()).await?;
    tx.commit().await?;
    Ok(Json(json!({ "sessions": list })).into_response())
}

/// `DELETE /me/sessions/{id}`.
pub async fn end_session(
    ClientSource(source): ClientSource,
    who: Authenticated,
    Tx(tx): Tx,
    ApiPath(id): ApiPath<uuid::Uuid>,
) -> Result<Response, AppError> {
    own::end_own(&source, tx, &who, id).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// `POST /me/sessions/end-others`.
pub async fn end_other_sessions(
    ClientSource(source): ClientSource,
    who: Authenticated,
    Tx(tx): Tx,
) -> Result<Response, AppError> {
    let ended = own::end_others(&source, tx, &who).await?;
    Ok(Json(json!({ "ended": ended })).into_response())
}

/// `POST /me/api-keys {name, expiresAt?, permissions?}`: the key, shown once.
pub async fn create_api_key(
    State(state): State<AppState>,
    ClientSource(source): ClientSource,
    who: Authenticated,
    subject: crate::authz::Subject,
    Tx(tx): Tx,
    ApiJson(input): ApiJson<apikeys::NewKey>,
) -> Result<Response, AppError> {
    let (view, key) = apikeys::create(&state, &source, tx, &who, &subject, input).await?;
    let mut body = serde_json::to_value(&view).map_err(anyhow::Error::from)?;
    body["key"] = key.as_str().into();
    Ok((StatusCode::CREATED, Json(json!({ "apiKey": body }))).into_response())
}

/// `GET /me/api-keys`.
pub async fn api_keys(who: Authenticated, Tx(mut tx): Tx) -> Result<Response, AppError> {
    let keys = apikeys::list(&mut tx, who.user_id).await?;
    tx.commit().await?;
    Ok(Json(json!({ "apiKeys": keys })).into_response())
}

/// `DELETE /me/api-keys/{id}`.
pub async fn revoke_api_key(
    State(state): State<AppState>,
    ClientSource(source): ClientSource,
    who: Authenticated,
    Tx(mut tx): Tx,
    ApiPath(id): ApiPath<uuid::Uuid>,
) -> Result<Response, AppError> {
    apikeys::revoke(&mut tx, &source, who.user_id, id, "owner", state.clock.now()).await?;
    tx.commit().await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// `GET /me`: everything comes from the request's first statement (the guard
/// commits its transaction), so this is one round trip to the database.
pub async fn me(who: Authenticated, Me(me): Me) -> Result<Response, AppError> {
    let mut user = serde_json::to_value(&*me).map_err(anyhow::Error::from)?;
    user["mfa"] = json!({ "methods": who.mfa.methods, "required": who.mfa.required, "compliant": who.mfa.compliant() });
    Ok(Json(json!({ "user": user, "csrfToken": who.csrf_token() })).into_response())
}

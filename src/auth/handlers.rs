//! HTTP handlers for `/auth/*` and `/me`: parse, call the flow, shape the answer.

use axum::{
    Json,
    extract::State,
    http::{HeaderMap, StatusCode, header},
    response::{IntoResponse, Response},
};
use serde_json::json;

use super::{
    account::{self, LoginInput, RegisterInput},
    extractor::Authenticated,
    session, user,
};
use crate::http::{AppState, client::ClientSource, error::AppError, json::ApiJson};

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
    let previous = session::from_headers(&state.config, &headers);
    let (user, cookie) = account::login(&state, &source, input, previous).await?;
    let body = Json(json!({ "user": user, "csrfToken": cookie.csrf_token() }));
    Ok(([(header::SET_COOKIE, session::set_cookie(&state.config, &cookie))], body).into_response())
}

pub async fn logout(
    State(state): State<AppState>,
    ClientSource(source): ClientSource,
    who: Authenticated,
) -> Result<Response, AppError> {
    account::logout(&state, &source, &who).await?;
    Ok((StatusCode::NO_CONTENT, [(header::SET_COOKIE, session::clear_cookie(&state.config))]).into_response())
}

pub async fn me(State(state): State<AppState>, who: Authenticated) -> Result<Response, AppError> {
    let mut tx = state.db.tenant_tx(who.tenant_id, Some(who.user_id)).await?;
    let user = user::load_view(&mut tx, who.user_id, state.clock.now()).await?.ok_or(AppError::Unauthorized)?;
    tx.commit().await?;
    Ok(Json(json!({ "user": user, "csrfToken": who.cookie.csrf_token() })).into_response())
}

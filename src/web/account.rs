//! The account page (`/me` for browsers): who one is, changing the password,
//! and the sessions one is signed in with, with forms that work without script.

use askama::Template;
use axum::{
    extract::State,
    http::HeaderMap,
    response::{IntoResponse, Redirect, Response},
};
use secrecy::SecretString;
use serde::Deserialize;
use uuid::Uuid;

use super::{Nav, accepts, render};
use crate::{
    auth::{
        Authenticated, Me, handlers,
        own::{self, PasswordChange, SessionView},
        user::UserView,
    },
    http::{
        AppState,
        client::ClientSource,
        error::AppError,
        guard::Tx,
        params::{ApiForm, ApiPath, ApiQuery},
    },
};

#[derive(Template)]
#[template(path = "account.html")]
struct AccountPage {
    nav: Nav,
    user: UserView,
    sessions: Vec<SessionView>,
    notice: Option<&'static str>,
    error: Option<&'static str>,
}

#[derive(Debug, Default, Deserialize)]
pub struct Outcome {
    #[serde(default)]
    done: String,
    #[serde(default)]
    error: String,
}

fn messages(q: &Outcome) -> (Option<&'static str>, Option<&'static str>) {
    let notice = match q.done.as_str() {
        "password" => Some("Password changed. Your other sessions have ended."),
        "session" => Some("Session ended."),
        "others" => Some("Every other session ended."),
        _ => None,
    };
    let error = match q.error.as_str() {
        "current_password" => Some("That is not your current password."),
        "new_password" => Some("The new password is too weak or too common; choose a longer one."),
        "not_found" => Some("That session has already ended."),
        _ => None,
    };
    (notice, error)
}

/// `GET /me`: the account page for browsers, `{"user": …}` for programs.
pub async fn page(
    State(state): State<AppState>,
    who: Authenticated,
    me: Me,
    headers: HeaderMap,
    Tx(mut tx): Tx,
    query: Result<ApiQuery<Outcome>, AppError>,
) -> Result<Response, AppError> {
    // Both only read: the transaction ends without a round trip of its own.
    if !accepts(&headers, "text/html") {
        tx.end_read_only().await?;
        return handlers::me(who, me).await;
    }
    let sessions = own::sessions(&mut tx, who.user_id, Some(who.session_id), state.clock.now()).await?;
    tx.end_read_only().await?;
    let (notice, error) = messages(&query.map(|ApiQuery(q)| q).unwrap_or_default());
    let nav = Nav::plain(&me, &who);
    Ok(render(&AccountPage { nav, user: (*me.0).clone(), sessions, notice, error }))
}

#[derive(Deserialize)]
pub struct PasswordForm {
    current_password: SecretString,
    new_password: SecretString,
}

/// `POST /me/form/password`.
pub async fn change_password(
    State(state): State<AppState>,
    ClientSource(source): ClientSource,
    who: Authenticated,
    Tx(tx): Tx,
    ApiForm(form): ApiForm<PasswordForm>,
) -> Response {
    let input = PasswordChange { current_password: form.current_password, new_password: form.new_password };
    match own::change_password(&state, &source, tx, &who, input).await {
        Ok(_) => Redirect::to("/me?done=password").into_response(),
        Err(AppError::Invalid { field, .. }) if field == "currentPassword" => {
            Redirect::to("/me?error=current_password").into_response()
        }
        Err(AppError::Invalid { .. }) => Redirect::to("/me?error=new_password").into_response(),
        Err(e) => e.into_response(),
    }
}

/// `POST /me/form/sessions/{id}/end`.
pub async fn end_session(
    ClientSource(source): ClientSource,
    who: Authenticated,
    Tx(tx): Tx,
    ApiPath(id): ApiPath<Uuid>,
) -> Response {
    match own::end_own(&source, tx, &who, id).await {
        Ok(()) if id == who.session_id => Redirect::to("/login").into_response(),
        Ok(()) => Redirect::to("/me?done=session").into_response(),
        Err(AppError::NotFound) => Redirect::to("/me?error=not_found").into_response(),
        Err(e) => e.into_response(),
    }
}

/// `POST /me/form/sessions/end-others`.
pub async fn end_others(ClientSource(source): ClientSource, who: Authenticated, Tx(tx): Tx) -> Response {
    match own::end_others(&source, tx, &who).await {
        Ok(_) => Redirect::to("/me?done=others").into_response(),
        Err(e) => e.into_response(),
    }
}

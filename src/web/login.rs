//! `GET /login`, its form post (the same flow and audit as `POST /auth/login`),
//! and the logout form on every page.

use askama::Template;
use axum::{
    extract::State,
    http::{HeaderMap, StatusCode, header},
    response::{IntoResponse, Redirect, Response},
};
use secrecy::SecretString;
use serde::Deserialize;

use super::{render, render_status, safe_next};
use crate::{
    auth::{
        Authenticated,
        account::{self, LoggedIn, LoginInput},
        mfa::flow::{self, FactorInput},
        session,
    },
    http::{
        AppState,
        client::ClientSource,
        error::AppError,
        guard::Tx,
        params::{ApiForm, ApiQuery},
    },
};

#[derive(Template)]
#[template(path = "login.html")]
struct LoginPage {
    next: String,
    username: String,
    tenant: String,
    error: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
pub struct NextQuery {
    next: Option<String>,
}

pub async fn page(
    State(state): State<AppState>,
    query: Result<ApiQuery<NextQuery>, AppError>,
    headers: HeaderMap,
) -> Response {
    let q = query.map(|ApiQuery(q)| q).unwrap_or_default();
    let next = safe_next(q.next.as_deref());
    // Already signed in: straight on.
    if session::from_headers(&state.config, &headers).is_some() {
        let mut parts = axum::http::Request::new(()).into_parts().0;
        parts.headers = headers;
        if Authenticated::from_request_parts_ok(&mut parts, &state).await {
            return Redirect::to(&next).into_response();
        }
    }
    render(&LoginPage { next, username: String::new(), tenant: String::new(), error: None })
}

#[derive(Deserialize)]
pub struct LoginForm {
    username: String,
    password: SecretString,
    #[serde(default)]
    tenant: String,
    #[serde(default)]
    next: String,
}

pub async fn submit(
    State(state): State<AppState>,
    ClientSource(source): ClientSource,
    headers: HeaderMap,
    form: Result<ApiForm<LoginForm>, AppError>,
) -> Response {
    let form = match form {
        Ok(ApiForm(form)) => form,
        Err(e) => {
            let error = match e {
                AppError::Invalid { .. } => e.to_string(),
                _ => "Fill in your username and password".into(),
            };
            let page =
                LoginPage { next: "/".into(), username: String::new(), tenant: String::new(), error: Some(error) };
            return render_status(e.status(), &page);
        }
    };
    let next = safe_next(Some(&form.next));
    let input = LoginInput {
        username: form.username.clone(),
        password: form.password,
        tenant: Some(form.tenant.clone()).filter(|t| !t.trim().is_empty()),
    };
    match account::login(&state, &source, input, &headers).await {
        Ok(LoggedIn::Full(_, cookie, device)) => {
            let mut response =
                ([(header::SET_COOKIE, session::set_cookie(&state.config, &cookie))], Redirect::to(&next))
                    .into_response();
            response.headers_mut().append(header::SET_COOKIE, device);
            response
        }
        Ok(LoggedIn::SecondStep { cookie, methods }) => {
            let passkeys = methods.contains(&"webauthn");
            let page = SecondStepPage { next, csrf_token: cookie.csrf_token(), passkeys, error: None };
            let mut response = render(&page);
            response.headers_mut().insert(header::SET_COOKIE, session::set_cookie(&state.config, &cookie));
            response
        }
        Err(AppError::Internal(e)) => AppError::Internal(e).into_response(),
        Err(e) => {
            let status = e.status();
            let page = LoginPage { next, username: form.username, tenant: form.tenant, error: Some(e.to_string()) };
            render_status(status, &page)
        }
    }
}

#[derive(Template)]
#[template(path = "login_mfa.html")]
struct SecondStepPage {
    next: String,
    csrf_token: String,
    /// The user has a passkey (the page offers it, with script).
    passkeys: bool,
    error: Option<String>,
}

#[derive(Deserialize)]
pub struct SecondStepForm {
    code: zeroize::Zeroizing<String>,
    #[serde(default)]
    method: String,
    #[serde(default)]
    next: String,
}

/// `POST /login/mfa`: the login page's second step, on the pending session.
pub async fn second_step(
    State(state): State<AppState>,
    ClientSource(source): ClientSource,
    who: Authenticated,
    Tx(tx): Tx,
    form: Result<ApiForm<SecondStepForm>, AppError>,
) -> Response {
    let passkeys = who.mfa.methods.iter().any(|m| m == "webauthn");
    let page = |next: String, error: String| SecondStepPage {
        next,
        csrf_token: who.csrf_token(),
        passkeys,
        error: Some(error),
    };
    let form = match form {
        Ok(ApiForm(form)) => form,
        Err(e) => return render_status(e.status(), &page("/".into(), e.to_string())),
    };
    let next = safe_next(Some(&form.next));
    let method = if form.method.is_empty() { "totp".to_string() } else { form.method };
    let input = FactorInput { method, code: Some(form.code), credential: None };
    match flow::second_step(&state, &source, tx, &who, input).await {
        Ok(Ok((_, cookie, device))) => {
            let mut response =
                ([(header::SET_COOKIE, session::set_cookie(&state.config, &cookie))], Redirect::to(&next))
                    .into_response();
            response.headers_mut().append(header::SET_COOKIE, device);
            response
        }
        Ok(Err(wrong)) if wrong.ended => {
            let page = LoginPage {
                next,
                username: String::new(),
                tenant: String::new(),
                error: Some("Too many wrong codes: sign in again".into()),
            };
            let mut response = render_status(StatusCode::UNAUTHORIZED, &page);
            response.headers_mut().insert(header::SET_COOKIE, session::clear_cookie(&state.config));
            response
        }
        Ok(Err(_)) => render_status(StatusCode::UNAUTHORIZED, &page(next, AppError::WrongSecondFactor.to_string())),
        Err(e @ AppError::Internal(_)) => e.into_response(),
        Err(e) => render_status(e.status(), &page(next, e.to_string())),
    }
}

/// `POST /logout` (a form with `csrf_token`): ends the session, back to login.
pub async fn logout(
    State(state): State<AppState>,
    ClientSource(source): ClientSource,
    who: Authenticated,
    Tx(tx): Tx,
) -> Response {
    if let Err(e) = account::logout(&source, tx, &who).await {
        return e.into_response();
    }
    ([(header::SET_COOKIE, session::clear_cookie(&state.config))], Redirect::to("/login")).into_response()
}

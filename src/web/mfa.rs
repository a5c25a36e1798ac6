//! The second factor for people: `/me/mfa` (enrolment, passkeys, recovery
//! codes) and the step-up page. Every form works without script; only passkeys
//! need it (`navigator.credentials`, in `static/app.js`). What is shown once (a
//! new secret, recovery codes) is the answer to the form's post itself.

use askama::Template;
use axum::{
    extract::State,
    http::{HeaderMap, StatusCode},
    response::{IntoResponse, Json, Redirect, Response},
};
use serde::Deserialize;
use serde_json::json;
use uuid::Uuid;
use zeroize::Zeroizing;

use super::{Nav, accepts, render, render_status, safe_next};
use crate::{
    auth::{
        Authenticated, Me,
        mfa::flow::{self, FactorInput, MfaStatus, TotpSetup},
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
#[template(path = "mfa.html")]
struct MfaPage {
    nav: Nav,
    mfa: MfaStatus,
    notice: Option<&'static str>,
}

#[derive(Template)]
#[template(path = "mfa_setup.html")]
struct SetupPage {
    nav: Nav,
    setup: TotpSetup,
    error: Option<String>,
}

#[derive(Template)]
#[template(path = "mfa_codes.html")]
struct CodesPage {
    nav: Nav,
    heading: &'static str,
    codes: Vec<Zeroizing<String>>,
}

#[derive(Template)]
#[template(path = "step_up.html")]
struct StepUpPage {
    nav: Nav,
    next: String,
    passkeys: bool,
    error: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
pub struct DoneQuery {
    done: Option<String>,
}

fn notice(done: Option<&str>) -> Option<&'static str> {
    Some(match done? {
        "totp" => "Authenticator app enrolled.",
        "totp_removed" => "Authenticator app removed.",
        "passkey" => "Passkey added.",
        "passkey_renamed" => "Passkey renamed.",
        "passkey_removed" => "Passkey removed.",
        _ => return None,
    })
}

/// `GET /me/mfa`: the page for browsers, `{"mfa": …}` for programs.
pub async fn page(
    State(state): State<AppState>,
    who: Authenticated,
    me: Me,
    Tx(tx): Tx,
    headers: HeaderMap,
    query: Result<ApiQuery<DoneQuery>, AppError>,
) -> Result<Response, AppError> {
    let mfa = flow::status(&state, tx, &who).await?;
    if !accepts(&headers, "text/html") {
        return Ok(Json(json!({ "mfa": mfa })).into_response());
    }
    let done = query.map(|ApiQuery(q)| q).unwrap_or_default().done;
    Ok(render(&MfaPage { nav: Nav::plain(&me, &who), mfa, notice: notice(done.as_deref()) }))
}

/// `POST /me/mfa/form/totp-setup`: the new secret and its QR code, once.
pub async fn totp_setup(State(state): State<AppState>, who: Authenticated, me: Me, Tx(tx): Tx) -> Response {
    match flow::setup_totp(&state, tx, &who).await {
        Ok(setup) => render(&SetupPage { nav: Nav::plain(&me, &who), setup, error: None }),
        Err(e) => e.into_response(),
    }
}

#[derive(Deserialize)]
pub struct CodeForm {
    code: Zeroizing<String>,
    /// The setup page sends its secret back so that a wrong code can show it
    /// again without a second transaction.
    #[serde(default)]
    secret: Option<Zeroizing<String>>,
}

/// `POST /me/mfa/form/totp-confirm`: the recovery codes, once, for a first factor.
pub async fn totp_confirm(
    State(state): State<AppState>,
    ClientSource(source): ClientSource,
    who: Authenticated,
    me: Me,
    Tx(tx): Tx,
    ApiForm(form): ApiForm<CodeForm>,
) -> Response {
    match flow::confirm_totp(&state, &source, tx, &who, &form.code).await {
        Ok(enrolled) => match enrolled.recovery_codes {
            Some(codes) => {
                render(&CodesPage { nav: Nav::plain(&me, &who), heading: "Authenticator app enrolled", codes })
            }
            None => Redirect::to("/me/mfa?done=totp").into_response(),
        },
        Err(AppError::Invalid { message, .. }) => {
            // The secret being set up is unchanged: show it again.
            let Some(setup) = form.secret.and_then(|s| flow::setup_view(&s, &me.0.username)) else {
                return Redirect::to("/me/mfa").into_response();
            };
            let page = SetupPage { nav: Nav::plain(&me, &who), setup, error: Some(message) };
            render_status(StatusCode::UNPROCESSABLE_ENTITY, &page)
        }
        Err(e) => e.into_response(),
    }
}

/// `POST /me/mfa/form/totp-remove`.
pub async fn totp_remove(ClientSource(source): ClientSource, who: Authenticated, Tx(tx): Tx) -> Response {
    match flow::remove_totp(&source, tx, &who).await {
        Ok(()) => Redirect::to("/me/mfa?done=totp_removed").into_response(),
        Err(e) => e.into_response(),
    }
}

/// `POST /me/mfa/form/recovery-codes`: a new set, once.
pub async fn recovery_codes(
    State(state): State<AppState>,
    ClientSource(source): ClientSource,
    who: Authenticated,
    me: Me,
    Tx(tx): Tx,
) -> Response {
    match flow::regenerate_recovery_codes(&state, &source, tx, &who).await {
        Ok(codes) => render(&CodesPage { nav: Nav::plain(&me, &who), heading: "New recovery codes", codes }),
        Err(e) => e.into_response(),
    }
}

#[derive(Deserialize)]
pub struct RenameForm {
    name: String,
}

/// `POST /me/mfa/form/passkeys/{id}/rename`.
pub async fn passkey_rename(
    who: Authenticated,
    Tx(tx): Tx,
    ApiPath(id): ApiPath<Uuid>,
    ApiForm(form): ApiForm<RenameForm>,
) -> Response {
    match flow::rename_passkey(tx, &who, id, &form.name).await {
        Ok(()) => Redirect::to("/me/mfa?done=passkey_renamed").into_response(),
        Err(e) => e.into_response(),
    }
}

/// `POST /me/mfa/form/passkeys/{id}/remove`.
pub async fn passkey_remove(
    ClientSource(source): ClientSource,
    who: Authenticated,
    Tx(tx): Tx,
    ApiPath(id): ApiPath<Uuid>,
) -> Response {
    match flow::remove_passkey(&source, tx, &who, id).await {
        Ok(()) => Redirect::to("/me/mfa?done=passkey_removed").into_response(),
        Err(e) => e.into_response(),
    }
}

#[derive(Debug, Default, Deserialize)]
pub struct NextQuery {
    next: Option<String>,
}

/// `GET /step-up?next=`: verify the second factor again, then back to `next`.
pub async fn step_up_page(who: Authenticated, me: Me, query: Result<ApiQuery<NextQuery>, AppError>) -> Response {
    let next = safe_next(query.map(|ApiQuery(q)| q).unwrap_or_default().next.as_deref());
    let passkeys = who.mfa.methods.iter().any(|m| m == "webauthn");
    render(&StepUpPage { nav: Nav::plain(&me, &who), next, passkeys, error: None })
}

#[derive(Deserialize)]
pub struct StepUpForm {
    code: Zeroizing<String>,
    #[serde(default)]
    method: String,
    #[serde(default)]
    next: String,
}

/// `POST /step-up`: the form of the step-up page.
pub async fn step_up(
    State(state): State<AppState>,
    ClientSource(source): ClientSource,
    who: Authenticated,
    me: Me,
    Tx(tx): Tx,
    ApiForm(form): ApiForm<StepUpForm>,
) -> Response {
    let next = safe_next(Some(&form.next));
    let method = if form.method.is_empty() { "totp".to_string() } else { form.method };
    let input = FactorInput { method, code: Some(form.code), credential: None };
    match flow::step_up(&state, &source, tx, &who, input).await {
        Ok(()) => Redirect::to(&next).into_response(),
        Err(e @ AppError::Internal(_)) => e.into_response(),
        Err(e) => {
            let passkeys = who.mfa.methods.iter().any(|m| m == "webauthn");
            let page = StepUpPage { nav: Nav::plain(&me, &who), next, passkeys, error: Some(e.to_string()) };
            render_status(e.status(), &page)
        }
    }
}

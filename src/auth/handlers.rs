//! HTTP handlers for `/auth/*` and `/me`: parse, call the flow, shape the answer.

use axum::{
    Json,
    extract::State,
    http::{HeaderMap, StatusCode, header},
    response::{IntoResponse, Response},
};
use serde::Serialize;
use serde_json::json;
use utoipa::ToSchema;

use super::{
    account::{self, LoggedIn, LoginInput, RegisterInput},
    apikeys::{self, ApiKeyView, CreatedKey},
    extractor::{Authenticated, Me},
    mfa, own,
    own::{PasswordChange, SessionView},
    session,
    user::UserView,
};
use crate::http::{
    AppState,
    apidoc::{Op, Reply},
    client::ClientSource,
    error::AppError,
    guard::Tx,
    json::ApiJson,
    params::ApiPath,
};

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
    tx.end_read_only().await?;
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
    let body = CreatedKey { view, key: key.as_str().to_string() };
    Ok((StatusCode::CREATED, Json(json!({ "apiKey": body }))).into_response())
}

/// `GET /me/api-keys`.
pub async fn api_keys(who: Authenticated, Tx(mut tx): Tx) -> Result<Response, AppError> {
    let keys = apikeys::list(&mut tx, who.user_id).await?;
    tx.end_read_only().await?;
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

/// The caller as `GET /me` shows them: their user view and where they stand
/// with the second factor.
#[derive(Serialize, ToSchema)]
pub struct MeView {
    #[serde(flatten)]
    pub user: UserView,
    pub mfa: MfaSummary,
}

#[derive(Serialize, ToSchema)]
pub struct MfaSummary {
    /// The confirmed methods: `totp`, `webauthn`.
    pub methods: Vec<String>,
    /// The strictest factor the caller's roles require: `any`, `totp` or
    /// `fido2`; `null`: none.
    #[schema(required = true)]
    pub required: Option<String>,
    /// Whether the caller's factors satisfy that requirement.
    pub compliant: bool,
}

/// `GET /me`: everything comes from the request's first statement (the guard
/// ends its transaction), so this is `BEGIN` and one statement.
pub async fn me(who: Authenticated, Me(me): Me) -> Result<Response, AppError> {
    let mfa = MfaSummary {
        methods: who.mfa.methods.clone(),
        required: who.mfa.required.clone(),
        compliant: who.mfa.compliant(),
    };
    let user = MeView { user: (*me).clone(), mfa };
    Ok(Json(json!({ "user": user, "csrfToken": who.csrf_token() })).into_response())
}

/// This module's operations, for the OpenAPI document.
pub fn api() -> Vec<Op> {
    vec![
        Op::post("/auth/register", "Register an account")
            .describe(
                "Creates an account in the default organisation, as `FORTIFILE_REGISTRATION` allows: `open` \
                 (active at once), `approval` (status `pending` until an administrator approves) or `closed` \
                 (403). Every attempt from a client address counts against `FORTIFILE_REGISTRATION_LIMIT`; past \
                 it the address gets 429 with `Retry-After`. The password must not be the username or email, \
                 nor too common or easy to guess: such a password gets 422.",
            )
            .json::<RegisterInput>()
            .created::<UserView>("user")
            .error(403, "registration is closed")
            .error(409, "the username or email is already taken")
            .error(
                422,
                "a field is invalid: `username` (3 to 64 letters, digits, `.`, `_`, `-`), `email`, `password` \
                 (length, or too weak, common or equal to the username or email) or `requestedRole` (over 64 \
                 characters)",
            ),
        Op::post("/auth/login", "Sign in with a password")
            .describe(
                "Opens a session (the cookie in `Set-Cookie`, replacing the one sent, if any). For a user without \
                 a second factor the session is full: `{user, csrfToken}`. For a user with one it is pending: \
                 `{mfaRequired: true, methods, csrfToken}`, and the login goes on with `POST /auth/mfa/totp`, \
                 `/auth/mfa/recovery` or `/auth/mfa/webauthn/*`. Attempts are limited per account \
                 (`FORTIFILE_LOGIN_LOCKOUT`) and per client address (`FORTIFILE_LOGIN_ADDRESS_LIMIT`); an attempt \
                 held by a running delay, or for a locked account, answers exactly like a wrong password (401).",
            )
            .json::<LoginInput>()
            .answers(
                200,
                Reply::new()
                    .field::<Option<UserView>>("user")
                    .field::<String>("csrfToken")
                    .field::<Option<bool>>("mfaRequired")
                    .field::<Option<Vec<String>>>("methods")
                    .describe(
                        "Signed in: `user` and `csrfToken`; or, for a user with a second factor, the second step \
                         is pending: `mfaRequired` (true), `methods` (of `totp`, `webauthn`, `recovery`) and \
                         `csrfToken`",
                    ),
            )
            .error(
                401,
                "wrong username, email or password, an unknown organisation, or an attempt held by the \
                 lockout (all answered alike)",
            )
            .error(403, "the account is pending approval, suspended or inactive"),
        Op::post("/auth/logout", "Sign out").describe("Ends the caller's session and clears its cookie.").no_content(),
        Op::get("/me", "Who I am")
            .describe(
                "The caller's user view with `mfa` (where they stand with the second factor), and the session's \
                 anti-CSRF token (empty for an API key). Browsers asking for `text/html` get the account page.",
            )
            .answers(200, Reply::new().field::<MeView>("user").field::<String>("csrfToken")),
        Op::post("/me/password", "Change my password")
            .describe(
                "Needs the current password; every other session of the caller ends and every API key of theirs \
                 is revoked. A wrong current password counts like a failed login.",
            )
            .json::<PasswordChange>()
            .answers(200, Reply::new().field::<u64>("otherSessionsEnded"))
            .error(
                422,
                "`currentPassword` is wrong (or the account's login attempts are held), or `newPassword` fails \
                 the policy (length, too weak or common, or the username or email)",
            ),
        Op::get("/me/sessions", "My sessions")
            .describe("The caller's live sessions, newest first; `current` marks this one.")
            .answers(200, Reply::new().field::<Vec<SessionView>>("sessions")),
        Op::delete("/me/sessions/{id}", "End one of my sessions")
            .no_content()
            .error(404, "the caller has no such session"),
        Op::post("/me/sessions/end-others", "End my other sessions")
            .describe("Ends every session of the caller but this one.")
            .answers(200, Reply::new().field::<u64>("ended")),
        Op::post("/me/api-keys", "Create an API key")
            .describe(
                "A key for programs (`Authorization: Bearer ffk_…`), shown once in this answer. It acts as the \
                 caller with the intersection of its `permissions` and the caller's grants at each request. \
                 `expiresAt` must be in the future and at most `FORTIFILE_API_KEY_MAX_DAYS` (default 365) days \
                 ahead; a permission the caller does not hold at the scope asked (or wider) is refused with 422.",
            )
            .json::<apikeys::NewKey>()
            .created::<CreatedKey>("apiKey")
            .error(
                422,
                "`name` is empty, over 100 characters or holds control characters; `expiresAt` is not in the \
                 future or beyond the maximum; or `permissions` names an unknown permission or scope, or one the \
                 caller does not hold at that scope",
            ),
        Op::get("/me/api-keys", "My API keys")
            .describe("The caller's keys that have not been revoked, oldest first (expired ones included).")
            .answers(200, Reply::new().field::<Vec<ApiKeyView>>("apiKeys")),
        Op::delete("/me/api-keys/{id}", "Revoke one of my API keys")
            .no_content()
            .error(404, "the caller has no such key, or it is already revoked"),
    ]
}

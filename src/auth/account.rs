//! Registration, login and logout: the flows behind `/auth/*`.
//!
//! Each flow writes its audit row in the same transaction as its effect. Failed
//! logins commit their audit row and then answer the error. A failed login
//! against an existing account records that account (its id and username,
//! whichever of username or email was typed); one naming no account records
//! only a keyed hash of what was typed (see `audit::names`): it may be a
//! password typed into the wrong field.

use axum::http::{HeaderMap, HeaderValue};
use secrecy::SecretString;
use serde::Deserialize;
use serde_json::json;
use utoipa::ToSchema;
use uuid::Uuid;

use super::{
    extractor::Authenticated,
    lockout, mfa,
    password::check_policy,
    session::{self, SessionCookie},
    throttle,
    user::{self, CreateUserError, Credentials, NewUser, UserView},
};
use crate::{
    audit::{self, Action, Entry, Outcome, Source},
    config::Registration,
    db::{
        TenantTx,
        seed::{DEFAULT_CLEARANCE, DEFAULT_DEPARTMENT, DEFAULT_ROLE, DEFAULT_TENANT},
    },
    http::{AppState, error::AppError},
};

/// Surrounding whitespace is ignored in every field but the password. The
/// password must also not be the username or email, nor too common or easy to
/// guess (zxcvbn score 2 or more): a schema cannot say so; such a password is
/// refused with 422.
#[derive(Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RegisterInput {
    /// 3 to 64 letters, digits, `.`, `_` or `-`, starting with a letter or digit.
    #[schema(pattern = "@username")]
    pub username: String,
    /// `local@domain`: one `@`, no whitespace or control characters, at most 254 bytes.
    #[schema(max_length = 254, pattern = "@email")]
    pub email: String,
    /// At least 8 characters and at most 1024 bytes (UTF-8); weak or common
    /// passwords, and the username or email, are refused with 422.
    #[schema(value_type = String, format = Password, min_length = 8, max_length = 1024, pattern = r"^[^\x00]*$")]
    pub password: SecretString,
    /// The role the newcomer asks for (an administrator decides): at most 64
    /// characters once trimmed; empty means none.
    #[serde(default)]
    #[schema(
        pattern = r"^[\t-\r \x85\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000]*[^\x00]{0,64}[\t-\r \x85\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000]*$"
    )]
    pub requested_role: Option<String>,
}

/// Every refusal (an unknown tenant or user, a wrong password, an attempt
/// held by the lockout) answers the same 401.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct LoginInput {
    /// A username or an email address.
    #[schema(pattern = r"^[^\x00]*$")]
    pub username: String,
    #[schema(value_type = String, format = Password, pattern = r"^[^\x00]*$")]
    pub password: SecretString,
    /// The organisation's slug; `default` when absent.
    #[serde(default)]
    #[schema(pattern = r"^[^\x00]*$")]
    pub tenant: Option<String>,
}

/// The longest login name looked up; longer input cannot be an account.
const MAX_LOGIN_LEN: usize = 254;

pub fn validate_username(username: &str) -> Result<(), AppError> {
    let ok = (3..=64).contains(&username.len())
        && username.chars().next().is_some_and(|c| c.is_ascii_alphanumeric())
        && username.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'));
    if ok {
        Ok(())
    } else {
        Err(AppError::invalid(
            "username",
            "must be 3 to 64 characters: letters, digits, '.', '_' or '-', starting with a letter or digit",
        ))
    }
}

pub fn validate_email(email: &str) -> Result<(), AppError> {
    let ok = email.len() <= 254
        && !email.chars().any(|c| c.is_whitespace() || c.is_control())
        && email
            .split_once('@')
            .is_some_and(|(local, domain)| !local.is_empty() && !domain.is_empty() && !domain.contains('@'));
    if ok { Ok(()) } else { Err(AppError::invalid("email", "must be an email address such as name@example.org")) }
}

/// Creates an account in the default tenant, as `FORTIFILE_REGISTRATION` allows.
///
/// Open registration cannot help saying that a name or an email is taken (or
/// it would have to let two accounts share one); what it can do is limit how
/// fast anyone asks. Every attempt from a client address counts against
/// `FORTIFILE_REGISTRATION_LIMIT`, shared by all instances; past it the
/// address gets 429 and the refusal is audited.
pub async fn register(state: &AppState, source: &Source, input: RegisterInput) -> Result<UserView, AppError> {
    let tenant = default_tenant(state).await?;
    let username = input.username.trim();
    let email = input.email.trim();

    if let Some(ip) = source.ip {
        let mut tx = state.db.tenant_tx(tenant, None).await?;
        let limit = state.config.registration_limit;
        let over = throttle::attempt(&mut tx, "register_address", &ip.to_string(), limit, state.clock.now()).await?;
        if let Some(retry_after_secs) = over {
            let entry = Entry::new(Action::AuthRegister, Outcome::Fail)
                .details(json!({ "reason": "rate_limited", "limit": format!("{}/{}", limit.count, limit.minutes) }));
            audit::record(&mut tx, source, entry).await?;
            tx.commit().await?;
            return Err(AppError::TooManyRequests { retry_after_secs });
        }
        tx.commit().await?;
    }

    if state.config.registration == Registration::Closed {
        let mut tx = state.db.tenant_tx(tenant, None).await?;
        let named =
            if validate_username(username).is_ok() { username.to_string() } else { state.login_names.digest(username) };
        let entry = Entry::new(Action::AuthRegister, Outcome::Fail)
            .details(json!({ "reason": "registration_closed", "username": named }));
        audit::record(&mut tx, source, entry).await?;
        tx.commit().await?;
        return Err(AppError::forbidden("Registration is closed"));
    }

    validate_username(username)?;
    validate_email(email)?;
    check_policy(&input.password, username, email).map_err(|v| AppError::invalid("password", v.0))?;
    let requested_role = match input.requested_role.as_deref().map(str::trim) {
        None | Some("") => None,
        Some(r) if r.chars().count() <= 64 => Some(r),
        Some(_) => return Err(AppError::invalid("requestedRole", "must be at most 64 characters")),
    };
    let hash = state.passwords.hash(&input.password).await?;
    let status = match state.config.registration {
        Registration::Approval => "pending",
        _ => "active",
    };

    let mut tx = state.db.tenant_tx(tenant, None).await?;
    let new = NewUser {
        username,
        email,
        password_hash: &hash,
        status,
        requested_role,
        role: DEFAULT_ROLE,
        department: DEFAULT_DEPARTMENT,
        clearance_level: DEFAULT_CLEARANCE,
    };
    let id = match user::create(&mut tx, &new).await {
        Ok(id) => id,
        Err(CreateUserError::Duplicate) => {
            drop(tx);
            let mut tx = state.db.tenant_tx(tenant, None).await?;
            let entry = Entry::new(Action::AuthRegister, Outcome::Fail)
                .details(json!({ "reason": "duplicate", "username": username }));
            audit::record(&mut tx, source, entry).await?;
            tx.commit().await?;
            return Err(AppError::Conflict("That username or email is already taken".into()));
        }
        Err(CreateUserError::MissingReference(kind, name)) => {
            return Err(anyhow::anyhow!("tenant is missing its default {kind} {name:?}; run `fortifile seed`").into());
        }
        Err(CreateUserError::Db(e)) => return Err(e.into()),
    };
    let entry = Entry::new(Action::AuthRegister, Outcome::Success)
        .user(id)
        .target("user", id)
        .details(json!({ "status": status, "requestedRole": requested_role }));
    audit::record(&mut tx, source, entry).await?;
    let view = user::load_view(&mut tx, id, state.clock.now()).await?;
    tx.commit().await?;
    view.ok_or_else(|| anyhow::anyhow!("the new user vanished").into())
}

/// A right password's outcome.
pub enum LoggedIn {
    /// A full session: the user has no second factor. With the device cookie
    /// that exempts this browser from the address limit next time.
    Full(Box<UserView>, SessionCookie, HeaderValue),
    /// A pending session that waits for the second factor (`methods` offered).
    SecondStep { cookie: SessionCookie, methods: Vec<&'static str> },
}

/// Checks credentials and opens a fresh session (replacing the one `headers`
/// carry, if any): a full one, or for a user with a second factor a pending
/// one. Each attempt is first claimed against the account's and the address's
/// limits (`lockout`); a held attempt spends the same Argon2 work and answers
/// exactly like a wrong password, as do an unknown user and tenant.
pub async fn login(
    state: &AppState,
    source: &Source,
    input: LoginInput,
    headers: &HeaderMap,
) -> Result<LoggedIn, AppError> {
    let previous = session::from_headers(&state.config, headers);
    let login = input.username.trim();
    let slug = input.tenant.as_deref().map(str::trim).filter(|s| !s.is_empty()).unwrap_or(DEFAULT_TENANT);
    let tenant = if slug.len() <= 63 { state.db.tenant_by_slug(slug).await? } else { None };
    let Some(tenant) = tenant else {
        // No tenant to record in; spend the same work as a wrong password.
        state.passwords.verify(&input.password, None).await?;
        tracing::info!("login for an unknown tenant refused");
        return Err(AppError::InvalidCredentials);
    };

    let account = if login.is_empty() || login.len() > MAX_LOGIN_LEN {
        None
    } else {
        let mut tx = state.db.tenant_tx(tenant.id, None).await?;
        user::find_credentials(&mut tx, login).await?
    };
    let now = state.clock.now();
    // The claim commits on its own, before the hash: a slow hash must not hold
    // the counters' rows (every login from one address would queue on them).
    let device = account.as_ref().is_some_and(|a| state.devices.recognises(headers, tenant.id, a.id));
    let mut tx = state.db.tenant_tx(tenant.id, None).await?;
    let held =
        lockout::admit(&mut tx, &state.config, source, account.as_ref().map(|a| (a.id, a.locked_at)), device, now)
            .await?;
    tx.commit().await?;
    if let Some(held) = held {
        state.passwords.verify(&input.password, None).await?;
        return refuse_login(state, tenant.id, source, login, device, Refusal::Held(account.as_ref(), held)).await;
    }
    let verified = state.passwords.verify(&input.password, account.as_ref().map(|a| a.password_hash.as_str())).await?;

    let account = match account {
        None => return refuse_login(state, tenant.id, source, login, device, Refusal::UnknownUser).await,
        Some(a) if !verified => {
            return refuse_login(state, tenant.id, source, login, device, Refusal::BadPassword(&a)).await;
        }
        Some(a) if a.status != "active" => {
            return refuse_login(state, tenant.id, source, login, device, Refusal::NotActive(&a)).await;
        }
        Some(a) => a,
    };

    let mut tx = state.db.tenant_tx(tenant.id, Some(account.id)).await?;
    if let Some(previous) = previous.filter(|p| p.tenant == tenant.id) {
        session::delete_by_cookie(&mut tx, &previous).await?;
    }
    let methods = mfa::store::methods(&mut tx, account.id).await?;
    let opening = if methods.is_empty() { session::Opening::Password } else { session::Opening::Pending };
    let cookie =
        session::create(&mut tx, account.id, now, state.config.session_absolute_timeout, source, opening).await?;
    let entry = Entry::new(Action::AuthLogin, Outcome::Success)
        .target("user", account.id)
        .details(json!({ "secondStep": if methods.is_empty() { "none" } else { "required" } }));
    audit::record(&mut tx, source, entry).await?;
    if !methods.is_empty() {
        tx.commit().await?;
        return Ok(LoggedIn::SecondStep { cookie, methods: mfa::second_step_methods(&methods) });
    }
    user::record_login(&mut tx, account.id, now).await?;
    lockout::succeeded(&mut tx, account.id).await?;
    let view = user::load_view(&mut tx, account.id, now).await?;
    tx.commit().await?;
    let view = view.ok_or_else(|| anyhow::anyhow!("the user vanished during login"))?;
    let device = state.devices.cookie(&state.config, tenant.id, account.id);
    Ok(LoggedIn::Full(Box::new(view), cookie, device))
}

enum Refusal<'a> {
    UnknownUser,
    BadPassword(&'a Credentials),
    /// Not tried: a delay runs for the account or the address, or the account
    /// is locked. Answered like a wrong password.
    Held(Option<&'a Credentials>, lockout::Held),
    /// The password was right but the account may not sign in.
    NotActive(&'a Credentials),
}

/// Records a failed login and answers it. The answer for an unknown user and for a
/// wrong password is the same; the audit row (for administrators) says which.
/// A wrong password or unknown user counts against the account (in a row)
/// and the address (unless `device`: a browser that knows the account).
async fn refuse_login<T>(
    state: &AppState,
    tenant: Uuid,
    source: &Source,
    login: &str,
    device: bool,
    refusal: Refusal<'_>,
) -> Result<T, AppError> {
    // A known account by its own name (and how it was named); an unknown one
    // only by a keyed hash and the length of what was typed.
    let against = |reason: &str, account: &Credentials| {
        let with = if account.username.eq_ignore_ascii_case(login) { "username" } else { "email" };
        Entry::new(Action::AuthLogin, Outcome::Fail)
            .user(account.id)
            .target("user", account.id)
            .details(json!({ "reason": reason, "username": account.username, "loginWith": with }))
    };
    let (wrong_password, guessed) = match &refusal {
        Refusal::BadPassword(account) => (Some(account.id), true),
        Refusal::UnknownUser => (None, true),
        _ => (None, false),
    };
    let (entry, error) = match refusal {
        Refusal::UnknownUser => {
            let entry = Entry::new(Action::AuthLogin, Outcome::Fail).details(json!({
                "reason": "unknown_user",
                "username": state.login_names.digest(login),
                "usernameLength": login.chars().count(),
            }));
            (entry, AppError::InvalidCredentials)
        }
        Refusal::BadPassword(account) => (against("bad_password", account), AppError::InvalidCredentials),
        Refusal::Held(Some(account), held) => (against(held.reason(), account), AppError::InvalidCredentials),
        Refusal::Held(None, held) => {
            let entry = Entry::new(Action::AuthLogin, Outcome::Fail).details(json!({
                "reason": held.reason(),
                "username": state.login_names.digest(login),
                "usernameLength": login.chars().count(),
            }));
            (entry, AppError::InvalidCredentials)
        }
        Refusal::NotActive(account) => {
            let status = account.status.as_str();
            let message = match status {
                "pending" => "This account is waiting for an administrator's approval",
                "suspended" => "This account is suspended",
                _ => "This account is inactive",
            };
            (against(&format!("account_{status}"), account), AppError::forbidden(message))
        }
    };
    let mut tx = state.db.tenant_tx(tenant, None).await?;
    let now = state.clock.now();
    if let Some(account) = wrong_password {
        lockout::failed(&mut tx, source, account, now).await?;
    }
    if guessed {
        lockout::address_failed(&mut tx, &state.config, source, device, now).await?;
    }
    audit::record(&mut tx, source, entry).await?;
    tx.commit().await?;
    Err(error)
}

/// Ends the caller's session, in the request's transaction.
pub async fn logout(source: &Source, mut tx: TenantTx, who: &Authenticated) -> Result<(), AppError> {
    if !session::delete(&mut tx, who.session_id).await? {
        // Ended meanwhile (a concurrent logout, expiry or suspension).
        return Err(AppError::Unauthorized);
    }
    let entry = Entry::new(Action::AuthLogout, Outcome::Success).target("user", who.user_id);
    audit::record(&mut tx, source, entry).await?;
    tx.commit().await?;
    Ok(())
}

async fn default_tenant(state: &AppState) -> Result<Uuid, AppError> {
    match state.db.tenant_by_slug(DEFAULT_TENANT).await? {
        Some(t) => Ok(t.id),
        None => Err(anyhow::anyhow!("the default tenant does not exist; run `fortifile seed`").into()),
    }
}

/// Records an unsafe request that carried a session cookie but not its CSRF
/// token (`reason` "token") or came from another origin ("origin"). Only when
/// the cookie names a real session: that proves the tenant, so a made-up cookie
/// cannot plant rows in another organisation's log.
pub async fn record_csrf_denial(
    state: &AppState,
    source: &Source,
    cookie: &SessionCookie,
    method: &str,
    path: &str,
    reason: &'static str,
) -> Result<(), AppError> {
    let mut tx = state.db.tenant_tx(cookie.tenant, None).await?;
    let Some((session_id, user_id)) = session::find(&mut tx, cookie).await? else { return Ok(()) };
    let entry = Entry::new(Action::AuthCsrfDenied, Outcome::Fail)
        .user(user_id)
        .target("session", session_id)
        .details(json!({ "reason": reason, "method": method, "path": path.chars().take(256).collect::<String>() }));
    audit::record(&mut tx, source, entry).await?;
    tx.commit().await?;
    Ok(())
}

/// Deletes expired sessions in every tenant, each with its `auth.session_expired`
/// row. Run periodically by `serve`; requests also expire sessions they find.
pub async fn sweep_expired_sessions(state: &AppState) -> Result<usize, AppError> {
    let now = state.clock.now();
    let mut swept = 0;
    for tenant in state.db.tenant_ids().await? {
        let mut tx = state.db.tenant_tx(tenant, None).await?;
        for (session_id, user_id, by) in
            session::delete_expired(&mut tx, now, state.config.session_idle_timeout).await?
        {
            let entry = Entry::new(Action::AuthSessionExpired, Outcome::Success)
                .user(user_id)
                .target("session", session_id)
                .details(json!({ "reason": by.as_str(), "via": "sweep" }));
            audit::record(&mut tx, &Source::default(), entry).await?;
            swept += 1;
        }
        tx.commit().await?;
    }
    Ok(swept)
}

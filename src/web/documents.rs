//! `GET /`: the signed-in user's documents (the same visibility as
//! `GET /api/files`), the upload form with its progress bar, download links,
//! the share form, and the shares this user gave. Its forms post to page routes
//! that call the same capability code as the API and redirect back with a
//! fixed notice or error code (never text from the request).

use askama::Template;
use axum::{
    Json,
    extract::{Multipart, State, multipart::MultipartRejection},
    http::{HeaderMap, StatusCode, header},
    response::{IntoResponse, Redirect, Response},
};
use serde::Deserialize;
use serde_json::json;
use time::{OffsetDateTime, PrimitiveDateTime, macros::format_description};
use uuid::Uuid;

use super::{Nav, render};
use crate::{
    auth::{Authenticated, Me},
    authz::{Permission, Permit, Scope},
    files::{FileView, catalog::ListQuery, manage, shares, upload},
    http::{
        AppState,
        client::ClientSource,
        error::AppError,
        guard::Tx,
        params::{ApiForm, ApiPath, ApiQuery},
    },
};

#[derive(Debug, Default, Deserialize)]
pub struct PageQuery {
    classification: Option<String>,
    department: Option<String>,
    name: Option<String>,
    after: Option<String>,
    done: Option<String>,
    error: Option<String>,
}

pub struct GivenShare {
    pub id: Uuid,
    pub file_id: Uuid,
    pub file: String,
    pub recipient: String,
    pub expires: String,
    pub active: bool,
}

pub struct Level {
    pub name: String,
    pub color: String,
}

#[derive(Template)]
#[template(path = "documents.html")]
struct DocumentsPage {
    nav: Nav,
    files: Vec<FileView>,
    next: Option<String>,
    filter_classification: String,
    filter_department: String,
    filter_name: String,
    can_upload: bool,
    can_share: bool,
    levels: Vec<Level>,
    departments: Vec<String>,
    own_department: String,
    shares: Vec<GivenShare>,
    notice: Option<&'static str>,
    error: Option<&'static str>,
}

impl DocumentsPage {
    /// A size for people: bytes below 1 KiB, else KiB, MiB or GiB with one decimal.
    fn size(&self, bytes: &i64) -> String {
        human_size(*bytes)
    }
}

fn human_size(bytes: i64) -> String {
    const UNITS: [&str; 3] = ["KiB", "MiB", "GiB"];
    if bytes < 1024 {
        return format!("{bytes} B");
    }
    let mut value = bytes as f64 / 1024.0;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    format!("{value:.1} {}", UNITS[unit])
}

fn notice(code: Option<&str>) -> Option<&'static str> {
    match code? {
        "uploaded" => Some("Document uploaded."),
        "shared" => Some("Document shared."),
        "unshared" => Some("Share revoked."),
        _ => None,
    }
}

fn problem(code: Option<&str>) -> Option<&'static str> {
    match code? {
        "share_denied" => {
            Some("That share is not allowed: the recipient's clearance or your permissions do not cover this document.")
        }
        "share_invalid" => Some("Check the username and the expiry (it must be in the future)."),
        "upload_denied" => Some(
            "That upload is not allowed: the classification is above your clearance or the department is outside your permissions.",
        ),
        "upload_too_large" => Some("The file is larger than this server accepts."),
        "upload_failed" => Some("The upload failed. Choose a file and try again."),
        "not_found" => Some("That document or share no longer exists."),
        _ => None,
    }
}

pub async fn page(
    State(state): State<AppState>,
    who: Authenticated,
    me: Me,
    permit: Permit,
    Tx(mut tx): Tx,
    ApiQuery(q): ApiQuery<PageQuery>,
) -> Result<Response, AppError> {
    let subject = permit.subject();
    let list = ListQuery {
        classification: q.classification.clone().filter(|s| !s.is_empty()),
        department: q.department.clone().filter(|s| !s.is_empty()),
        name: q.name.clone().filter(|s| !s.is_empty()),
        limit: Some(50),
        after: q.after.clone().filter(|s| !s.is_empty()),
    };
    let (files, next) = manage::list(&state, &permit, &mut tx, list).await?;
    let nav = Nav::new(&me, &who, subject).waiting(&mut tx, state.clock.now()).await?;
    let levels: Vec<(String, String)> =
        sqlx::query_as("SELECT name, color FROM clearance_levels WHERE level <= $1 ORDER BY level")
            .bind(subject.clearance_rank)
            .fetch_all(tx.conn())
            .await?;
    let own_department: String = sqlx::query_scalar("SELECT name FROM departments WHERE id = $1")
        .bind(subject.department_id)
        .fetch_one(tx.conn())
        .await?;
    let departments: Vec<String> = if subject.scope_of(Permission::FileUpload) == Some(Scope::Tenant) {
        sqlx::query_scalar("SELECT name FROM departments ORDER BY lower(name)").fetch_all(tx.conn()).await?
    } else {
        vec![own_department.clone()]
    };
    let now = state.clock.now();
    // The shares this user gave, of documents their clearance still covers
    // (a name is as classified as its document).
    let given: Vec<(Uuid, Uuid, String, String, Option<OffsetDateTime>)> = sqlx::query_as(
        "SELECT s.id, s.file_id, f.name, r.username, s.expires_at FROM file_shares s \
         JOIN files f ON f.id = s.file_id JOIN users r ON r.id = s.recipient_id \
         JOIN clearance_levels c ON c.id = f.classification_id \
         WHERE s.shared_by = $1 AND c.level <= $2 ORDER BY s.created_at DESC LIMIT 200",
    )
    .bind(permit.user_id())
    .bind(subject.clearance_rank)
    .fetch_all(tx.conn())
    .await?;
    tx.commit().await?;
    let shares = given
        .into_iter()
        .map(|(id, file_id, file, recipient, expires)| GivenShare {
            id,
            file_id,
            file,
            recipient,
            active: expires.is_none_or(|at| at > now),
            expires: expires
                .map(|at| format!("{} UTC", at.date()) + &format!(" {:02}:{:02}", at.hour(), at.minute()))
                .unwrap_or_else(|| "never".into()),
        })
        .collect();
    let page = DocumentsPage {
        nav,
        files,
        next,
        filter_classification: q.classification.unwrap_or_default(),
        filter_department: q.department.unwrap_or_default(),
        filter_name: q.name.unwrap_or_default(),
        can_upload: subject.holds(Permission::FileUpload),
        can_share: subject.holds(Permission::FileShare),
        levels: levels.into_iter().map(|(name, color)| Level { name, color }).collect(),
        departments,
        own_department,
        shares,
        notice: notice(q.done.as_deref()),
        error: problem(q.error.as_deref()),
    };
    Ok(render(&page))
}

fn back(code: &str) -> Response {
    Redirect::to(&format!("/?{code}")).into_response()
}

/// `POST /files`: the upload form. The page's script asks for JSON (and shows
/// progress); without script the browser follows a redirect back.
pub async fn upload(
    State(state): State<AppState>,
    ClientSource(source): ClientSource,
    permit: Permit,
    headers: HeaderMap,
    form: Result<Multipart, MultipartRejection>,
) -> Response {
    let wants_json = super::accepts(&headers, "application/json");
    let declared = headers.get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()?.parse().ok());
    let result = match form {
        Ok(form) => upload::upload(&state, &permit, &source, declared, None, form).await,
        Err(_) => Err(AppError::BadRequest("Expected a multipart/form-data body".into())),
    };
    match (result, wants_json) {
        (Ok(upload::Uploaded::New(file)), true) => (StatusCode::CREATED, Json(json!({ "file": file }))).into_response(),
        (Ok(upload::Uploaded::Replay(answer)), true) => answer,
        (Ok(_), false) => back("done=uploaded"),
        (Err(e), true) => e.into_response(),
        (Err(AppError::Forbidden(_)), false) => back("error=upload_denied"),
        (Err(AppError::PayloadTooLarge), false) => back("error=upload_too_large"),
        (Err(AppError::Internal(e)), false) => AppError::Internal(e).into_response(),
        (Err(_), false) => back("error=upload_failed"),
    }
}

#[derive(Deserialize)]
pub struct ShareForm {
    username: String,
    /// `datetime-local` (UTC), or empty for no expiry.
    #[serde(default)]
    expires: String,
}

/// `POST /files/{id}/shares`: the share form.
pub async fn share(
    State(state): State<AppState>,
    ClientSource(source): ClientSource,
    permit: Permit,
    Tx(tx): Tx,
    ApiPath(id): ApiPath<Uuid>,
    ApiForm(form): ApiForm<ShareForm>,
) -> Response {
    let expires_at = match form.expires.trim() {
        "" => None,
        text => match PrimitiveDateTime::parse(text, format_description!("[year]-[month]-[day]T[hour]:[minute]")) {
            Ok(at) => Some(at.assume_utc()),
            Err(_) => return back("error=share_invalid"),
        },
    };
    let input = shares::NewShare { username: form.username, expires_at };
    match shares::create(&state, &permit, &source, tx, id, input).await {
        Ok(_) => back("done=shared"),
        Err(AppError::Forbidden(_)) => back("error=share_denied"),
        Err(AppError::NotFound) => back("error=not_found"),
        Err(AppError::Internal(e)) => AppError::Internal(e).into_response(),
        Err(_) => back("error=share_invalid"),
    }
}

/// `POST /files/{id}/shares/{share_id}/revoke`
pub async fn revoke(
    State(state): State<AppState>,
    ClientSource(source): ClientSource,
    permit: Permit,
    Tx(tx): Tx,
    ApiPath((id, share_id)): ApiPath<(Uuid, Uuid)>,
) -> Response {
    match shares::delete(&state, &permit, &source, tx, id, share_id).await {
        Ok(()) => back("done=unshared"),
        Err(AppError::Forbidden(_)) => back("error=share_denied"),
        Err(AppError::NotFound) => back("error=not_found"),
        Err(e) => e.into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::human_size;

    #[test]
    fn sizes_are_shown_in_binary_units() {
        assert_eq!(human_size(0), "0 B");
        assert_eq!(human_size(1023), "1023 B");
        assert_eq!(human_size(1024), "1.0 KiB");
        assert_eq!(human_size(500_000), "488.3 KiB");
        assert_eq!(human_size(5 * 1024 * 1024), "5.0 MiB");
        assert_eq!(human_size(3 * 1024 * 1024 * 1024 * 1024), "3072.0 GiB");
    }
}

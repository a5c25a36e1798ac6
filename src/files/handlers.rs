//! HTTP handlers for `/api/files`: parse, call the capability, shape the answer.
//! Each takes the [`Permit`] its route's guard issued.

use axum::{
    Extension, Json,
    extract::{Multipart, State, multipart::MultipartRejection},
    http::{HeaderMap, header},
    response::IntoResponse,
};
use serde_json::json;
use uuid::Uuid;

use super::{catalog::ListQuery, download, manage, shares, upload};
use crate::{
    authz::Permit,
    http::{
        AppState,
        client::ClientSource,
        error::AppError,
        guard::Tx,
        idempotency::Idempotency,
        json::ApiJson,
        params::{ApiPath, ApiQuery},
        reply::{Answer, created, no_content, ok},
    },
};

pub async fn upload(
    State(s): State<AppState>,
    ClientSource(src): ClientSource,
    permit: Permit,
    headers: HeaderMap,
    idempotency: Option<Extension<Idempotency>>,
    form: Result<Multipart, MultipartRejection>,
) -> Answer {
    let form = form.map_err(|_| AppError::BadRequest("Expected a multipart/form-data body".into()))?;
    let declared = headers.get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()?.parse().ok());
    let key = idempotency.as_ref().map(|Extension(key)| key);
    match upload::upload(&s, &permit, &src, declared, key, form).await? {
        upload::Uploaded::New(file) => created("file", file),
        upload::Uploaded::Replay(answer) => Ok(answer),
    }
}

pub async fn list(
    State(s): State<AppState>,
    permit: Permit,
    Tx(mut tx): Tx,
    ApiQuery(q): ApiQuery<ListQuery>,
) -> Answer {
    let (files, next) = manage::list(&s, &permit, &mut tx, q).await?;
    tx.commit().await?;
    Ok(Json(json!({ "files": files, "nextCursor": next })).into_response())
}

pub async fn get(
    State(s): State<AppState>,
    ClientSource(src): ClientSource,
    permit: Permit,
    Tx(tx): Tx,
    ApiPath(id): ApiPath<Uuid>,
) -> Answer {
    ok("file", manage::get(&s, &permit, &src, tx, id).await?)
}

pub async fn download(
    State(s): State<AppState>,
    ClientSource(src): ClientSource,
    permit: Permit,
    Tx(tx): Tx,
    ApiPath(id): ApiPath<Uuid>,
) -> Answer {
    download::download(&s, &permit, &src, tx, id).await
}

pub async fn classify(
    State(s): State<AppState>,
    ClientSource(src): ClientSource,
    permit: Permit,
    Tx(tx): Tx,
    ApiPath(id): ApiPath<Uuid>,
    ApiJson(input): ApiJson<manage::Reclassify>,
) -> Answer {
    ok("file", manage::classify(&s, &permit, &src, tx, id, input).await?)
}

pub async fn delete(
    State(s): State<AppState>,
    ClientSource(src): ClientSource,
    permit: Permit,
    Tx(tx): Tx,
    ApiPath(id): ApiPath<Uuid>,
) -> Answer {
    manage::delete(&s, &permit, &src, tx, id).await?;
    no_content()
}

pub async fn share(
    State(s): State<AppState>,
    ClientSource(src): ClientSource,
    permit: Permit,
    Tx(tx): Tx,
    ApiPath(id): ApiPath<Uuid>,
    ApiJson(input): ApiJson<shares::NewShare>,
) -> Answer {
    let (share, new) = shares::create(&s, &permit, &src, tx, id, input).await?;
    if new { created("share", share) } else { ok("share", share) }
}

pub async fn list_shares(
    State(s): State<AppState>,
    ClientSource(src): ClientSource,
    permit: Permit,
    Tx(tx): Tx,
    ApiPath(id): ApiPath<Uuid>,
) -> Answer {
    ok("shares", shares::list(&s, &permit, &src, tx, id).await?)
}

pub async fn unshare(
    State(s): State<AppState>,
    ClientSource(src): ClientSource,
    permit: Permit,
    Tx(tx): Tx,
    ApiPath((id, share_id)): ApiPath<(Uuid, Uuid)>,
) -> Answer {
    shares::delete(&s, &permit, &src, tx, id, share_id).await?;
    no_content()
}

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

use super::{FileView, catalog::ListQuery, download, manage, shares, upload};
use crate::{
    authz::Permit,
    http::{
        AppState,
        apidoc::{Op, Reply},
        client::ClientSource,
        error::AppError,
        guard::Tx,
        idempotency::Idempotency,
        json::ApiJson,
        params::{ApiPath, ApiQuery},
        reply::{Answer, created, done, no_content, ok},
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
    tx.end_read_only().await?;
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
    done(manage::classify(&s, &permit, &src, tx, id, input).await?, |file| ok("file", file))
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

/// This module's operations, for the OpenAPI document.
pub fn api() -> Vec<Op> {
    // A text part: at most 256 bytes of UTF-8 (the schema counts characters), without NUL.
    let text_part = |description: &str| json!({ "type": "string", "maxLength": 256, "pattern": r"^[^\x00]*$", "description": description });
    let classification = text_part(
        "The classification level's name (case-insensitive, trimmed; 422 when there is none). Blank or absent: \
         the lowest level.",
    );
    let department = text_part(
        "The department's name (case-insensitive, trimmed; 422 when there is none). Blank or absent: the \
         uploader's department.",
    );
    let form = json!({
        "type": "object",
        "required": ["file"],
        "additionalProperties": false,
        "properties": {
            "classification": classification,
            "department": department,
            "file": {
                "type": "string",
                "format": "binary",
                "description": "The document, last: parts after it are refused (422). Its filename is kept \
                                (the last path component, made safe to show); its type is detected from the bytes.",
            },
        },
    });
    vec![
        Op::post("/api/files", "Upload a file")
            .describe(
                "A streamed `multipart/form-data` upload: the optional parts `classification` and `department` \
                 first, then `file`. Mandatory access control and the upload grant's scope are decided when the \
                 `file` part begins, so a refused upload stores nothing; the bytes are encrypted as they arrive, \
                 and the document exists once they are all stored. The file may be at most \
                 `FORTIFILE_MAX_UPLOAD_BYTES`.",
            )
            .body("multipart/form-data", form)
            .created::<FileView>("file")
            .error(400, "the body is not `multipart/form-data`, or the multipart body is malformed or interrupted")
            .error(
                403,
                "the classification is above the caller's clearance (`mac.denied`), or the department is not the \
                 caller's own and the upload grant is not organisation-wide (`rbac.denied`)",
            )
            .error(413, "the file is larger than `FORTIFILE_MAX_UPLOAD_BYTES` (or the body is declared larger)")
            .error(
                422,
                "there is no `file` part, a part other than `classification`, `department` and `file`, or a part \
                 after `file`; `classification` or `department` is too long, not UTF-8, or names nothing",
            )
            .error(507, "the document store is full: nothing was kept"),
        Op::get("/api/files", "List files")
            .describe(
                "A page of the files the caller may open, newest first: those classified at or below the caller's \
                 clearance and within the download grant's scope (one's own and those shared with one; the \
                 department's; the organisation's).",
            )
            .query::<ListQuery>()
            .page::<FileView>("files")
            .error(422, "`limit` is not between 1 and 200, or `after` is not a cursor from a previous page"),
        Op::get("/api/files/{id}", "Get a file's details")
            .ok::<FileView>("file")
            .error(
                403,
                "the file is classified above the caller's clearance (`mac.denied`), or is outside the download \
                 grant's scope (`rbac.denied`)",
            )
            .error(404, "no such file"),
        Op::get("/api/files/{id}/download", "Download a file")
            .describe(
                "The decrypted bytes, streamed, with the detected `Content-Type`, `Content-Length`, \
                 `Content-Disposition: attachment` and the SHA-256 in `X-Checksum-SHA256`. Range requests are not \
                 supported: the whole file is sent (200). A stored file that fails its integrity check answers 500 \
                 before the body starts, or, further in, ends the body early.",
            )
            .content("*/*", "The file's bytes")
            .error(
                403,
                "the file is classified above the caller's clearance (`mac.denied`), or is outside the download \
                 grant's scope (`rbac.denied`)",
            )
            .error(404, "no such file"),
        Op::patch("/api/files/{id}", "Reclassify a file")
            .held()
            .describe(
                "Raising needs a clearance at least the new level; lowering is recorded as `file.declassify`. \
                 Either needs `file.classify` over the file.",
            )
            .json::<manage::Reclassify>()
            .ok::<FileView>("file")
            .error(
                403,
                "the file or the new level is above the caller's clearance (`mac.denied`), or the file is outside \
                 the classify grant's scope (`rbac.denied`)",
            )
            .error(404, "no such file")
            .error(422, "there is no classification level by that name"),
        Op::delete("/api/files/{id}", "Delete a file")
            .no_content()
            .error(
                403,
                "the file is classified above the caller's clearance (`mac.denied`), or is outside the delete \
                 grant's scope (`rbac.denied`)",
            )
            .error(404, "no such file"),
        Op::post("/api/files/{id}/shares", "Share a file")
            .describe(
                "Shares the file with an active colleague, whose clearance must be at least the file's \
                 classification; sharing again with the same person changes the expiry of one's own share.",
            )
            .json::<shares::NewShare>()
            .answers(201, Reply::new().field::<shares::ShareView>("share").describe("Shared"))
            .answers(
                200,
                Reply::new()
                    .field::<shares::ShareView>("share")
                    .describe("The caller's share existed: its expiry changed"),
            )
            .error(
                403,
                "the file is above the caller's clearance or the recipient's (`mac.denied`), is outside the share \
                 grant's scope, or someone else already shared it with that user (`rbac.denied`)",
            )
            .error(404, "no such file")
            .error(
                422,
                "`expiresAt` is not in the future, there is no active user by that name, or the user owns the file",
            ),
        Op::get("/api/files/{id}/shares", "List a file's shares")
            .ok::<Vec<shares::ShareView>>("shares")
            .error(
                403,
                "the file is classified above the caller's clearance (`mac.denied`), or is outside the share \
                 grant's scope (`rbac.denied`)",
            )
            .error(404, "no such file"),
        Op::delete("/api/files/{id}/shares/{share_id}", "Revoke a share")
            .no_content()
            .error(
                403,
                "the file is classified above the caller's clearance (`mac.denied`), or is outside the share \
                 grant's scope (`rbac.denied`)",
            )
            .error(404, "no such file, or the file has no such share"),
    ]
}

//! `POST /api/files`: a multipart upload, decided before a byte is stored,
//! encrypted as it streams in, and recorded only once the object is complete.
//!
//! Parts, in order: optional `classification` and `department` (names), then
//! `file`. The decision (MAC, then the upload grant's scope for the department)
//! is made when the `file` part begins, so a refused upload stores nothing.
//! Memory stays bounded whatever the size: the body is read chunk by chunk,
//! sealed in 64 KiB segments and written as 5 MiB multipart parts.
//!
//! No half states: the row and its `file.upload` audit row commit together after
//! the object is fully stored; a refused, oversize, interrupted or failed upload
//! aborts the object (also when the request is dropped: see `ObjectWriter`).
//!
//! A stream cannot be held inside one transaction, so the upload decides where
//! it acts, twice: before the first byte (in the transaction that places the
//! upload, just before its object is recorded as in flight) and again in the
//! transaction that inserts the row, each
//! time on the uploader's grants, clearance and the level's rank as they are
//! then. A revocation or a re-ranking during the stream refuses the row.

use axum::extract::multipart::{Field, Multipart, MultipartError};
use ring::digest;
use serde_json::json;
use uuid::Uuid;

use super::{
    FileView,
    catalog::{self, clean_filename},
    crypto::Sealer,
    manage::refused,
    pending,
};
use crate::{
    audit::{self, Action, Entry, Outcome, Source},
    authz::{
        Permit,
        files::{self as decide, Level},
    },
    db::TenantTx,
    http::{AppState, error::AppError, idempotency::Idempotency},
    storage::{ObjectWriter, Storage},
};

/// Bytes of the start of a file used to detect its type.
const SNIFF_LEN: usize = 8192;
/// The longest text part (`classification`, `department`).
const MAX_TEXT_PART: usize = 256;

/// Where the upload goes, once decided.
struct Placement {
    classification_id: Uuid,
    classification: Level,
    department_id: Uuid,
    department: String,
}

/// A completely stored object, not yet recorded.
struct Stored {
    file_id: Uuid,
    key: String,
    wrapped_key: Vec<u8>,
    name: String,
    size: u64,
    sha256: Vec<u8>,
    content_type: String,
}

/// Room for the multipart framing and text parts around the file's bytes.
const FRAMING_ALLOWANCE: u64 = 64 * 1024;

/// Uploads the multipart `form`. `declared` is the request's `Content-Length`:
/// a body declared larger than the limit allows is refused before it is read.
pub async fn upload(
    state: &AppState,
    permit: &Permit,
    source: &Source,
    declared: Option<u64>,
    idempotency: Option<&Idempotency>,
    mut form: Multipart,
) -> Result<Uploaded, AppError> {
    let limit = state.files.max_upload_bytes;
    if declared.is_some_and(|len| len > limit + FRAMING_ALLOWANCE) {
        return Err(too_large(state, permit, source, "", None, limit).await);
    }
    let mut classification = None;
    let mut department = None;
    let field = loop {
        let field = form.next_field().await.map_err(multipart_error)?;
        let Some(field) = field else { return Err(AppError::invalid("file", "a file part is required")) };
        match field.name() {
            Some("classification") => classification = Some(text_part(field, "classification").await?),
            Some("department") => department = Some(text_part(field, "department").await?),
            Some("file") => break field,
            _ => return Err(AppError::invalid("file", "expected the parts classification, department and file")),
        }
    };
    let placement = place(state, permit, source, classification.as_deref(), department.as_deref()).await?;
    let name = clean_filename(field.file_name().unwrap_or(""));
    let stored = store(state, permit, source, field, name, placement.classification.rank).await?;
    // Nothing may follow the file: a part after it would not have been decided on.
    let trailing = form.next_field().await.map_err(multipart_error);
    if !matches!(trailing, Ok(None)) {
        pending::remove(state, permit.tenant_id(), &stored.key).await;
        return Err(trailing.err().unwrap_or_else(|| {
            AppError::invalid("file", "the file must be the last part (classification and department come first)")
        }));
    }
    match record(state, permit, source, &placement, &stored, idempotency).await {
        Ok(Uploaded::New(view)) => Ok(Uploaded::New(view)),
        Ok(replayed) => {
            // The key's first upload made the document; these bytes are not kept.
            pending::remove(state, permit.tenant_id(), &stored.key).await;
            Ok(replayed)
        }
        Err(e) => {
            pending::remove(state, permit.tenant_id(), &stored.key).await;
            Err(e)
        }
    }
}

/// Resolves the classification (default: the lowest level, `public`) and the
/// department (default: the uploader's) and decides. A refusal is recorded.
async fn place(
    state: &AppState,
    permit: &Permit,
    source: &Source,
    classification: Option<&str>,
    department: Option<&str>,
) -> Result<Placement, AppError> {
    let tx = permit.transaction(&state.db).await?;
    let (mut tx, permit) = current(state, permit, source, tx).await?;
    let permit = &permit;
    let (classification_id, classification) = match classification.map(str::trim).filter(|c| !c.is_empty()) {
        None => catalog::lowest_level(&mut tx).await?,
        Some(name) => catalog::level_named(&mut tx, name)
            .await?
            .ok_or_else(|| AppError::invalid("classification", "no such classification level"))?,
    };
    let (department_id, department) = match department.map(str::trim).filter(|d| !d.is_empty()) {
        None => {
            let id = permit.subject().department_id;
            let name: String =
                sqlx::query_scalar("SELECT name FROM departments WHERE id = $1").bind(id).fetch_one(tx.conn()).await?;
            (id, name)
        }
        Some(name) => catalog::department_named(&mut tx, name)
            .await?
            .ok_or_else(|| AppError::invalid("department", "no such department"))?,
    };
    if let Err(refusal) = decide::decide_upload(permit, &classification, department_id) {
        let error = refusal.record(&mut tx, permit, source).await?;
        tx.commit().await?;
        return Err(error);
    }
    tx.commit().await?;
    Ok(Placement { classification_id, classification, department_id, department })
}

/// Streams the `file` part into a new encrypted object.
async fn store(
    state: &AppState,
    permit: &Permit,
    source: &Source,
    field: Field<'_>,
    name: String,
    rank: i32,
) -> Result<Stored, AppError> {
    let vault = &state.files;
    let file_id = Uuid::new_v4();
    let key = Storage::new_key(permit.tenant_id());
    let (data_key, wrapped_key) =
        vault.master.new_data_key(permit.tenant_id(), file_id).map_err(anyhow::Error::from)?;
    let (sealer, header) = Sealer::new(data_key).map_err(anyhow::Error::from)?;
    super::pending::begin_upload(state, permit.tenant_id(), permit.user_id(), &key).await?;
    let into = Encrypting { key: &key, header, sealer };
    match write(state, permit, source, field, name, rank, into).await {
        Ok((name, size, sha256, head)) => {
            Ok(Stored { file_id, key, wrapped_key, name, size, sha256, content_type: detect_content_type(&head) })
        }
        Err(e) => {
            // Whatever stopped it (store full or gone, client gone, too large),
            // nothing of it is kept: the partial object and its record go now
            // (or, if the store cannot be reached, with the sweep).
            pending::remove(state, permit.tenant_id(), &key).await;
            Err(e)
        }
    }
}

/// The object an upload is encrypted into.
struct Encrypting<'a> {
    key: &'a str,
    header: Vec<u8>,
    sealer: Sealer,
}

/// The file's bytes, encrypted into the object: its name, size, SHA-256 and
/// first bytes (for the content type).
async fn write(
    state: &AppState,
    permit: &Permit,
    source: &Source,
    mut field: Field<'_>,
    name: String,
    rank: i32,
    into: Encrypting<'_>,
) -> Result<(String, u64, Vec<u8>, Vec<u8>), AppError> {
    let Encrypting { key, header, mut sealer } = into;
    let vault = &state.files;
    let mut writer = vault.storage.writer(key).await.map_err(AppError::from_storage)?;
    writer.write(&header).await.map_err(AppError::from_storage)?;

    let mut sha = digest::Context::new(&digest::SHA256);
    let mut head = Vec::with_capacity(SNIFF_LEN);
    let mut size: u64 = 0;
    let mut sealed = Vec::new();
    loop {
        let chunk = match field.chunk().await {
            Ok(Some(chunk)) => chunk,
            Ok(None) => break,
            Err(e) => {
                writer.abort().await;
                return Err(multipart_error(e));
            }
        };
        size += chunk.len() as u64;
        if size > vault.max_upload_bytes {
            writer.abort().await;
            return Err(too_large(state, permit, source, &name, Some(rank), vault.max_upload_bytes).await);
        }
        sha.update(&chunk);
        if head.len() < SNIFF_LEN {
            head.extend_from_slice(&chunk[..chunk.len().min(SNIFF_LEN - head.len())]);
        }
        sealer.push(&chunk, &mut sealed).map_err(anyhow::Error::from)?;
        flush(&mut writer, &mut sealed).await.map_err(AppError::from_storage)?;
    }
    sealer.finish(&mut sealed).map_err(anyhow::Error::from)?;
    flush(&mut writer, &mut sealed).await.map_err(AppError::from_storage)?;
    writer.finish().await.map_err(AppError::from_storage)?;
    pending::renew_upload(state, permit.tenant_id(), permit.user_id(), key).await?;
    Ok((name, size, sha.finish().as_ref().to_vec(), head))
}

async fn flush(writer: &mut ObjectWriter, sealed: &mut Vec<u8>) -> anyhow::Result<()> {
    if !sealed.is_empty() {
        writer.write(sealed).await?;
        sealed.clear();
    }
    Ok(())
}

/// The permit decided again in `tx` on the uploader as they are now, or the
/// refusal recorded (and committed) in `tx`.
async fn current(
    state: &AppState,
    permit: &Permit,
    source: &Source,
    mut tx: TenantTx,
) -> Result<(TenantTx, Permit), AppError> {
    match permit.recheck(&mut tx, state.clock.now()).await? {
        Ok(fresh) => Ok((tx, fresh)),
        Err(denial) => Err(crate::authz::refuse(tx, permit, source, denial).await),
    }
}

/// Inserts the row and its audit row in one transaction, deciding again first.
async fn record(
    state: &AppState,
    permit: &Permit,
    source: &Source,
    placement: &Placement,
    stored: &Stored,
    idempotency: Option<&Idempotency>,
) -> Result<Uploaded, AppError> {
    let tx = permit.transaction(&state.db).await?;
    let (mut tx, permit) = current(state, permit, source, tx).await?;
    let permit = &permit;
    // The level may have been re-ranked or renamed while the bytes streamed.
    let level: Option<(String, i32)> = sqlx::query_as("SELECT name, level FROM clearance_levels WHERE id = $1")
        .bind(placement.classification_id)
        .fetch_optional(tx.conn())
        .await?;
    let (name, rank) = level.ok_or_else(|| AppError::invalid("classification", "no such classification level"))?;
    let classification = Level { name, rank };
    if let Err(refusal) = decide::decide_upload(permit, &classification, placement.department_id) {
        return Err(refused(tx, permit, source, refusal).await);
    }
    if let Some(key) = idempotency {
        // The fingerprint of a streamed body: the bytes' hash and the fields.
        let summary = json!({
            "sha256": hex::encode(&stored.sha256),
            "name": stored.name,
            "classification": placement.classification_id,
            "department": placement.department_id,
        });
        if let Some(answer) = key.claim(&mut tx, state, summary.to_string().as_bytes()).await? {
            return Ok(Uploaded::Replay(answer));
        }
    }
    pending::claim_upload(&mut tx, &stored.key).await?;
    sqlx::query(
        "INSERT INTO files (id, tenant_id, owner_id, department_id, classification_id, name, size, content_type, \
                            sha256, object_key, key_id, wrapped_key, created_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)",
    )
    .bind(stored.file_id)
    .bind(permit.tenant_id())
    .bind(permit.user_id())
    .bind(placement.department_id)
    .bind(placement.classification_id)
    .bind(&stored.name)
    .bind(stored.size as i64)
    .bind(&stored.content_type)
    .bind(&stored.sha256)
    .bind(&stored.key)
    .bind(state.files.master.id())
    .bind(&stored.wrapped_key)
    .bind(state.clock.now())
    .execute(tx.conn())
    .await?;
    let entry = Entry::new(Action::FileUpload, Outcome::Success)
        .target("file", stored.file_id)
        .details(json!({
            "name": stored.name,
            "size": stored.size,
            "sha256": hex::encode(&stored.sha256),
            "contentType": stored.content_type,
            "classification": classification.name,
            "department": placement.department,
        }))
        .classified(classification.rank);
    audit::record(&mut tx, source, entry).await?;
    let view = catalog::view(&mut tx, stored.file_id).await?;
    tx.commit().await?;
    crate::telemetry::uploaded(stored.size);
    Ok(Uploaded::New(view))
}

/// What an upload came to.
pub enum Uploaded {
    New(FileView),
    /// The answer to the first upload with the same `Idempotency-Key`.
    Replay(axum::response::Response),
}

/// Records the refused oversize upload (classified at `rank` once its placement
/// was decided) and returns the 413.
async fn too_large(
    state: &AppState,
    permit: &Permit,
    source: &Source,
    name: &str,
    rank: Option<i32>,
    limit: u64,
) -> AppError {
    let mut entry = Entry::new(Action::FileUpload, Outcome::Fail)
        .details(json!({ "name": name, "reason": "too_large", "limit": limit }));
    if let Some(rank) = rank {
        entry = entry.classified(rank);
    }
    match permit.record_alone(&state.db, source, entry).await {
        Ok(_) => AppError::PayloadTooLarge,
        Err(e) => e.into(),
    }
}

async fn text_part(mut field: Field<'_>, name: &'static str) -> Result<String, AppError> {
    let mut bytes = Vec::new();
    while let Some(chunk) = field.chunk().await.map_err(multipart_error)? {
        bytes.extend_from_slice(&chunk);
        if bytes.len() > MAX_TEXT_PART {
            return Err(AppError::invalid(name, "too long"));
        }
    }
    let text = String::from_utf8(bytes).map_err(|_| AppError::invalid(name, "must be UTF-8 text"))?;
    crate::http::input::refuse_nul(name, &text)?;
    Ok(text)
}

fn multipart_error(e: MultipartError) -> AppError {
    if e.status() == axum::http::StatusCode::PAYLOAD_TOO_LARGE {
        AppError::PayloadTooLarge
    } else {
        AppError::BadRequest(format!("Malformed or interrupted multipart body: {}", e.body_text()))
    }
}

/// The content type, from the bytes: a known signature, else UTF-8 text, else
/// `application/octet-stream`. The client's claim is never used.
pub fn detect_content_type(head: &[u8]) -> String {
    if let Some(kind) = infer::get(head) {
        return kind.mime_type().to_string();
    }
    let text = match std::str::from_utf8(head) {
        Ok(_) => true,
        // A character cut at the end of the sniffed prefix is still text.
        Err(e) => e.error_len().is_none() && head.len() == SNIFF_LEN,
    };
    let printable = !head.iter().any(|b| b.is_ascii_control() && !matches!(b, b'\t' | b'\n' | b'\r' | 0x0c));
    if text && printable { "text/plain; charset=utf-8" } else { "application/octet-stream" }.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_content_type_comes_from_the_bytes() {
        assert_eq!(detect_content_type(b"%PDF-1.7\n..."), "application/pdf");
        assert_eq!(detect_content_type(b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR"), "image/png");
        assert_eq!(detect_content_type("plain words, café\n".as_bytes()), "text/plain; charset=utf-8");
        assert_eq!(detect_content_type(b"\0\x01\x02binary"), "application/octet-stream");
        assert_eq!(detect_content_type(b""), "text/plain; charset=utf-8");
    }
}

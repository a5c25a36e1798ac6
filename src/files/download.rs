//! `GET /api/files/{id}/download`: decided, audited, then streamed while it is
//! decrypted. Plaintext leaves only segment by segment after each segment's tag
//! verified. The first segment is opened before the response starts, so an
//! altered object (or a missing key) usually answers an error status; an
//! alteration further in ends the stream early (the client sees a body shorter
//! than `Content-Length`) and is recorded as a failed `file.download`.

use axum::{
    body::{Body, Bytes},
    http::{HeaderValue, header},
    response::{IntoResponse, Response},
};
use futures::{StreamExt, stream::BoxStream};
use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};
use serde_json::json;
use uuid::Uuid;

use std::collections::VecDeque;

use super::{
    catalog::StoredFile,
    crypto::{HEADER_LEN, Opener, SEGMENT_SIZE, TAG_LEN},
};
use crate::{
    audit::{self, Action, Entry, Outcome, Source},
    authz::{
        Permit,
        files::{FileFacts, FileOp},
    },
    db::TenantTx,
    http::{AppState, error::AppError},
};

pub async fn download(
    state: &AppState,
    permit: &Permit,
    source: &Source,
    tx: TenantTx,
    id: Uuid,
) -> Result<Response, AppError> {
    let (mut tx, file) = super::manage::decided(state, permit, source, tx, id, FileOp::Download).await?;
    let mut plaintext = match Plaintext::open(state, permit, &file).await {
        Ok(p) => p,
        Err(failure) => {
            audit::record(&mut tx, source, failure_entry(&file, &failure)).await?;
            tx.commit().await?;
            return Err(failure.into_error());
        }
    };
    let first = match plaintext.next().await {
        Some(Ok(bytes)) => bytes,
        other => {
            let failure = match other {
                Some(Err(f)) => f,
                _ => Failure::Integrity,
            };
            audit::record(&mut tx, source, failure_entry(&file, &failure)).await?;
            tx.commit().await?;
            return Err(failure.into_error());
        }
    };
    let entry = Entry::new(Action::FileDownload, Outcome::Success)
        .target("file", id)
        .details(json!({
            "name": file.name,
            "size": file.size,
            "classification": file.facts.classification.name,
        }))
        .classified(file.facts.classification.rank);
    audit::record(&mut tx, source, entry).await?;
    tx.commit().await?;

    let rest = futures::stream::unfold(
        Some((plaintext, state.clone(), permit.clone(), source.clone(), file.facts.clone(), file.name.clone())),
        |carry| async move {
            let (mut plaintext, state, permit, source, facts, name) = carry?;
            match plaintext.next().await {
                None => None,
                Some(Ok(bytes)) => {
                    crate::telemetry::downloaded(bytes.len() as u64);
                    Some((Ok(bytes), Some((plaintext, state, permit, source, facts, name))))
                }
                Some(Err(failure)) => {
                    record_late_failure(&state, &permit, &source, &facts, &name, &failure).await;
                    Some((Err(std::io::Error::other(failure.message())), None))
                }
            }
        },
    );
    let body = futures::stream::once(async move {
        crate::telemetry::downloaded(first.len() as u64);
        Ok::<_, std::io::Error>(first)
    })
    .chain(rest);
    Ok(attachment(&file, Body::from_stream(body)))
}

/// The response headers of a download.
fn attachment(file: &StoredFile, body: Body) -> Response {
    let mut response = body.into_response();
    let headers = response.headers_mut();
    let content_type =
        HeaderValue::from_str(&file.content_type).unwrap_or(HeaderValue::from_static("application/octet-stream"));
    headers.insert(header::CONTENT_TYPE, content_type);
    headers.insert(header::CONTENT_LENGTH, HeaderValue::from(file.size));
    if let Ok(value) = HeaderValue::from_str(&content_disposition(&file.name)) {
        headers.insert(header::CONTENT_DISPOSITION, value);
    }
    headers.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    // Should a browser ever render it anyway, it runs in a sandbox with nothing allowed.
    headers.insert(header::CONTENT_SECURITY_POLICY, HeaderValue::from_static("sandbox; default-src 'none'"));
    headers.insert("x-checksum-sha256", HeaderValue::from_str(&file.sha256).expect("hex is a valid header"));
    response
}

/// RFC 6266: `attachment`, an ASCII fallback `filename` (anything else becomes
/// `_`), and the exact name as RFC 8187 `filename*`.
pub fn content_disposition(name: &str) -> String {
    const ATTR_CHAR: &AsciiSet = &NON_ALPHANUMERIC
        .remove(b'!')
        .remove(b'#')
        .remove(b'$')
        .remove(b'&')
        .remove(b'+')
        .remove(b'-')
        .remove(b'.')
        .remove(b'^')
        .remove(b'_')
        .remove(b'`')
        .remove(b'|')
        .remove(b'~');
    let fallback: String = name
        .chars()
        .map(|c| if c.is_ascii_graphic() && !matches!(c, '"' | '\\' | '%' | ';') || c == ' ' { c } else { '_' })
        .collect();
    format!("attachment; filename=\"{fallback}\"; filename*=UTF-8''{}", utf8_percent_encode(name, ATTR_CHAR))
}

/// Why a stored file could not be read.
enum Failure {
    /// It failed authentication: altered, truncated, or not ours.
    Integrity,
    /// Its key was wrapped by a master key this server does not have.
    Key(String),
    /// The storage backend failed.
    Storage(String),
}

impl Failure {
    fn reason(&self) -> &'static str {
        match self {
            Failure::Integrity => "integrity_check_failed",
            Failure::Key(_) => "master_key_unavailable",
            Failure::Storage(_) => "storage_error",
        }
    }

    fn message(&self) -> &'static str {
        match self {
            Failure::Integrity => "The stored file failed its integrity check",
            Failure::Key(_) | Failure::Storage(_) => "The stored file cannot be read right now",
        }
    }

    /// What the log gets (never the client).
    fn detail(&self) -> &str {
        match self {
            Failure::Integrity => "authentication of a segment or the wrapped key failed",
            Failure::Key(id) => id,
            Failure::Storage(e) => e,
        }
    }

    fn into_error(self) -> AppError {
        tracing::error!(reason = self.reason(), detail = self.detail(), "a download failed");
        AppError::ServerFailure(self.message())
    }
}

fn failure_entry(file: &StoredFile, failure: &Failure) -> Entry {
    Entry::new(Action::FileDownload, Outcome::Fail)
        .target("file", file.facts.id)
        .details(json!({ "name": file.name, "reason": failure.reason() }))
        .classified(file.facts.classification.rank)
}

async fn record_late_failure(
    state: &AppState,
    permit: &Permit,
    source: &Source,
    file: &FileFacts,
    name: &str,
    f: &Failure,
) {
    tracing::error!(reason = f.reason(), detail = f.detail(), file = %file.id, "a download failed mid-stream");
    let entry = Entry::new(Action::FileDownload, Outcome::Fail)
        .target("file", file.id)
        .details(json!({ "name": name, "reason": f.reason(), "midStream": true }))
        .classified(file.classification.rank);
    if let Err(e) = permit.record_alone(&state.db, source, entry).await {
        tracing::error!(error = %e, "could not record a failed download");
    }
}

/// A stored object, decrypted as it is read: segments opened in place in the
/// blocks the storage read, handed on without a copy.
struct Plaintext {
    chunks: BoxStream<'static, anyhow::Result<Bytes>>,
    opener: Option<Opener>,
    ready: VecDeque<Bytes>,
}

impl Plaintext {
    async fn open(state: &AppState, permit: &Permit, file: &StoredFile) -> Result<Plaintext, Failure> {
        let key = state
            .files
            .master
            .open_data_key(&file.key_id, permit.tenant_id(), file.facts.id, &file.wrapped_key)
            .map_err(|e| match e {
                super::crypto::CryptoError::UnknownMasterKey(id) => Failure::Key(id),
                _ => Failure::Integrity,
            })?;
        // Local reads are sized to whole segments, so a block never splits one;
        // the first is one segment, verified before the transaction commits.
        let sealed = SEGMENT_SIZE + TAG_LEN;
        let (first, block) = (HEADER_LEN + sealed, BLOCK_SEGMENTS * sealed);
        let chunks = state
            .files
            .storage
            .read(&file.object_key, first, block)
            .await
            .map_err(|e| Failure::Storage(format!("{e:#}")))?;
        let size = u64::try_from(file.size).map_err(|_| Failure::Integrity)?;
        Ok(Plaintext { chunks, opener: Some(Opener::new(key, size)), ready: VecDeque::new() })
    }

    /// The next verified plaintext, `None` after the last segment.
    async fn next(&mut self) -> Option<Result<Bytes, Failure>> {
        loop {
            if let Some(bytes) = self.ready.pop_front() {
                return Some(Ok(bytes));
            }
            let opener = self.opener.as_mut()?;
            match self.chunks.next().await {
                Some(Ok(chunk)) => match opener.push(chunk) {
                    Ok(plain) => self.ready.extend(plain),
                    Err(_) => {
                        self.opener = None;
                        return Some(Err(Failure::Integrity));
                    }
                },
                Some(Err(e)) => {
                    self.opener = None;
                    return Some(Err(Failure::Storage(format!("{e:#}"))));
                }
                None => {
                    let opener = self.opener.take()?;
                    // An empty final chunk: an empty file still answers once.
                    return Some(opener.finish().map(|()| Bytes::new()).map_err(|_| Failure::Integrity));
                }
            }
        }
    }
}

/// Segments per local read: 16 × 64 KiB, about 1 MiB.
const BLOCK_SEGMENTS: usize = 16;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn content_disposition_is_an_attachment_with_an_encoded_name() {
        assert_eq!(
            content_disposition("report.pdf"),
            "attachment; filename=\"report.pdf\"; filename*=UTF-8''report.pdf"
        );
        let tricky = content_disposition("a\"b;c\r\n%d é\u{202E}.txt");
        assert!(
            tricky.starts_with(
                "attachment; filename=\"a_b_c___d __.txt\"; filename*=UTF-8''a%22b%3Bc%0D%0A%25d%20%C3%A9%E2%80%AE.txt"
            ),
            "{tricky}"
        );
        assert!(HeaderValue::from_str(&tricky).is_ok());
    }
}

//! The `files` table: what the API shows, what access depends on, and the list
//! query, which applies the same MAC and scope rules as `authz::files` in SQL.

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;

use crate::{
    authz::{
        Permission, Subject,
        files::{FileFacts, Level},
    },
    db::TenantTx,
    http::{
        error::AppError,
        params::{finish_page, parse_cursor},
    },
};

/// A file as the API shows it (seed 002 style, camelCase).
#[derive(Debug, Clone, Serialize, sqlx::FromRow, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct FileView {
    pub id: Uuid,
    /// The filename as uploaded, made safe to show (its last path component,
    /// without control or bidirectional formatting characters).
    pub name: String,
    /// Bytes.
    pub size: i64,
    /// Detected from the bytes (the client's claim is not used).
    pub content_type: String,
    /// The SHA-256 of the bytes, in hex.
    #[schema(pattern = r"^[0-9a-f]{64}$")]
    pub sha256: String,
    /// The classification level's name.
    pub classification: String,
    /// The classification level's colour (seed 002), for display.
    pub classification_color: String,
    pub department: String,
    /// The uploader's username.
    pub owner: String,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
}

/// The view's SELECT, as a macro so that queries built on it stay static strings
/// (`concat!`): no SQL text is ever made at run time.
macro_rules! view_select {
    () => {
        "SELECT f.id, f.name, f.size, f.content_type, encode(f.sha256, 'hex') AS sha256, \
        c.name AS classification, c.color AS classification_color, d.name AS department, \
        u.username AS owner, f.created_at \
     FROM files f \
     JOIN clearance_levels c ON c.id = f.classification_id \
     JOIN departments d ON d.id = f.department_id \
     JOIN users u ON u.id = f.owner_id "
    };
}

pub async fn view(tx: &mut TenantTx, id: Uuid) -> Result<FileView, sqlx::Error> {
    sqlx::query_as(concat!(view_select!(), "WHERE f.id = $1")).bind(id).fetch_one(tx.conn()).await
}

/// A stored file: the facts access depends on, and what reading it needs.
#[derive(Debug)]
pub struct StoredFile {
    pub facts: FileFacts,
    pub name: String,
    pub size: i64,
    pub content_type: String,
    pub sha256: String,
    pub object_key: String,
    pub key_id: String,
    pub wrapped_key: Vec<u8>,
}

#[derive(sqlx::FromRow)]
struct StoredRow {
    id: Uuid,
    owner_id: Uuid,
    department_id: Uuid,
    classification: String,
    rank: i32,
    shared_with_me: bool,
    name: String,
    size: i64,
    content_type: String,
    sha256: String,
    object_key: String,
    key_id: String,
    wrapped_key: Vec<u8>,
}

macro_rules! stored_select {
    () => {
        "SELECT f.id, f.owner_id, f.department_id, c.name AS classification, c.level AS rank, \
                EXISTS (SELECT 1 FROM file_shares s WHERE s.file_id = f.id AND s.recipient_id = $2 \
                        AND (s.expires_at IS NULL OR s.expires_at > $3)) AS shared_with_me, \
                f.name, f.size, f.content_type, encode(f.sha256, 'hex') AS sha256, f.object_key, f.key_id, f.wrapped_key \
         FROM files f JOIN clearance_levels c ON c.id = f.classification_id \
         WHERE f.id = $1"
    };
}

/// The file `id` as `me` sees it at `now` (including whether a live share with
/// `me` exists). With `lock`, the row is locked for the rest of `tx` (changes to
/// the file serialize); reads take no lock, so downloads never queue.
pub async fn stored(
    tx: &mut TenantTx,
    id: Uuid,
    me: Uuid,
    now: OffsetDateTime,
    lock: bool,
) -> Result<StoredFile, AppError> {
    let sql = if lock { concat!(stored_select!(), " FOR UPDATE OF f") } else { stored_select!() };
    let row: Option<StoredRow> = sqlx::query_as(sql).bind(id).bind(me).bind(now).fetch_optional(tx.conn()).await?;
    let row = row.ok_or(AppError::NotFound)?;
    Ok(StoredFile {
        facts: FileFacts {
            id: row.id,
            owner_id: row.owner_id,
            department_id: row.department_id,
            classification: Level { name: row.classification, rank: row.rank },
            shared_with_me: row.shared_with_me,
        },
        name: row.name,
        size: row.size,
        content_type: row.content_type,
        sha256: row.sha256,
        object_key: row.object_key,
        key_id: row.key_id,
        wrapped_key: row.wrapped_key,
    })
}

/// A clearance level by name (case-insensitive): its id and level.
pub async fn level_named(tx: &mut TenantTx, name: &str) -> Result<Option<(Uuid, Level)>, sqlx::Error> {
    let row: Option<(Uuid, String, i32)> =
        sqlx::query_as("SELECT id, name, level FROM clearance_levels WHERE lower(name) = lower($1)")
            .bind(name)
            .fetch_optional(tx.conn())
            .await?;
    Ok(row.map(|(id, name, rank)| (id, Level { name, rank })))
}

/// The lowest classification: what an upload gets when it names none (`public`
/// with the default levels).
pub async fn lowest_level(tx: &mut TenantTx) -> Result<(Uuid, Level), sqlx::Error> {
    let (id, name, rank): (Uuid, String, i32) =
        sqlx::query_as("SELECT id, name, level FROM clearance_levels ORDER BY level LIMIT 1")
            .fetch_one(tx.conn())
            .await?;
    Ok((id, Level { name, rank }))
}

pub async fn department_named(tx: &mut TenantTx, name: &str) -> Result<Option<(Uuid, String)>, sqlx::Error> {
    sqlx::query_as("SELECT id, name FROM departments WHERE lower(name) = lower($1)")
        .bind(name)
        .fetch_optional(tx.conn())
        .await
}

/// `GET /api/files` query parameters.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct ListQuery {
    /// Only files of this classification level (its name, case-insensitive).
    #[param(pattern = r"^[^\x00]*$")]
    pub classification: Option<String>,
    /// Only files of this department (its name, case-insensitive).
    #[param(pattern = r"^[^\x00]*$")]
    pub department: Option<String>,
    /// A part of the filename (case-insensitive).
    #[param(pattern = r"^[^\x00]*$")]
    pub name: Option<String>,
    /// Files per page (default 50).
    #[param(minimum = 1, maximum = 200)]
    pub limit: Option<i64>,
    /// The `nextCursor` of the previous page.
    #[param(pattern = "@cursor")]
    pub after: Option<String>,
}

/// A page of the files `subject` may view, newest first, and the next cursor.
///
/// The WHERE clause is the list form of `authz::files::decide` for viewing:
/// classification rank ≤ the subject's clearance rank (MAC), and the download
/// grant's scope (own files and live shares; the department's; the tenant's).
pub async fn list(
    tx: &mut TenantTx,
    subject: &Subject,
    query: &ListQuery,
    now: OffsetDateTime,
) -> Result<(Vec<FileView>, Option<String>), AppError> {
    let limit = query.limit.unwrap_or(50);
    if !(1..=200).contains(&limit) {
        return Err(AppError::invalid("limit", "must be between 1 and 200"));
    }
    let after = query.after.as_deref().map(parse_cursor).transpose()?;

    let Some(scope) = subject.scope_of(Permission::FileDownload) else { return Ok((Vec::new(), None)) };
    let pattern = query.name.as_deref().map(|n| format!("%{}%", escape_like(n)));
    let sql = concat!(
        view_select!(),
        "WHERE c.level <= $1 \
           AND ($2 = 'tenant' OR f.owner_id = $3 OR ($2 = 'department' AND f.department_id = $4) \
                OR EXISTS (SELECT 1 FROM file_shares s WHERE s.file_id = f.id AND s.recipient_id = $3 \
                           AND (s.expires_at IS NULL OR s.expires_at > $5))) \
           AND ($6::text IS NULL OR lower(c.name) = lower($6)) \
           AND ($7::text IS NULL OR lower(d.name) = lower($7)) \
           AND ($8::text IS NULL OR f.name ILIKE $8 ESCAPE '\\') \
           AND ($9::timestamptz IS NULL OR (f.created_at, f.id) < ($9, $10)) \
         ORDER BY f.created_at DESC, f.id DESC LIMIT $11"
    );
    let files: Vec<FileView> = sqlx::query_as(sql)
        .bind(subject.clearance_rank)
        .bind(scope.as_str())
        .bind(subject.user_id)
        .bind(subject.department_id)
        .bind(now)
        .bind(query.classification.as_deref())
        .bind(query.department.as_deref())
        .bind(pattern)
        .bind(after.map(|(at, _)| at))
        .bind(after.map(|(_, id)| id))
        .bind(limit + 1)
        .fetch_all(tx.conn())
        .await?;
    Ok(finish_page(files, limit, |f| (f.created_at, f.id)))
}

fn escape_like(text: &str) -> String {
    text.chars().fold(String::new(), |mut out, c| {
        if matches!(c, '%' | '_' | '\\') {
            out.push('\\');
        }
        out.push(c);
        out
    })
}

/// The longest filename kept, in characters.
pub const MAX_NAME: usize = 255;

/// A filename as given by a client, made safe to store and show: only its last
/// path component (`/` and `\` both separate), no control or bidirectional
/// formatting characters (they disguise extensions), at most [`MAX_NAME`]
/// characters keeping the extension, never empty, `.` or `..`. The name is only
/// ever displayed and sent in `Content-Disposition`; it never becomes a path.
pub fn clean_filename(raw: &str) -> String {
    let base = raw.rsplit(['/', '\\']).next().unwrap_or("");
    let cleaned: String = base
        .chars()
        .map(|c| if c.is_control() || is_bidi_or_invisible(c) { '_' } else { c })
        .collect::<String>()
        .trim()
        .to_string();
    if cleaned.is_empty() || cleaned.chars().all(|c| c == '.') {
        return "unnamed".to_string();
    }
    if cleaned.chars().count() <= MAX_NAME {
        return cleaned;
    }
    let ext: String = match cleaned.rsplit_once('.') {
        Some((_, ext)) if ext.chars().count() <= 16 => format!(".{ext}"),
        _ => String::new(),
    };
    let keep = MAX_NAME - ext.chars().count();
    cleaned.chars().take(keep).chain(ext.chars()).collect()
}

fn is_bidi_or_invisible(c: char) -> bool {
    matches!(c, '\u{200B}'..='\u{200F}' | '\u{202A}'..='\u{202E}' | '\u{2060}'..='\u{2069}' | '\u{061C}' | '\u{FEFF}')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filenames_lose_their_paths_controls_and_bidi_tricks() {
        assert_eq!(clean_filename("../../etc/passwd"), "passwd");
        assert_eq!(clean_filename("a/b"), "b");
        assert_eq!(clean_filename("..\\x"), "x");
        assert_eq!(clean_filename("nul\0byte.txt"), "nul_byte.txt");
        assert_eq!(clean_filename("invoice\u{202E}fdp.exe"), "invoice_fdp.exe");
        assert_eq!(clean_filename(".."), "unnamed");
        assert_eq!(clean_filename("dir/"), "unnamed");
        assert_eq!(clean_filename("  report.pdf "), "report.pdf");
        let long = format!("{}.pdf", "é".repeat(4096));
        let cleaned = clean_filename(&long);
        assert_eq!(cleaned.chars().count(), MAX_NAME);
        assert!(cleaned.ends_with(".pdf"));
    }

    #[test]
    fn like_patterns_match_wildcards_literally() {
        assert_eq!(escape_like("50%_off\\"), "50\\%\\_off\\\\");
    }
}

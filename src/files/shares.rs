//! Sharing a file with a colleague: the recipient may view and download it until
//! the share expires or is revoked, checked on every request (no cache). The
//! recipient's clearance must dominate the file's classification (no flow down).
//!
//! The sharer's own access to the file is decided (MAC, then scope) before
//! anything about the recipient is looked at, so someone who may not share the
//! file learns nothing about who exists or who owns it. A share belongs to the
//! person who gave it: sharing again with the same recipient changes its expiry
//! only for them; a colleague's share of the same file is theirs to change (a
//! refusal, recorded as `rbac.denied`).

use serde::{Deserialize, Serialize};
use serde_json::json;
use time::OffsetDateTime;
use utoipa::ToSchema;
use uuid::Uuid;

use super::manage::refused;
use crate::{
    audit::{self, Action, Entry, Outcome, Source},
    authz::{
        Denial, Permission, Permit,
        files::{self as decide, FileOp, Level, Refusal},
    },
    db::TenantTx,
    http::{AppState, error::AppError},
};

/// A share of a file with a colleague.
#[derive(Debug, Clone, Serialize, sqlx::FromRow, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ShareView {
    pub id: Uuid,
    pub file_id: Uuid,
    /// The recipient's username.
    pub recipient: String,
    /// The username of who shared it; `null` once that account is gone.
    #[schema(required = true)]
    pub shared_by: Option<String>,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    /// `null`: until revoked.
    #[serde(with = "time::serde::rfc3339::option")]
    #[schema(required = true)]
    pub expires_at: Option<OffsetDateTime>,
    /// Not expired at the time of the request.
    pub active: bool,
}

macro_rules! share_select {
    () => {
        "SELECT s.id, s.file_id, r.username AS recipient, b.username AS shared_by, s.created_at, s.expires_at, \
                (s.expires_at IS NULL OR s.expires_at > $2) AS active \
         FROM file_shares s JOIN users r ON r.id = s.recipient_id LEFT JOIN users b ON b.id = s.shared_by "
    };
}

/// Whom to share a file with, and until when.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct NewShare {
    /// An active user's username (case-insensitive, trimmed; 422 when there is
    /// none, or it is the file's owner).
    #[schema(pattern = r"^[^\x00]*$")]
    pub username: String,
    /// When the share ends; in the future. Absent or `null`: until revoked.
    #[serde(default, with = "time::serde::rfc3339::option")]
    pub expires_at: Option<OffsetDateTime>,
}

/// Creates the share, or changes the expiry of an existing one with the same
/// recipient. Returns the share and whether it is new.
pub async fn create(
    state: &AppState,
    permit: &Permit,
    source: &Source,
    tx: TenantTx,
    file_id: Uuid,
    input: NewShare,
) -> Result<(ShareView, bool), AppError> {
    let now = state.clock.now();
    if input.expires_at.is_some_and(|at| at <= now) {
        return Err(AppError::invalid("expiresAt", "must be in the future"));
    }
    let (mut tx, file) = super::manage::decided(state, permit, source, tx, file_id, FileOp::Share).await?;
    let recipient: Option<(Uuid, String, String, i32)> = sqlx::query_as(
        "SELECT u.id, u.username, c.name, c.level FROM users u JOIN clearance_levels c ON c.id = u.clearance_level_id \
         WHERE lower(u.username) = lower($1) AND u.status = 'active'",
    )
    .bind(input.username.trim())
    .fetch_optional(tx.conn())
    .await?;
    let (recipient_id, username, clearance, rank) =
        recipient.ok_or_else(|| AppError::invalid("username", "no active user with that username"))?;
    if recipient_id == file.facts.owner_id {
        return Err(AppError::invalid("username", "the owner already has this file"));
    }
    if let Err(refusal) = decide::decide_recipient(permit, &file.facts, &username, &Level { name: clearance, rank }) {
        return Err(refused(tx, permit, source, refusal).await);
    }
    let upserted: Option<(Uuid, bool)> = sqlx::query_as(
        "INSERT INTO file_shares (tenant_id, file_id, recipient_id, shared_by, created_at, expires_at) \
         VALUES ($1, $2, $3, $4, $5, $6) \
         ON CONFLICT (file_id, recipient_id) DO UPDATE SET expires_at = EXCLUDED.expires_at \
         WHERE file_shares.shared_by = EXCLUDED.shared_by \
         RETURNING id, (xmax = 0) AS inserted",
    )
    .bind(permit.tenant_id())
    .bind(file_id)
    .bind(recipient_id)
    .bind(permit.user_id())
    .bind(now)
    .bind(input.expires_at)
    .fetch_optional(tx.conn())
    .await?;
    let Some((share_id, inserted)) = upserted else {
        let denial = Denial::new(
            Permission::FileShare,
            "share_given_by_another",
            "Someone else already shared this file with that user; only they can change that share",
        );
        let refusal = Refusal::Rbac(denial.target("file", file_id).classified(file.facts.classification.rank));
        return Err(refused(tx, permit, source, refusal).await);
    };
    let entry = Entry::new(Action::FileShare, Outcome::Success)
        .target("file", file_id)
        .details(json!({
            "name": file.name,
            "share": share_id,
            "recipient": username,
            "expiresAt": input.expires_at.and_then(|t| t.format(&time::format_description::well_known::Rfc3339).ok()),
            "classification": file.facts.classification.name,
            "renewed": !inserted,
        }))
        .classified(file.facts.classification.rank);
    audit::record(&mut tx, source, entry).await?;
    let view = one(&mut tx, share_id, now).await?;
    tx.commit().await?;
    Ok((view, inserted))
}

/// The shares of a file, for those who may share it.
pub async fn list(
    state: &AppState,
    permit: &Permit,
    source: &Source,
    tx: TenantTx,
    file_id: Uuid,
) -> Result<Vec<ShareView>, AppError> {
    let now = state.clock.now();
    let (mut tx, _) = super::manage::decided(state, permit, source, tx, file_id, FileOp::Share).await?;
    let shares = sqlx::query_as(concat!(share_select!(), "WHERE s.file_id = $1 ORDER BY s.created_at, s.id"))
        .bind(file_id)
        .bind(now)
        .fetch_all(tx.conn())
        .await?;
    tx.commit().await?;
    Ok(shares)
}

/// Revokes one share; the recipient loses access on their next request.
pub async fn delete(
    state: &AppState,
    permit: &Permit,
    source: &Source,
    tx: TenantTx,
    file_id: Uuid,
    share_id: Uuid,
) -> Result<(), AppError> {
    let now = state.clock.now();
    let (mut tx, file) = super::manage::decided(state, permit, source, tx, file_id, FileOp::Share).await?;
    let share = sqlx::query_as::<_, ShareView>(concat!(share_select!(), "WHERE s.id = $1"))
        .bind(share_id)
        .bind(now)
        .fetch_optional(tx.conn())
        .await?
        .filter(|s| s.file_id == file_id)
        .ok_or(AppError::NotFound)?;
    sqlx::query("DELETE FROM file_shares WHERE id = $1").bind(share_id).execute(tx.conn()).await?;
    let entry = Entry::new(Action::FileUnshare, Outcome::Success)
        .target("file", file_id)
        .details(json!({
            "name": file.name,
            "share": share_id,
            "recipient": share.recipient,
        }))
        .classified(file.facts.classification.rank);
    audit::record(&mut tx, source, entry).await?;
    tx.commit().await?;
    Ok(())
}

async fn one(tx: &mut TenantTx, id: Uuid, now: OffsetDateTime) -> Result<ShareView, sqlx::Error> {
    sqlx::query_as(concat!(share_select!(), "WHERE s.id = $1")).bind(id).bind(now).fetch_one(tx.conn()).await
}

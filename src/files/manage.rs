//! Viewing, listing, reclassifying and deleting files. Each single-file
//! operation loads the file in a tenant transaction, asks `authz::files`, and
//! either records the refusal or makes the change with its audit row.

use serde::Deserialize;
use serde_json::json;
use utoipa::ToSchema;
use uuid::Uuid;

use super::{
    FileView,
    catalog::{self, ListQuery, StoredFile},
};
use crate::{
    audit::{self, Action, Entry, Outcome, Source},
    authz::{
        Permit,
        dual::{self, Done, Gate, Hold, Operation},
        files::{self as decide, FileOp, Refusal},
    },
    db::TenantTx,
    http::{AppState, error::AppError},
};

/// Records `refusal` in `tx`, commits, and returns the 403 to answer.
pub(super) async fn refused(mut tx: TenantTx, permit: &Permit, source: &Source, refusal: Refusal) -> AppError {
    let recorded = async {
        let error = refusal.record(&mut tx, permit, source).await?;
        tx.commit().await?;
        Ok::<_, sqlx::Error>(error)
    };
    recorded.await.unwrap_or_else(AppError::from)
}

/// Loads file `id` in `tx` for an operation decided by `decide::decide(op)`:
/// `tx` back with the file, or the refusal recorded and committed.
pub(super) async fn decided(
    state: &AppState,
    permit: &Permit,
    source: &Source,
    mut tx: TenantTx,
    id: Uuid,
    op: FileOp,
) -> Result<(TenantTx, StoredFile), AppError> {
    let changes = matches!(op, FileOp::Share | FileOp::Delete | FileOp::Classify);
    let file = catalog::stored(&mut tx, id, permit.user_id(), state.clock.now(), changes).await?;
    match decide::decide(permit, op, &file.facts) {
        Ok(()) => Ok((tx, file)),
        Err(refusal) => Err(refused(tx, permit, source, refusal).await),
    }
}

pub async fn list(
    state: &AppState,
    permit: &Permit,
    tx: &mut TenantTx,
    query: ListQuery,
) -> Result<(Vec<FileView>, Option<String>), AppError> {
    catalog::list(tx, permit.subject(), &query, state.clock.now()).await
}

pub async fn get(
    state: &AppState,
    permit: &Permit,
    source: &Source,
    tx: TenantTx,
    id: Uuid,
) -> Result<FileView, AppError> {
    let (mut tx, _) = decided(state, permit, source, tx, id, FileOp::View).await?;
    let view = catalog::view(&mut tx, id).await?;
    tx.end_read_only().await?;
    Ok(view)
}

/// A new classification for a file.
#[derive(Debug, Deserialize, serde::Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Reclassify {
    /// The classification level's name (case-insensitive, trimmed; 422 when
    /// there is none).
    #[schema(pattern = r"^[^\x00]*$", example = "public")]
    pub classification: String,
}

/// `PATCH /api/files/{id}`: raising needs a clearance at least the new level
/// (`file.classify`); lowering is recorded as `file.declassify`, and waits for
/// approval where the tenant's `file.declassify` policy says so.
pub async fn classify(
    state: &AppState,
    permit: &Permit,
    source: &Source,
    mut tx: TenantTx,
    id: Uuid,
    input: Reclassify,
) -> Result<Done<FileView>, AppError> {
    match classify_in(state, permit, source, &mut tx, id, input).await? {
        Ok(done) => {
            tx.commit().await?;
            Ok(done)
        }
        Err(refusal) => Err(refused(tx, permit, source, refusal).await),
    }
}

/// The route of [`classify`], as stored with a held request.
pub const ROUTE_CLASSIFY: &str = "PATCH /api/files/{id}";

/// [`classify`] in `tx`, which it neither commits nor records refusals in.
pub async fn classify_in(
    state: &AppState,
    permit: &Permit,
    source: &Source,
    tx: &mut TenantTx,
    id: Uuid,
    input: Reclassify,
) -> Result<Result<Done<FileView>, Refusal>, AppError> {
    let now = state.clock.now();
    let file = catalog::stored(tx, id, permit.user_id(), now, true).await?;
    let (level_id, level) = catalog::level_named(tx, input.classification.trim())
        .await?
        .ok_or_else(|| AppError::invalid("classification", "no such classification level"))?;
    if let Err(refusal) = decide::decide_classify(permit, &file.facts, &level) {
        return Ok(Err(refusal));
    }
    let before = &file.facts.classification;
    if level.rank != before.rank {
        let change = json!({ "name": file.name, "before": before.name, "after": level.name });
        if level.rank < before.rank {
            let summary = format!("Lower the classification of {} from {} to {}", file.name, before.name, level.name);
            let hold = Hold::new(Operation::FileDeclassify, ROUTE_CLASSIFY, summary)
                .params(json!({ "id": id }))
                .body(&input)
                .change(change.clone())
                .target("file", id)
                .classified(before.rank);
            match dual::gate(tx, permit, source, hold, now).await? {
                Err(denial) => return Ok(Err(Refusal::Rbac(denial))),
                Ok(Gate::Held(approval)) => return Ok(Ok(Done::Held(approval))),
                Ok(Gate::Proceed) => {}
            }
        }
        sqlx::query("UPDATE files SET classification_id = $2 WHERE id = $1")
            .bind(id)
            .bind(level_id)
            .execute(tx.conn())
            .await?;
        let action = if level.rank > before.rank { Action::FileClassify } else { Action::FileDeclassify };
        let entry = Entry::new(action, Outcome::Success)
            .target("file", id)
            .details(change)
            .classified(level.rank.max(before.rank));
        audit::record(tx, source, entry).await?;
    }
    Ok(Ok(Done::Now(catalog::view(tx, id).await?)))
}

/// `DELETE /api/files/{id}`: the row (and its shares) goes with its audit row
/// and a record that its object is to be removed; the object is removed after
/// the commit (or by the sweep, if that fails).
pub async fn delete(
    state: &AppState,
    permit: &Permit,
    source: &Source,
    tx: TenantTx,
    id: Uuid,
) -> Result<(), AppError> {
    let (mut tx, file) = decided(state, permit, source, tx, id, FileOp::Delete).await?;
    sqlx::query("DELETE FROM files WHERE id = $1").bind(id).execute(tx.conn()).await?;
    super::pending::record(&mut tx, &file.object_key, super::pending::Purpose::Delete, state.clock.now()).await?;
    let entry = Entry::new(Action::FileDelete, Outcome::Success)
        .target("file", id)
        .details(json!({
            "name": file.name,
            "size": file.size,
            "sha256": file.sha256,
            "classification": file.facts.classification.name,
        }))
        .classified(file.facts.classification.rank);
    audit::record(&mut tx, source, entry).await?;
    tx.commit().await?;
    super::pending::remove(state, permit.tenant_id(), &file.object_key).await;
    Ok(())
}

//! Decisions about documents: mandatory access control first, then RBAC.
//!
//! - **MAC** (seed 000 §3): the rank of the user's clearance must be at least
//!   the rank of the file's classification, for every operation and every user
//!   (owner, administrator, share recipient). Uploading above one's clearance is
//!   refused, and information never flows to a share recipient whose clearance is
//!   below the classification. Refusals are `mac.denied`.
//! - **RBAC**: the scope of the grant for the operation's permission decides
//!   which files it covers: `own` (files one uploaded, and for viewing and
//!   downloading also files shared with one), `department` (plus the
//!   department's files), `tenant` (all). Refusals are `rbac.denied`.
//!
//! Every single-file operation goes through [`decide`]; listing applies the same
//! two rules in SQL (see `files::catalog`), so a title never leaves the database
//! for a user who could not open the file.

use serde_json::json;
use uuid::Uuid;

use super::{Denial, INSUFFICIENT, Permission, Permit, Scope, Subject, denial_entry};
use crate::{
    audit::{self, Action, Entry, Outcome, Source},
    db::TenantTx,
    http::error::AppError,
};

/// The message of every MAC refusal.
pub const MAC_REFUSED: &str = "Your clearance does not allow this document";

/// What is being done to a file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FileOp {
    View,
    Download,
    Upload,
    Share,
    Delete,
    Classify,
}

impl FileOp {
    pub fn as_str(self) -> &'static str {
        match self {
            FileOp::View => "view",
            FileOp::Download => "download",
            FileOp::Upload => "upload",
            FileOp::Share => "share",
            FileOp::Delete => "delete",
            FileOp::Classify => "classify",
        }
    }

    /// The permission whose grant scope covers this operation. Viewing a file's
    /// metadata is covered by the download grant: one sees what one may fetch.
    pub fn permission(self) -> Permission {
        match self {
            FileOp::View | FileOp::Download => Permission::FileDownload,
            FileOp::Upload => Permission::FileUpload,
            FileOp::Share => Permission::FileShare,
            FileOp::Delete => Permission::FileDelete,
            FileOp::Classify => Permission::FileClassify,
        }
    }

    /// Whether a share with the user counts as theirs for this operation: a
    /// share lets its recipient view and download, nothing more.
    fn shares_count(self) -> bool {
        matches!(self, FileOp::View | FileOp::Download)
    }
}

/// A clearance or classification: its name and rank.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Level {
    pub name: String,
    pub rank: i32,
}

/// The facts about a file that access depends on.
#[derive(Debug, Clone)]
pub struct FileFacts {
    pub id: Uuid,
    pub owner_id: Uuid,
    pub department_id: Uuid,
    pub classification: Level,
    /// A share with the asking user exists and has not expired.
    pub shared_with_me: bool,
}

/// Why an operation on a file was refused.
#[derive(Debug)]
pub enum Refusal {
    Mac(Box<MacDenial>),
    Rbac(Denial),
}

#[derive(Debug)]
pub struct MacDenial {
    pub op: FileOp,
    pub file: Option<Uuid>,
    pub clearance: Level,
    pub classification: Level,
    /// For shares: the recipient whose clearance is too low.
    pub recipient: Option<(String, Level)>,
}

/// MAC: may someone cleared at `clearance` touch something classified `classification`?
pub fn dominates(clearance: i32, classification: i32) -> bool {
    clearance >= classification
}

fn mac(subject: &Subject, op: FileOp, file: Option<Uuid>, classification: &Level) -> Result<(), Refusal> {
    if dominates(subject.clearance_rank, classification.rank) {
        return Ok(());
    }
    Err(Refusal::Mac(Box::new(MacDenial {
        op,
        file,
        clearance: Level { name: subject.clearance.clone(), rank: subject.clearance_rank },
        classification: classification.clone(),
        recipient: None,
    })))
}

fn scope_covers(subject: &Subject, scope: Scope, op: FileOp, file: &FileFacts) -> bool {
    let mine = file.owner_id == subject.user_id || (op.shares_count() && file.shared_with_me);
    match scope {
        Scope::Tenant => true,
        Scope::Department => mine || file.department_id == subject.department_id,
        Scope::Own => mine,
    }
}

/// The one decision for an operation on an existing file: MAC, then the scope of
/// the caller's grant for `op`.
pub fn decide(permit: &Permit, op: FileOp, file: &FileFacts) -> Result<(), Refusal> {
    let subject = permit.subject();
    mac(subject, op, Some(file.id), &file.classification)?;
    let covered = subject.scope_of(op.permission()).is_some_and(|scope| scope_covers(subject, scope, op, file));
    if covered {
        Ok(())
    } else {
        let denial = Denial::new(op.permission(), "outside_scope", INSUFFICIENT);
        Err(Refusal::Rbac(denial.target("file", file.id).classified(file.classification.rank)))
    }
}

/// Uploading a file classified `classification` into `department`: MAC (no
/// upload above one's clearance), then the upload grant's scope: `tenant` may
/// file into any department, narrower grants only into one's own.
pub fn decide_upload(permit: &Permit, classification: &Level, department: Uuid) -> Result<(), Refusal> {
    let subject = permit.subject();
    mac(subject, FileOp::Upload, None, classification)?;
    let scope = subject.scope_of(Permission::FileUpload);
    if scope == Some(Scope::Tenant) || (scope.is_some() && department == subject.department_id) {
        Ok(())
    } else {
        let denial = Denial::new(Permission::FileUpload, "department_outside_scope", INSUFFICIENT);
        Err(Refusal::Rbac(denial.target("department", department)))
    }
}

/// Sharing `file` with `recipient` (cleared at `clearance`), once the sharer's
/// own `decide(Share)` passed: the recipient's clearance must dominate the
/// classification, so nothing flows down to someone who could not read it.
pub fn decide_recipient(permit: &Permit, file: &FileFacts, recipient: &str, clearance: &Level) -> Result<(), Refusal> {
    if dominates(clearance.rank, file.classification.rank) {
        return Ok(());
    }
    let subject = permit.subject();
    Err(Refusal::Mac(Box::new(MacDenial {
        op: FileOp::Share,
        file: Some(file.id),
        clearance: Level { name: subject.clearance.clone(), rank: subject.clearance_rank },
        classification: file.classification.clone(),
        recipient: Some((recipient.to_string(), clearance.clone())),
    })))
}

/// Changing `file`'s classification to `new`: the caller may classify it (which
/// includes MAC on the current level), and may not raise it above their own
/// clearance.
pub fn decide_classify(permit: &Permit, file: &FileFacts, new: &Level) -> Result<(), Refusal> {
    decide(permit, FileOp::Classify, file)?;
    mac(permit.subject(), FileOp::Classify, Some(file.id), new)
}

impl Refusal {
    /// Appends the refusal's audit row (`mac.denied` or `rbac.denied`) in `tx`
    /// and returns the 403 to answer once `tx` commits.
    pub async fn record(self, tx: &mut TenantTx, permit: &Permit, source: &Source) -> Result<AppError, sqlx::Error> {
        match self {
            Refusal::Rbac(denial) => {
                audit::record(tx, source, denial_entry(permit, &denial)).await?;
                Ok(AppError::forbidden(denial.message))
            }
            Refusal::Mac(d) => {
                let mut details = json!({
                    "operation": d.op.as_str(),
                    "clearance": d.clearance.name,
                    "clearanceLevel": d.clearance.rank,
                    "classification": d.classification.name,
                    "classificationLevel": d.classification.rank,
                });
                if let Some((username, level)) = &d.recipient {
                    details["recipient"] = json!(username);
                    details["recipientClearance"] = json!(level.name);
                    details["recipientClearanceLevel"] = json!(level.rank);
                }
                let mut entry = Entry::new(Action::MacDenied, Outcome::Fail).details(details);
                if let Some(id) = d.file {
                    entry = entry.target("file", id).classified(d.classification.rank);
                }
                audit::record(tx, source, entry).await?;
                let message = if d.recipient.is_some() {
                    "The recipient's clearance does not allow this document"
                } else {
                    MAC_REFUSED
                };
                Ok(AppError::forbidden(message))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clearance_must_be_at_least_the_classification() {
        for clearance in 1..=3 {
            for classification in 1..=3 {
                assert_eq!(dominates(clearance, classification), clearance >= classification);
            }
        }
    }
}

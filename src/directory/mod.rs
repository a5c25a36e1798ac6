//! The directory: user accounts, roles and their grants, departments and
//! clearance levels, as administrators manage them through `/api/*`.
//!
//! Every operation takes the [`Permit`] its route's guard issued and the
//! request's transaction, and writes its audit row (with before and after) in
//! that transaction. A change of authority starts with [`begin`]: a savepoint,
//! the tenant's administration lock, and the permit decided again on the
//! caller's grants as they are now, so no queued request acts on a decision a
//! concurrent revocation has made stale. Refusals after the guard (scope, guard
//! rails, the last administrator) undo the attempt and are recorded in the same
//! transaction by [`settle`].
//!
//! Guard rails, enforced here for every caller:
//! - nobody changes their own roles, clearance, department or password (status
//!   and deletion of oneself are allowed, under the last-administrator rule);
//! - nobody grants, revokes, or assigns a permission (or a role carrying one)
//!   they do not hold themselves at the same or a wider scope, nor a clearance
//!   above their own;
//! - the tenant always keeps a permanent administrator: an active user holding
//!   `admin.manage_roles` at tenant scope through an assignment that does not
//!   expire. No route may demote, suspend or delete the last one, nor put an
//!   expiry on the last permanent assignment (the rule holds at every future
//!   instant, not only now).

pub mod attributes;
pub mod factors;
pub mod handlers;
pub mod membership;
pub mod role_schema;
pub mod roles;
mod targets;
pub mod users;

use serde::{Deserialize, Deserializer};
use serde_json::json;
use uuid::Uuid;

pub use crate::authz::dual::{Gate, Hold};
use crate::{
    audit::{self, Action, Entry, Outcome, Source},
    authz::{self, Denial, Permit},
    db::TenantTx,
    http::error::AppError,
};

/// Why a directory operation did not happen.
#[derive(Debug)]
pub enum Refused {
    /// An authorization refusal after the guard: recorded as `rbac.denied`, 403.
    Denied(Denial),
    /// The change would leave the tenant without an active administrator:
    /// recorded as a failed `action`, 409.
    LastAdmin { action: Action, target: (&'static str, Uuid) },
    /// Anything else (404, 409, 422, 500), answered as is.
    App(AppError),
}

impl From<AppError> for Refused {
    fn from(e: AppError) -> Self {
        Refused::App(e)
    }
}

impl From<sqlx::Error> for Refused {
    fn from(e: sqlx::Error) -> Self {
        Refused::App(e.into())
    }
}

impl From<anyhow::Error> for Refused {
    fn from(e: anyhow::Error) -> Self {
        Refused::App(e.into())
    }
}

impl From<Denial> for Refused {
    fn from(d: Denial) -> Self {
        Refused::Denied(d)
    }
}

pub type Attempt<T> = Result<T, Refused>;

/// Starts an attempt in `tx` (see [`TenantTx::savepoint`]) without changing
/// authority: reads and changes of things other than who may do what.
pub async fn attempt(tx: &mut TenantTx) -> Attempt<()> {
    tx.savepoint().await?;
    Ok(())
}

/// Starts an authority-changing attempt in `tx`: a savepoint, the tenant's
/// administration lock, then `permit` decided again on the caller's grants as
/// they are now (a denial if its permission is gone). Use the returned permit.
pub async fn begin(tx: &mut TenantTx, permit: &Permit, now: time::OffsetDateTime) -> Attempt<Permit> {
    tx.savepoint().await?;
    lock_administration(tx).await?;
    Ok(permit.recheck(tx, now).await??)
}

/// Holds the operation `hold` describes for approval where its policy says
/// so (see [`authz::dual::gate`]); call it after every check, before the
/// first write.
pub async fn gate(
    tx: &mut TenantTx,
    permit: &Permit,
    source: &Source,
    hold: Hold,
    now: time::OffsetDateTime,
) -> Attempt<Gate> {
    Ok(authz::dual::gate(tx, permit, source, hold, now).await??)
}

/// Answers an operation's outcome and commits `tx`: the change with its audit
/// rows, or, for a refusal, the attempt undone and the refusal recorded.
pub async fn settle<T>(mut tx: TenantTx, permit: &Permit, source: &Source, outcome: Attempt<T>) -> Result<T, AppError> {
    match outcome {
        Ok(v) => {
            tx.commit().await?;
            Ok(v)
        }
        // Dropping the transaction rolls it back: nothing to record.
        Err(Refused::App(e)) => Err(e),
        Err(Refused::Denied(denial)) => {
            tx.undo_attempt().await?;
            Err(authz::refuse(tx, permit, source, denial).await)
        }
        Err(Refused::LastAdmin { action, target }) => {
            tx.undo_attempt().await?;
            let entry =
                Entry::new(action, Outcome::Fail).target(target.0, target.1).details(json!({ "reason": "last_admin" }));
            audit::record(&mut tx, source, entry).await?;
            tx.commit().await?;
            Err(AppError::Conflict("This would leave the organisation without an active administrator".into()))
        }
    }
}

/// Serialises changes to who administers a tenant: every operation that can
/// remove an administrator takes this lock first, so two concurrent demotions
/// cannot each see the other administrator and leave none.
pub async fn lock_administration(tx: &mut TenantTx) -> Result<(), sqlx::Error> {
    let key = tx.tenant_id().to_string();
    sqlx::query("SELECT pg_advisory_xact_lock(hashtextextended('fortifile.admins.' || $1, 0))")
        .bind(key)
        .execute(tx.conn())
        .await
        .map(|_| ())
}

/// Permanent administrators: active users holding `admin.manage_roles` at
/// tenant scope through an assignment with no expiry. Assignments that expire
/// do not count, however far off: counting them would let two administrators
/// each give the other an expiry and leave the tenant with none when both end.
pub async fn administrator_count(tx: &mut TenantTx) -> Result<i64, sqlx::Error> {
    sqlx::query_scalar(
        "SELECT count(DISTINCT u.id) FROM users u \
         JOIN user_roles ur ON ur.user_id = u.id \
         JOIN role_permissions rp ON rp.role_id = ur.role_id \
         JOIN permissions p ON p.id = rp.permission_id \
         WHERE u.status = 'active' AND p.name = 'admin.manage_roles' AND rp.scope = 'tenant' \
           AND ur.expires_at IS NULL",
    )
    .fetch_one(tx.conn())
    .await
}

/// Guards a change that may remove an administrator: call with the count taken
/// (under [`lock_administration`]) before the change, after making it.
pub async fn keep_an_administrator(
    tx: &mut TenantTx,
    before: i64,
    action: Action,
    target: (&'static str, Uuid),
) -> Attempt<()> {
    if before > 0 && administrator_count(tx).await? == 0 {
        return Err(Refused::LastAdmin { action, target });
    }
    Ok(())
}

/// For `PUT` bodies: tells "absent" (`None`) from an explicit `null` (`Some(None)`).
pub fn nullable<'de, D, T>(d: D) -> Result<Option<Option<T>>, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de>,
{
    Option::<T>::deserialize(d).map(Some)
}

/// A display name: trimmed, 1 to `max` characters, no control characters.
pub fn clean_name(field: &'static str, name: &str, max: usize) -> Result<String, AppError> {
    let name = name.trim();
    if name.is_empty() || name.chars().count() > max || name.chars().any(char::is_control) {
        return Err(AppError::invalid(field, format!("must be 1 to {max} characters, without control characters")));
    }
    Ok(name.to_string())
}

/// A free-text description: at most 1000 characters.
pub fn clean_description(text: &str) -> Result<String, AppError> {
    let text = text.trim();
    if text.chars().count() > 1000 {
        return Err(AppError::invalid("description", "must be at most 1000 characters"));
    }
    Ok(text.to_string())
}

/// A `#rrggbb` colour.
pub fn clean_color(color: &str) -> Result<String, AppError> {
    let ok = color.len() == 7 && color.starts_with('#') && color[1..].bytes().all(|b| b.is_ascii_hexdigit());
    if ok {
        Ok(color.to_ascii_lowercase())
    } else {
        Err(AppError::invalid("color", "must be a colour such as #3b82f6"))
    }
}

/// The result of an insert or update, with a unique violation mapped to 409 `message`.
pub fn conflict_on_duplicate<T>(result: Result<T, sqlx::Error>, message: &str) -> Result<T, AppError> {
    match result {
        Ok(v) => Ok(v),
        Err(e) if crate::db::unique_violation(&e).is_some() => Err(AppError::Conflict(message.into())),
        Err(e) => Err(e.into()),
    }
}

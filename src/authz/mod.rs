//! Authorization: the one place access is decided.
//!
//! - [`Subject`]: who is asking, as of this request: their department, the rank of
//!   their clearance, and every permission they hold with its widest scope. It is
//!   read fresh from the database on every request (no cache), so a change to
//!   roles, grants or assignments applies to the user's very next request.
//! - [`authorize`]: the route guard's decision. It answers a [`Permit`] or records
//!   `rbac.denied` and refuses with 403.
//! - [`Permit`]: proof that the route's permission was checked. Handlers of guarded
//!   routes take it, and capability code that changes data requires it; it also
//!   answers the finer questions (does the grant's scope cover this object? may
//!   the holder hand this permission on?).
//!
//! - [`files`]: every decision about a document: mandatory access control
//!   (clearance against classification) first, then the grant's scope.

pub mod dual;
pub mod files;
mod permission;

use std::{collections::BTreeMap, sync::Arc};

use serde_json::json;
use time::OffsetDateTime;
use uuid::Uuid;

pub use permission::{Permission, Scope};

use crate::{
    audit::{self, Action, Entry, Outcome, Source},
    auth::Authenticated,
    db::TenantTx,
    http::error::AppError,
};

/// The message of every permission refusal on API routes.
pub const INSUFFICIENT: &str = "Insufficient permissions";

/// The signed-in user as authorization sees them, for one request.
#[derive(Debug, Clone)]
pub struct Subject {
    pub tenant_id: Uuid,
    pub user_id: Uuid,
    pub session_id: Uuid,
    pub department_id: Uuid,
    /// The name and rank of the user's clearance level (MAC).
    pub clearance: String,
    pub clearance_rank: i32,
    grants: BTreeMap<Permission, Scope>,
    /// A request made with an API key: the key, and the grants it is limited to
    /// (`None`: all of its owner's). The subject holds the intersection.
    key: Option<(Uuid, Option<BTreeMap<Permission, Scope>>)>,
    /// Whether the subject stands on a session or key that must still exist
    /// (false only for a requester whose approved request is being run).
    bound: bool,
}

impl Subject {
    /// The subject of a request whose session was found with these facts
    /// (`grants` as `permission:scope`, the form the request query returns).
    pub fn new(
        who: &Authenticated,
        department_id: Uuid,
        clearance: String,
        clearance_rank: i32,
        grants: &[String],
    ) -> Subject {
        Subject {
            tenant_id: who.tenant_id,
            user_id: who.user_id,
            session_id: who.session_id,
            department_id,
            clearance,
            clearance_rank,
            grants: widest(grants.iter().filter_map(|g| g.split_once(':'))),
            key: None,
            bound: true,
        }
    }

    /// This subject acting through API key `key`, limited to `permissions`
    /// (`permission:scope`; `None`: everything its owner holds).
    pub fn through_key(mut self, key: Uuid, permissions: Option<&[String]>) -> Subject {
        let limit = permissions.map(|p| widest(p.iter().filter_map(|g| g.split_once(':'))));
        self.key = Some((key, limit));
        let grants = std::mem::take(&mut self.grants);
        self.grants = self.limited(grants);
        self
    }

    /// The API key this subject acts through, if any.
    pub fn api_key(&self) -> Option<Uuid> {
        self.key.as_ref().map(|(id, _)| *id)
    }

    /// `grants` as far as this subject's key allows: the narrower scope of the two.
    fn limited(&self, grants: BTreeMap<Permission, Scope>) -> BTreeMap<Permission, Scope> {
        match &self.key {
            Some((_, Some(limit))) => grants
                .into_iter()
                .filter_map(|(p, held)| limit.get(&p).map(|allowed| (p, held.min(*allowed))))
                .collect(),
            _ => grants,
        }
    }

    /// This subject as the database has it now, in `tx`: for decisions that
    /// change authority, made after their locks are taken, so that no decision
    /// rests on grants read before a concurrent change committed. `None` when
    /// the user is no longer active or the session has ended (logout, password
    /// reset, suspension).
    pub async fn reload(&self, tx: &mut TenantTx, now: OffsetDateTime) -> Result<Option<Subject>, sqlx::Error> {
        let row: Option<(Uuid, String, i32, Vec<String>)> = sqlx::query_as(
            "SELECT u.department_id, c.name, c.level, \
                    ARRAY(SELECT p.name || ':' || rp.scope FROM user_roles ur \
                          JOIN role_permissions rp ON rp.role_id = ur.role_id \
                          JOIN permissions p ON p.id = rp.permission_id \
                          WHERE ur.user_id = u.id AND (ur.expires_at IS NULL OR ur.expires_at > $2)) \
             FROM users u JOIN clearance_levels c ON c.id = u.clearance_level_id \
             WHERE u.id = $1 AND u.status = 'active' \
               AND CASE WHEN $5 THEN TRUE \
                        WHEN $4 THEN EXISTS (SELECT 1 FROM api_keys k WHERE k.id = $3 AND k.user_id = u.id \
                                               AND k.revoked_at IS NULL AND k.expires_at > $2) \
                        ELSE EXISTS (SELECT 1 FROM sessions s WHERE s.id = $3 AND s.user_id = u.id) END",
        )
        .bind(self.user_id)
        .bind(now)
        .bind(self.session_id)
        .bind(self.key.is_some())
        .bind(!self.bound)
        .fetch_optional(tx.conn())
        .await?;
        Ok(row.map(|(department_id, clearance, clearance_rank, grants)| {
            let grants = self.limited(widest(grants.iter().filter_map(|g| g.split_once(':'))));
            Subject { department_id, clearance, clearance_rank, grants, ..self.clone() }
        }))
    }

    /// The widest scope at which the subject holds `permission`, if at all.
    pub fn scope_of(&self, permission: Permission) -> Option<Scope> {
        self.grants.get(&permission).copied()
    }

    pub fn holds(&self, permission: Permission) -> bool {
        self.grants.contains_key(&permission)
    }

    /// Whether the subject holds `permission` at `scope` or wider: the condition
    /// for handing that grant to someone else (or taking it away).
    pub fn may_delegate(&self, permission: Permission, scope: Scope) -> bool {
        self.scope_of(permission).is_some_and(|held| held >= scope)
    }

    pub fn grants(&self) -> impl Iterator<Item = (Permission, Scope)> + '_ {
        self.grants.iter().map(|(p, s)| (*p, *s))
    }
}

/// Every permission `user_id` holds at `now` through a current role assignment,
/// with the widest scope any of those roles grants it at.
pub async fn grants(
    tx: &mut TenantTx,
    user_id: Uuid,
    now: OffsetDateTime,
) -> Result<BTreeMap<Permission, Scope>, sqlx::Error> {
    let rows: Vec<(String, String)> = sqlx::query_as(
        "SELECT p.name, rp.scope FROM user_roles ur \
         JOIN role_permissions rp ON rp.role_id = ur.role_id \
         JOIN permissions p ON p.id = rp.permission_id \
         WHERE ur.user_id = $1 AND (ur.expires_at IS NULL OR ur.expires_at > $2)",
    )
    .bind(user_id)
    .bind(now)
    .fetch_all(tx.conn())
    .await?;
    Ok(widest(rows.iter().map(|(p, s)| (p.as_str(), s.as_str()))))
}

/// Each permission among `(permission, scope)` pairs with its widest scope.
fn widest<'a>(pairs: impl Iterator<Item = (&'a str, &'a str)>) -> BTreeMap<Permission, Scope> {
    let mut grants = BTreeMap::new();
    for (name, scope) in pairs {
        // Names come from the catalogue, which matches `Permission` (tested).
        let (Some(permission), Some(scope)) = (Permission::parse(name), Scope::parse(scope)) else { continue };
        let widest = grants.entry(permission).or_insert(scope);
        *widest = (*widest).max(scope);
    }
    grants
}

/// Seed 000's helper: does `user_id` hold `permission` right now (at any scope)?
pub async fn has_permission(
    tx: &mut TenantTx,
    user_id: Uuid,
    permission: Permission,
    now: OffsetDateTime,
) -> Result<bool, sqlx::Error> {
    Ok(grants(tx, user_id, now).await?.contains_key(&permission))
}

/// The names of the roles `user_id` holds at `now`, oldest assignment first (the
/// first is the user's primary role).
pub async fn effective_roles(
    tx: &mut TenantTx,
    user_id: Uuid,
    now: OffsetDateTime,
) -> Result<Vec<String>, sqlx::Error> {
    sqlx::query_scalar(
        "SELECT r.name FROM user_roles ur JOIN roles r ON r.id = ur.role_id \
         WHERE ur.user_id = $1 AND (ur.expires_at IS NULL OR ur.expires_at > $2) \
         ORDER BY ur.assigned_at, r.name",
    )
    .bind(user_id)
    .bind(now)
    .fetch_all(tx.conn())
    .await
}

/// Proof that a request's subject holds the permission its route requires.
#[derive(Debug, Clone)]
pub struct Permit {
    subject: Arc<Subject>,
    permission: Permission,
    /// The route pattern and method, for the audit rows of later refusals.
    route: Arc<str>,
    method: Arc<str>,
    /// The approved request this permit runs (see [`dual`]).
    approval: Option<Arc<dual::Mark>>,
}

impl Permit {
    /// A permit for `user_id` to run the request approved under `mark`, as
    /// that user's grants are now in `tx`: `Ok(None)` when the user is no
    /// longer active, a denial when they no longer hold `permission`.
    pub async fn for_requester(
        tx: &mut TenantTx,
        user_id: Uuid,
        permission: Permission,
        route: &str,
        mark: dual::Mark,
        now: OffsetDateTime,
    ) -> Result<Option<Result<Permit, Denial>>, sqlx::Error> {
        let stub = Subject {
            tenant_id: tx.tenant_id(),
            user_id,
            session_id: Uuid::nil(),
            department_id: Uuid::nil(),
            clearance: String::new(),
            clearance_rank: 0,
            grants: BTreeMap::new(),
            key: None,
            bound: false,
        };
        let Some(subject) = stub.reload(tx, now).await? else { return Ok(None) };
        if !subject.holds(permission) {
            return Ok(Some(Err(Denial::new(permission, "permission_revoked", INSUFFICIENT))));
        }
        let (method, route) = route.split_once(' ').unwrap_or(("POST", route));
        Ok(Some(Ok(Permit {
            subject: Arc::new(subject),
            permission,
            route: route.into(),
            method: method.into(),
            approval: Some(Arc::new(mark)),
        })))
    }

    /// The approved request this permit runs, if any.
    pub fn approval(&self) -> Option<&dual::Mark> {
        self.approval.as_deref()
    }

    pub fn subject(&self) -> &Subject {
        &self.subject
    }

    /// A transaction of its own for this permit's user (where a request
    /// cannot hold one across a stream), naming its API key in every audit row.
    pub async fn transaction(&self, db: &crate::db::Database) -> Result<TenantTx, sqlx::Error> {
        let mut tx = db.tenant_tx(self.tenant_id(), Some(self.user_id())).await?;
        if let Some(key) = self.subject.api_key() {
            tx.through_key(key);
        }
        Ok(tx)
    }

    /// Appends `entry` in a transaction of its own (see [`Permit::transaction`]).
    pub async fn record_alone(
        &self,
        db: &crate::db::Database,
        source: &crate::audit::Source,
        entry: crate::audit::Entry,
    ) -> Result<Uuid, sqlx::Error> {
        let mut tx = self.transaction(db).await?;
        let id = crate::audit::record(&mut tx, source, entry).await?;
        tx.commit().await?;
        Ok(id)
    }

    pub fn user_id(&self) -> Uuid {
        self.subject.user_id
    }

    pub fn tenant_id(&self) -> Uuid {
        self.subject.tenant_id
    }

    /// The permission the route required.
    pub fn permission(&self) -> Permission {
        self.permission
    }

    /// The scope at which the subject holds the route's permission.
    pub fn scope(&self) -> Scope {
        self.subject.scope_of(self.permission).unwrap_or(Scope::Own)
    }

    /// Whether this permit's scope covers an object owned by `owner` in
    /// `department` (for a user account, the owner is the account itself).
    pub fn covers(&self, owner: Uuid, department: Uuid) -> bool {
        match self.scope() {
            Scope::Tenant => true,
            Scope::Department => department == self.subject.department_id || owner == self.subject.user_id,
            Scope::Own => owner == self.subject.user_id,
        }
    }

    /// Whether the scope lets the holder place objects in `department`.
    pub fn covers_department(&self, department: Uuid) -> bool {
        match self.scope() {
            Scope::Tenant => true,
            Scope::Department => department == self.subject.department_id,
            Scope::Own => false,
        }
    }

    /// This permit decided again in `tx`, on the subject as it is now (see
    /// [`Subject::reload`]): a denial when the route's permission is gone.
    pub async fn recheck(&self, tx: &mut TenantTx, now: OffsetDateTime) -> Result<Result<Permit, Denial>, sqlx::Error> {
        let gone = || Denial::new(self.permission, "permission_revoked", INSUFFICIENT);
        let Some(subject) = self.subject.reload(tx, now).await? else { return Ok(Err(gone())) };
        if !subject.holds(self.permission) {
            return Ok(Err(gone()));
        }
        Ok(Ok(Permit { subject: Arc::new(subject), ..self.clone() }))
    }

    /// A refusal of `reason` under this permit, to record as `rbac.denied`.
    pub fn deny(&self, reason: &'static str, message: &'static str) -> Denial {
        Denial::new(self.permission, reason, message)
    }
}

/// Why a guarded action was refused after the route's permission check passed:
/// the object is outside the grant's scope, or a guard rail applies.
#[derive(Debug)]
pub struct Denial {
    pub permission: Permission,
    pub reason: &'static str,
    pub message: &'static str,
    pub target: Option<(&'static str, String)>,
    /// The classification rank of the target, when it is a document.
    pub classification: Option<i32>,
}

impl Denial {
    pub fn new(permission: Permission, reason: &'static str, message: &'static str) -> Self {
        Denial { permission, reason, message, target: None, classification: None }
    }

    pub fn target(mut self, kind: &'static str, id: impl ToString) -> Self {
        self.target = Some((kind, id.to_string()));
        self
    }

    /// The target is a document classified at `rank` (see [`Entry::classified`]).
    pub fn classified(mut self, rank: i32) -> Self {
        self.classification = Some(rank);
        self
    }
}

/// The route guard's decision, in the request's transaction: a permit when
/// the subject holds `permission`; otherwise an `rbac.denied` row (naming the
/// permission and the route) in `tx` and a 403, to answer once `tx` commits.
pub async fn admit(
    tx: &mut TenantTx,
    subject: Subject,
    permission: Permission,
    method: &str,
    route: &str,
    source: &Source,
) -> Result<Permit, AppError> {
    if subject.holds(permission) {
        let (route, method) = (route.into(), method.into());
        return Ok(Permit { subject: Arc::new(subject), permission, route, method, approval: None });
    }
    let entry = Entry::new(Action::RbacDenied, Outcome::Fail)
        .details(json!({ "permission": permission.as_str(), "route": route, "method": method }));
    audit::record(tx, source, entry).await?;
    Err(AppError::forbidden(INSUFFICIENT))
}

/// Records a [`Denial`] as `rbac.denied` in `tx` (whatever the refused
/// attempt changed was undone first), commits, and returns the 403 to answer.
pub async fn refuse(mut tx: TenantTx, permit: &Permit, source: &Source, denial: Denial) -> AppError {
    let record = async {
        audit::record(&mut tx, source, denial_entry(permit, &denial)).await?;
        tx.commit().await
    };
    match record.await {
        Ok(()) => AppError::forbidden(denial.message),
        Err(e) => e.into(),
    }
}

/// The `rbac.denied` row for a refusal after the guard.
fn denial_entry(permit: &Permit, denial: &Denial) -> Entry {
    let mut entry = Entry::new(Action::RbacDenied, Outcome::Fail).details(json!({
        "permission": denial.permission.as_str(),
        "route": &*permit.route,
        "method": &*permit.method,
        "reason": denial.reason,
    }));
    if let Some((kind, id)) = &denial.target {
        entry = entry.target(kind, id);
    }
    if let Some(rank) = denial.classification {
        entry = entry.classified(rank);
    }
    entry
}

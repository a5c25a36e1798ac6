//! Departments and clearance levels (seed 002): `/api/departments` and
//! `/api/clearance-levels`, each with `userCount`.
//!
//! A clearance level's `level` is its rank for mandatory access control, and its
//! name is what people choose a classification by, so every edit of a level
//! (name, description, colour, rank) is guarded like a clearance: the level's
//! rank, before and after, must be at or below the caller's own (otherwise a
//! swap of names could relabel documents above the caller's clearance), and
//! nobody re-ranks the level they hold.
//! Creating a level (at any free rank) or deleting an unused one changes nobody's
//! access: a new level is held by no one, and only people cleared at or above it
//! can give it to anyone.
//! The department, clearance level and role that registration gives new
//! accounts cannot be renamed or deleted.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};
use utoipa::ToSchema;
use uuid::Uuid;

use super::{Attempt, clean_color, clean_description, clean_name, conflict_on_duplicate};
use crate::{
    audit::{self, Action, Entry, Outcome, Source},
    authz::Permit,
    db::{
        TenantTx,
        seed::{DEFAULT_CLEARANCE, DEFAULT_DEPARTMENT},
    },
    http::{AppState, error::AppError},
};

#[derive(Debug, Clone, Serialize, sqlx::FromRow, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct DepartmentView {
    pub id: Uuid,
    pub name: String,
    pub description: String,
    pub color: String,
    pub user_count: i64,
}

const DEPARTMENT_SELECT: &str = "SELECT d.id, d.name, d.description, d.color, \
        (SELECT count(*) FROM users u WHERE u.department_id = d.id) AS user_count \
     FROM departments d WHERE ($1::uuid IS NULL OR d.id = $1) ORDER BY lower(d.name)";

pub async fn list_departments(tx: &mut TenantTx) -> Result<Vec<DepartmentView>, AppError> {
    Ok(sqlx::query_as(DEPARTMENT_SELECT).bind(None::<Uuid>).fetch_all(tx.conn()).await?)
}

/// A new department.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewDepartment {
    /// 1 to 100 characters after trimming, without control characters.
    #[schema(max_length = 100, pattern = "@text")]
    pub name: String,
    /// At most 1000 characters after trimming. Default: empty.
    #[serde(default)]
    #[schema(max_length = 1000, pattern = r"^[^\x00]*$")]
    pub description: Option<String>,
    /// `#rrggbb`. Default `#64748b`.
    #[serde(default)]
    #[schema(min_length = 7, max_length = 7, pattern = r"^#[0-9A-Fa-f]{6}$", example = "#3b82f6")]
    pub color: Option<String>,
}

/// Changes to a department: each field absent or `null` is left as it is.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DepartmentInput {
    /// As in `NewDepartment`; the department of registrations keeps its name (409).
    #[serde(default)]
    #[schema(max_length = 100, pattern = "@text")]
    pub name: Option<String>,
    #[serde(default)]
    #[schema(max_length = 1000, pattern = r"^[^\x00]*$")]
    pub description: Option<String>,
    #[serde(default)]
    #[schema(min_length = 7, max_length = 7, pattern = r"^#[0-9A-Fa-f]{6}$", example = "#3b82f6")]
    pub color: Option<String>,
}

pub async fn create_department(
    permit: &Permit,
    source: &Source,
    mut tx: TenantTx,
    input: NewDepartment,
) -> Result<DepartmentView, AppError> {
    let name = clean_name("name", &input.name, 100)?;
    let description = clean_description(input.description.as_deref().unwrap_or(""))?;
    let color = clean_color(input.color.as_deref().unwrap_or("#64748b"))?;
    let inserted = sqlx::query_scalar(
        "INSERT INTO departments (tenant_id, name, description, color) VALUES ($1, $2, $3, $4) RETURNING id",
    )
    .bind(permit.tenant_id())
    .bind(&name)
    .bind(&description)
    .bind(&color)
    .fetch_one(tx.conn())
    .await;
    let id: Uuid = conflict_on_duplicate(inserted, "A department with that name already exists")?;
    let entry = Entry::new(Action::DepartmentCreate, Outcome::Success)
        .target("department", id)
        .details(json!({ "after": { "name": name, "description": description, "color": color } }));
    audit::record(&mut tx, source, entry).await?;
    let view = sqlx::query_as(DEPARTMENT_SELECT).bind(id).fetch_one(tx.conn()).await?;
    tx.commit().await?;
    Ok(view)
}

pub async fn update_department(
    source: &Source,
    mut tx: TenantTx,
    id: Uuid,
    input: DepartmentInput,
) -> Result<DepartmentView, AppError> {
    let before: DepartmentView =
        sqlx::query_as(DEPARTMENT_SELECT).bind(id).fetch_optional(tx.conn()).await?.ok_or(AppError::NotFound)?;
    let name = match &input.name {
        Some(n) => clean_name("name", n, 100)?,
        None => before.name.clone(),
    };
    if before.name.eq_ignore_ascii_case(DEFAULT_DEPARTMENT) && !name.eq_ignore_ascii_case(DEFAULT_DEPARTMENT) {
        return Err(registration_default("department", DEFAULT_DEPARTMENT, "renamed"));
    }
    let description = match &input.description {
        Some(d) => clean_description(d)?,
        None => before.description.clone(),
    };
    let color = match &input.color {
        Some(c) => clean_color(c)?,
        None => before.color.clone(),
    };
    let changes = diff(&[
        ("name", json!(before.name), json!(name)),
        ("description", json!(before.description), json!(description)),
        ("color", json!(before.color), json!(color)),
    ]);
    if !changes.is_empty() {
        let updated = sqlx::query("UPDATE departments SET name = $2, description = $3, color = $4 WHERE id = $1")
            .bind(id)
            .bind(&name)
            .bind(&description)
            .bind(&color)
            .execute(tx.conn())
            .await;
        conflict_on_duplicate(updated, "A department with that name already exists")?;
        let entry = Entry::new(Action::DepartmentUpdate, Outcome::Success)
            .target("department", id)
            .details(json!({ "department": name, "changes": changes }));
        audit::record(&mut tx, source, entry).await?;
    }
    let view = sqlx::query_as(DEPARTMENT_SELECT).bind(id).fetch_one(tx.conn()).await?;
    tx.commit().await?;
    Ok(view)
}

pub async fn delete_department(source: &Source, mut tx: TenantTx, id: Uuid) -> Result<(), AppError> {
    let before: DepartmentView =
        sqlx::query_as(DEPARTMENT_SELECT).bind(id).fetch_optional(tx.conn()).await?.ok_or(AppError::NotFound)?;
    if before.name.eq_ignore_ascii_case(DEFAULT_DEPARTMENT) {
        return Err(registration_default("department", DEFAULT_DEPARTMENT, "deleted"));
    }
    if before.user_count > 0 {
        return Err(still_used("department", before.user_count));
    }
    let deleted = sqlx::query("DELETE FROM departments WHERE id = $1").bind(id).execute(tx.conn()).await;
    in_use(deleted, "department")?;
    let entry = Entry::new(Action::DepartmentDelete, Outcome::Success).target("department", id).details(json!({
        "before": { "name": before.name, "description": before.description, "color": before.color }
    }));
    audit::record(&mut tx, source, entry).await?;
    tx.commit().await?;
    Ok(())
}

#[derive(Debug, Clone, Serialize, sqlx::FromRow, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ClearanceView {
    pub id: Uuid,
    pub name: String,
    pub description: String,
    /// The rank for mandatory access control: higher is more secret.
    pub level: i32,
    pub color: String,
    pub user_count: i64,
}

const CLEARANCE_SELECT: &str = "SELECT c.id, c.name, c.description, c.level, c.color, \
        (SELECT count(*) FROM users u WHERE u.clearance_level_id = c.id) AS user_count \
     FROM clearance_levels c WHERE ($1::uuid IS NULL OR c.id = $1) ORDER BY c.level";

pub async fn list_clearances(tx: &mut TenantTx) -> Result<Vec<ClearanceView>, AppError> {
    Ok(sqlx::query_as(CLEARANCE_SELECT).bind(None::<Uuid>).fetch_all(tx.conn()).await?)
}

/// A new clearance level.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewClearance {
    /// 1 to 100 characters after trimming, without control characters.
    #[schema(max_length = 100, pattern = "@text")]
    pub name: String,
    /// At most 1000 characters after trimming. Default: empty.
    #[serde(default)]
    #[schema(max_length = 1000, pattern = r"^[^\x00]*$")]
    pub description: Option<String>,
    /// The rank, 1 to 100, not taken by another level (409).
    #[schema(minimum = 1, maximum = 100)]
    pub level: i32,
    /// `#rrggbb`. Default `#64748b`.
    #[serde(default)]
    #[schema(min_length = 7, max_length = 7, pattern = r"^#[0-9A-Fa-f]{6}$", example = "#3b82f6")]
    pub color: Option<String>,
}

/// Changes to a clearance level: each field absent or `null` is left as it
/// is. The level's rank before and after must be at or below the caller's
/// clearance, and nobody re-ranks the level they hold (403).
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ClearanceInput {
    /// As in `NewClearance`; the level of registrations keeps its name (409).
    #[serde(default)]
    #[schema(max_length = 100, pattern = "@text")]
    pub name: Option<String>,
    #[serde(default)]
    #[schema(max_length = 1000, pattern = r"^[^\x00]*$")]
    pub description: Option<String>,
    #[serde(default)]
    #[schema(minimum = 1, maximum = 100)]
    pub level: Option<i32>,
    #[serde(default)]
    #[schema(min_length = 7, max_length = 7, pattern = r"^#[0-9A-Fa-f]{6}$", example = "#3b82f6")]
    pub color: Option<String>,
}

fn clean_level(level: i32) -> Result<i32, AppError> {
    if (1..=100).contains(&level) { Ok(level) } else { Err(AppError::invalid("level", "must be between 1 and 100")) }
}

/// Refuses (as `rbac.denied`) any change to a level ranked above the caller's
/// own clearance, or moving one there.
fn within_clearance(permit: &Permit, ranks: &[i32], id: Uuid) -> Attempt<()> {
    if ranks.iter().any(|r| *r > permit.subject().clearance_rank) {
        let denial = permit.deny("clearance_above_own", "You cannot change clearance levels above your own");
        return Err(denial.target("clearance_level", id).into());
    }
    Ok(())
}

pub async fn create_clearance(
    state: &AppState,
    permit: &Permit,
    source: &Source,
    mut tx: TenantTx,
    input: NewClearance,
) -> Result<ClearanceView, AppError> {
    let outcome = async {
        let name = clean_name("name", &input.name, 100)?;
        let level = clean_level(input.level)?;
        let description = clean_description(input.description.as_deref().unwrap_or(""))?;
        let color = clean_color(input.color.as_deref().unwrap_or("#64748b"))?;
        let permit = &super::begin(&mut tx, permit, state.clock.now()).await?;
        let inserted = sqlx::query_scalar(
            "INSERT INTO clearance_levels (tenant_id, name, description, level, color) \
             VALUES ($1, $2, $3, $4, $5) RETURNING id",
        )
        .bind(permit.tenant_id())
        .bind(&name)
        .bind(&description)
        .bind(level)
        .bind(&color)
        .fetch_one(tx.conn())
        .await;
        let id: Uuid = conflict_on_duplicate(inserted, "A clearance level with that name or level already exists")?;
        let entry = Entry::new(Action::ClearanceLevelCreate, Outcome::Success)
            .target("clearance_level", id)
            .details(json!({ "after": { "name": name, "description": description, "level": level, "color": color } }));
        audit::record(&mut tx, source, entry).await?;
        let view = sqlx::query_as(CLEARANCE_SELECT).bind(id).fetch_one(tx.conn()).await?;
        Ok(view)
    }
    .await;
    super::settle(tx, permit, source, outcome).await
}

pub async fn update_clearance(
    state: &AppState,
    permit: &Permit,
    source: &Source,
    mut tx: TenantTx,
    id: Uuid,
    input: ClearanceInput,
) -> Result<ClearanceView, AppError> {
    let outcome = async {
        // Ranks are authority: edits of levels serialize with every other change of it.
        let permit = &super::begin(&mut tx, permit, state.clock.now()).await?;
        let before: ClearanceView =
            sqlx::query_as(CLEARANCE_SELECT).bind(id).fetch_optional(tx.conn()).await?.ok_or(AppError::NotFound)?;
        let name = match &input.name {
            Some(n) => clean_name("name", n, 100)?,
            None => before.name.clone(),
        };
        if before.name.eq_ignore_ascii_case(DEFAULT_CLEARANCE) && !name.eq_ignore_ascii_case(DEFAULT_CLEARANCE) {
            return Err(registration_default("clearance level", DEFAULT_CLEARANCE, "renamed").into());
        }
        let level = match input.level {
            Some(l) => clean_level(l)?,
            None => before.level,
        };
        if level != before.level && before.level == permit.subject().clearance_rank {
            let own: Option<Uuid> =
                sqlx::query_scalar("SELECT clearance_level_id FROM users WHERE id = $1 AND clearance_level_id = $2")
                    .bind(permit.user_id())
                    .bind(id)
                    .fetch_optional(tx.conn())
                    .await?;
            if own.is_some() {
                return Err(permit.deny("self_change", "You cannot re-rank your own clearance level").into());
            }
        }
        let description = match &input.description {
            Some(d) => clean_description(d)?,
            None => before.description.clone(),
        };
        let color = match &input.color {
            Some(c) => clean_color(c)?,
            None => before.color.clone(),
        };
        let changes = diff(&[
            ("name", json!(before.name), json!(name)),
            ("description", json!(before.description), json!(description)),
            ("level", json!(before.level), json!(level)),
            ("color", json!(before.color), json!(color)),
        ]);
        if !changes.is_empty() {
            within_clearance(permit, &[before.level, level], id)?;
            let updated = sqlx::query(
                "UPDATE clearance_levels SET name = $2, description = $3, level = $4, color = $5 WHERE id = $1",
            )
            .bind(id)
            .bind(&name)
            .bind(&description)
            .bind(level)
            .bind(&color)
            .execute(tx.conn())
            .await;
            conflict_on_duplicate(updated, "A clearance level with that name or level already exists")?;
            let entry = Entry::new(Action::ClearanceLevelUpdate, Outcome::Success)
                .target("clearance_level", id)
                .details(json!({ "clearanceLevel": name, "changes": changes }));
            audit::record(&mut tx, source, entry).await?;
        }
        let view = sqlx::query_as(CLEARANCE_SELECT).bind(id).fetch_one(tx.conn()).await?;
        Ok(view)
    }
    .await;
    super::settle(tx, permit, source, outcome).await
}

pub async fn delete_clearance(
    state: &AppState,
    permit: &Permit,
    source: &Source,
    mut tx: TenantTx,
    id: Uuid,
) -> Result<(), AppError> {
    let outcome = async {
        super::begin(&mut tx, permit, state.clock.now()).await?;
        let before: ClearanceView =
            sqlx::query_as(CLEARANCE_SELECT).bind(id).fetch_optional(tx.conn()).await?.ok_or(AppError::NotFound)?;
        if before.name.eq_ignore_ascii_case(DEFAULT_CLEARANCE) {
            return Err(registration_default("clearance level", DEFAULT_CLEARANCE, "deleted").into());
        }
        if before.user_count > 0 {
            return Err(still_used("clearance level", before.user_count).into());
        }
        let deleted = sqlx::query("DELETE FROM clearance_levels WHERE id = $1").bind(id).execute(tx.conn()).await;
        in_use(deleted, "clearance level")?;
        let entry = Entry::new(Action::ClearanceLevelDelete, Outcome::Success)
            .target("clearance_level", id)
            .details(json!({ "before": { "name": before.name, "level": before.level, "color": before.color } }));
        audit::record(&mut tx, source, entry).await?;
        Ok(())
    }
    .await;
    super::settle(tx, permit, source, outcome).await
}

fn diff(fields: &[(&str, Value, Value)]) -> Map<String, Value> {
    fields
        .iter()
        .filter(|(_, before, after)| before != after)
        .map(|(field, before, after)| (field.to_string(), json!({ "before": before, "after": after })))
        .collect()
}

fn registration_default(kind: &str, name: &str, verb: &str) -> AppError {
    AppError::Conflict(format!("The {kind} {name:?} is given to new registrations and cannot be {verb}"))
}

fn still_used(kind: &str, count: i64) -> AppError {
    AppError::Conflict(format!("This {kind} is still in use by {count} user(s)"))
}

/// A delete that a foreign key refused (documents are filed under the row, or a
/// user was given it meanwhile) is a 409.
fn in_use(result: Result<sqlx::postgres::PgQueryResult, sqlx::Error>, kind: &str) -> Result<(), AppError> {
    match result {
        Ok(_) => Ok(()),
        Err(sqlx::Error::Database(e)) if e.is_foreign_key_violation() => {
            Err(AppError::Conflict(format!("This {kind} is still in use by documents or users")))
        }
        Err(e) => Err(e.into()),
    }
}

//! HTTP handlers for `/api/users`, `/api/roles`, `/api/permissions`,
//! `/api/departments` and `/api/clearance-levels`: parse, call the capability,
//! shape the answer. Each takes the [`Permit`] its route's guard issued.

use axum::{Json, body::Bytes, extract::State, response::IntoResponse};
use serde_json::json;
use uuid::Uuid;

use super::{attributes, factors, membership, roles, users};
use crate::{
    authz::Permit,
    http::{
        AppState,
        client::ClientSource,
        guard::Tx,
        json::ApiJson,
        params::{ApiPath, ApiQuery},
        reply::{Answer, committed, created, no_content, ok},
    },
};

pub async fn list_users(
    State(s): State<AppState>,
    permit: Permit,
    Tx(mut tx): Tx,
    ApiQuery(q): ApiQuery<users::ListQuery>,
) -> Answer {
    let (list, next) = users::list(&s, &permit, &mut tx, q).await?;
    tx.commit().await?;
    Ok(Json(json!({ "users": list, "nextCursor": next })).into_response())
}

pub async fn get_user(
    State(s): State<AppState>,
    ClientSource(src): ClientSource,
    permit: Permit,
    Tx(tx): Tx,
    ApiPath(id): ApiPath<Uuid>,
) -> Answer {
    ok("user", users::get(&s, &permit, &src, tx, id).await?)
}

pub async fn create_user(
    State(s): State<AppState>,
    ClientSource(src): ClientSource,
    permit: Permit,
    Tx(tx): Tx,
    ApiJson(input): ApiJson<users::CreateUser>,
) -> Answer {
    created("user", users::create(&s, &permit, &src, tx, input).await?)
}

pub async fn update_user(
    State(s): State<AppState>,
    ClientSource(src): ClientSource,
    permit: Permit,
    Tx(tx): Tx,
    ApiPath(id): ApiPath<Uuid>,
    ApiJson(input): ApiJson<users::UpdateUser>,
) -> Answer {
    ok("user", users::update(&s, &permit, &src, tx, id, input).await?)
}

pub async fn delete_user(
    State(s): State<AppState>,
    ClientSource(src): ClientSource,
    permit: Permit,
    Tx(tx): Tx,
    ApiPath(id): ApiPath<Uuid>,
) -> Answer {
    users::delete(&s, &permit, &src, tx, id).await?;
    no_content()
}

pub async fn assign_role(
    State(s): State<AppState>,
    ClientSource(src): ClientSource,
    permit: Permit,
    Tx(tx): Tx,
    ApiPath(id): ApiPath<Uuid>,
    ApiJson(input): ApiJson<membership::AssignRole>,
) -> Answer {
    let (user, new) = membership::assign_role(&s, &permit, &src, tx, id, input).await?;
    if new { created("user", user) } else { ok("user", user) }
}

pub async fn revoke_role(
    State(s): State<AppState>,
    ClientSource(src): ClientSource,
    permit: Permit,
    Tx(tx): Tx,
    ApiPath((id, role)): ApiPath<(Uuid, String)>,
) -> Answer {
    membership::revoke_role(&s, &permit, &src, tx, id, &role).await?;
    no_content()
}

pub async fn reset_mfa(
    State(s): State<AppState>,
    ClientSource(src): ClientSource,
    permit: Permit,
    Tx(tx): Tx,
    ApiPath(id): ApiPath<Uuid>,
    ApiJson(input): ApiJson<factors::ResetMfa>,
) -> Answer {
    ok("reset", factors::reset_mfa(&s, &permit, &src, tx, id, input).await?)
}

pub async fn user_sessions(
    State(s): State<AppState>,
    ClientSource(src): ClientSource,
    permit: Permit,
    Tx(tx): Tx,
    ApiPath(id): ApiPath<Uuid>,
) -> Answer {
    ok("sessions", factors::sessions(&s, &permit, &src, tx, id).await?)
}

pub async fn end_user_sessions(
    State(s): State<AppState>,
    ClientSource(src): ClientSource,
    permit: Permit,
    Tx(tx): Tx,
    ApiPath(id): ApiPath<Uuid>,
) -> Answer {
    ok("ended", factors::end_sessions(&s, &permit, &src, tx, id).await?)
}

pub async fn user_api_keys(
    State(s): State<AppState>,
    ClientSource(src): ClientSource,
    permit: Permit,
    Tx(tx): Tx,
    ApiPath(id): ApiPath<Uuid>,
) -> Answer {
    ok("apiKeys", factors::api_keys(&s, &permit, &src, tx, id).await?)
}

pub async fn revoke_user_api_key(
    State(s): State<AppState>,
    ClientSource(src): ClientSource,
    permit: Permit,
    Tx(tx): Tx,
    ApiPath(ids): ApiPath<(Uuid, Uuid)>,
) -> Answer {
    factors::revoke_api_key(&s, &permit, &src, tx, ids).await?;
    no_content()
}

pub async fn unlock_user(
    State(s): State<AppState>,
    ClientSource(src): ClientSource,
    permit: Permit,
    Tx(tx): Tx,
    ApiPath(id): ApiPath<Uuid>,
) -> Answer {
    factors::unlock(&s, &permit, &src, tx, id).await?;
    no_content()
}

pub async fn approve_user(
    State(s): State<AppState>,
    ClientSource(src): ClientSource,
    permit: Permit,
    Tx(tx): Tx,
    ApiPath(id): ApiPath<Uuid>,
    body: Bytes,
) -> Answer {
    // The body is optional: `{"role": ...}` or nothing.
    let input = if body.iter().all(u8::is_ascii_whitespace) {
        membership::Approve::default()
    } else {
        crate::http::json::parse(&body)?
    };
    ok("user", membership::approve(&s, &permit, &src, tx, id, input).await?)
}

pub async fn reject_user(
    State(s): State<AppState>,
    ClientSource(src): ClientSource,
    permit: Permit,
    Tx(tx): Tx,
    ApiPath(id): ApiPath<Uuid>,
) -> Answer {
    membership::reject(&s, &permit, &src, tx, id).await?;
    no_content()
}

pub async fn list_roles(State(s): State<AppState>, Tx(mut tx): Tx) -> Answer {
    let list = roles::list(&s, &mut tx).await?;
    committed(tx, "roles", list).await
}

pub async fn get_role(State(s): State<AppState>, Tx(mut tx): Tx, ApiPath(id): ApiPath<Uuid>) -> Answer {
    let role = roles::get(&s, &mut tx, id).await?;
    committed(tx, "role", role).await
}

pub async fn create_role(
    State(s): State<AppState>,
    ClientSource(src): ClientSource,
    permit: Permit,
    Tx(tx): Tx,
    ApiJson(input): ApiJson<roles::CreateRole>,
) -> Answer {
    created("role", roles::create(&s, &permit, &src, tx, input).await?)
}

pub async fn update_role(
    State(s): State<AppState>,
    ClientSource(src): ClientSource,
    permit: Permit,
    Tx(tx): Tx,
    ApiPath(id): ApiPath<Uuid>,
    ApiJson(input): ApiJson<roles::UpdateRole>,
) -> Answer {
    ok("role", roles::update(&s, &permit, &src, tx, id, input).await?)
}

pub async fn delete_role(
    State(s): State<AppState>,
    ClientSource(src): ClientSource,
    permit: Permit,
    Tx(tx): Tx,
    ApiPath(id): ApiPath<Uuid>,
) -> Answer {
    roles::delete(&s, &permit, &src, tx, id).await?;
    no_content()
}

pub async fn list_permissions(Tx(mut tx): Tx) -> Answer {
    let list = roles::catalogue(&mut tx).await?;
    committed(tx, "permissions", list).await
}

pub async fn list_departments(Tx(mut tx): Tx) -> Answer {
    let list = attributes::list_departments(&mut tx).await?;
    committed(tx, "departments", list).await
}

pub async fn create_department(
    ClientSource(src): ClientSource,
    permit: Permit,
    Tx(tx): Tx,
    ApiJson(input): ApiJson<attributes::DepartmentInput>,
) -> Answer {
    created("department", attributes::create_department(&permit, &src, tx, input).await?)
}

pub async fn update_department(
    ClientSource(src): ClientSource,
    Tx(tx): Tx,
    ApiPath(id): ApiPath<Uuid>,
    ApiJson(input): ApiJson<attributes::DepartmentInput>,
) -> Answer {
    ok("department", attributes::update_department(&src, tx, id, input).await?)
}

pub async fn delete_department(ClientSource(src): ClientSource, Tx(tx): Tx, ApiPath(id): ApiPath<Uuid>) -> Answer {
    attributes::delete_department(&src, tx, id).await?;
    no_content()
}

pub async fn list_clearances(Tx(mut tx): Tx) -> Answer {
    let list = attributes::list_clearances(&mut tx).await?;
    committed(tx, "clearanceLevels", list).await
}

pub async fn create_clearance(
    State(s): State<AppState>,
    ClientSource(src): ClientSource,
    permit: Permit,
    Tx(tx): Tx,
    ApiJson(input): ApiJson<attributes::ClearanceInput>,
) -> Answer {
    created("clearanceLevel", attributes::create_clearance(&s, &permit, &src, tx, input).await?)
}

pub async fn update_clearance(
    State(s): State<AppState>,
    ClientSource(src): ClientSource,
    permit: Permit,
    Tx(tx): Tx,
    ApiPath(id): ApiPath<Uuid>,
    ApiJson(input): ApiJson<attributes::ClearanceInput>,
) -> Answer {
    ok("clearanceLevel", attributes::update_clearance(&s, &permit, &src, tx, id, input).await?)
}

pub async fn delete_clearance(
    State(s): State<AppState>,
    ClientSource(src): ClientSource,
    permit: Permit,
    Tx(tx): Tx,
    ApiPath(id): ApiPath<Uuid>,
) -> Answer {
    attributes::delete_clearance(&s, &permit, &src, tx, id).await?;
    no_content()
}

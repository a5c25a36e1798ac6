//! HTTP handlers for `/api/users`, `/api/roles`, `/api/permissions`,
//! `/api/departments` and `/api/clearance-levels`: parse, call the capability,
//! shape the answer. Each takes the [`Permit`] its route's guard issued.

use axum::{Json, body::Bytes, extract::State, response::IntoResponse};
use serde_json::json;
use uuid::Uuid;

use super::{attributes, factors, membership, roles, users};
use crate::{
    auth::{apikeys::ApiKeyView, own::SessionView, user::UserView},
    authz::Permit,
    http::{
        AppState,
        apidoc::{Op, Reply},
        client::ClientSource,
        guard::Tx,
        json::ApiJson,
        params::{ApiPath, ApiQuery},
        reply::{Answer, committed, created, done, no_content, ok},
    },
};

pub async fn list_users(
    State(s): State<AppState>,
    permit: Permit,
    Tx(mut tx): Tx,
    ApiQuery(q): ApiQuery<users::ListQuery>,
) -> Answer {
    let (list, next) = users::list(&s, &permit, &mut tx, q).await?;
    tx.end_read_only().await?;
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
    done(users::update(&s, &permit, &src, tx, id, input).await?, |user| ok("user", user))
}

pub async fn delete_user(
    State(s): State<AppState>,
    ClientSource(src): ClientSource,
    permit: Permit,
    Tx(tx): Tx,
    ApiPath(id): ApiPath<Uuid>,
) -> Answer {
    done(users::delete(&s, &permit, &src, tx, id).await?, |()| no_content())
}

pub async fn assign_role(
    State(s): State<AppState>,
    ClientSource(src): ClientSource,
    permit: Permit,
    Tx(tx): Tx,
    ApiPath(id): ApiPath<Uuid>,
    ApiJson(input): ApiJson<membership::AssignRole>,
) -> Answer {
    let assigned = membership::assign_role(&s, &permit, &src, tx, id, input).await?;
    done(assigned, |(user, new)| if new { created("user", user) } else { ok("user", user) })
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
    done(factors::reset_mfa(&s, &permit, &src, tx, id, input).await?, |reset| ok("reset", reset))
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
    done(roles::update(&s, &permit, &src, tx, id, input).await?, |role| ok("role", role))
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
    ApiJson(input): ApiJson<attributes::NewDepartment>,
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
    ApiJson(input): ApiJson<attributes::NewClearance>,
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

/// A role's name as a path segment (`DELETE /api/users/{id}/roles/{role}`),
/// for the OpenAPI description: matched exactly, case-insensitively.
struct RoleNameParam;

impl utoipa::PartialSchema for RoleNameParam {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        utoipa::openapi::ObjectBuilder::new()
            .schema_type(utoipa::openapi::schema::Type::String)
            .min_length(Some(1))
            .pattern(Some(r"^[^\x00]+$"))
            .examples(["student"])
            .into()
    }
}

impl utoipa::ToSchema for RoleNameParam {}

/// This module's operations, for the OpenAPI document.
pub fn api() -> Vec<Op> {
    const NOT_MANAGEABLE: &str = "the user is outside the caller's scope, or has more access than the caller \
                                  (a higher clearance, or a permission the caller could not grant)";
    vec![
        // Users.
        Op::get("/api/users", "List users")
            .describe(
                "A page of the accounts within the caller's `users.view` scope (their own, their department's \
                 or the whole organisation's), in username order.",
            )
            .query::<users::ListQuery>()
            .page::<UserView>("users")
            .error(422, "`status` is not a status, `limit` is not between 1 and 500"),
        Op::post("/api/users", "Create a user")
            .describe(
                "The caller must hold every permission of the role (at the same or a wider scope), may only place \
                 users in departments their `users.create` scope covers, and may not grant a clearance above \
                 their own. The password must not be the username or email, nor common or easy to guess.",
            )
            .json::<users::CreateUser>()
            .created::<UserView>("user")
            .error(
                403,
                "the role carries a permission the caller does not hold, the department is outside the caller's \
                 scope, or the clearance level is above the caller's own (`rbac.denied` is audited)",
            )
            .error(409, "the username or email is already taken")
            .error(
                422,
                "`username`, `email` or `status` is invalid, the password is too short, too long, too weak or \
                 equal to the username or email, or there is no role, department or clearance level by that name",
            ),
        Op::get("/api/users/{id}", "Get a user")
            .ok::<UserView>("user")
            .error(403, "the user is outside the caller's `users.view` scope")
            .error(404, "no such user"),
        Op::put("/api/users/{id}", "Change a user")
            .held()
            .describe(
                "Changes only the fields given. A new password ends the user's sessions; `role` replaces every \
                 role the user holds. Nobody changes their own password, role, department or clearance level \
                 here. The organisation always keeps an active administrator.",
            )
            .json::<users::UpdateUser>()
            .ok::<UserView>("user")
            .error(
                403,
                "the change concerns the caller's own password, role, department or clearance; or the user is \
                 outside the caller's scope or has more access than the caller; or the new role, department or \
                 clearance is beyond what the caller may give, or a role to take away is (`rbac.denied`)",
            )
            .error(404, "no such user")
            .error(
                409,
                "the username or email is already taken, or the change would leave the organisation without an \
                 active administrator",
            )
            .error(
                422,
                "`username`, `email` or `status` is invalid, the password fails the policy, or there is no role, \
                 department or clearance level by that name",
            ),
        Op::delete("/api/users/{id}", "Delete a user")
            .held()
            .no_content()
            .error(403, NOT_MANAGEABLE)
            .error(404, "no such user")
            .error(409, "the account still owns documents, or it is the organisation's last active administrator"),
        Op::post("/api/users/{id}/approve", "Approve a pending account")
            .describe(
                "Activates a self-registered account waiting for approval, with the role given, else the role it \
                 asked for (when that exists), else the one it registered with. The body may be left out.",
            )
            .json::<membership::Approve>()
            .ok::<UserView>("user")
            .error(
                403,
                "the caller's own account, the user is beyond the caller, or the role carries a permission the \
                 caller does not hold",
            )
            .error(404, "no such user")
            .error(409, "the account is not waiting for approval")
            .error(422, "there is no role by that name, or no role to give"),
        Op::post("/api/users/{id}/mfa/reset", "Reset a user's second factors")
            .held()
            .describe(
                "Removes the user's authenticator app, passkeys and recovery codes, ends their sessions and revokes \
                 their API keys, recording the reason. Not for one's own factors (those are changed at `/me/mfa`).",
            )
            .json::<factors::ResetMfa>()
            .ok::<factors::Reset>("reset")
            .error(403, "the caller's own account, or the user is outside the caller's scope or has more access")
            .error(404, "no such user")
            .error(422, "`reason` is empty or longer than 500 characters"),
        Op::post("/api/users/{id}/unlock", "Unlock an account")
            .describe("Clears the lock that too many failed logins in a row put on the account, and the count.")
            .no_content()
            .error(403, "the caller's own account, or the user is outside the caller's scope or has more access")
            .error(404, "no such user")
            .error(409, "the account is not locked"),
        Op::get("/api/users/{id}/sessions", "List a user's sessions")
            .ok::<Vec<SessionView>>("sessions")
            .error(403, NOT_MANAGEABLE)
            .error(404, "no such user"),
        Op::delete("/api/users/{id}/sessions", "End a user's sessions")
            .answers(200, Reply::new().field::<u64>("ended").describe("Done: how many sessions ended"))
            .error(403, NOT_MANAGEABLE)
            .error(404, "no such user"),
        Op::get("/api/users/{id}/api-keys", "List a user's API keys")
            .ok::<Vec<ApiKeyView>>("apiKeys")
            .error(403, NOT_MANAGEABLE)
            .error(404, "no such user"),
        Op::delete("/api/users/{id}/api-keys/{key}", "Revoke a user's API key")
            .no_content()
            .error(403, NOT_MANAGEABLE)
            .error(404, "no such user, or the user has no such key"),
        Op::post("/api/users/{id}/reject", "Reject a pending account")
            .describe("Deletes a self-registered account waiting for approval; the audit row keeps what it was.")
            .no_content()
            .error(403, "the caller's own account, or the user is outside the caller's scope or has more access")
            .error(404, "no such user")
            .error(409, "the account is not waiting for approval"),
        Op::post("/api/users/{id}/roles", "Give a user a role")
            .held()
            .describe(
                "Assigns the role, optionally until `expiresAt`; for a role the user holds, changes its expiry. \
                 Nobody changes their own roles.",
            )
            .json::<membership::AssignRole>()
            .answers(201, Reply::new().field::<UserView>("user").describe("Assigned"))
            .answers(200, Reply::new().field::<UserView>("user").describe("The user held the role: its expiry changed"))
            .error(
                403,
                "the caller's own account, the user is beyond the caller, or the role carries a permission the \
                 caller does not hold",
            )
            .error(404, "no such user")
            .error(
                409,
                "an expiry on the last permanent administrator's assignment would leave the organisation without \
                 an administrator",
            )
            .error(422, "there is no role by that name, or `expiresAt` is not in the future"),
        Op::delete("/api/users/{id}/roles/{role}", "Take a role from a user")
            .path_param::<RoleNameParam>("role")
            .no_content()
            .error(
                403,
                "the caller's own account, the user is beyond the caller, or the role carries a permission the \
                 caller does not hold",
            )
            .error(404, "no such user, no role by that name, or the user does not hold it")
            .error(409, "the user is the organisation's last active administrator"),
        // Roles and the permission catalogue.
        Op::get("/api/roles", "List roles").ok::<Vec<roles::RoleView>>("roles"),
        Op::post("/api/roles", "Create a role")
            .json::<roles::CreateRole>()
            .created::<roles::RoleView>("role")
            .error(403, "the role would grant a permission the caller does not hold at that scope")
            .error(409, "a role with that name exists")
            .error(
                422,
                "`name` or `portal` is empty or too long, `description` is too long, `sessionTimeoutMinutes` or \
                 `tier` is out of range, `mfaType` is unknown, or `permissions` names an unknown permission",
            ),
        Op::get("/api/roles/{id}", "Get a role").ok::<roles::RoleView>("role").error(404, "no such role"),
        Op::put("/api/roles/{id}", "Change a role")
            .held()
            .describe(
                "Changes only the fields given; `permissions`, when given, is the role's whole set of grants. \
                 Any change needs the caller to hold every grant of the role, at the same or a wider scope.",
            )
            .json::<roles::UpdateRole>()
            .ok::<roles::RoleView>("role")
            .error(403, "the role grants (or would grant) a permission the caller does not hold at that scope")
            .error(404, "no such role")
            .error(
                409,
                "a role with that name exists, the role of new registrations cannot be renamed, or the change would \
                 leave the organisation without an active administrator",
            )
            .error(
                422,
                "`name` or `portal` is empty or too long, `description` is too long, `sessionTimeoutMinutes` or \
                 `tier` is out of range, `mfaType` is unknown, or `permissions` names an unknown permission",
            ),
        Op::delete("/api/roles/{id}", "Delete a role")
            .no_content()
            .error(403, "the role grants a permission the caller does not hold at that scope")
            .error(404, "no such role")
            .error(409, "the role is given to new registrations, or is still assigned to users"),
        Op::get("/api/permissions", "List the permission catalogue").ok::<Vec<roles::PermissionView>>("permissions"),
        // Departments and clearance levels.
        Op::get("/api/departments", "List departments").ok::<Vec<attributes::DepartmentView>>("departments"),
        Op::post("/api/departments", "Create a department")
            .json::<attributes::NewDepartment>()
            .created::<attributes::DepartmentView>("department")
            .error(409, "a department with that name exists")
            .error(422, "`name` is empty or too long, `description` is too long, or `color` is not `#rrggbb`"),
        Op::put("/api/departments/{id}", "Change a department")
            .json::<attributes::DepartmentInput>()
            .ok::<attributes::DepartmentView>("department")
            .error(404, "no such department")
            .error(409, "a department with that name exists, or the department of registrations cannot be renamed")
            .error(422, "`name` is empty or too long, `description` is too long, or `color` is not `#rrggbb`"),
        Op::delete("/api/departments/{id}", "Delete a department")
            .no_content()
            .error(404, "no such department")
            .error(409, "the department is given to new registrations, or is still in use by users or documents"),
        Op::get("/api/clearance-levels", "List clearance levels")
            .ok::<Vec<attributes::ClearanceView>>("clearanceLevels"),
        Op::post("/api/clearance-levels", "Create a clearance level")
            .json::<attributes::NewClearance>()
            .created::<attributes::ClearanceView>("clearanceLevel")
            .error(409, "a clearance level with that name or level exists")
            .error(
                422,
                "`name` is empty or too long, `description` is too long, `level` is not between 1 and 100, or \
                 `color` is not `#rrggbb`",
            ),
        Op::put("/api/clearance-levels/{id}", "Change a clearance level")
            .describe(
                "The level's rank before and after must be at or below the caller's clearance; nobody re-ranks the \
                 level they hold.",
            )
            .json::<attributes::ClearanceInput>()
            .ok::<attributes::ClearanceView>("clearanceLevel")
            .error(403, "the level is (or would be) ranked above the caller's clearance, or is the caller's own")
            .error(404, "no such clearance level")
            .error(
                409,
                "a clearance level with that name or level exists, or the level of registrations cannot be renamed",
            )
            .error(
                422,
                "`name` is empty or too long, `description` is too long, `level` is not between 1 and 100, or \
                 `color` is not `#rrggbb`",
            ),
        Op::delete("/api/clearance-levels/{id}", "Delete a clearance level")
            .no_content()
            .error(404, "no such clearance level")
            .error(409, "the level is given to new registrations, or is still in use by users or documents"),
    ]
}

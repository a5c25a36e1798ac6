//! The guard rails an attacker would test: self-service escalation, handing on
//! what you do not hold, scope, the last administrator, and mass assignment.

mod common;

use common::{PASSWORD, Session, TestApp};
use reqwest::StatusCode;
use serde_json::{Value, json};
use uuid::Uuid;

async fn id_of(app: &TestApp, table: &str, name: &str) -> Uuid {
    let mut conn = app.owner_conn().await;
    let sql = match table {
        "roles" => "SELECT id FROM roles WHERE tenant_id = $1 AND name = $2",
        "clearance_levels" => "SELECT id FROM clearance_levels WHERE tenant_id = $1 AND name = $2",
        _ => "SELECT id FROM departments WHERE tenant_id = $1 AND name = $2",
    };
    sqlx::query_scalar(sql).bind(app.default_tenant).bind(name).fetch_one(&mut conn).await.unwrap()
}

/// The last `rbac.denied` row's reason.
async fn last_denial(app: &TestApp) -> Value {
    app.audit("rbac.denied").await.last().expect("an rbac.denied row").details["reason"].clone()
}

/// A role manager: may manage roles and edit users, and move documents
/// tenant-wide, but may not delete users or see logs.
async fn role_manager(app: &TestApp, admin: &Session) -> Session {
    let permissions = json!({
        "admin": { "manage_roles": "tenant" },
        "users": { "view": "tenant", "edit": "tenant" },
        "file": { "upload": "tenant", "download": "tenant", "delete": "tenant" },
    });
    let (status, body) = admin.post("/api/roles", json!({ "name": "rolemgr", "permissions": permissions })).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    app.signed_in_as("rolly", "rolemgr", "restricted").await
}

#[tokio::test]
async fn nobody_can_change_their_own_roles() {
    let app = TestApp::spawn().await;
    let admin = app.admin().await;
    let me = app.user_id("root").await;
    let (status, body) = admin.post(&format!("/api/users/{me}/roles"), json!({ "role": "staff" })).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    assert_eq!(last_denial(&app).await, "self_change");
    assert_eq!(admin.delete(&format!("/api/users/{me}/roles/admin")).await.0, StatusCode::FORBIDDEN);
    assert_eq!(admin.put(&format!("/api/users/{me}"), json!({ "role": "student" })).await.0, StatusCode::FORBIDDEN);
    let (_, me_now) = admin.get("/me").await;
    assert_eq!(me_now["user"]["roles"], json!(["admin"]));
    assert_eq!(app.audit_count("role.assign").await + app.audit_count("role.revoke").await, 0);
}

#[tokio::test]
async fn nobody_can_change_their_own_clearance_or_department() {
    let app = TestApp::spawn().await;
    let admin = app.admin().await;
    let me = app.user_id("root").await;
    admin.post("/api/departments", json!({ "name": "Research" })).await;
    for body in [json!({ "clearanceLevel": "public" }), json!({ "department": "Research" })] {
        let (status, answer) = admin.put(&format!("/api/users/{me}"), body).await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{answer}");
        assert_eq!(last_denial(&app).await, "self_change");
    }
    // Re-ranking the level you hold is changing your own clearance too.
    let restricted = id_of(&app, "clearance_levels", "restricted").await;
    let (status, _) = admin.put(&format!("/api/clearance-levels/{restricted}"), json!({ "level": 9 })).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let (_, me_now) = admin.get("/me").await;
    assert_eq!(
        (me_now["user"]["clearanceLevel"].clone(), me_now["user"]["department"].clone()),
        (json!("restricted"), json!("General"))
    );
    // Your own email is yours to change.
    assert_eq!(
        admin.put(&format!("/api/users/{me}"), json!({ "email": "root@new.example.org" })).await.0,
        StatusCode::OK
    );
}

#[tokio::test]
async fn nobody_can_grant_a_permission_they_do_not_hold() {
    let app = TestApp::spawn().await;
    let admin = app.admin().await;
    let rm = role_manager(&app, &admin).await;
    let staff = id_of(&app, "roles", "staff").await;
    let with_delete = json!({ "permissions": { "file": { "upload": true, "download": true, "share": true, "delete": "own" }, "users": { "delete": "tenant" } } });
    let (status, body) = rm.put(&format!("/api/roles/{staff}"), with_delete).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    assert_eq!(last_denial(&app).await, "grant_exceeds_own");
    let (status, _) =
        rm.post("/api/roles", json!({ "name": "sneaky", "permissions": { "admin": { "view_logs": true } } })).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    // Nothing changed, and nothing half-changed: staff keeps exactly its grants.
    let (_, role) = admin.get(&format!("/api/roles/{staff}")).await;
    assert_eq!(role["role"]["permissions"]["users"]["delete"], false);
    assert_eq!(role["role"]["permissions"]["file"]["share"], true);
    assert_eq!(app.audit_count("role.permission_grant").await, 0);
    // What the role manager holds, it may hand on.
    let (status, body) = rm
        .put(&format!("/api/roles/{staff}"), json!({ "permissions": { "file": { "upload": true, "download": true, "share": true, "delete": "own" }, "users": { "view": "department" } } }))
        .await;
    // file.share is held by staff but not by rm: keeping it unchanged is allowed.
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["role"]["scopes"]["users"]["view"], "department");
}

#[tokio::test]
async fn nobody_can_widen_a_grant_beyond_their_own_scope() {
    let app = TestApp::spawn().await;
    let admin = app.admin().await;
    let permissions = json!({ "admin": { "manage_roles": "tenant" }, "file": { "upload": "department" } });
    admin.post("/api/roles", json!({ "name": "deptlead", "permissions": permissions })).await;
    let lead = app.signed_in_as("lead", "deptlead", "restricted").await;
    let student = id_of(&app, "roles", "student").await;
    let widened = json!({ "permissions": { "file": { "upload": "tenant", "download": "own" } } });
    let (status, _) = lead.put(&format!("/api/roles/{student}"), widened).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert_eq!(last_denial(&app).await, "grant_exceeds_own");
}

#[tokio::test]
async fn nobody_can_assign_a_role_they_do_not_hold() {
    let app = TestApp::spawn().await;
    let admin = app.admin().await;
    let rm = role_manager(&app, &admin).await;
    let target = app.create_user("tess", "student", "General", "public").await;
    let (status, _) = rm.post(&format!("/api/users/{target}/roles"), json!({ "role": "admin" })).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert_eq!(last_denial(&app).await, "grant_exceeds_own");
    let (status, _) = rm.put(&format!("/api/users/{target}"), json!({ "role": "admin" })).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let (_, tess) = admin.get(&format!("/api/users/{target}")).await;
    assert_eq!(tess["user"]["roles"], json!(["student"]));
    // A role within the manager's own grants is fine.
    let (status, body) = rm.post(&format!("/api/users/{target}/roles"), json!({ "role": "rolemgr" })).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
}

#[tokio::test]
async fn nobody_can_manage_a_user_with_more_access_than_they_have() {
    let app = TestApp::spawn().await;
    let admin = app.admin().await;
    let rm = role_manager(&app, &admin).await;
    let root = app.user_id("root").await;
    let (status, _) = rm.put(&format!("/api/users/{root}"), json!({ "status": "suspended" })).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert_eq!(last_denial(&app).await, "target_outranks");
    assert_eq!(admin.get("/me").await.0, StatusCode::OK);
}

#[tokio::test]
async fn nobody_can_grant_a_clearance_above_their_own() {
    let app = TestApp::spawn().await;
    app.admin().await;
    let lesser = app.signed_in_as("lesser", "admin", "confidential").await;
    let body = json!({
        "username": "topsecret", "email": "ts@example.org", "password": PASSWORD,
        "role": "student", "department": "General", "clearanceLevel": "restricted",
    });
    let (status, answer) = lesser.post("/api/users", body).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{answer}");
    assert_eq!(last_denial(&app).await, "clearance_above_own");
    let target = app.create_user("uma", "student", "General", "public").await;
    let (status, _) = lesser.put(&format!("/api/users/{target}"), json!({ "clearanceLevel": "restricted" })).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    // Nor lift a lower level above their own rank.
    let public = id_of(&app, "clearance_levels", "public").await;
    let (status, _) = lesser.put(&format!("/api/clearance-levels/{public}"), json!({ "level": 50 })).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let (status, _) = lesser.put(&format!("/api/users/{target}"), json!({ "clearanceLevel": "confidential" })).await;
    assert_eq!(status, StatusCode::OK, "up to their own level is fine");
}

#[tokio::test]
async fn a_department_scoped_grant_cannot_reach_or_move_users_of_other_departments() {
    let app = TestApp::spawn().await;
    let admin = app.admin().await;
    admin.post("/api/departments", json!({ "name": "Research" })).await;
    let permissions = json!({ "users": { "view": "department", "edit": "department" }, "file": { "upload": "department", "download": "department", "delete": "department" } });
    admin.post("/api/roles", json!({ "name": "deptadmin", "permissions": permissions })).await;
    app.create_user("head", "deptadmin", "Research", "restricted").await;
    let head = app.session("head").await;
    let outsider = app.create_user("vic", "student", "General", "public").await;
    let insider = app.create_user("wes", "student", "Research", "public").await;
    let (status, _) = head.put(&format!("/api/users/{outsider}"), json!({ "email": "v@example.org" })).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert_eq!(last_denial(&app).await, "outside_scope");
    let (status, _) = head.put(&format!("/api/users/{insider}"), json!({ "department": "General" })).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "moving a user out of the department is outside the scope");
    let (status, _) = head.put(&format!("/api/users/{insider}"), json!({ "email": "w@example.org" })).await;
    assert_eq!(status, StatusCode::OK);
}

#[tokio::test]
async fn the_last_active_admin_cannot_suspend_or_delete_themselves() {
    let app = TestApp::spawn().await;
    let admin = app.admin().await;
    let me = app.user_id("root").await;
    let (status, body) = admin.put(&format!("/api/users/{me}"), json!({ "status": "suspended" })).await;
    assert_eq!(status, StatusCode::CONFLICT, "{body}");
    assert!(body["error"].as_str().unwrap().contains("without an active administrator"));
    let (status, _) = admin.delete(&format!("/api/users/{me}")).await;
    assert_eq!(status, StatusCode::CONFLICT);
    let suspend = app.audit("user.suspend").await;
    assert_eq!((suspend.len(), suspend[0].result.as_str()), (1, "fail"));
    assert_eq!(suspend[0].details["reason"], "last_admin");
    assert_eq!(app.audit("user.delete").await[0].result, "fail");
    assert_eq!(admin.get("/me").await.0, StatusCode::OK, "still signed in, still active");

    // With a second administrator, the first may step down.
    app.create_user("root2", "admin", "General", "restricted").await;
    let (status, _) = admin.put(&format!("/api/users/{me}"), json!({ "status": "inactive" })).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(admin.get("/me").await.0, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn the_last_active_admin_cannot_be_demoted_by_editing_the_admin_role() {
    let app = TestApp::spawn().await;
    let admin = app.admin().await;
    let role = id_of(&app, "roles", "admin").await;
    let (_, current) = admin.get(&format!("/api/roles/{role}")).await;
    let mut narrowed = current["role"]["scopes"].clone();
    narrowed["admin"]["manage_roles"] = json!("department");
    let mut removed = current["role"]["scopes"].clone();
    removed["admin"]["manage_roles"] = json!(false);
    for permissions in [narrowed, removed] {
        let (status, body) = admin.put(&format!("/api/roles/{role}"), json!({ "permissions": permissions })).await;
        assert_eq!(status, StatusCode::CONFLICT, "{body}");
    }
    let failed = app.audit("role.permission_revoke").await;
    assert!(failed.iter().all(|r| r.result == "fail" && r.details["reason"] == "last_admin"), "{failed:?}");
    let (_, after) = admin.get(&format!("/api/roles/{role}")).await;
    assert_eq!(after["role"]["scopes"]["admin"]["manage_roles"], "tenant");
}

#[tokio::test]
async fn read_only_and_unknown_fields_are_refused_and_never_written() {
    let app = TestApp::spawn().await;
    let admin = app.admin().await;
    let target = app.create_user("xena", "student", "General", "public").await;
    let mut conn = app.owner_conn().await;
    let hash_before: String = sqlx::query_scalar("SELECT password_hash FROM users WHERE id = $1")
        .bind(target)
        .fetch_one(&mut conn)
        .await
        .unwrap();
    let other_tenant = Uuid::new_v4();
    for body in [
        json!({ "passwordHash": "$argon2id$v=19$m=8,t=1,p=1$c2FsdHNhbHQ$aGFzaGhhc2g" }),
        json!({ "id": Uuid::new_v4(), "email": "x@example.org" }),
        json!({ "tenant": other_tenant, "tenantId": other_tenant }),
        json!({ "lastLogin": "2020-01-01T00:00:00Z" }),
        json!({ "isAdmin": true }),
    ] {
        let (status, answer) = admin.put(&format!("/api/users/{target}"), body.clone()).await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body} → {answer}");
        assert!(answer["error"].as_str().unwrap().contains("is not a field of this request"), "{answer}");
    }
    let row: (String, String, Option<time::OffsetDateTime>, Uuid) =
        sqlx::query_as("SELECT password_hash, email, last_login, tenant_id FROM users WHERE id = $1")
            .bind(target)
            .fetch_one(&mut conn)
            .await
            .unwrap();
    assert_eq!(row, (hash_before, "xena@example.org".to_string(), None, app.default_tenant));
    let create = json!({
        "id": Uuid::new_v4(), "username": "yara", "email": "y@example.org", "password": PASSWORD,
        "role": "student", "department": "General", "clearanceLevel": "public",
    });
    assert_eq!(admin.post("/api/users", create).await.0, StatusCode::UNPROCESSABLE_ENTITY);
    let role = json!({ "name": "r1", "userCount": 99, "id": Uuid::new_v4() });
    assert_eq!(admin.post("/api/roles", role).await.0, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(app.audit_count("user.create").await + app.audit_count("role.create").await, 0);
}

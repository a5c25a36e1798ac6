//! RBAC: the route guard, generated from the router's own route table, and
//! permissions that take effect on the very next request.

mod common;

use std::collections::BTreeSet;

use common::{Session, TestApp};
use fortifile::clock::Clock;
use fortifile::{
    app::route_table,
    authz::{self, Permission},
    http::Access,
};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use time::Duration;

/// A concrete request for a route pattern: unknown ids, an empty JSON body.
fn request_for(method: &Method, pattern: &str) -> (String, Option<Value>) {
    let path = pattern.replace("{id}", &uuid::Uuid::new_v4().to_string()).replace("{role}", "no-such-role");
    let body = matches!(*method, Method::POST | Method::PUT | Method::PATCH).then(|| json!({}));
    (path, body)
}

async fn permissions_of(session: &Session) -> BTreeSet<String> {
    let (status, me) = session.get("/me").await;
    assert_eq!(status, StatusCode::OK);
    me["user"]["permissions"].as_array().unwrap().iter().map(|p| p.as_str().unwrap().to_string()).collect()
}

#[tokio::test]
async fn every_guarded_route_refuses_each_seeded_role_lacking_its_permission_and_admits_holders() {
    let app = TestApp::spawn().await;
    let table = route_table(app.state.clone());
    let guarded: Vec<_> = table
        .iter()
        .filter_map(|rule| match rule.access {
            Access::Guarded(permission) => Some((rule, permission)),
            _ => None,
        })
        .collect();
    assert!(guarded.len() >= 20, "the route table lost its guarded routes");

    // Each role of the default preset, plus an account that holds no role at all.
    let mut users = Vec::new();
    for role in ["admin", "staff", "student"] {
        users.push((role, app.signed_in_as(&format!("matrix-{role}"), role, "restricted").await));
    }
    let nobody = app.create_user("matrix-nobody", "student", "General", "public").await;
    let mut conn = app.owner_conn().await;
    sqlx::query("DELETE FROM user_roles WHERE user_id = $1").bind(nobody).execute(&mut conn).await.unwrap();
    users.push(("(no role)", app.session("matrix-nobody").await));

    let mut denials = 0;
    for (role, session) in &users {
        let held = permissions_of(session).await;
        for (rule, permission) in &guarded {
            let (path, body) = request_for(&rule.method, rule.path);
            let before = app.audit_count("rbac.denied").await;
            let (status, answer) = session.send(rule.method.clone(), &path, body).await;
            let rows = app.audit("rbac.denied").await;
            let what = format!("{role} {} {} (needs {permission})", rule.method, rule.path);
            if held.contains(permission.as_str()) {
                assert_ne!(status, StatusCode::FORBIDDEN, "{what}: a holder was refused: {answer}");
                assert_eq!(rows.len(), before, "{what}: a holder left an rbac.denied row");
            } else {
                assert_eq!(status, StatusCode::FORBIDDEN, "{what}");
                if rule.html {
                    assert!(answer.as_str().is_some_and(|page| page.contains("Not allowed")), "{what}: the 403 page");
                } else {
                    assert_eq!(answer, json!({ "error": "Insufficient permissions" }), "{what}");
                }
                assert_eq!(rows.len(), before + 1, "{what}: expected exactly one rbac.denied row");
                let row = rows.last().unwrap();
                assert_eq!(row.result, "fail");
                assert_eq!(row.details["permission"], permission.as_str(), "{what}");
                assert_eq!(row.details["route"], rule.path, "{what}");
                assert_eq!(row.details["method"], rule.method.as_str(), "{what}");
                denials += 1;
            }
        }
    }
    // Students and staff lack every user-administration permission.
    assert!(denials > 2 * 20, "only {denials} denials: the matrix did not exercise the guards");
}

#[tokio::test]
async fn a_guarded_route_without_a_session_answers_401_and_records_no_denial() {
    let app = TestApp::spawn().await;
    let res = app.client.get(app.url("/api/users")).send().await.unwrap();
    assert_eq!(res.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(app.audit_count("rbac.denied").await, 0);
}

#[tokio::test]
async fn a_student_calling_get_api_users_gets_403_and_an_rbac_denied_row() {
    let app = TestApp::spawn().await;
    let student = app.signed_in_as("sam", "student", "public").await;
    let (status, body) = student.get("/api/users").await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert_eq!(body["error"], "Insufficient permissions");
    let rows = app.audit("rbac.denied").await;
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0].user_id, Some(app.user_id("sam").await));
    assert_eq!(rows[0].details["permission"], "users.view");
    assert_eq!(rows[0].details["route"], "/api/users");
}

#[tokio::test]
async fn removing_a_permission_from_a_role_applies_to_a_signed_in_users_next_request() {
    let app = TestApp::spawn().await;
    let admin = app.admin().await;
    let student = app.signed_in_as("sam", "student", "public").await;
    let role_id = app.role_id("student").await;

    // Grant users.view to students: the student's next request may list users.
    assert_eq!(student.get("/api/users").await.0, StatusCode::FORBIDDEN);
    let grant = json!({ "permissions": { "file": { "upload": "own", "download": "own", "delete": "own" }, "users": { "view": "own" } } });
    assert_eq!(admin.put(&format!("/api/roles/{role_id}"), grant).await.0, StatusCode::OK);
    let (status, body) = student.get("/api/users").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    // Own scope: the student sees only themselves.
    assert_eq!(body["users"].as_array().unwrap().len(), 1);
    assert_eq!(body["users"][0]["username"], "sam");

    // Remove file.upload and users.view: gone on the next request, without a new login.
    assert!(permissions_of(&student).await.contains("file.upload"));
    let revoke = json!({ "permissions": { "file": { "upload": false, "download": true, "delete": true } } });
    assert_eq!(admin.put(&format!("/api/roles/{role_id}"), revoke).await.0, StatusCode::OK);
    assert!(!permissions_of(&student).await.contains("file.upload"));
    assert_eq!(student.get("/api/users").await.0, StatusCode::FORBIDDEN);
    let mut tx = app.db.tenant_tx(app.default_tenant, None).await.unwrap();
    let sam = app.user_id("sam").await;
    let now = app.clock.now();
    assert!(!authz::has_permission(&mut tx, sam, Permission::FileUpload, now).await.unwrap());
    assert!(authz::has_permission(&mut tx, sam, Permission::FileDownload, now).await.unwrap());
    drop(tx);

    // And back: allowed again on the next request.
    let regrant = json!({ "permissions": { "file": { "upload": "own", "download": "own", "delete": "own" } } });
    assert_eq!(admin.put(&format!("/api/roles/{role_id}"), regrant).await.0, StatusCode::OK);
    assert!(permissions_of(&student).await.contains("file.upload"));

    let grants = app.audit("role.permission_grant").await;
    let revokes = app.audit("role.permission_revoke").await;
    assert_eq!(revokes.len(), 2, "file.upload and users.view");
    assert!(grants.iter().any(|r| r.details["permission"] == "file.upload" && r.details["after"]["scope"] == "own"));
    assert!(revokes.iter().all(|r| r.details["before"]["scope"] == "own" && r.details["after"].is_null()));
}

#[tokio::test]
async fn an_expired_role_assignment_no_longer_counts() {
    let app = TestApp::spawn().await;
    let admin = app.admin().await;
    let student = app.signed_in_as("sam", "student", "public").await;
    let sam = app.user_id("sam").await;
    let expires =
        (app.clock.now() + Duration::minutes(10)).format(&time::format_description::well_known::Rfc3339).unwrap();
    let (status, body) =
        admin.post(&format!("/api/users/{sam}/roles"), json!({ "role": "staff", "expiresAt": expires })).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    assert!(permissions_of(&student).await.contains("file.share"));
    app.clock.advance(Duration::minutes(11));
    assert!(!permissions_of(&student).await.contains("file.share"));
}

#[tokio::test]
async fn a_roles_session_timeout_overrides_a_longer_idle_timeout_for_its_holders() {
    let app = TestApp::spawn().await;
    let admin = app.admin().await;
    let student_role = app.role_id("student").await;
    let (status, body) = admin.put(&format!("/api/roles/{student_role}"), json!({ "sessionTimeoutMinutes": 5 })).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["role"]["sessionTimeoutMinutes"], 5);
    let student = app.signed_in_as("sam", "student", "public").await;
    let staff = app.signed_in_as("stef", "staff", "public").await;

    app.clock.advance(Duration::minutes(6));
    assert_eq!(student.get("/me").await.0, StatusCode::UNAUTHORIZED);
    assert_eq!(staff.get("/me").await.0, StatusCode::OK, "staff keep the 30-minute default");
    let expired = app.audit("auth.session_expired").await;
    assert_eq!(expired.len(), 1);
    assert_eq!(expired[0].details["reason"], "idle_timeout");

    // The sweep applies the same per-role rule.
    let idle_student = app.signed_in_as("sue", "student", "public").await;
    app.clock.advance(Duration::minutes(6));
    let swept = fortifile::auth::account::sweep_expired_sessions(&app.state).await.unwrap();
    assert_eq!(swept, 1, "only the student's session is past its role's timeout");
    assert_eq!(idle_student.get("/me").await.0, StatusCode::UNAUTHORIZED);
    assert_eq!(admin.get("/me").await.0, StatusCode::OK);
}

#[tokio::test]
async fn the_code_catalogue_and_the_database_catalogue_match() {
    let app = TestApp::spawn().await;
    let mut conn = app.owner_conn().await;
    let names: BTreeSet<String> =
        sqlx::query_scalar("SELECT name FROM permissions").fetch_all(&mut conn).await.unwrap().into_iter().collect();
    let code: BTreeSet<String> = Permission::ALL.iter().map(|p| p.as_str().to_string()).collect();
    assert_eq!(names, code);
    let admin = app.admin().await;
    let (status, body) = admin.get("/api/permissions").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["permissions"].as_array().unwrap().len(), code.len());
    assert_eq!(body["permissions"][0]["resource"], "admin");
}

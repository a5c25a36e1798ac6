//! `/api/users`: seed 002's shapes, role assignment, approval of pending accounts.

mod common;

use common::{PASSWORD, TestApp, new_client};
use fortifile::{clock::Clock, config::Registration};
use reqwest::StatusCode;
use serde_json::{Value, json};

fn new_user(username: &str, role: &str, department: &str, clearance: &str) -> Value {
    json!({
        "username": username,
        "email": format!("{username}@example.org"),
        "password": PASSWORD,
        "role": role,
        "department": department,
        "clearanceLevel": clearance,
    })
}

#[tokio::test]
async fn an_admin_creates_a_confidential_staff_user_in_a_new_department_and_a_role_edit_reaches_them_at_once() {
    let app = TestApp::spawn().await;
    let admin = app.admin().await;
    let (status, body) = admin.post("/api/departments", json!({ "name": "Research", "color": "#3B82F6" })).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    assert_eq!(body["department"]["userCount"], 0);
    assert_eq!(body["department"]["color"], "#3b82f6");

    let (status, body) = admin.post("/api/users", new_user("carol", "staff", "Research", "confidential")).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let carol = &body["user"];
    assert_eq!(carol["role"], "staff");
    assert_eq!(carol["department"], "Research");
    assert_eq!(carol["clearanceLevel"], "confidential");
    assert_eq!(carol["status"], "active");
    assert!(carol.get("passwordHash").is_none() && carol.get("password").is_none());
    let created = app.audit("user.create").await;
    assert_eq!(created.len(), 1);
    assert_eq!(created[0].details["after"]["department"], "Research");
    assert!(!created[0].details.to_string().contains(PASSWORD));

    // Staff may not list users; a grant of users.view (department scope) fixes that
    // on Carol's next request, and shows her only her department.
    app.create_user("dave", "staff", "General", "public").await;
    let carol = app.session("carol").await;
    assert_eq!(carol.get("/api/users").await.0, StatusCode::FORBIDDEN);
    let staff = app.role_id("staff").await;
    let (status, body) = admin
        .put(
            &format!("/api/roles/{staff}"),
            json!({ "permissions": { "file": { "upload": true, "download": true, "share": true }, "users": { "view": "department" } } }),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["role"]["permissions"]["users"]["view"], true);
    assert_eq!(body["role"]["permissions"]["users"]["delete"], false);
    assert_eq!(body["role"]["scopes"]["users"]["view"], "department");
    assert_eq!(body["role"]["scopes"]["file"]["upload"], "department", "true keeps the existing scope");
    let (status, body) = carol.get("/api/users").await;
    assert_eq!(status, StatusCode::OK);
    let names: Vec<&str> = body["users"].as_array().unwrap().iter().map(|u| u["username"].as_str().unwrap()).collect();
    assert_eq!(names, ["carol"], "department scope: Research only");
    let dave = app.user_id("dave").await;
    let (status, _) = carol.get(&format!("/api/users/{dave}")).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "Dave is outside Carol's department");
    let denied = app.audit("rbac.denied").await;
    assert_eq!(denied.last().unwrap().details["reason"], "outside_scope");
}

#[tokio::test]
async fn unknown_names_answer_422_naming_the_field() {
    let app = TestApp::spawn().await;
    let admin = app.admin().await;
    for (field, body) in [
        ("role", new_user("user1", "wizard", "General", "public")),
        ("department", new_user("user2", "staff", "Nowhere", "public")),
        ("clearanceLevel", new_user("user3", "staff", "General", "cosmic")),
    ] {
        let (status, answer) = admin.post("/api/users", body).await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{answer}");
        assert_eq!(answer["field"], field);
    }
    let (status, answer) = admin.post("/api/users", json!({ "username": "x1" })).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(answer["error"], "email: is required", "{answer}");
    let mut bad_status = new_user("user4", "staff", "General", "public");
    bad_status["status"] = json!("godmode");
    let (status, answer) = admin.post("/api/users", bad_status).await;
    assert_eq!((status, answer["field"].clone()), (StatusCode::UNPROCESSABLE_ENTITY, json!("status")));
}

#[tokio::test]
async fn a_duplicate_username_or_email_answers_409() {
    let app = TestApp::spawn().await;
    let admin = app.admin().await;
    assert_eq!(admin.post("/api/users", new_user("erin", "staff", "General", "public")).await.0, StatusCode::CREATED);
    let (status, body) = admin.post("/api/users", new_user("ERIN", "staff", "General", "public")).await;
    assert_eq!(status, StatusCode::CONFLICT, "{body}");
    let mut same_email = new_user("erin2", "staff", "General", "public");
    same_email["email"] = json!("Erin@Example.org");
    assert_eq!(admin.post("/api/users", same_email).await.0, StatusCode::CONFLICT);
    let frank = app.create_user("frank", "staff", "General", "public").await;
    let (status, _) = admin.put(&format!("/api/users/{frank}"), json!({ "username": "erin" })).await;
    assert_eq!(status, StatusCode::CONFLICT);
}

#[tokio::test]
async fn an_unknown_or_malformed_user_id_answers_404() {
    let app = TestApp::spawn().await;
    let admin = app.admin().await;
    let unknown = uuid::Uuid::new_v4();
    assert_eq!(admin.get(&format!("/api/users/{unknown}")).await.0, StatusCode::NOT_FOUND);
    assert_eq!(admin.put(&format!("/api/users/{unknown}"), json!({ "email": "a@b.c" })).await.0, StatusCode::NOT_FOUND);
    assert_eq!(admin.delete(&format!("/api/users/{unknown}")).await.0, StatusCode::NOT_FOUND);
    let (status, body) = admin.get("/api/users/not-a-uuid").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(body["error"], "Not found");
}

#[tokio::test]
async fn an_update_records_each_changed_field_and_never_the_password() {
    let app = TestApp::spawn().await;
    let admin = app.admin().await;
    let gina_id = app.create_user("gina", "staff", "General", "public").await;
    let gina = app.session("gina").await;
    let new_password = "copper meadow silent harbor";
    let (status, body) = admin
        .put(
            &format!("/api/users/{gina_id}"),
            json!({ "email": "gina@new.example.org", "clearanceLevel": "confidential", "password": new_password }),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["user"]["email"], "gina@new.example.org");
    assert_eq!(body["user"]["clearanceLevel"], "confidential");
    let rows = app.audit("user.update").await;
    assert_eq!(rows.len(), 1);
    let changes = &rows[0].details["changes"];
    assert_eq!(changes["email"], json!({ "before": "gina@example.org", "after": "gina@new.example.org" }));
    assert_eq!(changes["clearanceLevel"], json!({ "before": "public", "after": "confidential" }));
    assert_eq!(changes["password"], "changed");
    let text = rows[0].details.to_string();
    assert!(!text.contains(new_password) && !text.contains("argon2"), "{text}");
    // A reset password ends the sessions opened with the old one.
    assert_eq!(gina.get("/me").await.0, StatusCode::UNAUTHORIZED);
    assert_eq!(app.login_with(&new_client(), "gina", new_password).await.status(), StatusCode::OK);
}

#[tokio::test]
async fn suspending_a_user_ends_their_sessions_at_once_and_is_recorded_as_user_suspend() {
    let app = TestApp::spawn().await;
    let admin = app.admin().await;
    let hank_id = app.create_user("hank", "staff", "General", "public").await;
    let hank = app.session("hank").await;
    assert_eq!(hank.get("/me").await.0, StatusCode::OK);
    let (status, body) = admin.put(&format!("/api/users/{hank_id}"), json!({ "status": "suspended" })).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(hank.get("/me").await.0, StatusCode::UNAUTHORIZED);
    let rows = app.audit("user.suspend").await;
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0].details["before"]["status"], "active");
    assert_eq!(rows[0].target_id.as_deref(), Some(hank_id.to_string().as_str()));
    assert_eq!(app.login_with(&new_client(), "hank", PASSWORD).await.status(), StatusCode::FORBIDDEN);
}

#[tokio::test]
async fn deleting_a_user_answers_204_and_keeps_what_they_were_in_the_log() {
    let app = TestApp::spawn().await;
    let admin = app.admin().await;
    let ivy = app.create_user("ivy", "student", "General", "public").await;
    let (status, body) = admin.delete(&format!("/api/users/{ivy}")).await;
    assert_eq!(status, StatusCode::NO_CONTENT, "{body}");
    assert_eq!(admin.get(&format!("/api/users/{ivy}")).await.0, StatusCode::NOT_FOUND);
    let rows = app.audit("user.delete").await;
    assert_eq!(rows[0].details["before"]["username"], "ivy");
    assert_eq!(rows[0].details["before"]["roles"], json!(["student"]));
}

#[tokio::test]
async fn roles_are_assigned_with_an_expiry_and_revoked_with_before_and_after_in_the_log() {
    let app = TestApp::spawn().await;
    let admin = app.admin().await;
    let jo = app.create_user("joan", "student", "General", "public").await;
    let (status, body) = admin.post(&format!("/api/users/{jo}/roles"), json!({ "role": "staff" })).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    assert_eq!(body["user"]["roles"], json!(["student", "staff"]));
    let later =
        (app.clock.now() + time::Duration::days(7)).format(&time::format_description::well_known::Rfc3339).unwrap();
    let (status, _) =
        admin.post(&format!("/api/users/{jo}/roles"), json!({ "role": "staff", "expiresAt": later })).await;
    assert_eq!(status, StatusCode::OK, "an existing assignment is updated");
    let past =
        (app.clock.now() - time::Duration::minutes(1)).format(&time::format_description::well_known::Rfc3339).unwrap();
    let (status, body) =
        admin.post(&format!("/api/users/{jo}/roles"), json!({ "role": "staff", "expiresAt": past })).await;
    assert_eq!((status, body["field"].clone()), (StatusCode::UNPROCESSABLE_ENTITY, json!("expiresAt")));
    let assigned = app.audit("role.assign").await;
    assert_eq!(assigned.len(), 2);
    assert!(assigned[0].details["before"].is_null());
    assert_eq!(assigned[1].details["before"]["expiresAt"], Value::Null);
    assert!(assigned[1].details["after"]["expiresAt"].is_string());

    assert_eq!(admin.delete(&format!("/api/users/{jo}/roles/staff")).await.0, StatusCode::NO_CONTENT);
    assert_eq!(admin.delete(&format!("/api/users/{jo}/roles/staff")).await.0, StatusCode::NOT_FOUND);
    let revoked = app.audit("role.revoke").await;
    assert_eq!(revoked.len(), 1);
    assert_eq!(revoked[0].details["role"], "staff");
}

#[tokio::test]
async fn users_are_listed_in_pages_with_a_cursor_and_filtered_by_status() {
    let app = TestApp::spawn().await;
    let admin = app.admin().await;
    for name in ["kim", "lou", "max"] {
        app.create_user(name, "student", "General", "public").await;
    }
    let (status, page) = admin.get("/api/users?limit=2").await;
    assert_eq!(status, StatusCode::OK);
    let names = |v: &Value| -> Vec<String> {
        v["users"].as_array().unwrap().iter().map(|u| u["username"].as_str().unwrap().to_string()).collect()
    };
    assert_eq!(names(&page), ["kim", "lou"]);
    let cursor = page["nextCursor"].as_str().unwrap().to_string();
    let (_, next) = admin.get(&format!("/api/users?limit=2&after={cursor}")).await;
    assert_eq!(names(&next), ["max", "root"]);
    assert!(next["nextCursor"].is_null());
    assert_eq!(admin.get("/api/users?limit=0").await.0, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(admin.get("/api/users?status=zombie").await.0, StatusCode::UNPROCESSABLE_ENTITY);
    let (_, active) = admin.get("/api/users?status=suspended").await;
    assert!(names(&active).is_empty());
}

#[tokio::test]
async fn a_pending_account_is_approved_with_its_requested_role_or_rejected() {
    let app = TestApp::spawn_with(|c| c.registration = Registration::Approval).await;
    let admin = app.admin().await;
    for (name, wanted) in [("nia", "staff"), ("ozzy", "wizard")] {
        let res = app
            .client
            .post(app.url("/auth/register"))
            .json(&json!({ "username": name, "email": format!("{name}@example.org"), "password": PASSWORD, "requestedRole": wanted }))
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), StatusCode::CREATED);
    }
    let (status, body) = admin.get("/api/users?status=pending").await;
    assert_eq!(status, StatusCode::OK);
    let pending = body["users"].as_array().unwrap();
    assert_eq!(pending.len(), 2);
    assert_eq!(pending[0]["requestedRole"], "staff");

    let nia = app.user_id("nia").await;
    let (status, body) = admin.post(&format!("/api/users/{nia}/approve"), json!({})).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["user"]["status"], "active");
    assert_eq!(body["user"]["roles"], json!(["staff"]), "the requested role, which exists");
    assert_eq!(app.login_with(&new_client(), "nia", PASSWORD).await.status(), StatusCode::OK);
    let approved = app.audit("user.approve").await;
    assert_eq!(approved[0].details["before"]["status"], "pending");
    assert_eq!(approved[0].details["after"]["roles"], json!(["staff"]));
    assert_eq!(admin.post(&format!("/api/users/{nia}/approve"), json!({})).await.0, StatusCode::CONFLICT);

    // An approval may name the role; with no body and an unknown request, the
    // registration role stays. Rejection deletes the account.
    let oz = app.user_id("ozzy").await;
    assert_eq!(admin.post(&format!("/api/users/{oz}/reject"), json!({})).await.0, StatusCode::NO_CONTENT);
    assert_eq!(admin.get(&format!("/api/users/{oz}")).await.0, StatusCode::NOT_FOUND);
    assert_eq!(app.audit("user.reject").await[0].details["before"]["username"], "ozzy");
    assert_eq!(admin.post(&format!("/api/users/{oz}/reject"), json!({})).await.0, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn an_approval_without_a_body_keeps_the_registration_role_when_the_request_names_no_role() {
    let app = TestApp::spawn_with(|c| c.registration = Registration::Approval).await;
    let admin = app.admin().await;
    assert_eq!(app.register("pat").await.status(), StatusCode::CREATED);
    let pat = app.user_id("pat").await;
    let res = admin
        .client
        .post(app.url(&format!("/api/users/{pat}/approve")))
        .header("x-csrf-token", &admin.csrf)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    let body: Value = res.json().await.unwrap();
    assert_eq!(body["user"]["roles"], json!(["student"]));
}

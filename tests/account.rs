//! A user's own account: changing the password, and seeing and ending the
//! sessions they are signed in with; administrators ending a user's sessions.

mod common;

use common::{PASSWORD, Session, TestApp, new_client};
use reqwest::{StatusCode, header};
use serde_json::json;

const NEW_PASSWORD: &str = "violet harbour seven lanterns";

#[tokio::test]
async fn a_user_changes_their_password_and_their_other_sessions_end() {
    let app = TestApp::spawn().await;
    let laptop = app.signed_in_as("ana", "student", "public").await;
    let phone = app.session("ana").await;
    let (status, body) =
        laptop.post("/me/password", json!({ "currentPassword": PASSWORD, "newPassword": NEW_PASSWORD })).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["otherSessionsEnded"], 1);
    assert_eq!(phone.get("/me").await.0, StatusCode::UNAUTHORIZED, "the other session ended");
    assert_eq!(laptop.get("/me").await.0, StatusCode::OK, "this one goes on");
    assert_eq!(app.login_with(&new_client(), "ana", PASSWORD).await.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(app.login_with(&new_client(), "ana", NEW_PASSWORD).await.status(), StatusCode::OK);
    let changes = app.audit("auth.password_change").await;
    assert_eq!((changes.len(), changes[0].result.as_str()), (1, "success"));
}

#[tokio::test]
async fn a_wrong_current_password_is_refused_and_counted_and_a_weak_new_one_is_refused() {
    let app = TestApp::spawn().await;
    let s = app.signed_in_as("ana", "student", "public").await;
    let (status, body) =
        s.post("/me/password", json!({ "currentPassword": "nope", "newPassword": NEW_PASSWORD })).await;
    assert_eq!((status, body["field"].clone()), (StatusCode::UNPROCESSABLE_ENTITY, json!("currentPassword")));
    let (status, body) =
        s.post("/me/password", json!({ "currentPassword": PASSWORD, "newPassword": "password1" })).await;
    assert_eq!((status, body["field"].clone()), (StatusCode::UNPROCESSABLE_ENTITY, json!("newPassword")));
    let failures: i32 = sqlx::query_scalar("SELECT failed_logins FROM users WHERE username = 'ana'")
        .fetch_one(&mut app.owner_conn().await)
        .await
        .unwrap();
    assert_eq!(failures, 1, "the wrong current password counts like a failed login");
    assert_eq!(app.audit("auth.password_change").await[0].details["reason"], "wrong_current_password");
    assert_eq!(app.login_with(&new_client(), "ana", PASSWORD).await.status(), StatusCode::OK, "unchanged");
}

#[tokio::test]
async fn a_user_lists_and_ends_their_own_sessions_and_no_one_elses() {
    let app = TestApp::spawn().await;
    let laptop = app.signed_in_as("ana", "student", "public").await;
    let phone = app.session("ana").await;
    let tablet = app.session("ana").await;
    let bob = app.signed_in_as("bob", "student", "public").await;
    let (status, body) = laptop.get("/me/sessions").await;
    assert_eq!(status, StatusCode::OK);
    let sessions = body["sessions"].as_array().unwrap();
    assert_eq!(sessions.len(), 3);
    assert_eq!(sessions.iter().filter(|s| s["current"] == true).count(), 1);
    assert!(sessions.iter().all(|s| s["ip"] == "127.0.0.1" && s["userAgent"].is_string()));
    let others: Vec<String> =
        sessions.iter().filter(|s| s["current"] == false).map(|s| s["id"].as_str().unwrap().to_string()).collect();

    assert_eq!(bob.delete(&format!("/me/sessions/{}", others[0])).await.0, StatusCode::NOT_FOUND, "not bob's");
    assert_eq!(laptop.delete(&format!("/me/sessions/{}", others[0])).await.0, StatusCode::NO_CONTENT);
    let ended = [phone.get("/me").await.0, tablet.get("/me").await.0];
    assert_eq!(ended.iter().filter(|s| **s == StatusCode::UNAUTHORIZED).count(), 1, "exactly that one ended");
    let (status, body) = laptop.post("/me/sessions/end-others", json!({})).await;
    assert_eq!((status, body["ended"].clone()), (StatusCode::OK, json!(1)));
    assert_eq!([phone.get("/me").await.0, tablet.get("/me").await.0], [StatusCode::UNAUTHORIZED; 2]);
    assert_eq!(laptop.get("/me").await.0, StatusCode::OK);
    assert_eq!(bob.get("/me").await.0, StatusCode::OK, "bob's session is his own");
    let rows = app.audit("auth.session_end").await;
    assert_eq!(rows.len(), 2);
    assert!(rows.iter().all(|r| r.details["by"] == "self"));
}

#[tokio::test]
async fn an_administrator_lists_and_ends_all_of_a_users_sessions_and_their_next_request_is_refused() {
    let app = TestApp::spawn().await;
    let admin = app.admin().await;
    let ana = app.signed_in_as("ana", "student", "public").await;
    let id = app.user_id("ana").await;
    let (status, body) = admin.get(&format!("/api/users/{id}/sessions")).await;
    assert_eq!((status, body["sessions"].as_array().map(Vec::len)), (StatusCode::OK, Some(1)));
    let (status, body) = admin.delete(&format!("/api/users/{id}/sessions")).await;
    assert_eq!((status, body["ended"].clone()), (StatusCode::OK, json!(1)));
    assert_eq!(ana.get("/me").await.0, StatusCode::UNAUTHORIZED);
    assert_eq!(app.audit("auth.session_end").await[0].details["by"], "administrator");

    // A student may not, and nobody may for a more powerful user.
    let sam = app.signed_in_as("sam", "student", "public").await;
    assert_eq!(sam.delete(&format!("/api/users/{id}/sessions")).await.0, StatusCode::FORBIDDEN);
    let staff = app.signed_in_as("helpdesk", "staff", "public").await;
    let mut owner = app.owner_conn().await;
    sqlx::query(
        "INSERT INTO role_permissions (tenant_id, role_id, permission_id, scope) \
         SELECT r.tenant_id, r.id, p.id, 'tenant' FROM roles r, permissions p \
          WHERE r.name = 'staff' AND p.name = 'users.edit' ON CONFLICT DO NOTHING",
    )
    .execute(&mut owner)
    .await
    .unwrap();
    let root = app.user_id("root").await;
    assert_eq!(staff.delete(&format!("/api/users/{root}/sessions")).await.0, StatusCode::FORBIDDEN);
    assert_eq!(admin.get("/me").await.0, StatusCode::OK, "the administrator's session stands");
}

#[tokio::test]
async fn the_account_page_changes_the_password_and_ends_sessions_without_script() {
    let app = TestApp::spawn().await;
    let s = app.signed_in_as("ana", "student", "public").await;
    let other = app.session("ana").await;
    let page = s.client.get(app.url("/me")).header(header::ACCEPT, "text/html").send().await.unwrap();
    let html = page.text().await.unwrap();
    assert!(html.contains("Change your password") && html.contains("this one"), "{html}");
    let form = |path: &str, fields: Vec<(&'static str, String)>, s: &Session| {
        let mut body = vec![("csrf_token", s.csrf.clone())];
        body.extend(fields);
        s.client.post(app.url(path)).header(header::ACCEPT, "text/html").form(&body).send()
    };
    let res = form(
        "/me/form/password",
        vec![("current_password", "wrong".into()), ("new_password", NEW_PASSWORD.into())],
        &s,
    )
    .await
    .unwrap();
    assert_eq!(res.url().query(), Some("error=current_password"));
    let res = form(
        "/me/form/password",
        vec![("current_password", PASSWORD.into()), ("new_password", NEW_PASSWORD.into())],
        &s,
    )
    .await
    .unwrap();
    assert!(res.text().await.unwrap().contains("Password changed."));
    assert_eq!(other.get("/me").await.0, StatusCode::UNAUTHORIZED);
    let third = app.login_with(&new_client(), "ana", NEW_PASSWORD).await;
    assert_eq!(third.status(), StatusCode::OK);
    let res = form("/me/form/sessions/end-others", vec![], &s).await.unwrap();
    assert!(res.text().await.unwrap().contains("Every other session ended."));
}

#[tokio::test]
async fn enrolling_a_first_factor_ends_the_sessions_opened_with_the_password_alone() {
    let app = TestApp::spawn().await;
    let s = app.signed_in_as("ana", "student", "public").await;
    let elsewhere = app.session("ana").await;
    let (_, setup) = s.post("/me/mfa/totp/setup", json!({})).await;
    let secret = fortifile::auth::mfa::totp::Secret::from_base32(setup["totp"]["secret"].as_str().unwrap()).unwrap();
    let now = fortifile::clock::Clock::now(&app.clock);
    let code = format!("{:06}", secret.code_at(fortifile::auth::mfa::totp::step_of(now)));
    assert_eq!(s.post("/me/mfa/totp/confirm", json!({ "code": code })).await.0, StatusCode::OK);
    assert_eq!(elsewhere.get("/me").await.0, StatusCode::UNAUTHORIZED);
    assert_eq!(s.get("/me").await.0, StatusCode::OK);
    assert_eq!(app.audit("auth.session_end").await[0].details["by"], "first_factor");
}

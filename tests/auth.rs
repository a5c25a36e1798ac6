//! Authentication through the real HTTP stack: register, login, sessions, logout.

mod common;

use common::{PASSWORD, TestApp, new_client};
use fortifile::config::Registration;
use reqwest::StatusCode;
use serde_json::{Value, json};

#[tokio::test]
async fn register_login_me_logout_and_then_me_is_unauthorized() {
    let app = TestApp::spawn().await;
    let res = app.register("alice").await;
    assert_eq!(res.status(), StatusCode::CREATED);
    let body: Value = res.json().await.unwrap();
    assert_eq!(body["user"]["username"], "alice");

    let csrf = app.login_as(&app.client, "alice").await;
    let me: Value = app.client.get(app.url("/me")).send().await.unwrap().json().await.unwrap();
    assert_eq!(me["user"]["username"], "alice");
    assert_eq!(me["csrfToken"], csrf.as_str());

    let res = app.client.post(app.url("/auth/logout")).header("x-csrf-token", &csrf).send().await.unwrap();
    assert_eq!(res.status(), StatusCode::NO_CONTENT);
    assert_eq!(app.me(&app.client).await, StatusCode::UNAUTHORIZED);
    assert_eq!(app.audit("auth.logout").await.len(), 1);
}

#[tokio::test]
async fn a_new_user_is_an_active_public_student_in_general_and_never_sees_a_hash() {
    let app = TestApp::spawn().await;
    let res = app.register("bob").await;
    let text = res.text().await.unwrap();
    assert!(!text.contains("argon2") && !text.contains("password"), "{text}");
    let user = &serde_json::from_str::<Value>(&text).unwrap()["user"];
    assert_eq!(user["status"], "active");
    assert_eq!(user["role"], "student");
    assert_eq!(user["roles"], json!(["student"]));
    assert_eq!(user["permissions"], json!(["file.delete", "file.download", "file.upload"]));
    assert_eq!(user["clearanceLevel"], "public");
    assert_eq!(user["department"], "General");
    assert!(user["createdAt"].is_string() && user["lastLogin"].is_null());
    let row = &app.audit("auth.register").await[0];
    assert_eq!(row.result, "success");
}

#[tokio::test]
async fn a_wrong_password_and_an_unknown_user_get_the_same_answer_and_both_are_audited() {
    let app = TestApp::spawn().await;
    app.register("carol").await;
    let wrong = app.login_with(&app.client, "carol", "not the right password").await;
    let unknown = app.login_with(&app.client, "nobody-here", "not the right password").await;
    assert_eq!(wrong.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(unknown.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(wrong.text().await.unwrap(), unknown.text().await.unwrap());

    let rows = app.audit("auth.login").await;
    assert_eq!(rows.len(), 2);
    for row in &rows {
        assert_eq!(row.result, "fail");
        assert_eq!(row.ip.as_deref(), Some("127.0.0.1"));
        assert_eq!(row.user_agent.as_deref(), Some("fortifile-tests/1"));
        assert!(!row.details.to_string().contains("not the right password"), "no password in audit details");
    }
    assert_eq!(rows[0].details["reason"], "bad_password");
    assert_eq!(rows[0].user_id, Some(app.user_id("carol").await));
    assert_eq!(rows[1].details["reason"], "unknown_user");
    // What was typed for no account is kept only as a keyed hash and a length.
    let kept = rows[1].details["username"].as_str().unwrap();
    assert!(kept.starts_with("hmac:") && !kept.contains("nobody"), "{kept}");
    assert_eq!(rows[1].details["usernameLength"], 11);
}

#[tokio::test]
async fn login_accepts_the_email_address_in_any_case() {
    let app = TestApp::spawn().await;
    app.register("dave").await;
    let res = app.login_with(&app.client, "DAVE@Example.org", PASSWORD).await;
    assert_eq!(res.status(), StatusCode::OK);
    let row = &app.audit("auth.login").await[0];
    assert_eq!(row.result, "success");
}

#[tokio::test]
async fn a_username_or_email_taken_in_another_case_is_a_conflict() {
    let app = TestApp::spawn().await;
    app.register("erin").await;
    let res = app.register("ERIN").await;
    assert_eq!(res.status(), StatusCode::CONFLICT);
    let body: Value = res.json().await.unwrap();
    assert!(body["error"].as_str().unwrap().contains("already taken"));
    let rows = app.audit("auth.register").await;
    assert_eq!(rows.last().unwrap().details["reason"], "duplicate");
}

#[tokio::test]
async fn weak_passwords_are_refused_with_a_reason_naming_the_field() {
    let app = TestApp::spawn().await;
    for (password, why) in [
        ("short", "at least 8"),
        ("password123", "too common"),
        ("frank@example.org", "username or email"),
        (&"Zq9!".repeat(300), "at most 1024 bytes"),
    ] {
        let res = app.register_with(&app.client, "frank", password).await;
        assert_eq!(res.status(), StatusCode::UNPROCESSABLE_ENTITY, "{password}");
        let body: Value = res.json().await.unwrap();
        assert_eq!(body["field"], "password");
        assert!(body["error"].as_str().unwrap().contains(why), "{body}");
    }
}

#[tokio::test]
async fn a_long_passphrase_with_spaces_and_unicode_is_accepted_and_not_truncated() {
    let app = TestApp::spawn().await;
    let long = "Grüße aus der Bibliothek, sagte die Eule um Mitternacht — 1024 Sterne!";
    assert!(long.chars().count() >= 64);
    assert_eq!(app.register_with(&app.client, "grete", long).await.status(), StatusCode::CREATED);
    assert_eq!(app.login_with(&app.client, "grete", long).await.status(), StatusCode::OK);
    let truncated: String = long.chars().take(60).collect();
    assert_eq!(app.login_with(&new_client(), "grete", &truncated).await.status(), StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn invalid_usernames_and_emails_are_refused_naming_the_field() {
    let app = TestApp::spawn().await;
    let res = app
        .client
        .post(app.url("/auth/register"))
        .json(&json!({ "username": "../etc", "email": "x@example.org", "password": PASSWORD }))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(res.json::<Value>().await.unwrap()["field"], "username");
    let res = app
        .client
        .post(app.url("/auth/register"))
        .json(&json!({ "username": "henry", "email": "not an email", "password": PASSWORD }))
        .send()
        .await
        .unwrap();
    assert_eq!(res.json::<Value>().await.unwrap()["field"], "email");
}

#[tokio::test]
async fn with_approval_registration_new_accounts_are_pending_and_cannot_sign_in() {
    let app = TestApp::spawn_with(|c| c.registration = Registration::Approval).await;
    let res = app
        .client
        .post(app.url("/auth/register"))
        .json(
            &json!({ "username": "ivan", "email": "ivan@example.org", "password": PASSWORD, "requestedRole": "staff" }),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::CREATED);
    assert_eq!(res.json::<Value>().await.unwrap()["user"]["status"], "pending");

    let res = app.login_with(&app.client, "ivan", PASSWORD).await;
    assert_eq!(res.status(), StatusCode::FORBIDDEN);
    assert!(res.json::<Value>().await.unwrap()["error"].as_str().unwrap().contains("approval"));
    let row = &app.audit("auth.login").await[0];
    assert_eq!((row.result.as_str(), &row.details["reason"]), ("fail", &json!("account_pending")));
    // A wrong password for a pending account still reads as a wrong password.
    let res = app.login_with(&app.client, "ivan", "definitely wrong password").await;
    assert_eq!(res.status(), StatusCode::UNAUTHORIZED);

    let mut conn = app.owner_conn().await;
    let requested: Option<String> = sqlx::query_scalar("SELECT requested_role FROM users WHERE username = 'ivan'")
        .fetch_one(&mut conn)
        .await
        .unwrap();
    assert_eq!(requested.as_deref(), Some("staff"));
}

#[tokio::test]
async fn closed_registration_is_forbidden_and_audited() {
    let app = TestApp::spawn_with(|c| c.registration = Registration::Closed).await;
    let res = app.register("judy").await;
    assert_eq!(res.status(), StatusCode::FORBIDDEN);
    assert_eq!(app.audit("auth.register").await[0].details["reason"], "registration_closed");
    let mut conn = app.owner_conn().await;
    let users: i64 = sqlx::query_scalar("SELECT count(*) FROM users").fetch_one(&mut conn).await.unwrap();
    assert_eq!(users, 0);
}

#[tokio::test]
async fn me_without_a_session_or_with_a_forged_cookie_is_unauthorized() {
    let app = TestApp::spawn().await;
    assert_eq!(app.me(&app.client).await, StatusCode::UNAUTHORIZED);
    let forged = format!("fortifile_session={}.{}", app.default_tenant.simple(), "ab".repeat(32));
    let res = app.client.get(app.url("/me")).header("cookie", forged).send().await.unwrap();
    assert_eq!(res.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(res.json::<Value>().await.unwrap(), json!({ "error": "Authentication required" }));
}

#[tokio::test]
async fn a_made_up_cookie_without_a_csrf_token_is_refused_without_writing_to_any_log() {
    let app = TestApp::spawn().await;
    let forged = format!("fortifile_session={}.{}", app.default_tenant.simple(), "cd".repeat(32));
    let res = app.client.post(app.url("/auth/logout")).header("cookie", forged).send().await.unwrap();
    assert_eq!(res.status(), StatusCode::FORBIDDEN);
    assert!(app.audit("auth.csrf_denied").await.is_empty());
}

#[tokio::test]
async fn registration_is_throttled_per_address_and_each_refusal_is_recorded() {
    let app = TestApp::spawn_with(|c| c.trusted_proxies = vec!["127.0.0.1/32".parse().unwrap()]).await;
    let from = |ip: &'static str| [("x-forwarded-for", ip)];
    let attempt = |i: usize| {
        // Every other attempt probes a name that is already taken.
        let name = if i.is_multiple_of(2) { format!("probe{i}") } else { "probe0".to_string() };
        json!({ "username": name, "email": format!("{name}@example.org"), "password": common::PASSWORD })
    };
    for i in 0..20 {
        let res = app.post_json("/auth/register", &attempt(i), &from("198.51.100.7")).await;
        assert!(matches!(res.status().as_u16(), 201 | 409), "attempt {i}: {}", res.status());
    }
    let res = app.post_json("/auth/register", &attempt(20), &from("198.51.100.7")).await;
    assert_eq!(res.status(), StatusCode::TOO_MANY_REQUESTS);
    let wait: u64 = res.headers()["retry-after"].to_str().unwrap().parse().unwrap();
    assert!((1..=3600).contains(&wait), "{wait}");
    let refused = app.audit("auth.register").await;
    let last = refused.last().unwrap();
    assert_eq!((last.result.as_str(), last.details["reason"].clone()), ("fail", json!("rate_limited")));
    assert_eq!(last.ip.as_deref(), Some("198.51.100.7"));

    // Another address is not held up, and the limit lifts after its window.
    let res = app.post_json("/auth/register", &attempt(22), &from("198.51.100.8")).await;
    assert_eq!(res.status(), StatusCode::CREATED);
    app.clock.advance(time::Duration::minutes(61));
    let res = app.post_json("/auth/register", &attempt(24), &from("198.51.100.7")).await;
    assert_eq!(res.status(), StatusCode::CREATED);
}

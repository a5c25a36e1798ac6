//! Brute-force protection: per-account delays that double, the hard lock after
//! 100 failures in a row, the per-address limit and the device cookie that
//! exempts a known browser from it. The clock is moved, never slept.

mod common;

use common::{PASSWORD, TestApp, new_client};
use fortifile::auth::mfa::totp::{Secret, step_of};
use fortifile::clock::Clock;
use reqwest::{Client, StatusCode};
use serde_json::{Value, json};
use time::Duration;

const WRONG: &str = "not the password at all";

async fn attempt(app: &TestApp, client: &Client, username: &str, password: &str) -> (StatusCode, Value) {
    let res = app.login_with(client, username, password).await;
    let status = res.status();
    (status, res.json().await.unwrap())
}

async fn reasons(app: &TestApp) -> Vec<String> {
    let rows = app.audit("auth.login").await;
    rows.iter().filter(|r| r.result == "fail").map(|r| r.details["reason"].as_str().unwrap_or("").to_string()).collect()
}

#[tokio::test]
async fn the_sixth_attempt_in_fifteen_minutes_is_refused_even_with_the_right_password_exactly_like_a_wrong_one() {
    let app = TestApp::spawn().await;
    app.create_user("ana", "student", "General", "public").await;
    let client = new_client();
    let mut wrong_answer = None;
    for _ in 0..5 {
        let (status, body) = attempt(&app, &client, "ana", WRONG).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED);
        wrong_answer = Some(body);
    }
    let (status, body) = attempt(&app, &client, "ana", PASSWORD).await;
    assert_eq!((status, Some(body)), (StatusCode::UNAUTHORIZED, wrong_answer), "the same answer as a wrong password");
    assert_eq!(reasons(&app).await.last().unwrap(), "throttled");
    let lockouts = app.audit("auth.lockout").await;
    assert_eq!(lockouts.len(), 1, "the start of the delay is recorded once");
    assert_eq!(lockouts[0].details["by"], "account");
}

#[tokio::test]
async fn fifty_parallel_wrong_attempts_never_try_more_passwords_than_the_limit() {
    let app = TestApp::spawn().await;
    app.create_user("ana", "student", "General", "public").await;
    let clients: Vec<Client> = (0..50).map(|_| new_client()).collect();
    let tries = clients.iter().map(|c| app.login_with(c, "ana", WRONG));
    let statuses: Vec<StatusCode> = futures::future::join_all(tries).await.iter().map(|r| r.status()).collect();
    assert!(statuses.iter().all(|s| *s == StatusCode::UNAUTHORIZED));
    let reasons = reasons(&app).await;
    assert_eq!(reasons.iter().filter(|r| *r == "bad_password").count(), 5, "{reasons:?}");
    assert_eq!(reasons.iter().filter(|r| *r == "throttled").count(), 45);
}

#[tokio::test]
async fn the_delay_doubles_per_further_failure_and_a_success_resets_the_count() {
    let app = TestApp::spawn().await;
    app.create_user("ana", "student", "General", "public").await;
    let client = new_client();
    for _ in 0..5 {
        attempt(&app, &client, "ana", WRONG).await;
    }
    // One minute after the fifth failure the sixth is tried, and fails: two minutes now.
    app.clock.advance(Duration::seconds(61));
    attempt(&app, &client, "ana", WRONG).await;
    app.clock.advance(Duration::seconds(61));
    assert_eq!(
        attempt(&app, &client, "ana", PASSWORD).await.0,
        StatusCode::UNAUTHORIZED,
        "still in the 2-minute delay"
    );
    app.clock.advance(Duration::seconds(61));
    assert_eq!(attempt(&app, &client, "ana", PASSWORD).await.0, StatusCode::OK, "the delay is over");
    // The success cleared the count: five more failures are tried again.
    for _ in 0..5 {
        attempt(&app, &client, "ana", WRONG).await;
    }
    let reasons = reasons(&app).await;
    assert_eq!(reasons.iter().filter(|r| *r == "bad_password").count(), 11, "{reasons:?}");
}

#[tokio::test]
async fn a_hundred_failures_in_a_row_lock_the_account_until_an_administrator_unlocks_it() {
    let app = TestApp::spawn().await;
    let ana = app.create_user("ana", "student", "General", "public").await;
    let client = new_client();
    for _ in 0..100 {
        // Each failure in a window of its own: no delay, only the count in a row.
        app.clock.advance(Duration::minutes(16));
        attempt(&app, &client, "ana", WRONG).await;
    }
    app.clock.advance(Duration::hours(2));
    let (status, body) = attempt(&app, &client, "ana", PASSWORD).await;
    assert_eq!((status, body["error"].as_str()), (StatusCode::UNAUTHORIZED, Some("Invalid username or password")));
    assert_eq!(reasons(&app).await.last().unwrap(), "locked");
    let lockouts = app.audit("auth.lockout").await;
    assert_eq!(lockouts.last().unwrap().details["consecutiveFailures"], 100);
    let admin = app.admin().await;
    let (_, user) = admin.get(&format!("/api/users/{ana}")).await;
    assert_eq!(user["user"]["locked"], true, "administrators see the lock");
    let page = admin.client.get(app.url("/admin/users")).send().await.unwrap().text().await.unwrap();
    assert!(page.contains(&format!("/admin/users/{ana}/unlock")), "the users page offers to unlock");

    let student = app.signed_in_as("sam", "student", "public").await;
    assert_eq!(student.post(&format!("/api/users/{ana}/unlock"), json!({})).await.0, StatusCode::FORBIDDEN);
    assert_eq!(admin.post(&format!("/api/users/{ana}/unlock"), json!({})).await.0, StatusCode::NO_CONTENT);
    assert_eq!(
        admin.post(&format!("/api/users/{ana}/unlock"), json!({})).await.0,
        StatusCode::CONFLICT,
        "not locked now"
    );
    assert_eq!(app.audit_count("user.unlock").await, 1);
    assert_eq!(attempt(&app, &client, "ana", PASSWORD).await.0, StatusCode::OK);
}

#[tokio::test]
async fn an_address_spraying_forty_usernames_is_throttled_while_a_known_browser_still_signs_in() {
    let app = TestApp::spawn().await;
    app.create_user("kim", "student", "General", "public").await;
    app.create_user("lee", "student", "General", "public").await;
    // Kim signed in from this browser before: it carries her device cookie.
    let kims_browser = new_client();
    assert_eq!(attempt(&app, &kims_browser, "kim", PASSWORD).await.0, StatusCode::OK);
    let attacker = new_client();
    for n in 0..40 {
        attempt(&app, &attacker, &format!("victim{n}"), WRONG).await;
    }
    let reasons = reasons(&app).await;
    assert_eq!(reasons.iter().filter(|r| *r == "unknown_user").count(), 30, "30 tried, then the address waits");
    assert_eq!(reasons.iter().filter(|r| *r == "throttled").count(), 10);
    assert_eq!(app.audit("auth.lockout").await[0].details["by"], "address");

    assert_eq!(
        attempt(&app, &new_client(), "lee", PASSWORD).await.0,
        StatusCode::UNAUTHORIZED,
        "same address, no cookie"
    );
    assert_eq!(attempt(&app, &kims_browser, "kim", PASSWORD).await.0, StatusCode::OK, "the known browser");
    // The device cookie is Kim's: it does not exempt another account.
    assert_eq!(attempt(&app, &kims_browser, "lee", PASSWORD).await.0, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn a_device_cookie_never_exempts_an_account_from_its_own_limit() {
    let app = TestApp::spawn().await;
    app.create_user("kim", "student", "General", "public").await;
    let browser = new_client();
    assert_eq!(attempt(&app, &browser, "kim", PASSWORD).await.0, StatusCode::OK);
    for _ in 0..5 {
        attempt(&app, &browser, "kim", WRONG).await;
    }
    assert_eq!(attempt(&app, &browser, "kim", PASSWORD).await.0, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn wrong_second_factors_count_into_the_accounts_limit() {
    let app = TestApp::spawn().await;
    let s = app.signed_in_as("ana", "student", "public").await;
    let (_, setup) = s.post("/me/mfa/totp/setup", json!({})).await;
    let secret = Secret::from_base32(setup["totp"]["secret"].as_str().unwrap()).unwrap();
    let code = format!("{:06}", secret.code_at(step_of(app.clock.now())));
    assert_eq!(s.post("/me/mfa/totp/confirm", json!({ "code": code })).await.0, StatusCode::OK);
    let client = new_client();
    let body: Value = app.login_with(&client, "ana", PASSWORD).await.json().await.unwrap();
    let csrf = body["csrfToken"].as_str().unwrap().to_string();
    for _ in 0..5 {
        let res = client
            .post(app.url("/auth/mfa/totp"))
            .header("x-csrf-token", &csrf)
            .json(&json!({ "code": "000000" }))
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), StatusCode::UNAUTHORIZED);
    }
    assert_eq!(attempt(&app, &new_client(), "ana", PASSWORD).await.0, StatusCode::UNAUTHORIZED, "the account waits");
    assert_eq!(reasons(&app).await.last().unwrap(), "throttled");
}

#[tokio::test]
async fn step_up_codes_are_guessed_no_faster_than_passwords() {
    let app = TestApp::spawn().await;
    let s = app.signed_in_as("ana", "student", "public").await;
    let (_, setup) = s.post("/me/mfa/totp/setup", json!({})).await;
    let secret = Secret::from_base32(setup["totp"]["secret"].as_str().unwrap()).unwrap();
    let code = |app: &TestApp| format!("{:06}", secret.code_at(step_of(app.clock.now())));
    assert_eq!(s.post("/me/mfa/totp/confirm", json!({ "code": code(&app) })).await.0, StatusCode::OK);
    app.clock.advance(Duration::seconds(30));
    for _ in 0..5 {
        assert_eq!(s.post("/auth/step-up", json!({ "code": "000000" })).await.0, StatusCode::UNAUTHORIZED);
    }
    assert_eq!(s.post("/auth/step-up", json!({ "code": code(&app) })).await.0, StatusCode::UNAUTHORIZED, "held");
    let rows = app.audit("auth.step_up").await;
    assert_eq!(rows.last().unwrap().details["held"], "throttled");
    app.clock.advance(Duration::seconds(61));
    assert_eq!(s.post("/auth/step-up", json!({ "code": code(&app) })).await.0, StatusCode::NO_CONTENT);
}

#[tokio::test]
async fn current_passwords_are_guessed_no_faster_than_at_login() {
    let app = TestApp::spawn().await;
    let s = app.signed_in_as("ana", "student", "public").await;
    let change = |current: &str| json!({ "currentPassword": current, "newPassword": "violet harbour seven lanterns" });
    for _ in 0..5 {
        assert_eq!(s.post("/me/password", change("guess")).await.0, StatusCode::UNPROCESSABLE_ENTITY);
    }
    assert_eq!(s.post("/me/password", change(PASSWORD)).await.0, StatusCode::UNPROCESSABLE_ENTITY, "held");
    assert_eq!(app.audit("auth.password_change").await.last().unwrap().details["reason"], "throttled");
}

#[tokio::test]
async fn parallel_tries_on_one_pending_session_check_at_most_five_codes() {
    let app = TestApp::spawn_with(|c| c.login_lockout = fortifile::config::Threshold { count: 100, minutes: 15 }).await;
    let s = app.signed_in_as("ana", "student", "public").await;
    let (_, setup) = s.post("/me/mfa/totp/setup", json!({})).await;
    let secret = Secret::from_base32(setup["totp"]["secret"].as_str().unwrap()).unwrap();
    let code = format!("{:06}", secret.code_at(step_of(app.clock.now())));
    assert_eq!(s.post("/me/mfa/totp/confirm", json!({ "code": code })).await.0, StatusCode::OK);
    let client = new_client();
    let body: Value = app.login_with(&client, "ana", PASSWORD).await.json().await.unwrap();
    let csrf = body["csrfToken"].as_str().unwrap().to_string();
    let tries = (0..20).map(|i| {
        client
            .post(app.url("/auth/mfa/totp"))
            .header("x-csrf-token", &csrf)
            .json(&json!({ "code": format!("{i:06}") }))
            .send()
    });
    futures::future::join_all(tries).await;
    let checked = app.audit("auth.mfa.verify").await;
    assert!(checked.len() <= 5, "{} codes were checked", checked.len());
}

#[tokio::test]
async fn ones_own_logins_do_not_wear_down_an_addresss_count() {
    let app = TestApp::spawn().await;
    app.create_user("mallory", "student", "General", "public").await;
    app.create_user("lee", "student", "General", "public").await;
    let own = new_client();
    for n in 0..35 {
        attempt(&app, &own, "mallory", PASSWORD).await;
        attempt(&app, &new_client(), &format!("victim{n}"), WRONG).await;
    }
    let reasons = reasons(&app).await;
    assert_eq!(reasons.iter().filter(|r| *r == "unknown_user").count(), 30, "{reasons:?}");
    assert_eq!(attempt(&app, &new_client(), "lee", PASSWORD).await.0, StatusCode::UNAUTHORIZED, "the address waits");
}

#[tokio::test]
async fn a_slow_guesser_climbs_to_fifteen_minutes_and_stays_there() {
    let app = TestApp::spawn().await;
    app.create_user("ana", "student", "General", "public").await;
    let client = new_client();
    for _ in 0..5 {
        attempt(&app, &client, "ana", WRONG).await;
    }
    // Each try as soon as the delay allows: 1, 2, 4, 8, then 15 minutes.
    for minutes in [1, 2, 4, 8, 15, 15] {
        app.clock.advance(Duration::seconds(minutes * 60 - 5));
        assert_eq!(attempt(&app, &client, "ana", PASSWORD).await.0, StatusCode::UNAUTHORIZED, "within {minutes} min");
        app.clock.advance(Duration::seconds(6));
        attempt(&app, &client, "ana", WRONG).await;
    }
    let tried = reasons(&app).await.iter().filter(|r| *r == "bad_password").count();
    assert_eq!(tried, 11, "five, then one per delay");
}

#[tokio::test]
async fn unlocking_follows_the_guard_rails() {
    let app = TestApp::spawn().await;
    app.admin().await;
    let staff = app.signed_in_as("helpdesk", "staff", "public").await;
    sqlx::query(
        "INSERT INTO role_permissions (tenant_id, role_id, permission_id, scope) \
         SELECT r.tenant_id, r.id, p.id, 'tenant' FROM roles r, permissions p \
          WHERE r.name = 'staff' AND p.name = 'users.edit' ON CONFLICT DO NOTHING",
    )
    .execute(&mut app.owner_conn().await)
    .await
    .unwrap();
    let root = app.user_id("root").await;
    sqlx::query("UPDATE users SET locked_at = now() WHERE id = $1")
        .bind(root)
        .execute(&mut app.owner_conn().await)
        .await
        .unwrap();
    assert_eq!(staff.post(&format!("/api/users/{root}/unlock"), json!({})).await.0, StatusCode::FORBIDDEN);
}

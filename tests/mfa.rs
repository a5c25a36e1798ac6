//! Multi-factor authentication: TOTP enrolment, the login's second step,
//! recovery codes, enforcement by role, and step-up, over the real HTTP stack.

mod common;

use time::Duration;

use common::{PASSWORD, Session, TestApp, new_client};
use fortifile::{
    auth::mfa::totp::{Secret, step_of},
    clock::Clock,
};
use reqwest::{StatusCode, header};
use serde_json::{Value, json};

/// Enrols TOTP for a signed-in session; returns the secret and the recovery codes.
async fn enrol(app: &TestApp, s: &Session) -> (Secret, Vec<String>) {
    let (status, body) = s.post("/me/mfa/totp/setup", json!({})).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let totp = &body["totp"];
    assert!(totp["uri"].as_str().unwrap().starts_with("otpauth://totp/FortiFile:"), "{body}");
    assert!(totp["qrSvg"].as_str().unwrap().contains("<svg"), "a QR code as SVG");
    let secret = Secret::from_base32(totp["secret"].as_str().unwrap()).unwrap();
    let (status, body) = s.post("/me/mfa/totp/confirm", json!({ "code": code(app, &secret, 0) })).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let codes: Vec<String> = body["enrolled"]["recoveryCodes"]
        .as_array()
        .expect("the first factor comes with recovery codes")
        .iter()
        .map(|c| c.as_str().unwrap().to_string())
        .collect();
    (secret, codes)
}

/// The code for the app's clock, `steps` steps away.
fn code(app: &TestApp, secret: &Secret, steps: i64) -> String {
    format!("{:06}", secret.code_at(step_of(app.clock.now()) + steps))
}

fn next_step(app: &TestApp) {
    app.clock.advance(Duration::seconds(30));
}

/// Signs in with the password only: the pending session's client and CSRF token.
async fn password_step(app: &TestApp, username: &str) -> (Session, Value, String) {
    let client = new_client();
    let res = app.login_with(&client, username, PASSWORD).await;
    assert_eq!(res.status(), StatusCode::OK);
    let cookie = set_cookie(&res);
    let body: Value = res.json().await.unwrap();
    let csrf = body["csrfToken"].as_str().unwrap().to_string();
    (Session { client, csrf, base: app.base.clone() }, body, cookie)
}

fn set_cookie(res: &reqwest::Response) -> String {
    let value = res.headers().get(header::SET_COOKIE).expect("a cookie").to_str().unwrap();
    value.split(';').next().unwrap().to_string()
}

async fn second_step(s: &Session, path: &str, code: &str) -> reqwest::Response {
    s.client
        .post(format!("{}{path}", s.base))
        .header("x-csrf-token", &s.csrf)
        .json(&json!({ "code": code }))
        .send()
        .await
        .unwrap()
}

#[tokio::test]
async fn a_user_with_totp_signs_in_in_two_steps_and_gets_a_new_session_token() {
    let app = TestApp::spawn().await;
    let s = app.signed_in_as("ana", "student", "public").await;
    let (secret, _) = enrol(&app, &s).await;
    let (status, me) = s.get("/me").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(me["user"]["mfaEnabled"], true);
    assert_eq!(me["user"]["mfa"]["methods"], json!(["totp"]));

    next_step(&app);
    let (pending, body, pending_cookie) = password_step(&app, "ana").await;
    assert_eq!(body["mfaRequired"], true, "{body}");
    assert_eq!(body["methods"], json!(["totp", "recovery"]));
    assert!(body.get("user").is_none(), "nothing about the user before the second factor");
    assert_eq!(pending.get("/me").await.0, StatusCode::UNAUTHORIZED, "a pending session is nobody");

    let res = second_step(&pending, "/auth/mfa/totp", &code(&app, &secret, 0)).await;
    assert_eq!(res.status(), StatusCode::OK);
    let full_cookie = set_cookie(&res);
    assert_ne!(full_cookie, pending_cookie, "a fresh token for the full session");
    let body: Value = res.json().await.unwrap();
    let full =
        Session { client: pending.client, csrf: body["csrfToken"].as_str().unwrap().into(), base: app.base.clone() };
    assert_eq!(full.get("/me").await.0, StatusCode::OK);

    let logins = app.audit("auth.login").await;
    assert_eq!(logins.last().unwrap().details["secondStep"], "required");
    let verified = app.audit("auth.mfa.verify").await;
    assert_eq!(verified.len(), 1);
    assert_eq!((verified[0].result.as_str(), &verified[0].details["method"]), ("success", &json!("totp")));
    assert_eq!(app.audit_count("auth.mfa.enroll").await, 1);
}

#[tokio::test]
async fn a_totp_code_once_accepted_is_refused_for_the_rest_of_its_window() {
    let app = TestApp::spawn().await;
    let s = app.signed_in_as("ana", "student", "public").await;
    let (secret, _) = enrol(&app, &s).await;
    // The confirming code's step is used up: even a step later, the code
    // of the confirming step (now one step back, still inside the window) is refused.
    next_step(&app);
    let (pending, _, _) = password_step(&app, "ana").await;
    let res = second_step(&pending, "/auth/mfa/totp", &code(&app, &secret, -1)).await;
    assert_eq!(res.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(second_step(&pending, "/auth/mfa/totp", &code(&app, &secret, 0)).await.status(), StatusCode::OK);

    let (again, _, _) = password_step(&app, "ana").await;
    let res = second_step(&again, "/auth/mfa/totp", &code(&app, &secret, 0)).await;
    assert_eq!(res.status(), StatusCode::UNAUTHORIZED, "the same code a second time");
    let body: Value = res.json().await.unwrap();
    assert_eq!(body["error"], "Wrong or already used code");
    next_step(&app);
    assert_eq!(second_step(&again, "/auth/mfa/totp", &code(&app, &secret, 0)).await.status(), StatusCode::OK);
}

#[tokio::test]
async fn codes_one_step_either_side_are_accepted_and_two_steps_away_refused() {
    let app = TestApp::spawn().await;
    let s = app.signed_in_as("ana", "student", "public").await;
    let (secret, _) = enrol(&app, &s).await;
    for _ in 0..4 {
        next_step(&app);
    }
    let (pending, _, _) = password_step(&app, "ana").await;
    assert_eq!(
        second_step(&pending, "/auth/mfa/totp", &code(&app, &secret, 2)).await.status(),
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        second_step(&pending, "/auth/mfa/totp", &code(&app, &secret, -2)).await.status(),
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(second_step(&pending, "/auth/mfa/totp", &code(&app, &secret, -1)).await.status(), StatusCode::OK);
    let (pending, _, _) = password_step(&app, "ana").await;
    assert_eq!(second_step(&pending, "/auth/mfa/totp", &code(&app, &secret, 1)).await.status(), StatusCode::OK);
}

#[tokio::test]
async fn the_fifth_wrong_code_ends_the_pending_session_and_every_attempt_is_audited() {
    let app = TestApp::spawn().await;
    let s = app.signed_in_as("ana", "student", "public").await;
    let (secret, _) = enrol(&app, &s).await;
    next_step(&app);
    let (pending, _, _) = password_step(&app, "ana").await;
    for attempt in 1..=5 {
        let res = second_step(&pending, "/auth/mfa/totp", "000000").await;
        assert_eq!(res.status(), StatusCode::UNAUTHORIZED, "attempt {attempt}");
        let cleared = res.headers().get(header::SET_COOKIE).is_some_and(|v| v.to_str().unwrap().contains("Max-Age=0"));
        assert_eq!(cleared, attempt == 5, "attempt {attempt}: only the fifth ends the session");
    }
    // The right code comes too late: the pending session is gone.
    let res = second_step(&pending, "/auth/mfa/totp", &code(&app, &secret, 0)).await;
    assert_eq!(res.status(), StatusCode::UNAUTHORIZED);
    let body: Value = res.json().await.unwrap();
    assert_eq!(body["error"], "Authentication required");
    let fails = app.audit("auth.mfa.verify").await;
    assert_eq!(fails.len(), 5);
    assert!(fails.iter().all(|r| r.result == "fail"));
    assert_eq!(fails[4].details["sessionEnded"], true);
    assert_eq!(fails[4].details["accountFailures"], 5);
}

#[tokio::test]
async fn many_simultaneous_second_steps_with_one_code_open_exactly_one_session() {
    // Eight password steps in a row would meet the account's login limit (5):
    // this test is about the code, not the limit.
    let app = TestApp::spawn_with(|c| c.login_lockout = fortifile::config::Threshold { count: 50, minutes: 15 }).await;
    let s = app.signed_in_as("ana", "student", "public").await;
    let (secret, _) = enrol(&app, &s).await;
    next_step(&app);
    let mut pendings = Vec::new();
    for _ in 0..8 {
        pendings.push(password_step(&app, "ana").await.0);
    }
    let one_code = code(&app, &secret, 0);
    let tries = pendings.iter().map(|p| second_step(p, "/auth/mfa/totp", &one_code));
    let statuses: Vec<StatusCode> = futures::future::join_all(tries).await.iter().map(|r| r.status()).collect();
    assert_eq!(statuses.iter().filter(|s| **s == StatusCode::OK).count(), 1, "{statuses:?}");
    assert_eq!(statuses.iter().filter(|s| **s == StatusCode::UNAUTHORIZED).count(), 7, "{statuses:?}");
}

#[tokio::test]
async fn a_recovery_code_works_once_and_says_how_many_remain() {
    let app = TestApp::spawn().await;
    let s = app.signed_in_as("ana", "student", "public").await;
    let (_, codes) = enrol(&app, &s).await;
    assert_eq!(codes.len(), 10);
    let (pending, _, _) = password_step(&app, "ana").await;
    let typed = codes[3].to_uppercase().replace('-', " ");
    assert_eq!(second_step(&pending, "/auth/mfa/recovery", &typed).await.status(), StatusCode::OK);
    let used = app.audit("auth.mfa.recovery_used").await;
    assert_eq!(used.len(), 1);
    assert_eq!(used[0].details["remaining"], 9);

    let (again, _, _) = password_step(&app, "ana").await;
    assert_eq!(second_step(&again, "/auth/mfa/recovery", &codes[3]).await.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(second_step(&again, "/auth/mfa/recovery", &codes[4]).await.status(), StatusCode::OK);
    let (status, body) = s.get("/me/mfa").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["mfa"]["recoveryCodesRemaining"], 8);
}

#[tokio::test]
async fn a_pending_session_reaches_nothing_but_its_second_step_and_logout() {
    let app = TestApp::spawn().await;
    let s = app.signed_in_as("ana", "student", "public").await;
    enrol(&app, &s).await;
    let (pending, _, _) = password_step(&app, "ana").await;
    for path in ["/me", "/api/files", "/me/mfa"] {
        assert_eq!(pending.get(path).await.0, StatusCode::UNAUTHORIZED, "{path}");
    }
    assert_eq!(pending.post("/auth/step-up", json!({ "code": "123456" })).await.0, StatusCode::UNAUTHORIZED);
    assert_eq!(pending.post("/me/mfa/totp/setup", json!({})).await.0, StatusCode::UNAUTHORIZED);
    let page = pending.client.get(format!("{}/", app.base)).send().await.unwrap();
    assert!(page.url().path().starts_with("/login"), "pages send a pending session to the login page");
    assert_eq!(pending.post("/auth/logout", json!({})).await.0, StatusCode::NO_CONTENT);
}

#[tokio::test]
async fn a_full_session_has_no_second_step_to_take() {
    let app = TestApp::spawn().await;
    let s = app.signed_in_as("ana", "student", "public").await;
    let (status, body) = s.post("/auth/mfa/totp", json!({ "code": "123456" })).await;
    assert_eq!(status, StatusCode::CONFLICT, "{body}");
}

#[tokio::test]
async fn a_wrong_confirmation_code_enrols_nothing_and_is_audited() {
    let app = TestApp::spawn().await;
    let s = app.signed_in_as("ana", "student", "public").await;
    assert_eq!(s.post("/me/mfa/totp/setup", json!({})).await.0, StatusCode::CREATED);
    let (status, body) = s.post("/me/mfa/totp/confirm", json!({ "code": "000000" })).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    assert_eq!(body["field"], "code");
    let enrolments = app.audit("auth.mfa.enroll").await;
    assert_eq!((enrolments.len(), enrolments[0].result.as_str()), (1, "fail"));
    let (_, me) = s.get("/me").await;
    assert_eq!(me["user"]["mfaEnabled"], false);
    // Still one step: a password alone signs in.
    let (_, body, _) = password_step(&app, "ana").await;
    assert!(body.get("mfaRequired").is_none(), "{body}");
}

#[tokio::test]
async fn a_second_authenticator_cannot_be_set_up_over_an_enrolled_one() {
    let app = TestApp::spawn().await;
    let s = app.signed_in_as("ana", "student", "public").await;
    enrol(&app, &s).await;
    let (status, body) = s.post("/me/mfa/totp/setup", json!({})).await;
    assert_eq!(status, StatusCode::CONFLICT, "{body}");
}

#[tokio::test]
async fn a_role_that_starts_requiring_mfa_holds_its_users_in_enrolment_on_their_next_request() {
    let app = TestApp::spawn().await;
    let s = app.signed_in_as("ana", "student", "public").await;
    assert_eq!(s.get("/api/files").await.0, StatusCode::OK);
    let mut owner = app.owner_conn().await;
    sqlx::query("UPDATE roles SET requires_mfa = true, mfa_type = 'totp' WHERE name = 'student'")
        .execute(&mut owner)
        .await
        .unwrap();

    let (status, body) = s.get("/api/files").await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert_eq!(body["mfaEnrollmentRequired"], true, "{body}");
    assert_eq!(s.get("/me").await.0, StatusCode::FORBIDDEN);
    let (status, body) = s.get("/me/mfa").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        (body["mfa"]["enrollmentRequired"].clone(), body["mfa"]["required"].clone()),
        (json!(true), json!("totp"))
    );

    enrol(&app, &s).await;
    assert_eq!(s.get("/api/files").await.0, StatusCode::OK, "a compliant factor lifts the hold");
    let (_, me) = s.get("/me").await;
    assert_eq!(me["user"]["mfa"]["compliant"], true);
}

#[tokio::test]
async fn a_role_that_needs_fido2_is_not_satisfied_by_totp() {
    let app = TestApp::spawn().await;
    let s = app.signed_in_as("boss", "admin", "restricted").await;
    enrol(&app, &s).await;
    let mut owner = app.owner_conn().await;
    sqlx::query("UPDATE roles SET requires_mfa = true, mfa_type = 'fido2' WHERE name = 'admin'")
        .execute(&mut owner)
        .await
        .unwrap();
    let (status, body) = s.get("/api/users").await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert_eq!(body["mfaEnrollmentRequired"], true);
    let (_, mfa) = s.get("/me/mfa").await;
    assert_eq!(mfa["mfa"]["compliant"], false);
    assert_eq!(s.post("/auth/logout", json!({})).await.0, StatusCode::NO_CONTENT, "logout stays open");
}

#[tokio::test]
async fn a_role_edit_needs_a_recent_step_up_and_the_step_up_lapses() {
    let app = TestApp::spawn().await;
    let admin = app.admin().await;
    let (secret, _) = enrol(&app, &admin).await;
    let role = app.role_id("student").await;
    let edit = json!({ "description": "Reads what they are shown" });
    // Enrolling verified the session just now.
    assert_eq!(admin.put(&format!("/api/roles/{role}"), edit.clone()).await.0, StatusCode::OK);

    app.clock.advance(Duration::minutes(11));
    let (status, body) = admin.put(&format!("/api/roles/{role}"), edit.clone()).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(body["stepUp"], true, "{body}");
    assert_eq!(admin.get("/api/roles").await.0, StatusCode::OK, "reading needs no step-up");

    let (status, _) = admin.post("/auth/step-up", json!({ "method": "totp", "code": code(&app, &secret, 0) })).await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    assert_eq!(admin.put(&format!("/api/roles/{role}"), edit.clone()).await.0, StatusCode::OK);

    app.clock.advance(Duration::minutes(11));
    assert_eq!(admin.put(&format!("/api/roles/{role}"), edit).await.0, StatusCode::UNAUTHORIZED);
    let steps = app.audit("auth.step_up").await;
    assert_eq!(steps.len(), 1);
    assert_eq!(steps[0].result, "success");
}

#[tokio::test]
async fn a_wrong_step_up_code_is_refused_counted_and_audited() {
    let app = TestApp::spawn().await;
    let admin = app.admin().await;
    enrol(&app, &admin).await;
    let (status, body) = admin.post("/auth/step-up", json!({ "code": "000000" })).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");
    let steps = app.audit("auth.step_up").await;
    assert_eq!((steps.len(), steps[0].result.as_str()), (1, "fail"));
    assert_eq!(steps[0].details["accountFailures"], 1);
    let (status, _) = admin.post("/auth/step-up", json!({ "method": "sms", "code": "000000" })).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "an unknown method is bad input");
}

#[tokio::test]
async fn a_user_without_a_factor_needs_no_step_up_and_cannot_take_one() {
    let app = TestApp::spawn().await;
    let admin = app.admin().await;
    let role = app.role_id("student").await;
    let (status, _) = admin.put(&format!("/api/roles/{role}"), json!({ "description": "x" })).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(admin.post("/auth/step-up", json!({ "code": "123456" })).await.0, StatusCode::CONFLICT);
}

#[tokio::test]
async fn removing_the_last_factor_needs_a_step_up_and_takes_the_recovery_codes_with_it() {
    let app = TestApp::spawn().await;
    let s = app.signed_in_as("ana", "student", "public").await;
    let (secret, codes) = enrol(&app, &s).await;
    app.clock.advance(Duration::minutes(11));
    let (status, body) = s.delete("/me/mfa/totp").await;
    assert_eq!((status, body["stepUp"].clone()), (StatusCode::UNAUTHORIZED, json!(true)));
    assert_eq!(s.post("/me/mfa/recovery-codes", json!({})).await.0, StatusCode::UNAUTHORIZED);
    s.post("/auth/step-up", json!({ "code": code(&app, &secret, 0) })).await;
    let (status, body) = s.post("/me/mfa/recovery-codes", json!({})).await;
    assert_eq!(status, StatusCode::CREATED);
    let fresh = body["recoveryCodes"].as_array().unwrap();
    assert!(!fresh.iter().any(|c| codes.contains(&c.as_str().unwrap().to_string())), "a new set");
    assert_eq!(s.delete("/me/mfa/totp").await.0, StatusCode::NO_CONTENT);
    let (_, status) = s.get("/me/mfa").await;
    assert_eq!(
        (status["mfa"]["enabled"].clone(), status["mfa"]["recoveryCodesRemaining"].clone()),
        (json!(false), json!(0))
    );
    assert_eq!(app.audit_count("auth.mfa.remove").await, 1);
    assert_eq!(app.audit_count("auth.mfa.recovery_regenerated").await, 1);
    let (_, body, _) = password_step(&app, "ana").await;
    assert!(body.get("mfaRequired").is_none(), "the password alone again");
}

#[tokio::test]
async fn a_totp_secret_and_recovery_codes_appear_in_no_audit_row_and_no_later_answer() {
    let app = TestApp::spawn().await;
    let s = app.signed_in_as("ana", "student", "public").await;
    let (secret, codes) = enrol(&app, &s).await;
    let canaries: Vec<String> = std::iter::once(secret.base32()).chain(codes.iter().cloned()).collect();
    next_step(&app);
    let (pending, _, _) = password_step(&app, "ana").await;
    second_step(&pending, "/auth/mfa/recovery", &codes[0]).await;
    let mut owner = app.owner_conn().await;
    let everything: Vec<String> =
        sqlx::query_scalar("SELECT details::text FROM audit_logs").fetch_all(&mut owner).await.unwrap();
    let stored: Vec<Vec<u8>> = sqlx::query_scalar("SELECT secret FROM mfa_totp").fetch_all(&mut owner).await.unwrap();
    let (_, me) = s.get("/me").await;
    let (_, status) = s.get("/me/mfa").await;
    let answers = format!("{me}{status}");
    for canary in &canaries {
        assert!(!everything.iter().any(|d| d.contains(canary.as_str())), "{canary} in an audit row");
        assert!(!answers.contains(canary.as_str()), "{canary} in an answer");
        assert!(!stored.iter().any(|s| s.windows(canary.len()).any(|w| w == canary.as_bytes())));
    }
}

#[tokio::test]
async fn the_login_page_asks_for_the_second_factor_on_a_second_screen() {
    let app = TestApp::spawn().await;
    let s = app.signed_in_as("ana", "student", "public").await;
    let (secret, _) = enrol(&app, &s).await;
    next_step(&app);
    let browser = new_client();
    let page = browser
        .post(format!("{}/login", app.base))
        .form(&[("username", "ana"), ("password", PASSWORD), ("next", "/")])
        .send()
        .await
        .unwrap();
    assert_eq!(page.status(), StatusCode::OK);
    let html = page.text().await.unwrap();
    assert!(html.contains("action=\"/login/mfa\""), "{html}");
    let csrf = html.split("name=\"csrf_token\" value=\"").nth(1).unwrap().split('"').next().unwrap().to_string();
    let wrong = browser
        .post(format!("{}/login/mfa", app.base))
        .form(&[("code", "000000"), ("method", "totp"), ("csrf_token", &csrf), ("next", "/")])
        .send()
        .await
        .unwrap();
    assert_eq!(wrong.status(), StatusCode::UNAUTHORIZED);
    let right = browser
        .post(format!("{}/login/mfa", app.base))
        .form(&[("code", code(&app, &secret, 0).as_str()), ("method", "totp"), ("csrf_token", &csrf), ("next", "/")])
        .send()
        .await
        .unwrap();
    assert_eq!(right.status(), StatusCode::OK);
    assert_eq!(right.url().path(), "/", "signed in and on to the documents");
}

//! End-to-end scenarios in a real browser: Debian's Chromium, driven by
//! playwright-core (`e2e/`), against the real server on a loopback port with a
//! fresh database. Screenshots go to `target/e2e-screenshots/<scenario>/`; the
//! path is printed so CI's log shows where they are.
//!
//! Needs `/usr/bin/chromium` (or `CHROMIUM`) and `npm ci` in `e2e/`; `.ci/run`
//! installs both. Without them the test fails and says so.

mod common;

use std::path::PathBuf;

use tokio::process::Command;

use common::{PASSWORD, TestApp};
use reqwest::StatusCode;
use serde_json::json;

fn screenshots(scenario: &str) -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/e2e-screenshots").join(scenario);
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

/// Runs `e2e/<script>` with `env` (asynchronously: the server runs on this
/// test's runtime); panics with its output unless it passed.
async fn scenario(app: &TestApp, script: &str, name: &str, env: &[(&str, &str)]) {
    let e2e = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("e2e");
    let chromium = std::env::var("CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into());
    assert!(
        std::path::Path::new(&chromium).exists(),
        "browser tests need Chromium at {chromium}: apt-get install chromium (.ci/run does)"
    );
    assert!(
        e2e.join("node_modules/playwright-core").exists(),
        "browser tests need playwright-core: (cd e2e && npm ci) (.ci/run does)"
    );
    let shots = screenshots(name);
    let out = Command::new("node")
        .arg(e2e.join(script))
        .current_dir(&e2e)
        .env("BASE_URL", &app.base)
        .env("SCREENSHOTS", &shots)
        .env("CHROMIUM", &chromium)
        .envs(env.iter().copied())
        .output()
        .await
        .expect("node (Node.js 20+) runs the browser scenarios");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    println!("{name}: screenshots in {}\n{stdout}", shots.display());
    assert!(out.status.success(), "{name} failed:\n{stdout}\n{stderr}");
    assert!(stdout.contains("scenario passed"), "{name} did not finish:\n{stdout}");
}

#[tokio::test]
async fn a_student_signs_in_uploads_with_a_progress_bar_downloads_and_shares_in_a_real_browser() {
    let app = TestApp::spawn().await;
    // Students may share their own documents in this organisation.
    let admin = app.admin().await;
    let student_role = app.role_id("student").await;
    let grants =
        json!({ "permissions": { "file": { "upload": "own", "download": "own", "delete": "own", "share": "own" } } });
    let (status, body) = admin.put(&format!("/api/roles/{student_role}"), grants).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    app.create_user("sally", "student", "General", "public").await;
    app.create_user("rita", "student", "General", "public").await;

    scenario(&app, "student.mjs", "student", &[("STUDENT", "sally"), ("PASSWORD", PASSWORD), ("RECIPIENT", "rita")])
        .await;

    for action in ["file.upload", "file.download", "file.share"] {
        let rows = app.audit(action).await;
        assert_eq!(rows.iter().filter(|r| r.result == "success").count(), 1, "{action}");
        assert_eq!(
            rows[0].user_agent.as_deref().map(|ua| ua.contains("Chrome")),
            Some(true),
            "{action} from the browser"
        );
    }
}

#[tokio::test]
async fn an_admin_sees_the_failed_login_highlight_filters_the_log_and_tracks_an_incident_in_a_real_browser() {
    let app = TestApp::spawn().await;
    app.create_user("root", "admin", "General", "restricted").await;
    app.create_user("victim", "student", "General", "public").await;
    let attacker = common::new_client();
    for _ in 0..6 {
        let res = app.login_with(&attacker, "victim", "not the password at all").await;
        assert_eq!(res.status(), StatusCode::UNAUTHORIZED);
    }

    scenario(&app, "admin.mjs", "admin", &[("ADMIN", "root"), ("PASSWORD", PASSWORD), ("VICTIM", "victim")]).await;

    let mut conn = app.owner_conn().await;
    let (status, severity): (String, String) =
        sqlx::query_as("SELECT status, severity FROM incidents").fetch_one(&mut conn).await.unwrap();
    assert_eq!((status.as_str(), severity.as_str()), ("investigating", "high"));
    assert_eq!(app.audit_count("incident.create").await, 1);
    assert_eq!(app.audit("incident.update").await[0].details["changes"]["status"]["after"], "investigating");
}

#[tokio::test]
async fn a_user_enrols_an_authenticator_app_and_a_passkey_then_signs_in_with_the_passkey_in_a_real_browser() {
    let app = TestApp::spawn_on_localhost().await;
    app.create_user("paula", "student", "General", "public").await;
    let base = format!("http://localhost:{}", app.addr.port());
    scenario(&app, "mfa.mjs", "mfa", &[("BASE_URL", &base), ("USER_NAME", "paula"), ("PASSWORD", PASSWORD)]).await;

    let enrolled = app.audit("auth.mfa.enroll").await;
    let methods: Vec<_> = enrolled.iter().map(|r| (r.result.as_str(), r.details["method"].as_str().unwrap())).collect();
    assert_eq!(methods, [("success", "totp"), ("success", "webauthn")]);
    let verified = app.audit("auth.mfa.verify").await;
    assert_eq!((verified.len(), verified[0].details["method"].as_str()), (1, Some("webauthn")));
    assert_eq!(app.audit("auth.login").await.last().unwrap().details["secondStep"], "required");
}

#[tokio::test]
async fn a_privileged_assignment_requested_by_one_administrator_is_approved_by_another_in_a_real_browser() {
    let app = TestApp::spawn().await;
    sqlx::query(
        "INSERT INTO approval_policies (tenant_id, operation, enabled, timeout_hours) \
         VALUES ($1, 'role.assign_privileged', true, 48)",
    )
    .bind(app.default_tenant)
    .execute(&mut app.owner_conn().await)
    .await
    .unwrap();
    app.create_user("alice", "admin", "General", "restricted").await;
    app.create_user("bob", "admin", "General", "restricted").await;
    let carol = app.create_user("carol", "staff", "General", "public").await;

    let env = [("ADMIN_A", "alice"), ("ADMIN_B", "bob"), ("PASSWORD", PASSWORD), ("TARGET", "carol")];
    scenario(&app, "approvals.mjs", "approvals", &env).await;

    let assigned = app.audit("role.assign").await;
    let admin_rows: Vec<_> = assigned.iter().filter(|r| r.details["role"] == "admin").collect();
    assert_eq!(admin_rows.len(), 1, "exactly one assignment");
    assert_eq!(admin_rows[0].target_id.as_deref(), Some(carol.to_string().as_str()));
    assert!(admin_rows[0].details["approvalId"].is_string());
    assert_eq!(app.audit("approval.approve").await[0].details["comment"], "checked with HR");
}

//! Administrators and the second factor: resetting another user's factors,
//! who shows as enrolled, and the dashboard's highlight for repeated wrong
//! second factors.

mod common;

use common::{PASSWORD, Session, TestApp, new_client};
use fortifile::{
    auth::mfa::totp::{Secret, step_of},
    clock::Clock,
};
use reqwest::StatusCode;
use serde_json::{Value, json};

async fn enrol(app: &TestApp, s: &Session) -> Secret {
    let (_, body) = s.post("/me/mfa/totp/setup", json!({})).await;
    let secret = Secret::from_base32(body["totp"]["secret"].as_str().unwrap()).unwrap();
    let code = format!("{:06}", secret.code_at(step_of(app.clock.now())));
    assert_eq!(s.post("/me/mfa/totp/confirm", json!({ "code": code })).await.0, StatusCode::OK);
    secret
}

async fn wrong_second_factors(app: &TestApp, username: &str, times: usize) {
    let client = new_client();
    let res = app.login_with(&client, username, PASSWORD).await;
    let body: Value = res.json().await.unwrap();
    let csrf = body["csrfToken"].as_str().unwrap().to_string();
    for _ in 0..times {
        let res = client
            .post(app.url("/auth/mfa/totp"))
            .header("x-csrf-token", &csrf)
            .json(&json!({ "code": "000000" }))
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), StatusCode::UNAUTHORIZED);
    }
}

#[tokio::test]
async fn an_administrator_resets_a_users_factors_with_a_reason_and_their_sessions_end() {
    let app = TestApp::spawn().await;
    let admin = app.admin().await;
    let ana = app.signed_in_as("ana", "student", "public").await;
    enrol(&app, &ana).await;
    let id = app.user_id("ana").await;
    let (_, listed) = admin.get(&format!("/api/users/{id}")).await;
    assert_eq!(listed["user"]["mfaEnabled"], true, "administrators see who has a second factor");

    let (status, body) = admin.post(&format!("/api/users/{id}/mfa/reset"), json!({ "reason": " " })).await;
    assert_eq!((status, body["field"].clone()), (StatusCode::UNPROCESSABLE_ENTITY, json!("reason")));
    let (status, body) =
        admin.post(&format!("/api/users/{id}/mfa/reset"), json!({ "reason": "lost her phone, ticket 4711" })).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["reset"]["removed"], json!(["totp"]));
    assert_eq!(ana.get("/me").await.0, StatusCode::UNAUTHORIZED, "her sessions ended");

    let resets = app.audit("auth.mfa.reset").await;
    assert_eq!(resets.len(), 1);
    assert_eq!(resets[0].details["reason"], "lost her phone, ticket 4711");
    assert_eq!(resets[0].target_id.as_deref(), Some(id.to_string().as_str()));
    let client = new_client();
    let body: Value = app.login_with(&client, "ana", PASSWORD).await.json().await.unwrap();
    assert!(body.get("mfaRequired").is_none(), "the password alone again, to enrol anew");
}

#[tokio::test]
async fn nobody_resets_the_factors_of_someone_more_powerful_or_their_own() {
    let app = TestApp::spawn().await;
    let boss = app.admin().await;
    enrol(&app, &boss).await;
    // An administrator of users who may not grant everything the boss holds.
    let helpdesk = app.signed_in_as("helpdesk", "staff", "restricted").await;
    let mut owner = app.owner_conn().await;
    sqlx::query(
        "INSERT INTO role_permissions (tenant_id, role_id, permission_id, scope) \
         SELECT r.tenant_id, r.id, p.id, 'tenant' FROM roles r, permissions p \
          WHERE r.name = 'staff' AND p.name IN ('users.view', 'users.edit') ON CONFLICT DO NOTHING",
    )
    .execute(&mut owner)
    .await
    .unwrap();
    let boss_id = app.user_id("root").await;
    let (status, _) = helpdesk.post(&format!("/api/users/{boss_id}/mfa/reset"), json!({ "reason": "x" })).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let (status, _) = boss.post(&format!("/api/users/{boss_id}/mfa/reset"), json!({ "reason": "x" })).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "not one's own");
    assert_eq!(app.audit_count("auth.mfa.reset").await, 0);
    assert_eq!(app.audit_count("rbac.denied").await, 2, "both refusals are recorded");
    let (_, mfa) = boss.get("/me/mfa").await;
    assert_eq!(mfa["mfa"]["enabled"], true);
}

#[tokio::test]
async fn a_student_cannot_reset_anyones_factors() {
    let app = TestApp::spawn().await;
    let student = app.signed_in_as("sam", "student", "public").await;
    let ana = app.create_user("ana", "student", "General", "public").await;
    let (status, _) = student.post(&format!("/api/users/{ana}/mfa/reset"), json!({ "reason": "x" })).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
}

#[tokio::test]
async fn repeated_wrong_second_factors_on_one_account_are_highlighted_at_five_and_not_at_four() {
    let app = TestApp::spawn().await;
    let admin = app.admin().await;
    let ana = app.signed_in_as("ana", "student", "public").await;
    enrol(&app, &ana).await;
    let bob = app.signed_in_as("bob", "student", "public").await;
    enrol(&app, &bob).await;
    wrong_second_factors(&app, "ana", 4).await;
    wrong_second_factors(&app, "bob", 5).await;
    let (status, body) = admin.get("/api/audit-logs/highlights").await;
    assert_eq!(status, StatusCode::OK);
    let found: Vec<&Value> =
        body["highlights"].as_array().unwrap().iter().filter(|h| h["kind"] == "mfa_failures").collect();
    assert_eq!(found.len(), 1, "{body}");
    assert_eq!((found[0]["subject"].clone(), found[0]["count"].clone()), (json!("bob"), json!(5)));
    let (_, evidence) = admin.get(found[0]["logs"].as_str().unwrap()).await;
    assert_eq!(evidence["logs"].as_array().unwrap().len(), 5, "the highlight's filter selects its evidence");
}

#[tokio::test]
async fn the_route_table_marks_every_sensitive_change_as_needing_a_step_up() {
    let app = TestApp::spawn().await;
    let table = fortifile::app::route_table(app.state.clone());
    let sensitive = [
        ("POST", "/api/users"),
        ("PUT", "/api/users/{id}"),
        ("POST", "/api/users/{id}/approve"),
        ("POST", "/api/users/{id}/roles"),
        ("DELETE", "/api/users/{id}/roles/{role}"),
        ("POST", "/api/users/{id}/mfa/reset"),
        ("POST", "/api/roles"),
        ("PUT", "/api/roles/{id}"),
        ("DELETE", "/api/roles/{id}"),
        ("POST", "/api/departments"),
        ("PUT", "/api/departments/{id}"),
        ("DELETE", "/api/departments/{id}"),
        ("POST", "/api/clearance-levels"),
        ("PUT", "/api/clearance-levels/{id}"),
        ("DELETE", "/api/clearance-levels/{id}"),
        ("PATCH", "/api/files/{id}"),
        ("GET", "/api/audit-logs/export.csv"),
        ("GET", "/api/audit-logs/export.jsonl"),
        ("POST", "/admin/users/{id}"),
        ("POST", "/admin/users/{id}/approve"),
        ("POST", "/admin/roles/{id}"),
        ("POST", "/me/mfa/totp/setup"),
        ("POST", "/me/mfa/totp/confirm"),
        ("DELETE", "/me/mfa/totp"),
        ("POST", "/me/mfa/recovery-codes"),
        ("POST", "/me/mfa/webauthn/register/start"),
        ("POST", "/me/mfa/webauthn/register/finish"),
        ("DELETE", "/me/mfa/webauthn/{id}"),
        ("POST", "/me/mfa/form/totp-remove"),
        ("POST", "/me/mfa/form/passkeys/{id}/remove"),
    ];
    for (method, path) in sensitive {
        let rule = table.iter().find(|r| r.method.as_str() == method && r.path == path);
        assert!(rule.is_some_and(|r| r.step_up), "{method} {path} must be declared with a step-up");
    }
    let reads = table.iter().filter(|r| r.method == reqwest::Method::GET && r.step_up);
    let reads: Vec<_> = reads.map(|r| r.path).collect();
    assert_eq!(reads, ["/api/audit-logs/export.csv", "/api/audit-logs/export.jsonl"], "reads need none, but exports");
}

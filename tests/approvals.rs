//! Dual control (issue 15): each operation under its policy is held (202),
//! changes nothing until a second, eligible person approves, and then runs
//! exactly once with its audit rows; every refusal is recorded.

mod common;

use common::{Session, TestApp};
use reqwest::StatusCode;
use serde_json::{Value, json};
use uuid::Uuid;

/// Turns `operation`'s policy on in the default tenant (as the owner would
/// seed it), with `required` approvals.
async fn enable(app: &TestApp, operation: &str, required: i32) {
    sqlx::query(
        "INSERT INTO approval_policies (tenant_id, operation, enabled, approvals_required, timeout_hours) \
         VALUES ($1, $2, true, $3, 48) \
         ON CONFLICT (tenant_id, operation) DO UPDATE SET enabled = true, approvals_required = $3",
    )
    .bind(app.default_tenant)
    .bind(operation)
    .bind(required)
    .execute(&mut app.owner_conn().await)
    .await
    .unwrap();
}

/// Two administrators, A and B, signed in.
async fn two_admins(app: &TestApp) -> (Session, Session) {
    let a = app.signed_in_as("alice", "admin", "restricted").await;
    let b = app.signed_in_as("bob", "admin", "restricted").await;
    (a, b)
}

fn approval_id(body: &Value) -> String {
    body["approval"]["id"].as_str().unwrap_or_else(|| panic!("no approval in {body}")).to_string()
}

async fn roles_of(app: &TestApp, username: &str) -> Vec<String> {
    sqlx::query_scalar(
        "SELECT r.name FROM user_roles ur JOIN roles r ON r.id = ur.role_id JOIN users u ON u.id = ur.user_id \
         WHERE u.username = $1 ORDER BY r.name",
    )
    .bind(username)
    .fetch_all(&mut app.owner_conn().await)
    .await
    .unwrap()
}

async fn status_of(app: &TestApp, id: &str) -> String {
    sqlx::query_scalar("SELECT status FROM approvals WHERE id = $1::uuid")
        .bind(id)
        .fetch_one(&mut app.owner_conn().await)
        .await
        .unwrap()
}

/// The `reason` of the last `action` row.
async fn last_reason(app: &TestApp, action: &str) -> (String, Value) {
    let row = app.audit(action).await.pop().unwrap_or_else(|| panic!("no {action} row"));
    (row.result, row.details["reason"].clone())
}

#[tokio::test]
async fn a_privileged_assignment_waits_for_a_second_administrator_and_then_runs_exactly_once() {
    let app = TestApp::spawn().await;
    enable(&app, "role.assign_privileged", 1).await;
    let (a, b) = two_admins(&app).await;
    let carol = app.create_user("carol", "staff", "General", "public").await;

    let (status, body) = a.post(&format!("/api/users/{carol}/roles"), json!({ "role": "admin" })).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    assert_eq!(body["approval"]["status"], "pending");
    assert_eq!(body["approval"]["operation"], "role.assign_privileged");
    assert_eq!(body["approval"]["change"]["role"], "admin");
    assert!(body["approval"]["expiresAt"].is_string());
    assert_eq!(roles_of(&app, "carol").await, ["staff"], "nothing changes before approval");
    assert_eq!(app.audit_count("role.assign").await, 0);
    let id = approval_id(&body);
    assert_eq!(app.audit("approval.request").await[0].details["approvalId"], id.as_str());

    // B sees it waiting; A sees it among their requests.
    let (_, waiting) = b.get("/api/approvals?toApprove=true").await;
    assert_eq!(waiting["approvals"].as_array().unwrap().len(), 1, "{waiting}");
    let (_, mine) = a.get("/api/approvals?mine=true").await;
    assert_eq!(mine["approvals"][0]["id"], id.as_str());
    assert_eq!(a.get("/api/approvals?toApprove=true").await.1["approvals"], json!([]));

    let (status, approved) = b.post(&format!("/api/approvals/{id}/approve"), json!({ "comment": "ok" })).await;
    assert_eq!(status, StatusCode::OK, "{approved}");
    assert_eq!(approved["approval"]["status"], "executed");
    assert_eq!(roles_of(&app, "carol").await, ["admin", "staff"]);
    let assign = app.audit("role.assign").await;
    assert_eq!(assign.len(), 1);
    let (alice, bob) = (app.user_id("alice").await, app.user_id("bob").await);
    assert_eq!(assign[0].user_id, Some(alice), "the requester is the actor");
    assert_eq!(assign[0].details["approvalId"], id.as_str());
    assert_eq!(assign[0].details["requestedBy"], alice.to_string());
    assert_eq!(assign[0].details["approvedBy"], json!([bob]));
    assert_eq!(app.audit("approval.execute").await[0].result, "success");
    assert_eq!(app.audit_count("approval.approve").await, 1);

    // A second approval finds it done.
    let dana = app.signed_in_as("dana", "admin", "restricted").await;
    assert_eq!(dana.post(&format!("/api/approvals/{id}/approve"), json!({})).await.0, StatusCode::CONFLICT);
    assert_eq!(last_reason(&app, "approval.approve").await, ("fail".into(), json!("not_pending")));
    assert_eq!(app.audit_count("role.assign").await, 1);
}

#[tokio::test]
async fn an_unprivileged_assignment_is_not_held() {
    let app = TestApp::spawn().await;
    enable(&app, "role.assign_privileged", 1).await;
    let (a, _) = two_admins(&app).await;
    let carol = app.create_user("carol", "student", "General", "public").await;
    let (status, _) = a.post(&format!("/api/users/{carol}/roles"), json!({ "role": "staff" })).await;
    assert_eq!(status, StatusCode::CREATED);
    assert_eq!(app.audit_count("approval.request").await, 0);
}

#[tokio::test]
async fn the_requester_cannot_approve_their_own_request_and_the_refusal_is_recorded() {
    let app = TestApp::spawn().await;
    enable(&app, "role.assign_privileged", 1).await;
    let (a, _) = two_admins(&app).await;
    let carol = app.create_user("carol", "staff", "General", "public").await;
    let (_, body) = a.post(&format!("/api/users/{carol}/roles"), json!({ "role": "admin" })).await;
    let id = approval_id(&body);
    let (status, error) = a.post(&format!("/api/approvals/{id}/approve"), json!({})).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{error}");
    assert_eq!(last_reason(&app, "approval.approve").await, ("fail".into(), json!("self_approval")));
    assert_eq!(status_of(&app, &id).await, "pending");
    assert_eq!(roles_of(&app, "carol").await, ["staff"]);
}

#[tokio::test]
async fn someone_who_is_not_an_approver_is_refused_and_recorded() {
    let app = TestApp::spawn().await;
    enable(&app, "user.delete", 1).await;
    let (a, _) = two_admins(&app).await;
    let staff = app.signed_in_as("sid", "staff", "restricted").await;
    let carol = app.create_user("carol", "student", "General", "public").await;
    let (status, body) = a.delete(&format!("/api/users/{carol}")).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    let id = approval_id(&body);
    // It is not theirs to see, and not theirs to approve.
    assert_eq!(staff.get(&format!("/api/approvals/{id}")).await.0, StatusCode::NOT_FOUND);
    assert_eq!(staff.post(&format!("/api/approvals/{id}/approve"), json!({})).await.0, StatusCode::FORBIDDEN);
    assert_eq!(last_reason(&app, "approval.approve").await, ("fail".into(), json!("not_eligible")));
    assert_eq!(app.audit_count("user.delete").await, 0);
}

#[tokio::test]
async fn an_approver_who_lost_eligibility_after_the_request_is_refused() {
    let app = TestApp::spawn().await;
    enable(&app, "user.delete", 1).await;
    let (a, b) = two_admins(&app).await;
    let carol = app.create_user("carol", "student", "General", "public").await;
    let (_, body) = a.delete(&format!("/api/users/{carol}")).await;
    let id = approval_id(&body);
    // B is demoted to staff before approving.
    let bob = app.user_id("bob").await;
    let (status, _) = a.put(&format!("/api/users/{bob}"), json!({ "role": "staff" })).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(b.post(&format!("/api/approvals/{id}/approve"), json!({})).await.0, StatusCode::FORBIDDEN);
    assert_eq!(last_reason(&app, "approval.approve").await, ("fail".into(), json!("not_eligible")));
    assert_eq!(status_of(&app, &id).await, "pending");
}

#[tokio::test]
async fn the_same_person_counts_once_whatever_sessions_they_use_and_two_approvals_need_two_people() {
    let app = TestApp::spawn().await;
    enable(&app, "user.delete", 2).await;
    let (a, b) = two_admins(&app).await;
    let b_again = app.session("bob").await;
    let carol = app.create_user("carol", "student", "General", "public").await;
    let (_, body) = a.delete(&format!("/api/users/{carol}")).await;
    let id = approval_id(&body);
    assert_eq!(body["approval"]["approvalsRequired"], 2);

    let (status, first) = b.post(&format!("/api/approvals/{id}/approve"), json!({})).await;
    assert_eq!((status, first["approval"]["status"].clone()), (StatusCode::OK, json!("pending")));
    assert_eq!(b_again.post(&format!("/api/approvals/{id}/approve"), json!({})).await.0, StatusCode::CONFLICT);
    assert_eq!(last_reason(&app, "approval.approve").await, ("fail".into(), json!("already_approved")));
    assert_eq!(app.audit_count("user.delete").await, 0, "one person is not two");

    let dana = app.signed_in_as("dana", "admin", "restricted").await;
    let (status, done) = dana.post(&format!("/api/approvals/{id}/approve"), json!({})).await;
    assert_eq!((status, done["approval"]["status"].clone()), (StatusCode::OK, json!("executed")));
    let deleted = app.audit("user.delete").await;
    assert_eq!(deleted.len(), 1);
    let (bob, dana) = (app.user_id("bob").await, app.user_id("dana").await);
    assert_eq!(deleted[0].details["approvedBy"], json!([bob, dana]));
    let gone: i64 = sqlx::query_scalar("SELECT count(*) FROM users WHERE id = $1")
        .bind(carol)
        .fetch_one(&mut app.owner_conn().await)
        .await
        .unwrap();
    assert_eq!(gone, 0);
}

#[tokio::test]
async fn an_approval_after_the_request_expired_is_refused_and_the_request_closed() {
    let app = TestApp::spawn().await;
    enable(&app, "user.delete", 1).await;
    let (a, b) = two_admins(&app).await;
    let carol = app.create_user("carol", "student", "General", "public").await;
    let (_, body) = a.delete(&format!("/api/users/{carol}")).await;
    let id = approval_id(&body);
    // Its time passes (sessions would lapse over 48 hours of the clock, so the request is aged instead).
    sqlx::query("UPDATE approvals SET expires_at = $2 WHERE id = $1::uuid")
        .bind(&id)
        .bind(app.state.clock.now() - time::Duration::seconds(1))
        .execute(&mut app.owner_conn().await)
        .await
        .unwrap();
    assert_eq!(b.post(&format!("/api/approvals/{id}/approve"), json!({})).await.0, StatusCode::CONFLICT);
    assert_eq!(last_reason(&app, "approval.approve").await, ("fail".into(), json!("expired")));
    assert_eq!(status_of(&app, &id).await, "expired");
    assert_eq!(app.audit_count("approval.expire").await, 1);
    assert_eq!(app.audit_count("user.delete").await, 0);
}

#[tokio::test]
async fn the_periodic_job_expires_requests_past_their_time() {
    let app = TestApp::spawn().await;
    enable(&app, "user.delete", 1).await;
    let (a, _) = two_admins(&app).await;
    let carol = app.create_user("carol", "student", "General", "public").await;
    let (_, body) = a.delete(&format!("/api/users/{carol}")).await;
    let id = approval_id(&body);
    assert_eq!(fortifile::approvals::sweep(&app.state).await.unwrap(), 0);
    app.clock.advance(time::Duration::hours(49));
    assert_eq!(fortifile::approvals::sweep(&app.state).await.unwrap(), 1);
    assert_eq!(status_of(&app, &id).await, "expired");
    let row = app.audit("approval.expire").await.pop().unwrap();
    assert_eq!(row.user_id, Some(app.user_id("alice").await));
}

#[tokio::test]
async fn a_request_fails_when_its_requester_lost_the_permission_before_approval() {
    let app = TestApp::spawn().await;
    enable(&app, "role.assign_privileged", 1).await;
    let (a, b) = two_admins(&app).await;
    let carol = app.create_user("carol", "staff", "General", "public").await;
    let (_, body) = a.post(&format!("/api/users/{carol}/roles"), json!({ "role": "admin" })).await;
    let id = approval_id(&body);
    // Alice loses admin (B demotes her; staff is not privileged, so it runs now).
    let alice = app.user_id("alice").await;
    assert_eq!(b.put(&format!("/api/users/{alice}"), json!({ "role": "staff" })).await.0, StatusCode::OK);
    let (status, answer) = b.post(&format!("/api/approvals/{id}/approve"), json!({})).await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    assert_eq!(answer["approval"]["status"], "failed");
    assert_eq!(answer["approval"]["reason"], "permission_revoked");
    assert_eq!(last_reason(&app, "approval.execute").await, ("fail".into(), json!("permission_revoked")));
    assert_eq!(roles_of(&app, "carol").await, ["staff"]);
    let assigned_admin = app.audit("role.assign").await.into_iter().filter(|r| r.details["role"] == "admin").count();
    assert_eq!(assigned_admin, 0);
}

#[tokio::test]
async fn a_declassification_approved_by_someone_below_the_files_classification_is_refused() {
    let app = TestApp::spawn().await;
    enable(&app, "file.declassify", 1).await;
    let a = app.signed_in_as("alice", "admin", "restricted").await;
    let low = app.signed_in_as("lou", "admin", "confidential").await;
    let high = app.signed_in_as("hal", "admin", "restricted").await;
    let file = a.upload_ok("plan.txt", b"the plan", Some("restricted")).await;
    let (status, body) = a.patch(&format!("/api/files/{file}"), json!({ "classification": "public" })).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    let id = approval_id(&body);
    // Lou cannot even see that it exists in the list.
    assert_eq!(low.get("/api/approvals").await.1["approvals"], json!([]));
    assert_eq!(low.post(&format!("/api/approvals/{id}/approve"), json!({})).await.0, StatusCode::FORBIDDEN);
    assert_eq!(last_reason(&app, "approval.approve").await, ("fail".into(), json!("not_eligible")));
    let (status, done) = high.post(&format!("/api/approvals/{id}/approve"), json!({})).await;
    assert_eq!((status, done["approval"]["status"].clone()), (StatusCode::OK, json!("executed")));
    let (_, view) = a.get(&format!("/api/files/{file}")).await;
    assert_eq!(view["file"]["classification"], "public");
    let declassify = app.audit("file.declassify").await;
    assert_eq!(declassify.len(), 1);
    assert_eq!(declassify[0].details["approvalId"], id.as_str());
}

#[tokio::test]
async fn raising_a_clearance_to_the_highest_level_waits_for_approval() {
    let app = TestApp::spawn().await;
    enable(&app, "user.clearance_raise", 1).await;
    let (a, b) = two_admins(&app).await;
    let carol = app.create_user("carol", "staff", "General", "public").await;
    // One step up is not the top: it runs now.
    let (status, _) = a.put(&format!("/api/users/{carol}"), json!({ "clearanceLevel": "confidential" })).await;
    assert_eq!(status, StatusCode::OK);
    let (status, body) = a.put(&format!("/api/users/{carol}"), json!({ "clearanceLevel": "restricted" })).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    // A password never waits in the request table.
    let (status, _) =
        a.put(&format!("/api/users/{carol}"), json!({ "clearanceLevel": "restricted", "password": "x" })).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    let id = approval_id(&body);
    assert_eq!(b.post(&format!("/api/approvals/{id}/approve"), json!({})).await.0, StatusCode::OK);
    let (_, user) = a.get(&format!("/api/users/{carol}")).await;
    assert_eq!(user["user"]["clearanceLevel"], "restricted");
    let update = app.audit("user.update").await.pop().unwrap();
    assert_eq!(update.details["approvalId"], id.as_str());
    assert_eq!(update.details["changes"]["clearanceLevel"]["after"], "restricted");
}

#[tokio::test]
async fn widening_an_administrative_permission_on_a_role_waits_for_approval() {
    let app = TestApp::spawn().await;
    enable(&app, "role.widen", 1).await;
    let (a, b) = two_admins(&app).await;
    let staff = app.role_id("staff").await;
    // A narrowing or an ordinary grant runs now.
    let ordinary = json!({ "permissions": { "file": { "upload": "department", "download": "department",
        "share": "department", "delete": "own", "classify": "own" } } });
    assert_eq!(a.put(&format!("/api/roles/{staff}"), ordinary).await.0, StatusCode::OK);
    let widen = json!({ "permissions": { "file": { "upload": "department", "download": "department",
        "share": "department", "delete": "own" }, "admin": { "view_logs": "tenant" } } });
    let (status, body) = a.put(&format!("/api/roles/{staff}"), widen).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    assert_eq!(body["approval"]["change"]["widened"][0]["permission"], "admin.view_logs");
    assert_eq!(app.audit_count("role.permission_grant").await, 1, "only the classify grant so far");
    let id = approval_id(&body);
    assert_eq!(b.post(&format!("/api/approvals/{id}/approve"), json!({})).await.0, StatusCode::OK);
    let (_, role) = a.get(&format!("/api/roles/{staff}")).await;
    assert_eq!(role["role"]["scopes"]["admin"]["view_logs"], "tenant");
    let grants = app.audit("role.permission_grant").await;
    assert_eq!(grants.last().unwrap().details["approvalId"], id.as_str());
}

#[tokio::test]
async fn resetting_another_users_second_factors_waits_for_approval() {
    let app = TestApp::spawn().await;
    enable(&app, "mfa.reset", 1).await;
    let (a, b) = two_admins(&app).await;
    let carol = app.create_user("carol", "staff", "General", "public").await;
    let (status, body) = a.post(&format!("/api/users/{carol}/mfa/reset"), json!({ "reason": "lost phone" })).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    assert_eq!(app.audit_count("auth.mfa.reset").await, 0);
    let id = approval_id(&body);
    assert_eq!(b.post(&format!("/api/approvals/{id}/approve"), json!({})).await.0, StatusCode::OK);
    let reset = app.audit("auth.mfa.reset").await;
    assert_eq!(reset.len(), 1);
    assert_eq!(reset[0].details["reason"], "lost phone");
    assert_eq!(reset[0].details["approvalId"], id.as_str());
}

#[tokio::test]
async fn an_export_is_approved_then_run_once_by_its_requester_with_the_same_filters() {
    let app = TestApp::spawn().await;
    enable(&app, "audit.export", 1).await;
    let (a, b) = two_admins(&app).await;
    let (status, body) = a.get("/api/audit-logs/export.csv?action=auth.login").await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    assert_eq!(app.audit_count("audit.export").await, 0);
    let id = approval_id(&body);
    // Not before approval, not by someone else, not with other filters.
    assert_eq!(
        a.get(&format!("/api/audit-logs/export.csv?action=auth.login&approval={id}")).await.0,
        StatusCode::CONFLICT
    );
    let (_, approved) = b.post(&format!("/api/approvals/{id}/approve"), json!({})).await;
    assert_eq!(approved["approval"]["status"], "approved");
    assert_eq!(
        b.get(&format!("/api/audit-logs/export.csv?action=auth.login&approval={id}")).await.0,
        StatusCode::FORBIDDEN
    );
    assert_eq!(
        a.get(&format!("/api/audit-logs/export.jsonl?action=auth.login&approval={id}")).await.0,
        StatusCode::CONFLICT
    );
    assert_eq!(a.get(&format!("/api/audit-logs/export.csv?approval={id}")).await.0, StatusCode::CONFLICT);
    let (status, csv) = a.get(&format!("/api/audit-logs/export.csv?action=auth.login&approval={id}")).await;
    assert_eq!(status, StatusCode::OK);
    assert!(csv.as_str().unwrap().starts_with("time,user"), "{csv}");
    assert_eq!(
        a.get(&format!("/api/audit-logs/export.csv?action=auth.login&approval={id}")).await.0,
        StatusCode::CONFLICT
    );
    let exports = app.audit("audit.export").await;
    assert_eq!(exports.len(), 1);
    assert_eq!(exports[0].details["approvalId"], id.as_str());
    assert_eq!(status_of(&app, &id).await, "executed");
    let failed = app.audit("approval.execute").await.into_iter().filter(|r| r.result == "fail").count();
    assert_eq!(failed, 5, "each refused run is recorded");
}

#[tokio::test]
async fn disabling_a_policy_is_itself_held_for_approval() {
    let app = TestApp::spawn().await;
    let (a, b) = two_admins(&app).await;
    // With policy.change off, turning it on runs at once (and is audited).
    let (status, body) = a.put("/api/approval-policies/policy.change", json!({ "enabled": true })).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(app.audit_count("approval.policy_change").await, 1);
    let (status, body) = a.put("/api/approval-policies/policy.change", json!({ "enabled": false })).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    let (_, policy) = a.get("/api/approval-policies/policy.change").await;
    assert_eq!(policy["policy"]["enabled"], true, "still on until approved");
    let id = approval_id(&body);
    assert_eq!(b.post(&format!("/api/approvals/{id}/approve"), json!({})).await.0, StatusCode::OK);
    let (_, policy) = a.get("/api/approval-policies/policy.change").await;
    assert_eq!(policy["policy"]["enabled"], false);
    assert_eq!(app.audit("approval.policy_change").await[1].details["approvalId"], id.as_str());
    let (_, all) = a.get("/api/approval-policies").await;
    assert_eq!(all["policies"].as_array().unwrap().len(), 10);
}

#[tokio::test]
async fn a_policy_names_only_existing_roles_and_sane_numbers() {
    let app = TestApp::spawn().await;
    let a = app.admin().await;
    let put = |body: Value| a.put("/api/approval-policies/user.delete", body);
    assert_eq!(put(json!({ "approverRoles": ["nobody"] })).await.0, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(put(json!({ "approvalsRequired": 0 })).await.0, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(put(json!({ "timeoutHours": 0 })).await.0, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(a.get("/api/approval-policies/no.such").await.0, StatusCode::NOT_FOUND);
    let (status, body) = put(json!({ "enabled": true, "approverRoles": ["Staff"] })).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["policy"]["approverRoles"], json!(["staff"]));
    let student = app.signed_in_as("sam", "student", "public").await;
    assert_eq!(student.get("/api/approval-policies").await.0, StatusCode::FORBIDDEN);
}

#[tokio::test]
async fn named_approver_roles_decide_who_may_approve() {
    let app = TestApp::spawn().await;
    enable(&app, "user.delete", 1).await;
    sqlx::query("UPDATE approval_policies SET approver_roles = '{staff}' WHERE operation = 'user.delete'")
        .execute(&mut app.owner_conn().await)
        .await
        .unwrap();
    let (a, b) = two_admins(&app).await;
    let staff = app.signed_in_as("sid", "staff", "restricted").await;
    let carol = app.create_user("carol", "student", "General", "public").await;
    let (_, body) = a.delete(&format!("/api/users/{carol}")).await;
    let id = approval_id(&body);
    assert_eq!(b.post(&format!("/api/approvals/{id}/approve"), json!({})).await.0, StatusCode::FORBIDDEN);
    assert_eq!(staff.post(&format!("/api/approvals/{id}/approve"), json!({})).await.0, StatusCode::OK);
    assert_eq!(app.audit_count("user.delete").await, 1);
}

#[tokio::test]
async fn a_request_can_be_denied_with_a_reason_or_cancelled_by_its_requester_only() {
    let app = TestApp::spawn().await;
    enable(&app, "user.delete", 1).await;
    let (a, b) = two_admins(&app).await;
    let carol = app.create_user("carol", "student", "General", "public").await;
    let (_, first) = a.delete(&format!("/api/users/{carol}")).await;
    let first = approval_id(&first);
    assert_eq!(
        b.post(&format!("/api/approvals/{first}/deny"), json!({ "reason": "  " })).await.0,
        StatusCode::UNPROCESSABLE_ENTITY
    );
    let (status, denied) = b.post(&format!("/api/approvals/{first}/deny"), json!({ "reason": "still needed" })).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        (denied["approval"]["status"].clone(), denied["approval"]["reason"].clone()),
        (json!("denied"), json!("still needed"))
    );
    assert_eq!(b.post(&format!("/api/approvals/{first}/approve"), json!({})).await.0, StatusCode::CONFLICT);

    let (_, second) = a.delete(&format!("/api/users/{carol}")).await;
    let second = approval_id(&second);
    assert_eq!(b.post(&format!("/api/approvals/{second}/cancel"), json!({})).await.0, StatusCode::FORBIDDEN);
    assert_eq!(last_reason(&app, "approval.cancel").await, ("fail".into(), json!("not_requester")));
    assert_eq!(
        a.post(&format!("/api/approvals/{second}/deny"), json!({ "reason": "mine" })).await.0,
        StatusCode::FORBIDDEN
    );
    let (status, cancelled) = a.post(&format!("/api/approvals/{second}/cancel"), json!({})).await;
    assert_eq!((status, cancelled["approval"]["status"].clone()), (StatusCode::OK, json!("cancelled")));
    assert_eq!(app.audit_count("user.delete").await, 0);
    assert_eq!(app.audit("approval.deny").await[0].details["reason"], "still needed");
}

#[tokio::test]
async fn an_api_key_cannot_request_an_operation_under_dual_control() {
    let app = TestApp::spawn().await;
    enable(&app, "user.delete", 1).await;
    let (a, _) = two_admins(&app).await;
    let carol = app.create_user("carol", "student", "General", "public").await;
    let (status, key) = a.post("/me/api-keys", json!({ "name": "cleanup" })).await;
    assert_eq!(status, StatusCode::CREATED, "{key}");
    let key = key["apiKey"]["key"].as_str().unwrap();
    let res = app.client.delete(app.url(&format!("/api/users/{carol}"))).bearer_auth(key).send().await.unwrap();
    assert_eq!(res.status(), StatusCode::FORBIDDEN);
    let denied = app.audit("rbac.denied").await.pop().unwrap();
    assert_eq!(denied.details["reason"], "api_key_under_dual_control");
    assert_eq!(app.audit_count("approval.request").await, 0);
    // Nor approve, nor list: those are for people.
    let res = app.client.get(app.url("/api/approvals")).bearer_auth(key).send().await.unwrap();
    assert!(res.status() == StatusCode::UNAUTHORIZED || res.status() == StatusCode::FORBIDDEN, "{}", res.status());
}

#[tokio::test]
async fn an_account_is_not_created_or_approved_with_what_dual_control_would_hold() {
    let app = TestApp::spawn_with(|c| c.registration = fortifile::config::Registration::Approval).await;
    enable(&app, "role.assign_privileged", 1).await;
    let a = app.admin().await;
    let body = |role: &str| {
        json!({ "username": "newbie", "email": "newbie@example.org", "password": "correct horse battery staple 9",
                "role": role, "department": "General", "clearanceLevel": "public" })
    };
    assert_eq!(a.post("/api/users", body("admin")).await.0, StatusCode::CONFLICT);
    assert_eq!(a.post("/api/users", body("staff")).await.0, StatusCode::CREATED);
    // Nor is a self-registered account approved into one.
    assert_eq!(app.register("pat").await.status(), StatusCode::CREATED);
    let pat = app.user_id("pat").await;
    let path = format!("/api/users/{pat}/approve");
    assert_eq!(a.post(&path, json!({ "role": "admin" })).await.0, StatusCode::CONFLICT);
    assert_eq!(a.post(&path, json!({ "role": "student" })).await.0, StatusCode::OK);
}

#[tokio::test]
async fn the_audit_log_filters_by_approval_id() {
    let app = TestApp::spawn().await;
    enable(&app, "user.delete", 1).await;
    let (a, b) = two_admins(&app).await;
    let carol = app.create_user("carol", "student", "General", "public").await;
    let (_, body) = a.delete(&format!("/api/users/{carol}")).await;
    let id = approval_id(&body);
    b.post(&format!("/api/approvals/{id}/approve"), json!({})).await;
    let (status, logs) = a.get(&format!("/api/audit-logs?approvalId={id}")).await;
    assert_eq!(status, StatusCode::OK, "{logs}");
    let mut actions: Vec<&str> =
        logs["logs"].as_array().unwrap().iter().map(|l| l["action"].as_str().unwrap()).collect();
    actions.sort();
    assert_eq!(actions, ["approval.approve", "approval.execute", "approval.request", "user.delete"]);
    assert_eq!(a.get("/api/audit-logs?approval=x").await.0, StatusCode::UNPROCESSABLE_ENTITY);
    let _ = Uuid::nil();
}

#[tokio::test]
async fn the_person_a_request_is_about_cannot_approve_it() {
    let app = TestApp::spawn().await;
    enable(&app, "user.clearance_raise", 1).await;
    let a = app.signed_in_as("alice", "admin", "restricted").await;
    let b = app.signed_in_as("bob", "admin", "confidential").await;
    let c = app.signed_in_as("cleo", "admin", "restricted").await;
    let bob = app.user_id("bob").await;
    let (status, body) = a.put(&format!("/api/users/{bob}"), json!({ "clearanceLevel": "restricted" })).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    let id = approval_id(&body);
    assert_eq!(b.post(&format!("/api/approvals/{id}/approve"), json!({})).await.0, StatusCode::FORBIDDEN);
    assert_eq!(last_reason(&app, "approval.approve").await, ("fail".into(), json!("beneficiary")));
    assert_eq!(status_of(&app, &id).await, "pending");
    assert_eq!(c.post(&format!("/api/approvals/{id}/approve"), json!({})).await.0, StatusCode::OK);
    assert_eq!(status_of(&app, &id).await, "executed");
}

#[tokio::test]
async fn a_vote_from_someone_who_lost_eligibility_since_no_longer_counts() {
    let app = TestApp::spawn().await;
    enable(&app, "user.delete", 2).await;
    let (a, b) = two_admins(&app).await;
    let c = app.signed_in_as("cleo", "admin", "restricted").await;
    let d = app.signed_in_as("dora", "admin", "restricted").await;
    let carol = app.create_user("carol", "student", "General", "public").await;
    let (_, body) = a.delete(&format!("/api/users/{carol}")).await;
    let id = approval_id(&body);
    assert_eq!(b.post(&format!("/api/approvals/{id}/approve"), json!({})).await.0, StatusCode::OK);
    // B is demoted: their approval stops counting.
    let bob = app.user_id("bob").await;
    assert_eq!(a.put(&format!("/api/users/{bob}"), json!({ "role": "staff" })).await.0, StatusCode::OK);
    let (status, body) = c.post(&format!("/api/approvals/{id}/approve"), json!({})).await;
    assert_eq!((status, &body["approval"]["status"]), (StatusCode::OK, &json!("pending")), "{body}");
    assert_eq!(app.audit("approval.approve").await.last().unwrap().details["approvals"], 1);
    let (_, body) = d.post(&format!("/api/approvals/{id}/approve"), json!({})).await;
    assert_eq!(body["approval"]["status"], "executed", "{body}");
}

#[tokio::test]
async fn a_role_that_makes_approvers_is_assigned_only_under_dual_control_and_keeps_its_name() {
    let app = TestApp::spawn().await;
    enable(&app, "role.assign_privileged", 1).await;
    enable(&app, "user.delete", 1).await;
    sqlx::query("UPDATE approval_policies SET approver_roles = '{staff}' WHERE operation = 'user.delete'")
        .execute(&mut app.owner_conn().await)
        .await
        .unwrap();
    let (a, _b) = two_admins(&app).await;
    let carol = app.create_user("carol", "student", "General", "public").await;
    // Giving carol `staff` would make her an approver of deletions: held.
    let (status, body) = a.post(&format!("/api/users/{carol}/roles"), json!({ "role": "staff" })).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    assert_eq!(roles_of(&app, "carol").await, ["student"]);
    // Nor can the approver role be renamed away, or another role take its name.
    let staff = app.role_id("staff").await;
    let (status, _) = a.put(&format!("/api/roles/{staff}"), json!({ "name": "staff-old" })).await;
    assert_eq!(status, StatusCode::CONFLICT);
    let (_, body) = a.post("/api/roles", json!({ "name": "helpers", "permissions": {} })).await;
    let helpers = body["role"]["id"].as_str().unwrap().to_string();
    let (status, body) = a.put(&format!("/api/roles/{helpers}"), json!({ "name": "Staff" })).await;
    assert_eq!(status, StatusCode::CONFLICT, "{body}");
    // An ordinary role is still assigned at once.
    let (status, _) = a.post(&format!("/api/users/{carol}/roles"), json!({ "role": "helpers" })).await;
    assert_eq!(status, StatusCode::CREATED);
}

#[tokio::test]
async fn an_approved_export_can_still_be_denied_before_it_runs() {
    let app = TestApp::spawn().await;
    enable(&app, "audit.export", 1).await;
    let (a, b) = two_admins(&app).await;
    let c = app.signed_in_as("cleo", "admin", "restricted").await;
    let (_, body) = a.get("/api/audit-logs/export.csv?action=auth.login").await;
    let id = approval_id(&body);
    assert_eq!(b.post(&format!("/api/approvals/{id}/approve"), json!({})).await.1["approval"]["status"], "approved");
    let (status, body) = c.post(&format!("/api/approvals/{id}/deny"), json!({ "reason": "too wide" })).await;
    assert_eq!((status, &body["approval"]["status"]), (StatusCode::OK, &json!("denied")), "{body}");
    let run = a.get(&format!("/api/audit-logs/export.csv?action=auth.login&approval={id}")).await.0;
    assert_eq!(run, StatusCode::CONFLICT);
    assert_eq!(app.audit_count("audit.export").await, 0);
}

#[tokio::test]
async fn an_export_whose_approver_lost_eligibility_cannot_be_run() {
    let app = TestApp::spawn().await;
    enable(&app, "audit.export", 1).await;
    let (a, b) = two_admins(&app).await;
    let (_, body) = a.get("/api/audit-logs/export.csv?action=auth.login").await;
    let id = approval_id(&body);
    b.post(&format!("/api/approvals/{id}/approve"), json!({})).await;
    let bob = app.user_id("bob").await;
    assert_eq!(a.put(&format!("/api/users/{bob}"), json!({ "role": "staff" })).await.0, StatusCode::OK);
    let run = a.get(&format!("/api/audit-logs/export.csv?action=auth.login&approval={id}")).await.0;
    assert_eq!(run, StatusCode::CONFLICT);
    assert_eq!(last_reason(&app, "approval.execute").await, ("fail".into(), json!("approvals_lapsed")));
    assert_eq!(app.audit_count("audit.export").await, 0);
}

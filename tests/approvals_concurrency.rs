//! Dual control under concurrency: a request runs at most once, whatever
//! arrives at the same time (its state changes under a row lock).

mod common;

use common::TestApp;
use reqwest::StatusCode;
use serde_json::json;

async fn enable(app: &TestApp, operation: &str) {
    sqlx::query(
        "INSERT INTO approval_policies (tenant_id, operation, enabled, timeout_hours) VALUES ($1, $2, true, 48)",
    )
    .bind(app.default_tenant)
    .bind(operation)
    .execute(&mut app.owner_conn().await)
    .await
    .unwrap();
}

#[tokio::test]
async fn twenty_concurrent_approvals_by_twenty_approvers_execute_the_request_once() {
    let app = TestApp::spawn().await;
    enable(&app, "role.assign_privileged").await;
    let requester = app.signed_in_as("alice", "admin", "restricted").await;
    let mut approvers = Vec::new();
    for i in 0..20 {
        approvers.push(app.signed_in_as(&format!("approver{i}"), "admin", "restricted").await);
    }
    let carol = app.create_user("carol", "staff", "General", "public").await;
    let (status, body) = requester.post(&format!("/api/users/{carol}/roles"), json!({ "role": "admin" })).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    let id = body["approval"]["id"].as_str().unwrap().to_string();

    let path = format!("/api/approvals/{id}/approve");
    let answers = futures::future::join_all(approvers.iter().map(|a| a.post(&path, json!({})))).await;
    let ok = answers.iter().filter(|(s, _)| *s == StatusCode::OK).count();
    let conflict = answers.iter().filter(|(s, _)| *s == StatusCode::CONFLICT).count();
    assert_eq!((ok, conflict), (1, 19), "{answers:?}");
    let assigned = app.audit("role.assign").await;
    assert_eq!(assigned.len(), 1, "exactly one role.assign row");
    assert_eq!(assigned[0].details["approvalId"], id.as_str());
    let executed = app.audit("approval.execute").await;
    assert_eq!((executed.len(), executed[0].result.as_str()), (1, "success"));
    assert_eq!(app.audit("approval.approve").await.iter().filter(|r| r.result == "success").count(), 1);
    let holders: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM user_roles ur JOIN roles r ON r.id = ur.role_id WHERE ur.user_id = $1 AND r.name = 'admin'",
    )
    .bind(carol)
    .fetch_one(&mut app.owner_conn().await)
    .await
    .unwrap();
    assert_eq!(holders, 1);
}

#[tokio::test]
async fn twenty_concurrent_runs_of_an_approved_export_deliver_it_once() {
    let app = TestApp::spawn().await;
    enable(&app, "audit.export").await;
    let requester = app.signed_in_as("alice", "admin", "restricted").await;
    let approver = app.signed_in_as("bob", "admin", "restricted").await;
    let (status, body) = requester.get("/api/audit-logs/export.jsonl").await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    let id = body["approval"]["id"].as_str().unwrap().to_string();
    assert_eq!(approver.post(&format!("/api/approvals/{id}/approve"), json!({})).await.0, StatusCode::OK);

    let path = format!("/api/audit-logs/export.jsonl?approval={id}");
    let answers = futures::future::join_all((0..20).map(|_| requester.get(&path))).await;
    let ok = answers.iter().filter(|(s, _)| *s == StatusCode::OK).count();
    let conflict = answers.iter().filter(|(s, _)| *s == StatusCode::CONFLICT).count();
    assert_eq!((ok, conflict), (1, 19), "{:?}", answers.iter().map(|a| a.0).collect::<Vec<_>>());
    assert_eq!(app.audit_count("audit.export").await, 1);
    let runs = app.audit("approval.execute").await;
    assert_eq!(runs.iter().filter(|r| r.result == "success").count(), 1);
    assert_eq!(runs.iter().filter(|r| r.result == "fail").count(), 19);
}

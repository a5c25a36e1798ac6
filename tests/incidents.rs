//! Incident tracking (seed 000 §6) through the JSON API.

mod common;

use common::TestApp;
use reqwest::StatusCode;
use serde_json::{Value, json};
use uuid::Uuid;

/// The id of the newest audit row of `action`.
async fn audit_id(app: &TestApp, action: &str) -> Uuid {
    sqlx::query_scalar("SELECT id FROM audit_logs WHERE action = $1 ORDER BY created_at DESC LIMIT 1")
        .bind(action)
        .fetch_one(&mut app.owner_conn().await)
        .await
        .unwrap()
}

#[tokio::test]
async fn an_admin_creates_an_incident_from_an_audit_entry_and_moves_it_to_investigating() {
    let app = TestApp::spawn().await;
    let admin = app.admin().await;
    app.login_with(&common::new_client(), "root", "wrong password entirely").await;
    let entry = audit_id(&app, "auth.login").await;

    let body = json!({ "title": "Brute force on root", "description": "Failed logins", "severity": "high",
                       "relatedAuditLogId": entry });
    let (status, created) = admin.post("/admin/incidents", body).await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    let incident = &created["incident"];
    assert_eq!(incident["status"], "open");
    assert_eq!(incident["severity"], "high");
    assert_eq!(incident["createdBy"], "root");
    assert_eq!(incident["relatedAuditLogId"], entry.to_string());
    let id = incident["id"].as_str().unwrap().to_string();
    let row = &app.audit("incident.create").await[0];
    assert_eq!(row.details["title"], "Brute force on root");
    assert_eq!(row.target_id.as_deref(), Some(id.as_str()));

    let (status, updated) = admin.patch(&format!("/admin/incidents/{id}"), json!({ "status": "investigating" })).await;
    assert_eq!(status, StatusCode::OK, "{updated}");
    assert_eq!(updated["incident"]["status"], "investigating");
    assert_eq!(updated["incident"]["severity"], "high");
    let row = &app.audit("incident.update").await[0];
    assert_eq!(row.details["changes"], json!({ "status": { "before": "open", "after": "investigating" } }));

    // Setting what is already set changes nothing and records nothing.
    let (status, _) = admin.patch(&format!("/admin/incidents/{id}"), json!({ "status": "investigating" })).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(app.audit_count("incident.update").await, 1);

    let (_, got) = admin.get(&format!("/api/incidents/{id}")).await;
    assert_eq!(got["incident"]["title"], "Brute force on root");
}

#[tokio::test]
async fn invalid_status_severity_and_audit_references_are_refused() {
    let app = TestApp::spawn().await;
    let admin = app.admin().await;
    let bad = [
        json!({ "title": "x", "severity": "critical" }),
        json!({ "title": "", "severity": "low" }),
        json!({ "title": "x", "severity": "low", "relatedAuditLogId": Uuid::new_v4() }),
        json!({ "title": "x", "severity": "low", "status": "resolved" }),
    ];
    for body in bad {
        let (status, answer) = admin.post("/admin/incidents", body.clone()).await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body} → {answer}");
    }
    // Another tenant's audit entry is as unknown as a made-up one.
    let (other, _) = fortifile::db::seed::ensure_tenant(&app.owner, "other", "Other org").await.unwrap();
    let foreign: Uuid = sqlx::query_scalar(
        "INSERT INTO audit_logs (tenant_id, action, result) VALUES ($1, 'auth.login', 'fail') RETURNING id",
    )
    .bind(other)
    .fetch_one(&mut app.owner_conn().await)
    .await
    .unwrap();
    let (status, _) =
        admin.post("/admin/incidents", json!({ "title": "x", "severity": "low", "relatedAuditLogId": foreign })).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(app.audit_count("incident.create").await, 0);

    let (_, created) = admin.post("/admin/incidents", json!({ "title": "ok", "severity": "low" })).await;
    let id = created["incident"]["id"].as_str().unwrap().to_string();
    for body in
        [json!({ "status": "closed" }), json!({ "severity": "urgent" }), json!({}), json!({ "title": "renamed" })]
    {
        let (status, _) = admin.patch(&format!("/admin/incidents/{id}"), body.clone()).await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    }
    let (status, _) =
        admin.patch(&format!("/admin/incidents/{}", Uuid::new_v4()), json!({ "status": "resolved" })).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn incidents_are_listed_newest_first_and_filtered_by_status_and_severity() {
    let app = TestApp::spawn().await;
    let admin = app.admin().await;
    for (title, severity) in [("one", "low"), ("two", "high"), ("three", "high")] {
        admin.post("/admin/incidents", json!({ "title": title, "severity": severity })).await;
        app.clock.advance(time::Duration::seconds(1));
    }
    let (_, all) = admin.get("/api/incidents").await;
    let titles: Vec<&str> = all["incidents"].as_array().unwrap().iter().map(|i| i["title"].as_str().unwrap()).collect();
    assert_eq!(titles, ["three", "two", "one"]);
    let (_, high) = admin.get("/api/incidents?severity=high&limit=1").await;
    assert_eq!(high["incidents"][0]["title"], "three");
    let next = high["nextCursor"].as_str().unwrap().to_string();
    let (_, rest) = admin.get(&format!("/api/incidents?severity=high&limit=1&after={next}")).await;
    assert_eq!(rest["incidents"][0]["title"], "two");
    assert_eq!(rest["nextCursor"], Value::Null);
    let (_, open) = admin.get("/api/incidents?status=resolved").await;
    assert_eq!(open["incidents"], json!([]));
    assert_eq!(admin.get("/api/incidents?status=closed").await.0, StatusCode::UNPROCESSABLE_ENTITY);
}

#[tokio::test]
async fn without_incident_manage_every_incident_route_is_refused_and_recorded() {
    let app = TestApp::spawn().await;
    let admin = app.admin().await;
    let (_, created) = admin.post("/admin/incidents", json!({ "title": "ok", "severity": "low" })).await;
    let id = created["incident"]["id"].as_str().unwrap().to_string();
    let staff = app.signed_in_as("carol", "staff", "restricted").await;
    let before = app.audit_count("rbac.denied").await;
    assert_eq!(
        staff.post("/admin/incidents", json!({ "title": "x", "severity": "low" })).await.0,
        StatusCode::FORBIDDEN
    );
    assert_eq!(
        staff.patch(&format!("/admin/incidents/{id}"), json!({ "status": "resolved" })).await.0,
        StatusCode::FORBIDDEN
    );
    assert_eq!(staff.get("/api/incidents").await.0, StatusCode::FORBIDDEN);
    assert_eq!(staff.get(&format!("/api/incidents/{id}")).await.0, StatusCode::FORBIDDEN);
    assert_eq!(app.audit_count("rbac.denied").await, before + 4);
}

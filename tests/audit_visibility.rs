//! Who sees what of the audit log: mandatory access control on every surface
//! that shows entries (the API, the dashboard, both exports, highlights,
//! incidents), and incidents that neither leak entries to people without
//! `admin.view_logs` nor reach beyond their grant's scope.

mod common;

use common::{Session, TestApp};
use reqwest::StatusCode;
use serde_json::{Value, json};
use uuid::Uuid;

const SECRET_NAME: &str = "merger-plan-orion.pdf";
const SECRET_BYTES: &[u8] = b"%PDF-1.7 the orion merger terms";

/// A role with the given grants, and a user holding it with `clearance`.
async fn person(app: &TestApp, admin: &Session, role: &str, grants: Value, user: &str, clearance: &str) -> Session {
    let (status, body) = admin.post("/api/roles", json!({ "name": role, "permissions": grants })).await;
    assert!(status == StatusCode::CREATED || status == StatusCode::CONFLICT, "{body}");
    app.signed_in_as(user, role, clearance).await
}

async fn newest_audit_id(app: &TestApp, action: &str) -> Uuid {
    sqlx::query_scalar("SELECT id FROM audit_logs WHERE action = $1 ORDER BY created_at DESC LIMIT 1")
        .bind(action)
        .fetch_one(&mut app.owner_conn().await)
        .await
        .unwrap()
}

async fn page(session: &Session, path: &str) -> (StatusCode, String) {
    let res = session.client.get(format!("{}{path}", session.base)).header("accept", "text/html").send().await.unwrap();
    (res.status(), res.text().await.unwrap())
}

async fn text(session: &Session, path: &str) -> String {
    let res = session.client.get(format!("{}{path}", session.base)).send().await.unwrap();
    assert_eq!(res.status(), StatusCode::OK, "{path}");
    res.text().await.unwrap()
}

fn assert_hidden(what: &str, body: &str, sha: &str) {
    assert!(!body.contains(SECRET_NAME), "{what} shows the restricted file's name");
    assert!(!body.contains(sha), "{what} shows the restricted file's hash");
}

#[tokio::test]
async fn a_reader_below_a_documents_classification_sees_its_audit_entries_redacted_on_every_surface() {
    let app = TestApp::spawn_with(|c| c.highlights.bulk_downloads.count = 2).await;
    let admin = app.admin().await;
    let id = admin.upload_ok(SECRET_NAME, SECRET_BYTES, Some("restricted")).await;
    for _ in 0..2 {
        assert_eq!(admin.download(id).await.status(), StatusCode::OK);
    }
    let sha = common::sha256_hex(SECRET_BYTES);
    let upload_entry = newest_audit_id(&app, "file.upload").await;
    let (status, _) = admin
        .post(
            "/admin/incidents",
            json!({ "title": "Check the upload", "severity": "low", "relatedAuditLogId": upload_entry }),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED);
    let incident = admin.get("/api/incidents").await.1["incidents"][0]["id"].as_str().unwrap().to_string();

    let grants = json!({ "admin": { "view_logs": "tenant" }, "incident": { "manage": "tenant" } });
    let auditor = person(&app, &admin, "auditor", grants, "pat", "public").await;

    let (status, logs) = auditor.get("/api/audit-logs?limit=1000").await;
    assert_eq!(status, StatusCode::OK);
    let about_file: Vec<&Value> =
        logs["logs"].as_array().unwrap().iter().filter(|l| l["targetId"] == json!(id.to_string())).collect();
    assert_eq!(about_file.len(), 3, "the upload and two downloads are listed");
    for entry in &about_file {
        assert_eq!(entry["redacted"], true, "{entry}");
        assert_eq!(entry["details"], json!({ "redacted": "above your clearance" }));
    }
    assert_hidden("the log API", &logs.to_string(), &sha);
    assert_hidden("the CSV export", &text(&auditor, "/api/audit-logs/export.csv").await, &sha);
    assert_hidden("the JSON Lines export", &text(&auditor, "/api/audit-logs/export.jsonl").await, &sha);
    let highlights = text(&auditor, "/api/audit-logs/highlights").await;
    assert!(highlights.contains("bulk_downloads"), "the downloads are still counted: {highlights}");
    assert_hidden("the highlights", &highlights, &sha);
    let (status, dashboard) = page(&auditor, "/admin/logs").await;
    assert_eq!(status, StatusCode::OK);
    assert!(dashboard.contains("above your clearance"));
    assert_hidden("the dashboard", &dashboard, &sha);
    let (_, detail) = page(&auditor, &format!("/admin/incidents/{incident}")).await;
    assert!(detail.contains("Related audit entry"));
    assert_hidden("an incident's related entry", &detail, &sha);
    let (_, new) = page(&auditor, &format!("/admin/incidents/new?audit={upload_entry}")).await;
    assert_hidden("the new-incident page", &new, &sha);

    // Someone cleared for the document sees the entries whole.
    let (_, logs) = admin.get("/api/audit-logs?action=file.upload").await;
    assert_eq!(logs["logs"][0]["details"]["name"], SECRET_NAME);
    assert_eq!(logs["logs"][0]["redacted"], false);
}

#[tokio::test]
async fn without_admin_view_logs_incidents_neither_show_nor_link_nor_probe_audit_entries() {
    let app = TestApp::spawn().await;
    let admin = app.admin().await;
    let id = admin.upload_ok(SECRET_NAME, SECRET_BYTES, Some("public")).await;
    let sha = common::sha256_hex(SECRET_BYTES);
    let entry = newest_audit_id(&app, "file.upload").await;
    let (status, created) = admin
        .post("/admin/incidents", json!({ "title": "Linked", "severity": "low", "relatedAuditLogId": entry }))
        .await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    let linked = created["incident"]["id"].as_str().unwrap().to_string();

    let handler =
        person(&app, &admin, "handler", json!({ "incident": { "manage": "tenant" } }), "hal", "restricted").await;
    let (_, new) = page(&handler, &format!("/admin/incidents/new?audit={entry}")).await;
    assert!(!new.contains("Related audit entry"));
    assert_hidden("the new-incident page", &new, &sha);
    let (status, detail) = page(&handler, &format!("/admin/incidents/{linked}")).await;
    assert_eq!(status, StatusCode::OK);
    assert_hidden("an incident's related entry", &detail, &sha);
    assert!(!detail.contains(&id.to_string()));
    let (_, api) = handler.get(&format!("/api/incidents/{linked}")).await;
    assert_eq!(api["incident"]["relatedAuditLogId"], Value::Null, "not even which entry: {api}");
    let (_, api) = admin.get(&format!("/api/incidents/{linked}")).await;
    assert_eq!(api["incident"]["relatedAuditLogId"], json!(entry.to_string()));

    // Linking an entry that exists answers exactly like one that does not.
    let link = |audit: Uuid| json!({ "title": "Probe", "severity": "low", "relatedAuditLogId": audit });
    let existing = handler.post("/admin/incidents", link(entry)).await;
    let unknown = handler.post("/admin/incidents", link(Uuid::new_v4())).await;
    assert_eq!(existing.0, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(existing, unknown);
}

#[tokio::test]
async fn the_incident_grants_scope_decides_which_incidents_are_listed_opened_and_changed() {
    let app = TestApp::spawn().await;
    let admin = app.admin().await;
    admin.post("/api/departments", json!({ "name": "Research" })).await;
    let (_, general) =
        admin.post("/admin/incidents", json!({ "title": "General's incident", "severity": "low" })).await;
    let general = general["incident"]["id"].as_str().unwrap().to_string();

    let grants = json!({ "incident": { "manage": "department" } });
    let (status, _) = admin.post("/api/roles", json!({ "name": "deptsec", "permissions": grants })).await;
    assert_eq!(status, StatusCode::CREATED);
    app.create_user("rae", "deptsec", "Research", "public").await;
    let rae = app.session("rae").await;
    let (_, research) =
        rae.post("/admin/incidents", json!({ "title": "Research's incident", "severity": "low" })).await;
    let research = research["incident"]["id"].as_str().unwrap().to_string();
    let gil = app.signed_in_as("gil", "deptsec", "public").await;

    let titles = |list: Value| -> Vec<String> {
        list["incidents"].as_array().unwrap().iter().map(|i| i["title"].as_str().unwrap().to_string()).collect()
    };
    assert_eq!(titles(gil.get("/api/incidents").await.1), ["General's incident"]);
    assert_eq!(titles(rae.get("/api/incidents").await.1), ["Research's incident"]);
    assert_eq!(titles(admin.get("/api/incidents").await.1).len(), 2, "tenant scope sees both");

    let before = app.audit_count("rbac.denied").await;
    assert_eq!(gil.get(&format!("/api/incidents/{research}")).await.0, StatusCode::FORBIDDEN);
    let (status, _) = gil.patch(&format!("/admin/incidents/{research}"), json!({ "status": "resolved" })).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert_eq!(page(&gil, &format!("/admin/incidents/{research}")).await.0, StatusCode::FORBIDDEN);
    let denied = app.audit("rbac.denied").await;
    assert_eq!(denied.len(), before + 3);
    assert!(denied[before..].iter().all(|r| r.details["reason"] == "outside_scope"));
    assert_eq!(admin.get(&format!("/api/incidents/{research}")).await.1["incident"]["status"], "open");
    assert_eq!(
        gil.patch(&format!("/admin/incidents/{general}"), json!({ "severity": "high" })).await.0,
        StatusCode::OK
    );

    // Own scope: only what one opened.
    admin.post("/api/roles", json!({ "name": "ownsec", "permissions": { "incident": { "manage": "own" } } })).await;
    let olga = app.signed_in_as("olga", "ownsec", "public").await;
    assert!(titles(olga.get("/api/incidents").await.1).is_empty());
    assert_eq!(olga.get(&format!("/api/incidents/{general}")).await.0, StatusCode::FORBIDDEN);
    olga.post("/admin/incidents", json!({ "title": "Olga's incident", "severity": "low" })).await;
    assert_eq!(titles(olga.get("/api/incidents").await.1), ["Olga's incident"]);
}

//! Documents through the API: the "Done when" scenario, RBAC scopes,
//! shares, classification changes and deletion, each with its denials.

mod common;

use common::{Session, TestApp, sha256_hex, stored_objects as objects};
use fortifile::clock::Clock;
use reqwest::StatusCode;
use serde_json::{Value, json};
use uuid::Uuid;

async fn mac_denials(app: &TestApp) -> usize {
    app.audit_count("mac.denied").await
}

#[tokio::test]
async fn the_documents_scenario_holds_end_to_end_through_the_api() {
    let app = TestApp::spawn().await;
    let student = app.signed_in_as("pupil", "student", "public").await;
    let staff = app.signed_in_as("carol", "staff", "confidential").await;
    let colleague = app.signed_in_as("dave", "staff", "confidential").await;

    // A public student cannot upload a confidential file.
    let (status, body) = student.upload("plan.txt", b"secret plan", Some("confidential"), None).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    let denied = app.audit("mac.denied").await;
    assert_eq!(denied.len(), 1);
    assert_eq!(denied[0].details["operation"], "upload");
    assert_eq!(denied[0].details["clearance"], "public");
    assert_eq!(denied[0].details["classification"], "confidential");
    assert_eq!(app.audit_count("file.upload").await, 0);

    // A confidential staff member uploads one and downloads the identical bytes.
    let bytes: Vec<u8> = (0..300_000u32).map(|i| (i % 253) as u8).collect();
    let (status, body) = staff.upload("budget.bin", &bytes, Some("confidential"), None).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let file = &body["file"];
    assert_eq!(file["sha256"], sha256_hex(&bytes));
    assert_eq!(file["classification"], "confidential");
    assert_eq!(file["department"], "General");
    assert_eq!(file["owner"], "carol");
    assert_eq!(file["size"], bytes.len());
    let id: Uuid = file["id"].as_str().unwrap().parse().unwrap();
    let res = staff.download(id).await;
    assert_eq!(res.status(), StatusCode::OK);
    let got = res.bytes().await.unwrap();
    assert_eq!(sha256_hex(&got), sha256_hex(&bytes));

    // Not shareable with the public student: the recipient's clearance is too low.
    let (status, _) = staff.post(&format!("/api/files/{id}/shares"), json!({ "username": "pupil" })).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let denied = app.audit("mac.denied").await;
    assert_eq!(denied.len(), 2);
    assert_eq!(denied[1].details["operation"], "share");
    assert_eq!(denied[1].details["recipientClearance"], "public");
    assert_eq!(denied[1].target_id.as_deref(), Some(id.to_string().as_str()));

    // Shared with a confidential colleague, who downloads it.
    let (status, body) = staff.post(&format!("/api/files/{id}/shares"), json!({ "username": "dave" })).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    assert_eq!(body["share"]["recipient"], "dave");
    let res = colleague.download(id).await;
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(sha256_hex(&res.bytes().await.unwrap()), sha256_hex(&bytes));

    for action in ["file.upload", "file.share"] {
        assert_eq!(app.audit(action).await.iter().filter(|r| r.result == "success").count(), 1, "{action}");
    }
    assert_eq!(app.audit_count("file.download").await, 2);
}

#[tokio::test]
async fn a_download_answers_as_an_attachment_that_is_never_sniffed_or_cached() {
    let app = TestApp::spawn().await;
    let staff = app.signed_in_as("carol", "staff", "confidential").await;
    // HTML bytes, so the browser would render them if it were allowed to.
    let id = staff.upload_ok("page.html", b"<html><script>alert(1)</script></html>", None).await;
    let res = staff.download(id).await;
    assert_eq!(res.status(), StatusCode::OK);
    let h = res.headers();
    assert!(h["content-disposition"].to_str().unwrap().starts_with("attachment; filename=\"page.html\""));
    assert_eq!(h["x-content-type-options"], "nosniff");
    assert_eq!(h["cache-control"], "no-store");
    assert_eq!(h["content-security-policy"], "sandbox; default-src 'none'", "never a page of our origin");
}

#[tokio::test]
async fn the_content_type_is_detected_from_the_bytes_not_the_clients_claim() {
    let app = TestApp::spawn().await;
    let staff = app.signed_in_as("carol", "staff", "public").await;
    let part =
        reqwest::multipart::Part::bytes(b"%PDF-1.7\n%fake".to_vec()).file_name("x.html").mime_str("text/html").unwrap();
    let form = reqwest::multipart::Form::new().part("file", part);
    let res = staff.post_form(form).await.unwrap();
    assert_eq!(res.status(), StatusCode::CREATED);
    let body: Value = res.json().await.unwrap();
    assert_eq!(body["file"]["contentType"], "application/pdf");
}

#[tokio::test]
async fn own_scope_covers_only_ones_own_files_and_live_shares() {
    let app = TestApp::spawn().await;
    let alice = app.signed_in_as("alice", "student", "public").await;
    let bob = app.signed_in_as("bobby", "student", "public").await;
    let id = alice.upload_ok("notes.txt", b"alice's notes", None).await;

    for path in [format!("/api/files/{id}"), format!("/api/files/{id}/download")] {
        let before = app.audit_count("rbac.denied").await;
        assert_eq!(bob.get(&path).await.0, StatusCode::FORBIDDEN, "{path}");
        assert_eq!(app.audit_count("rbac.denied").await, before + 1);
    }
    assert_eq!(bob.get("/api/files").await.1["files"], json!([]));
    assert_eq!(alice.get("/api/files").await.1["files"][0]["name"], "notes.txt");
}

#[tokio::test]
async fn a_share_ends_at_its_expiry_and_at_revocation_on_the_next_request() {
    let app = TestApp::spawn().await;
    let owner = app.signed_in_as("carol", "staff", "confidential").await;
    let reader = app.signed_in_as("pupil", "student", "public").await;
    let id = owner.upload_ok("memo.txt", b"shared memo", None).await;

    let expires =
        (app.clock.now() + time::Duration::minutes(10)).format(&time::format_description::well_known::Rfc3339).unwrap();
    let (status, body) =
        owner.post(&format!("/api/files/{id}/shares"), json!({ "username": "pupil", "expiresAt": expires })).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    assert_eq!(reader.download(id).await.status(), StatusCode::OK);
    assert_eq!(reader.get("/api/files").await.1["files"].as_array().unwrap().len(), 1);

    app.clock.advance(time::Duration::minutes(11));
    assert_eq!(reader.download(id).await.status(), StatusCode::FORBIDDEN);
    assert_eq!(reader.get("/api/files").await.1["files"], json!([]));
    let (_, shares) = owner.get(&format!("/api/files/{id}/shares")).await;
    assert_eq!(shares["shares"][0]["active"], false);

    // Renewed without expiry (200: the same share), then revoked.
    let (status, body) = owner.post(&format!("/api/files/{id}/shares"), json!({ "username": "pupil" })).await;
    assert_eq!(status, StatusCode::OK);
    let share_id = body["share"]["id"].as_str().unwrap().to_string();
    assert_eq!(reader.download(id).await.status(), StatusCode::OK);
    let (status, _) = owner.delete(&format!("/api/files/{id}/shares/{share_id}")).await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    assert_eq!(reader.download(id).await.status(), StatusCode::FORBIDDEN);
    assert_eq!(app.audit_count("file.unshare").await, 1);
}

#[tokio::test]
async fn a_share_recipient_may_not_reshare_delete_or_list_shares() {
    let app = TestApp::spawn().await;
    let owner = app.signed_in_as("carol", "staff", "public").await;
    app.create_user("erin", "staff", "General", "public").await;
    // A recipient in another department, so department scope does not cover the file.
    let admin = app.admin().await;
    let (status, _) = admin.post("/api/departments", json!({ "name": "Research" })).await;
    assert_eq!(status, StatusCode::CREATED);
    app.create_user("frank", "staff", "Research", "public").await;
    let recipient = app.session("frank").await;
    let id = owner.upload_ok("memo.txt", b"memo", None).await;
    owner.post(&format!("/api/files/{id}/shares"), json!({ "username": "frank" })).await;
    assert_eq!(recipient.download(id).await.status(), StatusCode::OK);

    let before = app.audit_count("rbac.denied").await;
    let (status, _) = recipient.post(&format!("/api/files/{id}/shares"), json!({ "username": "erin" })).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "a share grants view and download only");
    assert_eq!(recipient.get(&format!("/api/files/{id}/shares")).await.0, StatusCode::FORBIDDEN);
    assert_eq!(recipient.delete(&format!("/api/files/{id}")).await.0, StatusCode::FORBIDDEN);
    assert_eq!(app.audit_count("rbac.denied").await, before + 3);
}

#[tokio::test]
async fn department_scope_covers_the_department_and_not_other_departments() {
    let app = TestApp::spawn().await;
    let admin = app.admin().await;
    admin.post("/api/departments", json!({ "name": "Research" })).await;
    let general = app.signed_in_as("carol", "staff", "public").await;
    app.create_user("rita", "staff", "Research", "public").await;
    let research = app.session("rita").await;
    let pupil = app.signed_in_as("pupil", "student", "public").await;

    let pupils = pupil.upload_ok("essay.txt", b"essay", None).await;
    app.clock.advance(time::Duration::seconds(1));
    let ritas = research.upload_ok("lab.txt", b"lab results", None).await;
    // Staff see their department's files (the student is in General too) ...
    assert_eq!(general.download(pupils).await.status(), StatusCode::OK);
    // ... not another department's.
    assert_eq!(general.download(ritas).await.status(), StatusCode::FORBIDDEN);
    let (_, listed) = general.get("/api/files").await;
    let names: Vec<&str> = listed["files"].as_array().unwrap().iter().map(|f| f["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["essay.txt"]);
    // The tenant-wide administrator sees both, newest first.
    let (_, listed) = admin.get("/api/files").await;
    assert_eq!(listed["files"].as_array().unwrap().len(), 2);
    assert_eq!(listed["files"][0]["name"], "lab.txt");

    // Staff may not file into another department; the administrator may.
    let (status, _) = general.upload("x.txt", b"x", None, Some("Research")).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let row = app.audit("rbac.denied").await.pop().unwrap();
    assert_eq!(row.details["reason"], "department_outside_scope");
    let (status, body) = admin.upload("y.txt", b"y", None, Some("research")).await;
    assert_eq!(status, StatusCode::CREATED);
    assert_eq!(body["file"]["department"], "Research");
}

#[tokio::test]
async fn the_list_pages_and_filters_by_classification_department_and_name() {
    let app = TestApp::spawn().await;
    let admin = app.admin().await;
    for (name, class) in [("a-report.txt", "public"), ("b_report.txt", "confidential"), ("c-memo.txt", "restricted")] {
        admin.upload_ok(name, name.as_bytes(), Some(class)).await;
        app.clock.advance(time::Duration::seconds(1));
    }
    let (_, page) = admin.get("/api/files?limit=2").await;
    assert_eq!(page["files"].as_array().unwrap().len(), 2);
    let cursor = page["nextCursor"].as_str().unwrap().to_string();
    let (_, rest) = admin.get(&format!("/api/files?limit=2&after={cursor}")).await;
    assert_eq!(rest["files"][0]["name"], "a-report.txt");
    assert_eq!(rest["nextCursor"], Value::Null);

    let (_, f) = admin.get("/api/files?classification=confidential").await;
    assert_eq!(f["files"].as_array().unwrap().len(), 1);
    let (_, f) = admin.get("/api/files?name=REPORT").await;
    assert_eq!(f["files"].as_array().unwrap().len(), 2);
    let (_, f) = admin.get("/api/files?name=_").await;
    assert_eq!(f["files"].as_array().unwrap().len(), 1, "wildcards match literally");
    let (_, f) = admin.get("/api/files?department=Nowhere").await;
    assert_eq!(f["files"], json!([]));
    assert_eq!(admin.get("/api/files?after=garbage").await.0, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(admin.get("/api/files?limit=0").await.0, StatusCode::UNPROCESSABLE_ENTITY);
}

#[tokio::test]
async fn reclassifying_needs_file_classify_and_a_clearance_covering_the_new_level() {
    let app = TestApp::spawn().await;
    let staff = app.signed_in_as("carol", "staff", "confidential").await;
    let id = staff.upload_ok("memo.txt", b"memo", Some("confidential")).await;
    // Staff do not hold file.classify.
    assert_eq!(
        staff.patch(&format!("/api/files/{id}"), json!({ "classification": "public" })).await.0,
        StatusCode::FORBIDDEN
    );

    // An administrator cleared only to confidential cannot raise it to restricted.
    app.create_user("boss", "admin", "General", "confidential").await;
    let boss = app.session("boss").await;
    let before = mac_denials(&app).await;
    let (status, _) = boss.patch(&format!("/api/files/{id}"), json!({ "classification": "restricted" })).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert_eq!(mac_denials(&app).await, before + 1);

    // A restricted administrator raises it; the staff member loses it at once.
    let root = app.admin().await;
    let (status, body) = root.patch(&format!("/api/files/{id}"), json!({ "classification": "restricted" })).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["file"]["classification"], "restricted");
    assert_eq!(staff.download(id).await.status(), StatusCode::FORBIDDEN);
    assert_eq!(app.audit("file.classify").await[0].details["after"], "restricted");

    // Lowering is a declassification.
    let (status, _) = root.patch(&format!("/api/files/{id}"), json!({ "classification": "public" })).await;
    assert_eq!(status, StatusCode::OK);
    let row = &app.audit("file.declassify").await[0];
    assert_eq!((row.details["before"].as_str(), row.details["after"].as_str()), (Some("restricted"), Some("public")));
    let (status, _) = root.patch(&format!("/api/files/{id}"), json!({ "classification": "secret" })).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
}

#[tokio::test]
async fn deleting_removes_the_row_the_shares_and_the_object_and_is_refused_outside_scope() {
    let app = TestApp::spawn().await;
    let alice = app.signed_in_as("alice", "student", "public").await;
    let bob = app.signed_in_as("bobby", "student", "public").await;
    let id = alice.upload_ok("notes.txt", b"notes", None).await;
    assert_eq!(objects(&app).len(), 1);

    assert_eq!(bob.delete(&format!("/api/files/{id}")).await.0, StatusCode::FORBIDDEN);
    let (status, _) = alice.delete(&format!("/api/files/{id}")).await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    assert_eq!(alice.get(&format!("/api/files/{id}")).await.0, StatusCode::NOT_FOUND);
    assert!(objects(&app).is_empty(), "the stored object is gone");
    assert_eq!(app.audit("file.delete").await[0].details["name"], "notes.txt");
}

#[tokio::test]
async fn a_user_who_still_owns_documents_cannot_be_deleted() {
    let app = TestApp::spawn().await;
    let admin = app.admin().await;
    let alice = app.signed_in_as("alice", "student", "public").await;
    alice.upload_ok("notes.txt", b"notes", None).await;
    let id = app.user_id("alice").await;
    let (status, body) = admin.delete(&format!("/api/users/{id}")).await;
    assert_eq!(status, StatusCode::CONFLICT, "{body}");
}

#[tokio::test]
async fn another_tenants_file_does_not_exist() {
    let app = TestApp::spawn().await;
    let alice = app.signed_in_as("alice", "admin", "restricted").await;
    let id = alice.upload_ok("notes.txt", b"notes", None).await;
    let (other, _) = fortifile::db::seed::ensure_tenant(&app.owner, "other", "Other org").await.unwrap();
    fortifile::db::seed::apply_defaults(&app.db, other).await.unwrap();
    let mut tx = app.db.tenant_tx(other, None).await.unwrap();
    let visible: i64 = sqlx::query_scalar("SELECT count(*) FROM files").fetch_one(tx.conn()).await.unwrap();
    assert_eq!(visible, 0);
    drop(tx);
    // An administrator of the other tenant gets 404 for every route.
    let hash: String = sqlx::query_scalar("SELECT password_hash FROM users WHERE username = 'alice'")
        .fetch_one(&mut app.owner_conn().await)
        .await
        .unwrap();
    let mut tx = app.db.tenant_tx(other, None).await.unwrap();
    let new = fortifile::auth::user::NewUser {
        username: "olga",
        email: "olga@example.org",
        password_hash: &hash,
        status: "active",
        requested_role: None,
        role: "admin",
        department: "General",
        clearance_level: "restricted",
    };
    fortifile::auth::user::create(&mut tx, &new).await.unwrap();
    tx.commit().await.unwrap();
    let client = common::new_client();
    let res = client
        .post(app.url("/auth/login"))
        .json(&json!({ "username": "olga", "password": common::PASSWORD, "tenant": "other" }))
        .send()
        .await
        .unwrap();
    let csrf = res.json::<Value>().await.unwrap()["csrfToken"].as_str().unwrap().to_string();
    let olga = Session { client, csrf, base: app.base.clone() };
    for path in [format!("/api/files/{id}"), format!("/api/files/{id}/download"), format!("/api/files/{id}/shares")] {
        assert_eq!(olga.get(&path).await.0, StatusCode::NOT_FOUND, "{path}");
    }
    assert_eq!(olga.delete(&format!("/api/files/{id}")).await.0, StatusCode::NOT_FOUND);
    assert_eq!(olga.get("/api/files").await.1["files"], json!([]));
}

#[tokio::test]
async fn sharing_refuses_unknown_users_the_owner_and_past_expiries() {
    let app = TestApp::spawn().await;
    let owner = app.signed_in_as("carol", "staff", "public").await;
    app.create_user("dave", "staff", "General", "public").await;
    let id = owner.upload_ok("memo.txt", b"memo", None).await;
    let path = format!("/api/files/{id}/shares");
    assert_eq!(owner.post(&path, json!({ "username": "nobody" })).await.0, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(owner.post(&path, json!({ "username": "carol" })).await.0, StatusCode::UNPROCESSABLE_ENTITY);
    let past =
        (app.clock.now() - time::Duration::minutes(1)).format(&time::format_description::well_known::Rfc3339).unwrap();
    assert_eq!(
        owner.post(&path, json!({ "username": "dave", "expiresAt": past })).await.0,
        StatusCode::UNPROCESSABLE_ENTITY
    );
    assert_eq!(
        owner.post(&path, json!({ "username": "dave", "role": "admin" })).await.0,
        StatusCode::UNPROCESSABLE_ENTITY
    );
    // A student does not hold file.share at all.
    let pupil = app.signed_in_as("pupil", "student", "public").await;
    let mine = pupil.upload_ok("mine.txt", b"mine", None).await;
    assert_eq!(
        pupil.post(&format!("/api/files/{mine}/shares"), json!({ "username": "dave" })).await.0,
        StatusCode::FORBIDDEN
    );
}

#[tokio::test]
async fn a_department_or_classification_level_holding_documents_cannot_be_deleted() {
    let app = TestApp::spawn().await;
    let admin = app.admin().await;
    let (_, dept) = admin.post("/api/departments", json!({ "name": "Archive" })).await;
    let (status, _) = admin.upload("old.txt", b"old", Some("confidential"), Some("Archive")).await;
    assert_eq!(status, StatusCode::CREATED);
    // Nobody is in Archive or cleared confidential: only the document holds them.
    let (status, body) =
        admin.delete(&format!("/api/departments/{}", dept["department"]["id"].as_str().unwrap())).await;
    assert_eq!(status, StatusCode::CONFLICT, "{body}");
    assert!(body["error"].as_str().unwrap().contains("documents"), "{body}");
    let confidential: Uuid = sqlx::query_scalar("SELECT id FROM clearance_levels WHERE name = 'confidential'")
        .fetch_one(&mut app.owner_conn().await)
        .await
        .unwrap();
    let (status, body) = admin.delete(&format!("/api/clearance-levels/{confidential}")).await;
    assert_eq!(status, StatusCode::CONFLICT, "{body}");
    assert!(body["error"].as_str().unwrap().contains("documents"), "{body}");
}

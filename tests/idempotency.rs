//! `Idempotency-Key` on creates: a retry with the same key and request gets the
//! first answer and creates nothing; a different request with the key is 422;
//! a retry while the first runs is 409; keys are per user (or API key).

mod common;

use common::{Session, TestApp};
use fortifile::http::idempotency;
use reqwest::{StatusCode, header::HeaderMap};
use serde_json::{Value, json};

/// POSTs `body` to `path` with `Idempotency-Key: key`.
async fn create(session: &Session, path: &str, key: &str, body: &Value) -> (StatusCode, HeaderMap, Value) {
    let res = session
        .client
        .post(format!("{}{path}", session.base))
        .header("x-csrf-token", &session.csrf)
        .header("idempotency-key", key)
        .json(body)
        .send()
        .await
        .unwrap();
    let (status, headers) = (res.status(), res.headers().clone());
    let text = res.text().await.unwrap();
    (status, headers, serde_json::from_str(&text).unwrap_or(Value::String(text)))
}

fn replayed(headers: &HeaderMap) -> bool {
    headers.get("idempotency-replayed").is_some_and(|v| v == "true")
}

async fn departments_named(app: &TestApp, name: &str) -> i64 {
    let mut conn = app.owner_conn().await;
    sqlx::query_scalar("SELECT count(*) FROM departments WHERE name = $1")
        .bind(name)
        .fetch_one(&mut conn)
        .await
        .unwrap()
}

#[tokio::test]
async fn a_create_retried_with_the_same_key_makes_one_row_and_one_audit_row_and_answers_the_same_body() {
    let app = TestApp::spawn().await;
    let admin = app.admin().await;
    let body = json!({ "name": "Archives" });
    let (first, first_headers, first_body) = create(&admin, "/api/departments", "dept-archives-1", &body).await;
    assert_eq!(first, StatusCode::CREATED, "{first_body}");
    assert!(!replayed(&first_headers));
    let (again, again_headers, again_body) = create(&admin, "/api/departments", "dept-archives-1", &body).await;
    assert_eq!(again, StatusCode::CREATED);
    assert!(replayed(&again_headers), "a replay says so");
    assert_eq!(again_body, first_body, "the same answer");
    assert_eq!(departments_named(&app, "Archives").await, 1);
    assert_eq!(app.audit_count("department.create").await, 1);
}

#[tokio::test]
async fn the_same_key_with_a_different_body_is_422_and_creates_nothing() {
    let app = TestApp::spawn().await;
    let admin = app.admin().await;
    let (first, _, _) = create(&admin, "/api/departments", "k-1", &json!({ "name": "Archives" })).await;
    assert_eq!(first, StatusCode::CREATED);
    let (other, headers, body) = create(&admin, "/api/departments", "k-1", &json!({ "name": "Library" })).await;
    assert_eq!(other, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    assert_eq!(body["field"], "Idempotency-Key");
    assert!(!replayed(&headers));
    assert_eq!(departments_named(&app, "Library").await, 0);
}

#[tokio::test]
async fn concurrent_requests_with_one_key_make_one_incident_and_the_others_get_409_or_the_replay() {
    let app = TestApp::spawn().await;
    let admin = app.admin().await;
    let body = json!({ "title": "Badge reader offline", "severity": "low" });
    let tries = (0..12).map(|_| create(&admin, "/admin/incidents", "incident-7", &body));
    let answers = futures::future::join_all(tries).await;
    let created: Vec<_> = answers.iter().filter(|(s, h, _)| *s == StatusCode::CREATED && !replayed(h)).collect();
    assert_eq!(created.len(), 1, "exactly one request acted: {:?}", answers.iter().map(|a| a.0).collect::<Vec<_>>());
    for (status, headers, answer) in &answers {
        match (*status, replayed(headers)) {
            (StatusCode::CREATED, false) => {}
            (StatusCode::CREATED, true) => assert_eq!(answer, &created[0].2),
            (StatusCode::CONFLICT, false) => {}
            other => panic!("unexpected answer {other:?}: {answer}"),
        }
    }
    let mut conn = app.owner_conn().await;
    let rows: i64 = sqlx::query_scalar("SELECT count(*) FROM incidents WHERE title = 'Badge reader offline'")
        .fetch_one(&mut conn)
        .await
        .unwrap();
    assert_eq!(rows, 1);
    assert_eq!(app.audit_count("incident.create").await, 1);
}

#[tokio::test]
async fn another_users_identical_key_is_independent() {
    let app = TestApp::spawn().await;
    let root = app.admin().await;
    let other = app.signed_in_as("maria", "admin", "restricted").await;
    let (a, _, _) = create(&root, "/api/departments", "shared-key", &json!({ "name": "Archives" })).await;
    let (b, headers, body) = create(&other, "/api/departments", "shared-key", &json!({ "name": "Library" })).await;
    assert_eq!((a, b), (StatusCode::CREATED, StatusCode::CREATED), "{body}");
    assert!(!replayed(&headers));
    assert_eq!(departments_named(&app, "Library").await, 1);
}

#[tokio::test]
async fn a_create_that_failed_leaves_its_key_free_for_the_corrected_request() {
    let app = TestApp::spawn().await;
    let admin = app.admin().await;
    let (bad, _, _) = create(&admin, "/api/departments", "k-2", &json!({ "name": "" })).await;
    assert_eq!(bad, StatusCode::UNPROCESSABLE_ENTITY);
    let (good, headers, body) = create(&admin, "/api/departments", "k-2", &json!({ "name": "Archives" })).await;
    assert_eq!(good, StatusCode::CREATED, "{body}");
    assert!(!replayed(&headers));
}

#[tokio::test]
async fn a_key_that_is_too_long_or_not_visible_ascii_is_refused_with_422() {
    let app = TestApp::spawn().await;
    let admin = app.admin().await;
    for key in ["x".repeat(256), "two words".to_string(), "clé".to_string()] {
        let (status, _, body) = create(&admin, "/api/departments", &key, &json!({ "name": "Archives" })).await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{key:?}: {body}");
        assert_eq!(body["field"], "Idempotency-Key");
    }
    assert_eq!(departments_named(&app, "Archives").await, 0);
}

#[tokio::test]
async fn a_key_is_kept_for_24_hours_and_then_swept() {
    let app = TestApp::spawn().await;
    let admin = app.admin().await;
    let (first, _, _) = create(&admin, "/api/departments", "k-3", &json!({ "name": "Archives" })).await;
    assert_eq!(first, StatusCode::CREATED);
    app.clock.advance(time::Duration::minutes(10));
    let (status, headers, body) = create(&admin, "/api/departments", "k-3", &json!({ "name": "Archives" })).await;
    assert!(replayed(&headers), "still kept after 10 minutes: {status} {body}");
    assert_eq!(idempotency::sweep(&app.state).await.unwrap(), 0, "nothing is old enough");
    app.clock.advance(time::Duration::hours(24));
    assert_eq!(idempotency::sweep(&app.state).await.unwrap(), 1);
    let admin = app.session("root").await;
    let (again, headers, body) = create(&admin, "/api/departments", "k-3", &json!({ "name": "Library" })).await;
    assert_eq!(again, StatusCode::CREATED, "after 24 hours the key is new: {body}");
    assert!(!replayed(&headers));
}

#[tokio::test]
async fn the_replay_of_an_api_key_creation_withholds_the_secret_which_is_never_stored() {
    let app = TestApp::spawn().await;
    let ana = app.signed_in_as("ana", "student", "public").await;
    let body = json!({ "name": "backup job" });
    let (first, _, shown) = create(&ana, "/me/api-keys", "key-job", &body).await;
    assert_eq!(first, StatusCode::CREATED, "{shown}");
    let secret = shown["apiKey"]["key"].as_str().unwrap().to_string();
    let (again, headers, replay) = create(&ana, "/me/api-keys", "key-job", &body).await;
    assert_eq!(again, StatusCode::CREATED);
    assert!(replayed(&headers));
    assert_eq!(replay["apiKey"]["id"], shown["apiKey"]["id"]);
    assert!(replay["apiKey"].get("key").is_none(), "the secret is shown once: {replay}");
    let mut conn = app.owner_conn().await;
    let stored: Vec<u8> = sqlx::query_scalar("SELECT body FROM idempotency_keys WHERE key = 'key-job'")
        .fetch_one(&mut conn)
        .await
        .unwrap();
    assert!(!String::from_utf8_lossy(&stored).contains(&secret));
    let keys: i64 = sqlx::query_scalar("SELECT count(*) FROM api_keys").fetch_one(&mut conn).await.unwrap();
    assert_eq!(keys, 1);
}

async fn upload_with_key(session: &Session, key: &str, bytes: &[u8]) -> (StatusCode, HeaderMap, Value) {
    let part = reqwest::multipart::Part::bytes(bytes.to_vec()).file_name("minutes.txt");
    let form = reqwest::multipart::Form::new().text("classification", "public").part("file", part);
    let res = session
        .client
        .post(format!("{}/api/files", session.base))
        .header("x-csrf-token", &session.csrf)
        .header("idempotency-key", key)
        .multipart(form)
        .send()
        .await
        .unwrap();
    let (status, headers) = (res.status(), res.headers().clone());
    (status, headers, res.json().await.unwrap_or(Value::Null))
}

fn stored_objects(app: &TestApp) -> usize {
    fn walk(dir: &std::path::Path) -> usize {
        std::fs::read_dir(dir)
            .map_or(0, |entries| entries.flatten().map(|e| if e.path().is_dir() { walk(&e.path()) } else { 1 }).sum())
    }
    walk(&app.storage_dir())
}

#[tokio::test]
async fn a_retried_upload_with_the_same_key_creates_one_document_and_keeps_no_second_object() {
    let app = TestApp::spawn().await;
    let ana = app.signed_in_as("ana", "student", "public").await;
    let (first, _, file) = upload_with_key(&ana, "upload-1", b"board minutes").await;
    assert_eq!(first, StatusCode::CREATED, "{file}");
    let objects = stored_objects(&app);
    let (again, headers, replay) = upload_with_key(&ana, "upload-1", b"board minutes").await;
    assert_eq!(again, StatusCode::CREATED);
    assert!(replayed(&headers));
    assert_eq!(replay, file);
    assert_eq!(stored_objects(&app), objects, "the retried bytes were not kept");
    let (other, _, body) = upload_with_key(&ana, "upload-1", b"other minutes").await;
    assert_eq!(other, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    assert_eq!(stored_objects(&app), objects);
    let (_, list) = ana.get("/api/files").await;
    assert_eq!(list["files"].as_array().unwrap().len(), 1, "{list}");
    assert_eq!(app.audit_count("file.upload").await, 1);
}

#[tokio::test]
async fn a_refused_create_is_not_kept_so_its_retry_is_decided_again() {
    let app = TestApp::spawn().await;
    let staff = app.signed_in_as("carol", "staff", "confidential").await;
    app.create_user("pupil", "student", "General", "public").await;
    let id = staff.upload_ok("plan.txt", b"the plan", Some("confidential")).await;
    let path = format!("/api/files/{id}/shares");
    let body = json!({ "username": "pupil" });
    let (first, _, answer) = create(&staff, &path, "share-1", &body).await;
    assert_eq!(first, StatusCode::FORBIDDEN, "the recipient's clearance is too low: {answer}");
    // The recipient is cleared; the same request with the same key now succeeds.
    let mut conn = app.owner_conn().await;
    sqlx::query(
        "UPDATE users SET clearance_level_id = (SELECT c.id FROM clearance_levels c \
         WHERE c.name = 'confidential' AND c.tenant_id = users.tenant_id) WHERE username = 'pupil'",
    )
    .execute(&mut conn)
    .await
    .unwrap();
    let (again, headers, answer) = create(&staff, &path, "share-1", &body).await;
    assert!(!replayed(&headers), "a refusal is not an answer to replay: {again} {answer}");
    assert_eq!(again, StatusCode::CREATED, "{answer}");
    assert_eq!(app.audit_count("mac.denied").await, 1, "the refusal was recorded once");
    let (third, headers, _) = create(&staff, &path, "share-1", &body).await;
    assert_eq!(third, StatusCode::CREATED);
    assert!(replayed(&headers), "the success is kept");
}

/// The SHA-256 of length-prefixed parts, as an unkeyed fingerprint would be.
fn plain_sha256(parts: &[&[u8]]) -> Vec<u8> {
    let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
    for part in parts {
        ctx.update(&(part.len() as u64).to_be_bytes());
        ctx.update(part);
    }
    ctx.finish().as_ref().to_vec()
}

#[tokio::test]
async fn the_stored_fingerprint_is_keyed_by_the_server_so_a_body_cannot_be_guessed_from_it() {
    let app = TestApp::spawn().await;
    let admin = app.admin().await;
    let body = json!({ "name": "Archives" });
    let (status, _, _) = create(&admin, "/api/departments", "k-fp", &body).await;
    assert_eq!(status, StatusCode::CREATED);
    let mut conn = app.owner_conn().await;
    let stored: Vec<u8> = sqlx::query_scalar("SELECT fingerprint FROM idempotency_keys WHERE key = 'k-fp'")
        .fetch_one(&mut conn)
        .await
        .unwrap();
    let sent = serde_json::to_vec(&body).unwrap();
    // Whoever reads the table (a backup, a replica) could otherwise test
    // guesses at a body, such as the password in `POST /api/users`.
    assert_eq!(stored.len(), 32);
    assert_ne!(stored, plain_sha256(&[b"POST", b"/api/departments", &sent]));
    assert_ne!(stored, ring::digest::digest(&ring::digest::SHA256, &sent).as_ref().to_vec());
}

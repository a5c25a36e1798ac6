//! Storage and encryption at rest on the local backend: nothing readable on
//! disk, tampering detected, filenames never paths, no half states after an
//! aborted, oversize or orphaned upload.

mod common;

use std::{path::PathBuf, time::Duration};

use common::{Session, TestApp, stored_objects as objects};
use fortifile::clock::Clock;
use reqwest::StatusCode;
use uuid::Uuid;

async fn object_path(app: &TestApp, id: Uuid) -> PathBuf {
    app.storage_dir().join(object_key(app, id).await)
}

async fn file_rows(app: &TestApp) -> i64 {
    sqlx::query_scalar("SELECT count(*) FROM files").fetch_one(&mut app.owner_conn().await).await.unwrap()
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

#[tokio::test]
async fn a_unique_marker_appears_nowhere_under_the_storage_directory() {
    let app = TestApp::spawn().await;
    let staff = app.signed_in_as("carol", "staff", "public").await;
    let marker = format!("MARKER-{}", Uuid::new_v4());
    let body = format!("{marker}\n").repeat(5000);
    let id = staff.upload_ok(&format!("{marker}.txt"), body.as_bytes(), None).await;
    let stored = objects(&app);
    assert_eq!(stored.len(), 1);
    for path in &stored {
        assert!(!path.to_string_lossy().contains(&marker), "the filename is not a path");
        let bytes = std::fs::read(path).unwrap();
        assert!(!contains(&bytes, marker.as_bytes()), "plaintext found in {}", path.display());
        assert!(bytes.len() > body.len(), "tags and header make the object larger");
    }
    // And it still reads back.
    assert_eq!(staff.download(id).await.text().await.unwrap(), body);
}

#[tokio::test]
async fn one_flipped_byte_makes_the_download_fail_and_is_audited() {
    let app = TestApp::spawn().await;
    let staff = app.signed_in_as("carol", "staff", "public").await;
    let id = staff.upload_ok("small.txt", b"a short document", None).await;
    let path = object_path(&app, id).await;
    let mut bytes = std::fs::read(&path).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0x01;
    std::fs::write(&path, &bytes).unwrap();

    let res = staff.download(id).await;
    assert_eq!(res.status(), StatusCode::INTERNAL_SERVER_ERROR);
    let body: serde_json::Value = res.json().await.unwrap();
    assert_eq!(body["error"], "The stored file failed its integrity check");
    let rows = app.audit("file.download").await;
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0].result, "fail");
    assert_eq!(rows[0].details["reason"], "integrity_check_failed");
}

#[tokio::test]
async fn tampering_deep_inside_a_large_file_ends_the_download_before_any_altered_byte() {
    let app = TestApp::spawn().await;
    let staff = app.signed_in_as("carol", "staff", "public").await;
    let data: Vec<u8> = (0..600_000u32).map(|i| (i % 241) as u8).collect();
    let id = staff.upload_ok("big.bin", &data, None).await;
    let path = object_path(&app, id).await;
    let mut bytes = std::fs::read(&path).unwrap();
    let at = bytes.len() - 1000; // inside the last segments
    bytes[at] ^= 0x80;
    std::fs::write(&path, &bytes).unwrap();

    let res = staff.download(id).await;
    assert_eq!(res.status(), StatusCode::OK, "the first segments were sound");
    let mut received = Vec::new();
    let mut stream = res.bytes_stream();
    let mut failed = false;
    use futures::StreamExt;
    while let Some(chunk) = stream.next().await {
        match chunk {
            Ok(c) => received.extend_from_slice(&c),
            Err(_) => {
                failed = true;
                break;
            }
        }
    }
    assert!(failed || received.len() < data.len(), "the body must not complete");
    assert!(received.len() < data.len());
    assert_eq!(&received[..], &data[..received.len()], "every byte delivered is original");
    // The failure is recorded once the stream reaches it.
    for _ in 0..50 {
        if app.audit("file.download").await.iter().any(|r| r.result == "fail") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let fail =
        app.audit("file.download").await.into_iter().find(|r| r.result == "fail").expect("a failed download row");
    assert_eq!(fail.details["midStream"], true);
}

#[tokio::test]
async fn a_truncated_object_is_detected() {
    let app = TestApp::spawn().await;
    let staff = app.signed_in_as("carol", "staff", "public").await;
    let id = staff.upload_ok("t.bin", &vec![7u8; 70_000], None).await;
    let path = object_path(&app, id).await;
    let bytes = std::fs::read(&path).unwrap();
    std::fs::write(&path, &bytes[..bytes.len() - 20]).unwrap();
    let res = staff.download(id).await;
    let ok = res.status() == StatusCode::OK && res.bytes().await.map(|b| b.len() == 70_000).unwrap_or(false);
    assert!(!ok, "a truncated object never downloads as complete");
}

/// Uploads with a hand-written multipart body, so the filename reaches the
/// server byte for byte.
async fn raw_upload(app: &TestApp, session: &Session, filename: &[u8]) -> (StatusCode, serde_json::Value) {
    let boundary = "XfortifileBoundaryX";
    let mut body = Vec::new();
    body.extend_from_slice(
        format!("--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"").as_bytes(),
    );
    body.extend_from_slice(filename);
    body.extend_from_slice(b"\"\r\nContent-Type: application/octet-stream\r\n\r\nhello\r\n");
    body.extend_from_slice(format!("--{boundary}--\r\n").as_bytes());
    let res = session
        .client
        .post(app.url("/api/files"))
        .header("x-csrf-token", &session.csrf)
        .header("content-type", format!("multipart/form-data; boundary={boundary}"))
        .body(body)
        .send()
        .await
        .unwrap();
    let status = res.status();
    (status, res.json().await.unwrap_or(serde_json::Value::Null))
}

#[tokio::test]
async fn hostile_filenames_are_stored_safely_and_downloaded_with_a_safe_header() {
    let app = TestApp::spawn().await;
    let staff = app.signed_in_as("carol", "staff", "public").await;
    let long = "n".repeat(4096);
    let cases: Vec<(Vec<u8>, Option<String>)> = vec![
        (b"../../etc/passwd".to_vec(), Some("passwd".into())),
        (b"a/b".to_vec(), Some("b".into())),
        (b"..\\x".to_vec(), Some("x".into())),
        (b"nul\0byte.txt".to_vec(), None),
        (long.as_bytes().to_vec(), Some("n".repeat(255))),
        ("invoice\u{202E}fdp.exe".as_bytes().to_vec(), Some("invoice_fdp.exe".into())),
        (b"..".to_vec(), Some("unnamed".into())),
    ];
    for (raw, expected) in cases {
        let (status, body) = raw_upload(&app, &staff, &raw).await;
        let shown = String::from_utf8_lossy(&raw).chars().take(40).collect::<String>();
        if status == StatusCode::BAD_REQUEST {
            assert!(expected.is_none(), "{shown:?} refused: {body}");
            continue;
        }
        assert_eq!(status, StatusCode::CREATED, "{shown:?}: {body}");
        let name = body["file"]["name"].as_str().unwrap();
        if let Some(expected) = expected {
            assert_eq!(name, expected);
        }
        assert!(!name.contains(['/', '\\', '\0', '\u{202E}']), "{name:?}");
        let id: Uuid = body["file"]["id"].as_str().unwrap().parse().unwrap();
        let res = staff.download(id).await;
        assert_eq!(res.status(), StatusCode::OK);
        let disposition = res.headers()["content-disposition"].to_str().unwrap().to_string();
        assert!(disposition.starts_with("attachment; filename=\""), "{disposition}");
        assert!(disposition.contains("filename*=UTF-8''"), "{disposition}");
        assert!(!disposition.contains(['/', '\\', '\r', '\n']), "{disposition}");
    }
    // Every object lives at a server-generated key: <tenant uuid>/<uuid>.
    for path in objects(&app) {
        let rel = path.strip_prefix(app.storage_dir()).unwrap().to_string_lossy().to_string();
        let (tenant, object) = rel.split_once('/').unwrap();
        assert!(Uuid::parse_str(tenant).is_ok() && Uuid::parse_str(object).is_ok(), "{rel}");
    }
}

#[tokio::test]
async fn an_upload_aborted_mid_body_leaves_no_row_and_no_object() {
    let app = TestApp::spawn().await;
    let staff = app.signed_in_as("carol", "staff", "public").await;
    let chunks: Vec<Result<Vec<u8>, std::io::Error>> = vec![
        Ok(vec![1u8; 1 << 20]),
        Ok(vec![2u8; 1 << 20]),
        Ok(vec![3u8; 1 << 20]),
        Err(std::io::Error::other("client went away")),
    ];
    let stream = futures::stream::iter(chunks);
    let part = reqwest::multipart::Part::stream(reqwest::Body::wrap_stream(stream)).file_name("big.bin");
    let form = reqwest::multipart::Form::new().part("file", part);
    let result = staff.post_form(form).await;
    assert!(result.is_err() || !result.unwrap().status().is_success());

    // Cleanup may finish just after the connection closes.
    let mut left = objects(&app);
    for _ in 0..100 {
        if left.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
        left = objects(&app);
    }
    assert!(left.is_empty(), "left behind: {left:?}");
    assert_eq!(file_rows(&app).await, 0);
    assert_eq!(app.audit("file.upload").await.iter().filter(|r| r.result == "success").count(), 0);
}

#[tokio::test]
async fn an_upload_over_the_limit_is_refused_with_413_and_leaves_nothing() {
    let app = TestApp::spawn_with(|c| c.max_upload_bytes = 100_000).await;
    let staff = app.signed_in_as("carol", "staff", "public").await;
    let (status, _) = staff.upload("fits.bin", &vec![0u8; 100_000], None, None).await;
    assert_eq!(status, StatusCode::CREATED, "exactly at the limit is allowed");
    // Declared too large by Content-Length: refused before the body is read.
    let (status, body) = staff.upload("big.bin", &vec![0u8; 400_000], None, None).await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE, "{body}");
    // Within the framing allowance, so it is caught while streaming.
    let (status, body) = staff.upload("big.bin", &vec![0u8; 120_000], None, None).await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE, "{body}");
    assert_eq!(file_rows(&app).await, 1);
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(objects(&app).len(), 1);
    let fails: Vec<_> = app.audit("file.upload").await.into_iter().filter(|r| r.result == "fail").collect();
    assert_eq!(fails.len(), 2);
    assert!(fails.iter().all(|r| r.details["reason"] == "too_large"));
}

#[tokio::test]
async fn a_part_after_the_file_is_refused_and_its_object_removed() {
    let app = TestApp::spawn().await;
    let staff = app.signed_in_as("carol", "staff", "public").await;
    let form = reqwest::multipart::Form::new()
        .part("file", reqwest::multipart::Part::bytes(b"data".to_vec()).file_name("a.txt"))
        .text("classification", "public");
    let res = staff.post_form(form).await.unwrap();
    assert_eq!(res.status(), StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(file_rows(&app).await, 0);
    assert!(objects(&app).is_empty());
    // Not multipart at all.
    let res = staff
        .client
        .post(app.url("/api/files"))
        .header("x-csrf-token", &staff.csrf)
        .header("content-type", "application/json")
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::BAD_REQUEST);
    assert!(res.json::<serde_json::Value>().await.unwrap()["error"].is_string());
}

#[tokio::test]
async fn the_sweep_removes_what_an_interrupted_upload_left_after_the_grace_period_and_keeps_everything_else() {
    let app = TestApp::spawn().await;
    let staff = app.signed_in_as("carol", "staff", "public").await;
    let id = staff.upload_ok("kept.txt", b"kept", None).await;
    let kept = object_path(&app, id).await;
    // What a killed upload leaves: its in-flight record, a staging part and,
    // had it completed the object before the row, the object itself.
    let key = format!("{}/{}", app.default_tenant, Uuid::new_v4());
    sqlx::query("INSERT INTO pending_objects (tenant_id, object_key, purpose, since) VALUES ($1, $2, 'upload', $3)")
        .bind(app.default_tenant)
        .bind(&key)
        .bind(app.clock.now())
        .execute(&mut app.owner_conn().await)
        .await
        .unwrap();
    let object = app.storage_dir().join(&key);
    let staging = app.storage_dir().join(format!("{key}#7"));
    std::fs::write(&object, b"left behind").unwrap();
    std::fs::write(&staging, b"half a part").unwrap();

    let settled = fortifile::files::sweep_unreferenced(&app.state, fortifile::files::ORPHAN_AGE).await.unwrap();
    assert_eq!(settled, 0, "young records may belong to uploads in progress");
    assert!(object.exists() && staging.exists());
    app.clock.advance(time::Duration::hours(2));
    let settled = fortifile::files::sweep_unreferenced(&app.state, fortifile::files::ORPHAN_AGE).await.unwrap();
    assert_eq!(settled, 1);
    assert!(!object.exists() && !staging.exists());
    assert!(kept.exists());
    let left: i64 = sqlx::query_scalar("SELECT count(*) FROM pending_objects")
        .fetch_one(&mut app.owner_conn().await)
        .await
        .unwrap();
    assert_eq!(left, 0, "the upload that completed settled its own record");
    // (Two hours on, the old session has expired: sign in again.)
    let staff = app.session("carol").await;
    assert_eq!(staff.download(id).await.status(), StatusCode::OK);
}

#[tokio::test]
async fn an_upload_whose_in_flight_record_a_sweep_already_settled_is_refused_and_leaves_nothing() {
    let app = TestApp::spawn().await;
    let staff = app.signed_in_as("carol", "staff", "public").await;
    let (tx, upload) = staff.held_upload("slow.bin");
    tx.send(Ok(vec![5u8; 1 << 20])).await.unwrap();
    // The upload is underway: its record exists. A sweep (of another instance,
    // say, after a long stall) settles it as a crash would be settled.
    let mut conn = app.owner_conn().await;
    let mut settled = 0;
    for _ in 0..200 {
        settled = sqlx::query("DELETE FROM pending_objects").execute(&mut conn).await.unwrap().rows_affected();
        if settled > 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert_eq!(settled, 1, "the upload recorded its object before storing it");
    tx.send(Ok(vec![6u8; 1 << 20])).await.unwrap();
    drop(tx);
    let status = upload.await.unwrap();
    assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR, "never acknowledged");
    assert_eq!(file_rows(&app).await, 0);
    assert!(objects(&app).is_empty(), "{:?}", objects(&app));
}

#[tokio::test]
async fn an_upload_whose_session_ends_while_it_streams_is_refused_where_it_would_be_recorded() {
    let app = TestApp::spawn().await;
    let staff = app.signed_in_as("carol", "staff", "public").await;
    let (tx, upload) = staff.held_upload("slow.bin");
    tx.send(Ok(vec![5u8; 1 << 20])).await.unwrap();
    let mut conn = app.owner_conn().await;
    for _ in 0..200 {
        let pending: i64 =
            sqlx::query_scalar("SELECT count(*) FROM pending_objects").fetch_one(&mut conn).await.unwrap();
        if pending > 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    // The same person signs out (from another tab) while the bytes stream.
    let (status, _) = staff.post("/auth/logout", serde_json::json!({})).await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    tx.send(Ok(vec![6u8; 1 << 20])).await.unwrap();
    drop(tx);
    let status = upload.await.unwrap();
    assert_eq!(status, StatusCode::FORBIDDEN, "decided again where the row would be written");
    assert_eq!(file_rows(&app).await, 0);
    let denied = app.audit("rbac.denied").await;
    assert_eq!(denied.last().unwrap().details["reason"], "permission_revoked");
    for _ in 0..100 {
        if objects(&app).is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(objects(&app).is_empty(), "{:?}", objects(&app));
}

/// The object key of document `id`.
async fn object_key(app: &TestApp, id: Uuid) -> String {
    sqlx::query_scalar("SELECT object_key FROM files WHERE id = $1")
        .bind(id)
        .fetch_one(&mut app.owner_conn().await)
        .await
        .unwrap()
}

#[tokio::test]
async fn an_upload_whose_commit_answered_an_error_but_landed_keeps_its_object() {
    // The commit of an upload's row reached the database, and then the
    // connection broke before its answer (the database stopped): the upload
    // sees an error and removes what it stored. The row is there, so the
    // object must stay.
    let app = TestApp::spawn().await;
    let staff = app.signed_in_as("carol", "staff", "public").await;
    let id = staff.upload_ok("landed.txt", b"acknowledged after all", None).await;
    let key = object_key(&app, id).await;
    fortifile::files::pending::remove(&app.state, app.default_tenant, &key).await;
    assert!(app.storage_dir().join(&key).exists(), "the object of a committed row was removed");
    let download = staff.download(id).await;
    assert_eq!(download.status(), StatusCode::OK);
    assert_eq!(download.bytes().await.unwrap().as_ref(), b"acknowledged after all");
}

#[tokio::test]
async fn removing_an_uploads_object_waits_for_the_transaction_that_may_still_commit_its_row() {
    // An upload's own transaction can still be open on a connection the server
    // gave up on; its commit may come after the upload decided to clean up.
    let app = TestApp::spawn().await;
    let staff = app.signed_in_as("carol", "staff", "public").await;
    let first = staff.upload_ok("first.txt", b"first", None).await;
    let key = format!("{}/{}", app.default_tenant, Uuid::new_v4());
    let object = app.storage_dir().join(&key);
    std::fs::copy(object_path(&app, first).await, &object).unwrap();
    let mut owner = app.owner_conn().await;
    sqlx::query("INSERT INTO pending_objects (tenant_id, object_key, purpose, since) VALUES ($1, $2, 'upload', $3)")
        .bind(app.default_tenant)
        .bind(&key)
        .bind(app.clock.now())
        .execute(&mut owner)
        .await
        .unwrap();
    // The upload's transaction: its record claimed, its row inserted, not yet committed.
    let mut upload = sqlx::Connection::begin(&mut owner).await.unwrap();
    sqlx::query("DELETE FROM pending_objects WHERE object_key = $1").bind(&key).execute(&mut *upload).await.unwrap();
    sqlx::query(
        "INSERT INTO files (id, tenant_id, owner_id, department_id, classification_id, name, size, content_type, \
                            sha256, object_key, key_id, wrapped_key, created_at) \
         SELECT $2, tenant_id, owner_id, department_id, classification_id, 'second.txt', size, content_type, \
                sha256, $3, key_id, wrapped_key, created_at FROM files WHERE id = $1",
    )
    .bind(first)
    .bind(Uuid::new_v4())
    .bind(&key)
    .execute(&mut *upload)
    .await
    .unwrap();
    let state = app.state.clone();
    let (tenant, removing_key) = (app.default_tenant, key.clone());
    let removing = tokio::spawn(async move { fortifile::files::pending::remove(&state, tenant, &removing_key).await });
    // The removal waits on the upload's lock (or, unfixed, is already done).
    let mut watcher = app.owner_conn().await;
    loop {
        let waiting: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND wait_event_type = 'Lock'",
        )
        .fetch_one(&mut watcher)
        .await
        .unwrap();
        if waiting > 0 || removing.is_finished() {
            break;
        }
        tokio::task::yield_now().await;
    }
    upload.commit().await.unwrap();
    removing.await.unwrap();
    assert!(object.exists(), "the object of a row that committed meanwhile was removed");
}

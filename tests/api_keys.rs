//! API keys for programs: `Authorization: Bearer ffk_…`, limited to the key's
//! permissions and its owner's grants at each request, never a person.

mod common;

use std::collections::BTreeSet;

use common::{Session, TestApp, new_client};
use fortifile::{app::route_table, clock::Clock, http::Access};
use reqwest::{Method, StatusCode, header};
use serde_json::{Value, json};

/// A program holding an API key.
struct Program {
    client: reqwest::Client,
    base: String,
    key: String,
}

impl Program {
    async fn send(&self, method: Method, path: &str, body: Option<Value>) -> (StatusCode, Value) {
        let mut req = self.client.request(method, format!("{}{path}", self.base)).bearer_auth(&self.key);
        if let Some(body) = body {
            req = req.json(&body);
        }
        let res = req.send().await.unwrap();
        let status = res.status();
        let text = res.text().await.unwrap();
        (status, serde_json::from_str(&text).unwrap_or(Value::String(text)))
    }

    async fn get(&self, path: &str) -> (StatusCode, Value) {
        self.send(Method::GET, path, None).await
    }

    async fn upload(&self, name: &str) -> StatusCode {
        let part = reqwest::multipart::Part::bytes(b"program data".to_vec()).file_name(name.to_string());
        let form = reqwest::multipart::Form::new().part("file", part);
        let res = self.client.post(format!("{}/api/files", self.base)).bearer_auth(&self.key).multipart(form);
        res.send().await.unwrap().status()
    }
}

async fn key(app: &TestApp, owner: &Session, body: Value) -> (Program, Value) {
    let (status, answer) = owner.post("/me/api-keys", body).await;
    assert_eq!(status, StatusCode::CREATED, "{answer}");
    let key = answer["apiKey"]["key"].as_str().unwrap().to_string();
    (Program { client: new_client(), base: app.base.clone(), key }, answer["apiKey"].clone())
}

#[tokio::test]
async fn a_key_with_only_file_download_downloads_and_is_refused_an_upload() {
    let app = TestApp::spawn().await;
    let ana = app.signed_in_as("ana", "student", "public").await;
    let file = ana.upload_ok("report.txt", b"quarterly", None).await;
    let (program, shown) =
        key(&app, &ana, json!({ "name": "backup job", "permissions": { "file.download": "own" } })).await;
    assert!(program.key.starts_with("ffk_") && shown["prefix"].as_str().is_some_and(|p| program.key.starts_with(p)));
    assert_eq!(shown["permissions"], json!({ "file.download": "own" }));

    let res = program.client.get(app.url(&format!("/api/files/{file}/download"))).bearer_auth(&program.key);
    let res = res.send().await.unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(res.bytes().await.unwrap().as_ref(), b"quarterly");
    assert_eq!(program.upload("more.txt").await, StatusCode::FORBIDDEN, "the key does not allow uploads");
    let download = app.audit("file.download").await;
    assert_eq!(download[0].details["apiKey"], shown["id"], "the audit row names the key");
    let denied = app.audit("rbac.denied").await;
    assert_eq!((denied.len(), denied[0].details["apiKey"].clone()), (1, shown["id"].clone()));
    assert_eq!(app.audit_count("apikey.create").await, 1);
}

#[tokio::test]
async fn a_key_loses_what_its_owner_loses_on_the_next_request_and_stops_with_a_suspended_owner() {
    let app = TestApp::spawn().await;
    let admin = app.admin().await;
    let ana = app.signed_in_as("ana", "student", "public").await;
    let (program, _) = key(&app, &ana, json!({ "name": "sync" })).await;
    assert_eq!(program.get("/api/files").await.0, StatusCode::OK);
    let mut owner = app.owner_conn().await;
    sqlx::query(
        "DELETE FROM role_permissions WHERE role_id = (SELECT id FROM roles WHERE name = 'student') \
         AND permission_id = (SELECT id FROM permissions WHERE name = 'file.download')",
    )
    .execute(&mut owner)
    .await
    .unwrap();
    assert_eq!(program.get("/api/files").await.0, StatusCode::FORBIDDEN, "the owner lost file.download");
    let ana_id = app.user_id("ana").await;
    let (status, _) = admin.put(&format!("/api/users/{ana_id}"), json!({ "status": "suspended" })).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(program.get("/api/files").await.0, StatusCode::UNAUTHORIZED, "a suspended owner's key stops");
    assert_eq!(app.audit("auth.api_key").await.last().unwrap().details["reason"], "owner_not_active");
}

#[tokio::test]
async fn revoked_expired_mistyped_and_other_tenant_keys_are_refused() {
    let app = TestApp::spawn().await;
    let admin = app.admin().await;
    let ana = app.signed_in_as("ana", "student", "public").await;
    let (program, shown) = key(&app, &ana, json!({ "name": "one" })).await;
    assert_eq!(program.get("/api/files").await.0, StatusCode::OK);

    // One character changed: the checksum fails, no database read, no row.
    let mut typo = program.key.clone().into_bytes();
    typo[10] = if typo[10] == b'a' { b'b' } else { b'a' };
    let typo = Program { key: String::from_utf8(typo).unwrap(), client: new_client(), base: app.base.clone() };
    assert_eq!(typo.get("/api/files").await.0, StatusCode::UNAUTHORIZED);
    assert_eq!(app.audit_count("auth.api_key").await, 0);

    // The same secret presented as another tenant's (checksum recomputed): not found there.
    let other: uuid::Uuid =
        sqlx::query_scalar("INSERT INTO tenants (slug, name) VALUES ('other', 'Other') RETURNING id")
            .fetch_one(&mut app.owner_conn().await)
            .await
            .unwrap();
    let body = format!("{}{}", &program.key[..4 + 64], other.simple());
    let crc = crc::Crc::<u32>::new(&crc::CRC_32_ISO_HDLC).checksum(body.as_bytes());
    let moved = Program { key: format!("{body}_{crc:08x}"), client: new_client(), base: app.base.clone() };
    assert_eq!(moved.get("/api/files").await.0, StatusCode::UNAUTHORIZED);

    let id = shown["id"].as_str().unwrap();
    let ana_id = app.user_id("ana").await;
    assert_eq!(admin.get(&format!("/api/users/{ana_id}/api-keys")).await.1["apiKeys"][0]["id"], shown["id"]);
    assert_eq!(ana.delete(&format!("/me/api-keys/{id}")).await.0, StatusCode::NO_CONTENT);
    assert_eq!(program.get("/api/files").await.0, StatusCode::UNAUTHORIZED, "revoked");
    assert_eq!(app.audit("auth.api_key").await.last().unwrap().details["reason"], "revoked");
    assert_eq!(app.audit("apikey.revoke").await[0].details["by"], "owner");

    let expires =
        (app.clock.now() + time::Duration::days(2)).format(&time::format_description::well_known::Rfc3339).unwrap();
    let (short, _) = key(&app, &ana, json!({ "name": "short", "expiresAt": expires })).await;
    app.clock.advance(time::Duration::days(3));
    assert_eq!(short.get("/api/files").await.0, StatusCode::UNAUTHORIZED, "expired");
}

#[tokio::test]
async fn a_key_never_reaches_a_page_a_step_up_route_or_enrolment_and_never_rides_with_a_cookie() {
    let app = TestApp::spawn().await;
    let admin = app.admin().await;
    let (program, _) = key(&app, &admin, json!({ "name": "admin script" })).await;
    let page = program.client.get(app.url("/")).bearer_auth(&program.key).send().await.unwrap();
    assert_eq!(page.status(), StatusCode::FORBIDDEN, "no pages");
    let role = app.role_id("student").await;
    let (status, body) =
        program.send(Method::PUT, &format!("/api/roles/{role}"), Some(json!({ "description": "x" }))).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "a step-up operation needs a person: {body}");
    assert_eq!(program.get("/me/mfa").await.0, StatusCode::FORBIDDEN, "no MFA enrolment");
    let (status, _) = program.send(Method::POST, "/auth/step-up", Some(json!({ "code": "123456" }))).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "a key is not a second factor");
    assert_eq!(program.send(Method::POST, "/me/api-keys", Some(json!({ "name": "x" }))).await.0, StatusCode::FORBIDDEN);
    for path in ["/me", "/me/sessions", "/me/api-keys"] {
        assert_eq!(program.get(path).await.0, StatusCode::FORBIDDEN, "{path}: one's own account needs a person");
    }
    let (status, _) = program.send(Method::POST, "/me/sessions/end-others", Some(json!({}))).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    // Both a cookie and a key: refused whatever the route.
    let both = admin.client.get(app.url("/api/users")).header(header::AUTHORIZATION, format!("Bearer {}", program.key));
    assert_eq!(both.send().await.unwrap().status(), StatusCode::BAD_REQUEST);
    // Unsafe requests need no CSRF token: no cookie rides along.
    let (status, _) =
        program.send(Method::POST, "/admin/incidents", Some(json!({ "title": "t", "severity": "low" }))).await;
    assert_eq!(status, StatusCode::CREATED);
}

#[tokio::test]
async fn a_key_is_refused_permissions_its_owner_does_not_hold_and_expiries_past_the_maximum() {
    let app = TestApp::spawn().await;
    let ana = app.signed_in_as("ana", "student", "public").await;
    let (status, body) =
        ana.post("/me/api-keys", json!({ "name": "x", "permissions": { "users.view": "tenant" } })).await;
    assert_eq!((status, body["field"].clone()), (StatusCode::UNPROCESSABLE_ENTITY, json!("permissions")));
    let (status, body) =
        ana.post("/me/api-keys", json!({ "name": "x", "permissions": { "file.download": "tenant" } })).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "own is all ana holds: {body}");
    let far =
        (app.clock.now() + time::Duration::days(400)).format(&time::format_description::well_known::Rfc3339).unwrap();
    let (status, body) = ana.post("/me/api-keys", json!({ "name": "x", "expiresAt": far })).await;
    assert_eq!((status, body["field"].clone()), (StatusCode::UNPROCESSABLE_ENTITY, json!("expiresAt")));
}

#[tokio::test]
async fn the_key_appears_in_no_audit_row_and_no_later_answer() {
    let app = TestApp::spawn().await;
    let ana = app.signed_in_as("ana", "student", "public").await;
    let (program, _) = key(&app, &ana, json!({ "name": "canary" })).await;
    program.get("/api/files").await;
    let secret = &program.key[12..];
    let rows: Vec<String> = sqlx::query_scalar("SELECT details::text FROM audit_logs")
        .fetch_all(&mut app.owner_conn().await)
        .await
        .unwrap();
    assert!(!rows.iter().any(|r| r.contains(secret)));
    let (_, listed) = ana.get("/me/api-keys").await;
    assert!(!listed.to_string().contains(secret));
    let stored: Vec<Vec<u8>> =
        sqlx::query_scalar("SELECT key_hash FROM api_keys").fetch_all(&mut app.owner_conn().await).await.unwrap();
    assert!(stored.iter().all(|h| h.len() == 32), "only the hash is kept");
}

#[tokio::test]
async fn every_guarded_api_route_refuses_each_roles_key_lacking_its_permission_and_admits_holders() {
    let app = TestApp::spawn().await;
    let table = route_table(app.state.clone());
    let mut programs = Vec::new();
    for role in ["admin", "staff", "student"] {
        let owner = app.signed_in_as(&format!("keys-{role}"), role, "restricted").await;
        let (_, me) = owner.get("/me").await;
        let held: BTreeSet<String> =
            me["user"]["permissions"].as_array().unwrap().iter().map(|p| p.as_str().unwrap().to_string()).collect();
        programs.push((role, key(&app, &owner, json!({ "name": role })).await.0, held));
    }
    let mut checked = 0;
    for (role, program, held) in &programs {
        for rule in &table {
            let Access::Guarded(permission) = rule.access else { continue };
            let path = rule.path.replace("{id}", &uuid::Uuid::new_v4().to_string()).replace("{role}", "none");
            let path = path.replace("{key}", &uuid::Uuid::new_v4().to_string());
            let body = matches!(rule.method, Method::POST | Method::PUT | Method::PATCH).then(|| json!({}));
            let before = app.audit_count("rbac.denied").await;
            let (status, answer) = program.send(rule.method.clone(), &path, body).await;
            let after = app.audit_count("rbac.denied").await;
            let what = format!("{role}'s key {} {} (needs {permission})", rule.method, rule.path);
            if rule.html || rule.step_up {
                assert_eq!(status, StatusCode::FORBIDDEN, "{what}: a person's route");
                assert_eq!(after, before, "{what}: refused before any decision");
            } else if held.contains(permission.as_str()) {
                assert_ne!(status, StatusCode::FORBIDDEN, "{what}: a holder's key was refused: {answer}");
                assert_ne!(status, StatusCode::UNAUTHORIZED, "{what}");
            } else {
                assert_eq!(
                    (status, answer["error"].clone()),
                    (StatusCode::FORBIDDEN, json!("Insufficient permissions")),
                    "{what}"
                );
                assert_eq!(after, before + 1, "{what}: one rbac.denied row");
            }
            checked += 1;
        }
    }
    assert!(checked > 3 * 30, "the matrix ran {checked} requests");
}

#[tokio::test]
async fn changing_the_password_revokes_every_key_of_the_account() {
    let app = TestApp::spawn().await;
    let ana = app.signed_in_as("ana", "student", "public").await;
    let (program, _) = key(&app, &ana, json!({ "name": "sync" })).await;
    let change = json!({ "currentPassword": common::PASSWORD, "newPassword": "violet harbour seven lanterns" });
    let (status, _) = ana.post("/me/password", change).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        program.get("/api/files").await.0,
        StatusCode::UNAUTHORIZED,
        "whoever had the password may have made it"
    );
    assert_eq!(app.audit("apikey.revoke").await[0].details["by"], "password_change");
}

#[tokio::test]
async fn a_key_sent_with_a_malformed_session_cookie_or_a_csrf_token_is_refused_not_half_used() {
    let app = TestApp::spawn().await;
    let ana = app.signed_in_as("ana", "student", "public").await;
    let (program, _) = key(&app, &ana, json!({ "name": "job" })).await;
    let url = format!("{}/api/files", program.base);
    let client = new_client();
    // Something under the session cookie's name that is no session: a credential that failed.
    let res = client.get(&url).bearer_auth(&program.key).header(header::COOKIE, "fortifile_session=garbage");
    assert_eq!(res.send().await.unwrap().status(), StatusCode::UNAUTHORIZED);
    // A CSRF token belongs to a session cookie; with a key it is refused.
    let res = client.get(&url).bearer_auth(&program.key).header("x-csrf-token", "0123abcd");
    let res = res.send().await.unwrap();
    assert_eq!(res.status(), StatusCode::FORBIDDEN);
    let body: Value = res.json().await.unwrap();
    assert!(body["error"].as_str().unwrap().contains("X-CSRF-Token"), "{body}");
    // The key alone works.
    assert_eq!(program.get("/api/files").await.0, StatusCode::OK);
}

#[tokio::test]
async fn a_keys_last_use_is_kept_by_a_read_that_ends_its_transaction_without_a_commit_of_its_own() {
    // GET /api/files writes nothing and ends its transaction as a read; the
    // key's last use, written when the request opened, must still commit.
    let app = TestApp::spawn().await;
    let ana = app.signed_in_as("ana", "student", "public").await;
    let (program, shown) = key(&app, &ana, json!({ "name": "sync" })).await;
    assert!(shown["lastUsedAt"].is_null(), "{shown}");
    assert_eq!(program.get("/api/files").await.0, StatusCode::OK);
    let (status, keys) = ana.get("/me/api-keys").await;
    assert_eq!(status, StatusCode::OK);
    assert!(keys["apiKeys"][0]["lastUsedAt"].is_string(), "the first use is recorded: {keys}");
}

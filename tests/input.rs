//! Input at the edge: NUL characters anywhere (path, query, JSON, form,
//! multipart) are a 422 on every route, never a 500; malformed values are
//! explained in the API's words; unknown fields are refused on every body; and
//! the request id is the server's own.

mod common;

use common::{Session, TestApp};
use fortifile::app::route_table;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

fn with_params(pattern: &str, value: &str) -> String {
    let mut out = String::new();
    let mut rest = pattern;
    while let Some(open) = rest.find('{') {
        out.push_str(&rest[..open]);
        let close = rest[open..].find('}').map(|c| open + c + 1).unwrap_or(rest.len());
        out.push_str(value);
        rest = &rest[close..];
    }
    out.push_str(rest);
    out
}

async fn send_raw(
    session: &Session,
    method: Method,
    path: &str,
    body: Option<(&str, Vec<u8>)>,
) -> (StatusCode, String) {
    let mut req =
        session.client.request(method, format!("{}{path}", session.base)).header("x-csrf-token", &session.csrf);
    if let Some((content_type, bytes)) = body {
        req = req.header("content-type", content_type).body(bytes);
    }
    let res = req.send().await.unwrap();
    (res.status(), res.text().await.unwrap())
}

#[tokio::test]
async fn nul_in_the_path_query_or_body_of_every_route_is_refused_never_a_500() {
    let app = TestApp::spawn().await;
    let admin = app.admin().await;
    let table = route_table(app.state.clone());
    let mut tried = 0;
    // Every answer: never a 5xx, and a 422 only ever because of the NUL (the
    // input was read, and NUL was the first thing refused).
    let mut nul_refusals = 0;
    let mut check = |status: StatusCode, body: &str, what: String| {
        assert!(!status.is_server_error(), "{what}: {status} {body}");
        if status == StatusCode::UNPROCESSABLE_ENTITY {
            assert!(body.contains("must not contain NUL characters"), "{what}: {body}");
            nul_refusals += 1;
        }
    };
    for rule in &table {
        // Signing out would end the walk's session; its routes take no input.
        if rule.path.ends_with("/logout") {
            continue;
        }
        let unsafe_method = !matches!(rule.method, Method::GET | Method::HEAD);
        let what = |carrier: &str| format!("{} {} with NUL in {carrier}", rule.method, rule.path);
        if rule.path.contains('{') {
            let (status, body) = send_raw(&admin, rule.method.clone(), &with_params(rule.path, "%00"), None).await;
            assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{}: {body}", what("the path"));
            check(status, &body, what("the path"));
            tried += 1;
        }
        let path = with_params(rule.path, &uuid::Uuid::new_v4().to_string());
        let (status, body) = send_raw(&admin, rule.method.clone(), &format!("{path}?after=%00"), None).await;
        check(status, &body, what("the query"));
        if !unsafe_method {
            continue;
        }
        let json_body = serde_json::to_vec(&json!({ "username": "a\u{0}b", "title": "\u{0}" })).unwrap();
        let (status, body) = send_raw(&admin, rule.method.clone(), &path, Some(("application/json", json_body))).await;
        check(status, &body, what("a JSON body"));
        let form = b"csrf_token=x&username=a%00b&title=%00".to_vec();
        let (status, body) =
            send_raw(&admin, rule.method.clone(), &path, Some(("application/x-www-form-urlencoded", form))).await;
        check(status, &body, what("a form"));
        tried += 1;
    }
    assert!(tried > 40, "the walk covered {tried} route inputs");
    assert!(nul_refusals > 60, "{nul_refusals} inputs were read and refused for their NUL");
}

#[tokio::test]
async fn each_input_the_review_found_answers_422_naming_the_field() {
    let app = TestApp::spawn().await;
    let admin = app.admin().await;
    let file = admin.upload_ok("a.txt", b"a", None).await;
    let role = app.role_id("staff").await;
    let (role_path, share_path, file_path) =
        (format!("/api/roles/{role}"), format!("/api/files/{file}/shares"), format!("/api/files/{file}"));
    let json_cases: Vec<(&str, &str, Value, &str)> = vec![
        ("POST", "/auth/login", json!({ "username": "root\u{0}", "password": "x" }), "username"),
        ("POST", "/auth/login", json!({ "username": "root", "password": "p\u{0}w" }), "password"),
        ("POST", "/auth/register", json!({ "username": "n", "email": "e\u{0}@x.org", "password": "x" }), "email"),
        ("POST", "/api/users", json!({ "username": "u\u{0}" }), "username"),
        ("POST", "/api/clearance-levels", json!({ "name": "top\u{0}", "level": 9 }), "name"),
        ("POST", "/api/departments", json!({ "name": "Dept\u{0}" }), "name"),
        ("PUT", &role_path, json!({ "description": "d\u{0}" }), "description"),
        ("POST", "/admin/incidents", json!({ "title": "t", "severity": "low", "description": "\u{0}" }), "description"),
        ("POST", &share_path, json!({ "username": "dave\u{0}" }), "username"),
        ("PATCH", &file_path, json!({ "classification": "public\u{0}" }), "classification"),
    ];
    for (method, path, body, field) in json_cases {
        let (status, answer) = admin.send(method.parse().unwrap(), path, Some(body.clone())).await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{method} {path} {body}: {answer}");
        assert_eq!(answer["field"], field, "{answer}");
        assert!(answer["error"].as_str().unwrap().contains("NUL"), "{answer}");
    }
    for path in [
        "/api/files?name=a%00",
        "/api/files?classification=%00",
        "/api/files?after=%00",
        "/api/audit-logs?user=%00",
        "/api/audit-logs?username=%00",
        "/api/audit-logs?action=auth%00",
        "/api/incidents?status=%00",
        "/api/users?after=%00",
        "/api/audit-logs/export.csv?ip=%00",
    ] {
        let (status, answer) = admin.get(path).await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{path}: {answer}");
    }
    let (status, _) = admin.delete(&format!("/api/users/{}/roles/admin%00", app.user_id("root").await)).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    // A multipart text part.
    let form = reqwest::multipart::Form::new()
        .text("classification", "public\u{0}")
        .part("file", reqwest::multipart::Part::bytes(b"x".to_vec()).file_name("x.txt"));
    let res = admin.post_form(form).await.unwrap();
    assert_eq!(res.status(), StatusCode::UNPROCESSABLE_ENTITY);
    // The login form page too.
    let res =
        app.client.post(app.url("/login")).form(&[("username", "root\u{0}"), ("password", "x")]).send().await.unwrap();
    assert_eq!(res.status(), StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(app.audit_count("auth.login").await, 1, "only the admin's own sign-in");
}

#[tokio::test]
async fn login_and_register_refuse_unknown_fields_like_every_other_body() {
    let app = TestApp::spawn().await;
    let res = app.post_json("/auth/login", &json!({ "username": "a", "password": "b", "remember": true }), &[]).await;
    assert_eq!(res.status(), StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(res.json::<Value>().await.unwrap()["error"], "remember: is not a field of this request");
    let body = json!({ "username": "newbie", "email": "n@example.org", "password": common::PASSWORD, "isAdmin": true });
    let res = app.post_json("/auth/register", &body, &[]).await;
    assert_eq!(res.status(), StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(app.audit_count("auth.register").await, 0);
}

#[tokio::test]
async fn malformed_values_are_explained_in_the_apis_words_without_rust_types_or_field_lists() {
    let app = TestApp::spawn().await;
    let admin = app.admin().await;
    let role = app.role_id("staff").await;
    let cases: Vec<(Method, String, Option<Value>, &str, &str)> = vec![
        (Method::GET, "/api/audit-logs?limit=lots".into(), None, "limit", "must be a whole number"),
        (Method::GET, "/api/audit-logs?from=yesterday".into(), None, "from", "date and time"),
        (Method::GET, "/api/files?colour=red".into(), None, "colour", "is not a field of this request"),
        (
            Method::POST,
            "/api/clearance-levels".into(),
            Some(json!({ "name": "x", "level": "high" })),
            "level",
            "must be a whole number",
        ),
        (
            Method::PUT,
            format!("/api/roles/{role}"),
            Some(json!({ "sessionTimeoutMinutes": 99999999999i64 })),
            "sessionTimeoutMinutes",
            "in range",
        ),
        (Method::POST, "/admin/incidents".into(), Some(json!({ "title": "t" })), "severity", "is required"),
        (Method::POST, "/api/users".into(), Some(json!("text")), "body", "must be an object"),
    ];
    for (method, path, body, field, says) in cases {
        let (status, answer) = admin.send(method.clone(), &path, body).await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{method} {path}: {answer}");
        assert_eq!(answer["field"], field, "{answer}");
        let message = answer["error"].as_str().unwrap();
        assert!(message.contains(says), "{message}");
        for leak in ["i32", "i64", "u32", "struct", "expected", "`", "one of"] {
            assert!(!message.contains(leak), "{path}: {message}");
        }
    }
}

#[tokio::test]
async fn a_clients_request_id_is_replaced_and_only_a_trusted_proxy_may_pass_on_a_safe_one() {
    let app = TestApp::spawn().await;
    let forged = "abc\" level=ERROR user=root";
    let res = app.client.get(app.url("/healthz")).header("x-request-id", forged).send().await.unwrap();
    let id = res.headers()["x-request-id"].to_str().unwrap().to_string();
    assert_ne!(id, forged);
    assert!(uuid::Uuid::parse_str(&id).is_ok(), "{id}");
    let res = app.client.get(app.url("/healthz")).header("x-request-id", "lb-7f3a").send().await.unwrap();
    assert_ne!(res.headers()["x-request-id"], "lb-7f3a", "an untrusted client cannot choose its id either");

    let proxied = TestApp::spawn_with(|c| c.trusted_proxies = vec!["127.0.0.1/32".parse().unwrap()]).await;
    let res = proxied.client.get(proxied.url("/healthz")).header("x-request-id", "lb-7f3a.2").send().await.unwrap();
    assert_eq!(res.headers()["x-request-id"], "lb-7f3a.2");
    for bad in [forged, &"x".repeat(65), "a b"] {
        let res = proxied.client.get(proxied.url("/healthz")).header("x-request-id", bad).send().await.unwrap();
        assert!(uuid::Uuid::parse_str(res.headers()["x-request-id"].to_str().unwrap()).is_ok(), "{bad:?}");
    }
}

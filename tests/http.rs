//! The HTTP surface: error shapes, health endpoints, security headers, client IP.

mod common;

use common::TestApp;
use reqwest::StatusCode;
use serde_json::{Value, json};

#[tokio::test]
async fn health_endpoints_answer_without_authentication_and_reveal_nothing_else() {
    let app = TestApp::spawn().await;
    let live: Value = app.client.get(app.url("/healthz")).send().await.unwrap().json().await.unwrap();
    assert_eq!(live, json!({ "status": "ok" }));
    let ready = app.client.get(app.url("/readyz")).send().await.unwrap();
    assert_eq!(ready.status(), StatusCode::OK);
    assert_eq!(ready.json::<Value>().await.unwrap(), json!({ "status": "ready" }));
}

#[tokio::test]
async fn readyz_fails_when_the_database_is_gone() {
    let app = TestApp::spawn().await;
    app.db.close().await;
    let res = app.client.get(app.url("/readyz")).send().await.unwrap();
    assert_eq!(res.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(res.json::<Value>().await.unwrap(), json!({ "error": "Service unavailable" }));
}

#[tokio::test]
async fn malformed_json_is_a_400_with_a_json_error() {
    let app = TestApp::spawn().await;
    let res = app
        .client
        .post(app.url("/auth/login"))
        .header("content-type", "application/json")
        .body("{\"username\": ")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::BAD_REQUEST);
    assert_eq!(res.json::<Value>().await.unwrap(), json!({ "error": "Malformed JSON body" }));
}

#[tokio::test]
async fn wrong_field_types_are_a_422_that_names_no_internal_type() {
    let app = TestApp::spawn().await;
    for body in
        [json!({ "username": 7, "password": "x" }), json!("a string, not an object"), json!({ "username": "a" })]
    {
        let res = app.client.post(app.url("/auth/login")).json(&body).send().await.unwrap();
        assert_eq!(res.status(), StatusCode::UNPROCESSABLE_ENTITY, "{body}");
        let text = res.text().await.unwrap();
        assert!(!text.contains("LoginInput") && !text.contains("struct"), "{text}");
        assert!(serde_json::from_str::<Value>(&text).unwrap()["error"].is_string());
    }
}

#[tokio::test]
async fn a_body_over_the_limit_is_a_413() {
    let app = TestApp::spawn().await;
    let huge = "x".repeat(200 * 1024);
    let res = app
        .client
        .post(app.url("/auth/register"))
        .json(&json!({ "username": "big", "email": "big@example.org", "password": huge }))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::PAYLOAD_TOO_LARGE);
    assert!(res.json::<Value>().await.unwrap()["error"].is_string());
}

#[tokio::test]
async fn a_non_json_body_is_refused_as_unsupported() {
    let app = TestApp::spawn().await;
    let res = app.client.post(app.url("/auth/login")).body("username=a").send().await.unwrap();
    assert_eq!(res.status(), StatusCode::UNSUPPORTED_MEDIA_TYPE);
}

#[tokio::test]
async fn unknown_routes_and_methods_answer_json() {
    let app = TestApp::spawn().await;
    let res = app.client.get(app.url("/no/such/route")).send().await.unwrap();
    assert_eq!(res.status(), StatusCode::NOT_FOUND);
    assert_eq!(res.json::<Value>().await.unwrap(), json!({ "error": "Not found" }));
    let res = app.client.get(app.url("/auth/login")).send().await.unwrap();
    assert_eq!(res.status(), StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(res.json::<Value>().await.unwrap(), json!({ "error": "Method not allowed" }));
}

#[tokio::test]
async fn every_response_carries_the_security_headers_and_a_request_id() {
    let app = TestApp::spawn().await;
    for (method, path) in [("GET", "/healthz"), ("GET", "/me"), ("GET", "/nope"), ("POST", "/auth/login")] {
        let res = app.client.request(method.parse().unwrap(), app.url(path)).send().await.unwrap();
        let h = res.headers();
        assert_eq!(h["x-content-type-options"], "nosniff", "{path}");
        assert_eq!(h["x-frame-options"], "DENY");
        assert_eq!(h["referrer-policy"], "same-origin");
        assert_eq!(h["cache-control"], "no-store");
        let csp = h["content-security-policy"].to_str().unwrap();
        assert!(csp.contains("frame-ancestors 'none'") && csp.contains("object-src 'none'"));
        assert!(h.get("x-request-id").is_some());
        assert!(h.get("strict-transport-security").is_none(), "no HSTS over plain http");
    }
}

#[tokio::test]
async fn x_forwarded_for_is_ignored_unless_the_peer_is_a_trusted_proxy() {
    let app = TestApp::spawn().await;
    app.register("alice").await;
    let body = json!({ "username": "alice", "password": "wrong password entirely" });
    app.client.post(app.url("/auth/login")).header("x-forwarded-for", "203.0.113.9").json(&body).send().await.unwrap();
    assert_eq!(app.audit("auth.login").await[0].ip.as_deref(), Some("127.0.0.1"));

    let proxied = TestApp::spawn_with(|c| c.trusted_proxies = vec!["127.0.0.1/32".parse().unwrap()]).await;
    proxied.register("alice").await;
    proxied
        .client
        .post(proxied.url("/auth/login"))
        .header("x-forwarded-for", "198.51.100.7")
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(proxied.audit("auth.login").await[0].ip.as_deref(), Some("198.51.100.7"));
}

#[tokio::test]
async fn a_database_failure_is_a_generic_500_with_a_request_id() {
    let app = TestApp::spawn().await;
    app.signed_in("alice").await;
    app.db.close().await;
    let res = app.client.get(app.url("/me")).send().await.unwrap();
    assert_eq!(res.status(), StatusCode::INTERNAL_SERVER_ERROR);
    assert!(res.headers().get("x-request-id").is_some(), "the id that the server log carries");
    let text = res.text().await.unwrap();
    assert_eq!(serde_json::from_str::<Value>(&text).unwrap(), json!({ "error": "Internal server error" }));
    assert!(!text.contains("pool") && !text.contains("sqlx"), "{text}");
}

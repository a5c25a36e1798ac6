//! Request rate limits: per session or API key, and per address without a
//! credential; 429 with `Retry-After`; static assets are not counted.

mod common;

use common::{TestApp, new_client};
use fortifile::config::RateLimit;
use reqwest::StatusCode;

async fn limited(requests: u32, seconds: u32) -> TestApp {
    TestApp::spawn_with(|c| {
        c.rate_limit = Some(RateLimit { requests, seconds });
        c.anon_rate_limit = Some(RateLimit { requests, seconds });
    })
    .await
}

#[tokio::test]
async fn the_sixth_request_of_a_5_per_60_limit_is_429_with_retry_after_and_another_session_is_unaffected() {
    let app = limited(5, 60).await;
    let ana = app.signed_in_as("ana", "student", "public").await;
    let bo = app.signed_in_as("bora", "student", "public").await;
    for n in 1..=5 {
        assert_eq!(ana.get("/me").await.0, StatusCode::OK, "request {n}");
    }
    let res = ana.client.get(format!("{}/me", ana.base)).send().await.unwrap();
    assert_eq!(res.status(), StatusCode::TOO_MANY_REQUESTS);
    let wait: u64 = res.headers()["retry-after"].to_str().unwrap().parse().unwrap();
    assert!((1..=12).contains(&wait), "one request comes back every 12 s: {wait}");
    let body: serde_json::Value = res.json().await.unwrap();
    assert!(body["error"].as_str().unwrap().contains("5 per 60 seconds"), "{body}");
    assert_eq!(bo.get("/me").await.0, StatusCode::OK, "another session has its own budget");
    // Time moves on (the server's clock): the bucket refills.
    app.clock.advance(time::Duration::seconds(60));
    for n in 1..=5 {
        assert_eq!(ana.get("/me").await.0, StatusCode::OK, "after the window, request {n}");
    }
}

#[tokio::test]
async fn requests_without_a_credential_are_limited_per_address_but_static_assets_and_probes_are_not() {
    let app = limited(3, 60).await;
    let client = new_client();
    for _ in 0..10 {
        assert_eq!(client.get(app.url("/static/app.css")).send().await.unwrap().status(), StatusCode::OK);
        assert_eq!(client.get(app.url("/healthz")).send().await.unwrap().status(), StatusCode::OK);
    }
    for n in 1..=3 {
        let status = client.get(app.url("/me")).send().await.unwrap().status();
        assert_eq!(status, StatusCode::UNAUTHORIZED, "request {n}");
    }
    let res = client.get(app.url("/login")).send().await.unwrap();
    assert_eq!(res.status(), StatusCode::TOO_MANY_REQUESTS);
    assert!(res.headers().contains_key("retry-after"));
}

#[tokio::test]
async fn an_api_key_has_its_own_budget() {
    let app = limited(4, 60).await;
    let ana = app.signed_in_as("ana", "student", "public").await;
    let (status, key) = ana.post("/me/api-keys", serde_json::json!({ "name": "job" })).await;
    assert_eq!(status, StatusCode::CREATED, "{key}");
    let secret = key["apiKey"]["key"].as_str().unwrap().to_string();
    let program = new_client();
    let mut statuses = Vec::new();
    for _ in 0..5 {
        let res = program.get(app.url("/api/files")).bearer_auth(&secret).send().await.unwrap();
        statuses.push(res.status());
    }
    assert_eq!(statuses[..4], [StatusCode::OK; 4]);
    assert_eq!(statuses[4], StatusCode::TOO_MANY_REQUESTS);
}

#[test]
fn limits_parse_as_requests_per_seconds_and_zero_turns_them_off() {
    assert_eq!(RateLimit::parse("600/60"), Ok(Some(RateLimit { requests: 600, seconds: 60 })));
    assert_eq!(RateLimit::parse("0"), Ok(None));
    for bad in ["600", "0/60", "10/0", "ten/60", "-1/60"] {
        assert!(RateLimit::parse(bad).is_err(), "{bad}");
    }
}

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
    assert_eq!(wait, 12, "the clock stands still, and one request comes back every 12 s");
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

/// A key of the right form (prefix, length, checksum), so the server must look
/// it up: made up, it matches no key.
fn made_up_key(real: &str, n: u32) -> String {
    let (body, _) = real.rsplit_once('_').unwrap();
    let random_len = body.len() - "ffk_".len() - 32;
    let body = format!("ffk_{n:0random_len$x}{}", &body[body.len() - 32..]);
    let check = crc::Crc::<u32>::new(&crc::CRC_32_ISO_HDLC).checksum(body.as_bytes());
    format!("{body}_{check:08x}")
}

#[tokio::test]
async fn made_up_credentials_are_charged_to_the_address_so_they_do_not_escape_its_limit() {
    let app = TestApp::spawn_with(|c| {
        c.rate_limit = Some(RateLimit { requests: 100, seconds: 60 });
        c.anon_rate_limit = Some(RateLimit { requests: 7, seconds: 60 });
    })
    .await;
    // Signing in and making a key: the login and the session's first request
    // count against the address (2 of 7).
    let ana = app.signed_in_as("ana", "student", "public").await;
    let (status, key) = ana.post("/me/api-keys", serde_json::json!({ "name": "job" })).await;
    assert_eq!(status, StatusCode::CREATED, "{key}");
    let real = key["apiKey"]["key"].as_str().unwrap().to_string();
    let client = new_client();
    // Each request presents a new, made-up credential: none earns a bucket of its own.
    let fake = made_up_key(&real, 1);
    assert_eq!(client.get(app.url("/api/files")).bearer_auth(&fake).send().await.unwrap().status(), 401);
    let fake = made_up_key(&real, 2);
    assert_eq!(client.get(app.url("/login")).bearer_auth(&fake).send().await.unwrap().status(), 200);
    let fake = made_up_key(&real, 3);
    assert_eq!(client.get(app.url("/nowhere")).bearer_auth(&fake).send().await.unwrap().status(), 404);
    // A made-up session cookie on an unsafe method without its CSRF token.
    let cookie = format!("fortifile_session={}.{}", uuid::Uuid::nil().simple(), "ab".repeat(32));
    let res = client.post(app.url("/api/departments")).header("cookie", &cookie).send().await.unwrap();
    assert_eq!(res.status(), StatusCode::FORBIDDEN);
    let cookie = format!("fortifile_session={}.{}", uuid::Uuid::nil().simple(), "cd".repeat(32));
    assert_eq!(client.get(app.url("/me")).header("cookie", &cookie).send().await.unwrap().status(), 401);
    for (path, n) in [("/api/files", 5), ("/login", 6), ("/nowhere", 7), ("/static/nothing", 8)] {
        let res = client.get(app.url(path)).bearer_auth(made_up_key(&real, n)).send().await.unwrap();
        assert_eq!(res.status(), StatusCode::TOO_MANY_REQUESTS, "{path}");
        assert!(res.headers().contains_key("retry-after"));
    }
    // The verified session and the real key are charged to themselves alone.
    assert_eq!(ana.get("/me").await.0, StatusCode::OK);
    let res = client.get(app.url("/api/files")).bearer_auth(&real).send().await.unwrap();
    assert_eq!(res.status(), StatusCode::TOO_MANY_REQUESTS, "the key is new to the guard: the address pays first");
}

#[tokio::test]
async fn a_signed_in_browser_does_not_use_up_its_addresss_budget_on_public_pages() {
    let app = TestApp::spawn_with(|c| {
        c.rate_limit = Some(RateLimit { requests: 100, seconds: 60 });
        c.anon_rate_limit = Some(RateLimit { requests: 3, seconds: 60 });
    })
    .await;
    // The login (1) and the session's first, verifying request (2).
    let ana = app.signed_in_as("ana", "student", "public").await;
    assert_eq!(ana.get("/me").await.0, StatusCode::OK);
    for _ in 0..10 {
        let page = ana.client.get(format!("{}/login", ana.base)).send().await.unwrap();
        assert_eq!(page.status(), StatusCode::OK);
        let missing = ana.client.get(format!("{}/favicon.ico", ana.base)).send().await.unwrap();
        assert_eq!(missing.status(), StatusCode::NOT_FOUND);
    }
    let colleague = new_client();
    assert_eq!(colleague.get(app.url("/login")).send().await.unwrap().status(), StatusCode::OK, "3 of 3");
    assert_eq!(colleague.get(app.url("/login")).send().await.unwrap().status(), StatusCode::TOO_MANY_REQUESTS);
}

#[tokio::test]
async fn ipv6_clients_are_counted_per_64_bit_prefix() {
    let app = TestApp::spawn_with(|c| {
        c.anon_rate_limit = Some(RateLimit { requests: 2, seconds: 60 });
        c.trusted_proxies = vec!["127.0.0.0/8".parse().unwrap()];
    })
    .await;
    let client = new_client();
    let from = |addr: &'static str| client.get(app.url("/login")).header("x-forwarded-for", addr).send();
    // One /64 is one subscriber: rotating the low bits does not make a new client.
    assert_eq!(from("2001:db8:0:1::1").await.unwrap().status(), StatusCode::OK);
    assert_eq!(from("2001:db8:0:1::2").await.unwrap().status(), StatusCode::OK);
    assert_eq!(from("2001:db8:0:1:ffff::3").await.unwrap().status(), StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(from("2001:db8:0:2::1").await.unwrap().status(), StatusCode::OK, "another /64");
    assert_eq!(from("192.0.2.1").await.unwrap().status(), StatusCode::OK);
    assert_eq!(from("192.0.2.1").await.unwrap().status(), StatusCode::OK);
    assert_eq!(from("192.0.2.1").await.unwrap().status(), StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(from("192.0.2.2").await.unwrap().status(), StatusCode::OK, "IPv4 addresses are counted alone");
}

#[test]
fn limits_parse_as_requests_per_seconds_and_zero_turns_them_off() {
    assert_eq!(RateLimit::parse("600/60"), Ok(Some(RateLimit { requests: 600, seconds: 60 })));
    assert_eq!(RateLimit::parse("0"), Ok(None));
    for bad in ["600", "0/60", "10/0", "ten/60", "-1/60"] {
        assert!(RateLimit::parse(bad).is_err(), "{bad}");
    }
}

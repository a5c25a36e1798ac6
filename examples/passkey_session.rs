//! A signed-in session with a software passkey, for trying FortiFile with
//! curl where a role requires a passkey (the `compliance` preset's
//! `CompanyAdmin`): signs `FF_USER` in to `FF_TENANT` at `FF_BASE` (which must
//! be the server's `FORTIFILE_PUBLIC_URL`), enrols a software passkey
//! (webauthn-authenticator-rs), steps up with it, and prints the session
//! cookie and CSRF token as `COOKIE=…` and `CSRF=…` for curl. The password is
//! read from `FF_PASSWORD`. A development aid: the key lives only in this
//! process, so the session is the only one it will ever open.
//!
//! `cargo run --example passkey_session`

use serde_json::{Value, json};
use url::Url;
use webauthn_authenticator_rs::{WebauthnAuthenticator, softpasskey::SoftPasskey};

fn env(name: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| panic!("set {name}"))
}

struct Client {
    http: reqwest::Client,
    base: String,
    cookie: String,
    csrf: String,
}

impl Client {
    async fn post(&self, path: &str, body: Value) -> (u16, Value) {
        let res = self
            .http
            .post(format!("{}{path}", self.base))
            .header("cookie", &self.cookie)
            .header("x-csrf-token", &self.csrf)
            .json(&body)
            .send()
            .await
            .expect("the server answers");
        let status = res.status().as_u16();
        let text = res.text().await.unwrap_or_default();
        (status, serde_json::from_str(&text).unwrap_or(Value::String(text)))
    }
}

#[tokio::main]
async fn main() {
    let base = env("FF_BASE");
    let origin = Url::parse(&base).expect("FF_BASE is a URL");
    let http = reqwest::Client::new();
    let res = http
        .post(format!("{base}/auth/login"))
        .json(&json!({ "username": env("FF_USER"), "password": env("FF_PASSWORD"), "tenant": env("FF_TENANT") }))
        .send()
        .await
        .expect("the server answers");
    assert!(res.status().is_success(), "login: {}", res.status());
    let cookie = res
        .headers()
        .get_all("set-cookie")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find(|v| v.contains("fortifile_session="))
        .and_then(|v| v.split(';').next())
        .expect("a session cookie")
        .to_string();
    let body: Value = res.json().await.expect("JSON");
    let csrf = body["csrfToken"].as_str().expect("a CSRF token").to_string();
    let client = Client { http, base, cookie, csrf };

    let mut key = SoftPasskey::new(true);
    let (status, options) = client.post("/me/mfa/webauthn/register/start", json!({ "name": "soft key" })).await;
    assert_eq!(status, 200, "register start: {options}");
    let credential = key.do_registration(origin.clone(), serde_json::from_value(options).unwrap()).unwrap();
    let (status, answer) = client.post("/me/mfa/webauthn/register/finish", json!({ "credential": credential })).await;
    assert_eq!(status, 201, "register finish: {answer}");

    let (status, options) = client.post("/auth/step-up/webauthn/start", json!({})).await;
    assert_eq!(status, 200, "step-up start: {options}");
    let assertion = key.do_authentication(origin, serde_json::from_value(options).unwrap()).unwrap();
    let (status, answer) = client.post("/auth/step-up", json!({ "method": "webauthn", "credential": assertion })).await;
    assert_eq!(status, 204, "step-up: {answer}");
    println!("COOKIE={}", client.cookie);
    println!("CSRF={}", client.csrf);
}

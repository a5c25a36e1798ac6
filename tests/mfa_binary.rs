//! The second factor with the `fortifile` binary itself: a tenant seeded with
//! the `compliance` preset holds its `CompanyAdmin` in enrolment until a passkey
//! is added, and no TOTP secret, recovery code or API key reaches the server's log.

mod common;

use std::{
    path::Path,
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use common::{PASSWORD, Session, TestApp, new_client, scratch_dir};
use fortifile::auth::mfa::totp::{Secret, step_of};
use reqwest::StatusCode;
use serde_json::{Value, json};
use url::Url;
use webauthn_authenticator_rs::{WebauthnAuthenticator, softpasskey::SoftPasskey};

fn fortifile(dir: &Path, app: &TestApp) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_fortifile"));
    cmd.current_dir(dir)
        .env("DATABASE_URL", app.owner_url())
        .env("FORTIFILE_DATA_DIR", dir.join("data"))
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null());
    cmd
}

fn code_now(secret: &Secret) -> String {
    format!("{:06}", secret.code_at(step_of(time::OffsetDateTime::now_utc())))
}

async fn sign_in(base: &str, username: &str, tenant: &str) -> (Session, Value) {
    let client = new_client();
    let res = client
        .post(format!("{base}/auth/login"))
        .json(&json!({ "username": username, "password": PASSWORD, "tenant": tenant }))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    let body: Value = res.json().await.unwrap();
    (Session { client, csrf: body["csrfToken"].as_str().unwrap().into(), base: base.into() }, body)
}

#[tokio::test]
async fn a_compliance_tenants_company_admin_with_only_totp_is_held_in_enrolment_until_a_passkey_is_added() {
    let origin = Url::parse("http://localhost:8080").unwrap();
    let app = TestApp::spawn_with(|c| c.public_url = Some(origin.clone())).await;
    let dir = scratch_dir();
    let seed = fortifile(&dir, &app).args(["seed", "--preset", "compliance", "--tenant", "acme"]).output().unwrap();
    assert!(seed.status.success(), "{}", String::from_utf8_lossy(&seed.stderr));
    let admin = fortifile(&dir, &app)
        .args(["create-admin", "--username", "ceo", "--email", "ceo@acme.example", "--tenant", "acme"])
        .args(["--role", "CompanyAdmin"])
        .env("FORTIFILE_ADMIN_PASSWORD", PASSWORD)
        .output()
        .unwrap();
    assert!(admin.status.success(), "{}", String::from_utf8_lossy(&admin.stderr));

    let (ceo, _) = sign_in(&app.base, "ceo", "acme").await;
    let (status, body) = ceo.get("/api/users").await;
    assert_eq!((status, body["mfaEnrollmentRequired"].clone()), (StatusCode::FORBIDDEN, json!(true)));
    let (_, setup) = ceo.post("/me/mfa/totp/setup", json!({})).await;
    let secret = Secret::from_base32(setup["totp"]["secret"].as_str().unwrap()).unwrap();
    let code = format!("{:06}", secret.code_at(step_of(fortifile::clock::Clock::now(&app.clock))));
    assert_eq!(ceo.post("/me/mfa/totp/confirm", json!({ "code": code })).await.0, StatusCode::OK);
    let (status, _) = ceo.get("/api/users").await;
    assert_eq!(status, StatusCode::FORBIDDEN, "CompanyAdmin needs fido2: TOTP is not enough");

    let mut key = SoftPasskey::new(true);
    let (status, options) = ceo.post("/me/mfa/webauthn/register/start", json!({ "name": "YubiKey" })).await;
    assert_eq!(status, StatusCode::OK, "{options}");
    let credential = key.do_registration(origin, serde_json::from_value(options).unwrap()).unwrap();
    let (status, _) = ceo.post("/me/mfa/webauthn/register/finish", json!({ "credential": credential })).await;
    assert_eq!(status, StatusCode::CREATED);
    assert_eq!(ceo.get("/api/users").await.0, StatusCode::OK, "compliant with a passkey");
}

#[tokio::test]
async fn no_totp_secret_recovery_code_or_api_key_reaches_the_servers_log_even_at_debug() {
    let app = TestApp::spawn().await;
    app.create_user("ana", "student", "General", "public").await;
    let dir = scratch_dir();
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let log = dir.join("serve.log");
    let mut server = fortifile(&dir, &app)
        .arg("serve")
        .env("FORTIFILE_BIND", format!("127.0.0.1:{port}"))
        .env("RUST_LOG", "debug")
        .stdout(std::fs::File::create(dir.join("serve.out")).unwrap())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let base = format!("http://127.0.0.1:{port}");
    let started = Instant::now();
    while reqwest::get(format!("{base}/readyz")).await.map(|r| r.status() != StatusCode::OK).unwrap_or(true) {
        assert!(server.try_wait().unwrap().is_none(), "serve exited early");
        assert!(started.elapsed() < Duration::from_secs(60), "serve did not become ready");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    let (ana, _) = sign_in(&base, "ana", "default").await;
    let (_, setup) = ana.post("/me/mfa/totp/setup", json!({})).await;
    let shown = setup["totp"]["secret"].as_str().unwrap().to_string();
    let secret = Secret::from_base32(&shown).unwrap();
    let (_, enrolled) = ana.post("/me/mfa/totp/confirm", json!({ "code": code_now(&secret) })).await;
    let codes: Vec<String> =
        enrolled["enrolled"]["recoveryCodes"].as_array().unwrap().iter().map(|c| c.as_str().unwrap().into()).collect();
    let (pending, body) = sign_in(&base, "ana", "default").await;
    assert_eq!(body["mfaRequired"], true);
    let (status, _) = pending.post("/auth/mfa/recovery", json!({ "code": codes[0] })).await;
    assert_eq!(status, StatusCode::OK);
    // An API key, used once: its text must not reach the log either.
    let (status, created) = ana.post("/me/api-keys", json!({ "name": "canary" })).await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    let key = created["apiKey"]["key"].as_str().unwrap().to_string();
    let res = reqwest::Client::new().get(format!("{base}/api/files")).bearer_auth(&key).send().await.unwrap();
    assert_eq!(res.status(), StatusCode::OK);

    Command::new("kill").args(["-TERM", &server.id().to_string()]).status().unwrap();
    server.wait().unwrap();
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(text.contains("DEBUG") || text.contains("debug"), "the log ran at debug: {}", &text[..text.len().min(500)]);
    for canary in [&shown, &key[12..].to_string()].into_iter().chain(codes.iter()) {
        assert!(!text.contains(canary.as_str()), "{canary} is in the server's log");
    }
}

//! Passkeys (WebAuthn) over the real HTTP stack, with webauthn-authenticator-rs'
//! software authenticator in place of a browser and a security key.

mod common;

use common::{PASSWORD, Session, TestApp, new_client};
use reqwest::StatusCode;
use serde_json::{Value, json};
use url::Url;
use webauthn_authenticator_rs::{WebauthnAuthenticator, softpasskey::SoftPasskey};

const ORIGIN: &str = "http://localhost:8080";

async fn app() -> TestApp {
    TestApp::spawn_with(|c| c.public_url = Some(Url::parse(ORIGIN).unwrap())).await
}

fn origin() -> Url {
    Url::parse(ORIGIN).unwrap()
}

/// Registers a passkey held by `key` for the signed-in `s`; returns the answer.
async fn register(s: &Session, key: &mut SoftPasskey, name: &str) -> (StatusCode, Value) {
    let (status, options) = s.post("/me/mfa/webauthn/register/start", json!({ "name": name })).await;
    assert_eq!(status, StatusCode::OK, "{options}");
    let credential = key.do_registration(origin(), serde_json::from_value(options).unwrap()).unwrap();
    s.post("/me/mfa/webauthn/register/finish", json!({ "credential": credential })).await
}

/// The password step: a pending session.
async fn pending(app: &TestApp, username: &str) -> Session {
    let client = new_client();
    let res = app.login_with(&client, username, PASSWORD).await;
    let body: Value = res.json().await.unwrap();
    assert_eq!(body["mfaRequired"], true, "{body}");
    Session { client, csrf: body["csrfToken"].as_str().unwrap().into(), base: app.base.clone() }
}

/// Signs a login challenge with `key`: the assertion to finish with.
async fn assertion(s: &Session, start: &str, key: &mut SoftPasskey) -> Value {
    let (status, options) = s.post(start, json!({})).await;
    assert_eq!(status, StatusCode::OK, "{options}");
    serde_json::to_value(key.do_authentication(origin(), serde_json::from_value(options).unwrap()).unwrap()).unwrap()
}

#[tokio::test]
async fn a_passkey_registers_and_then_opens_the_second_step() {
    let app = app().await;
    let s = app.signed_in_as("ana", "student", "public").await;
    let mut key = SoftPasskey::new(true);
    let (status, body) = register(&s, &mut key, "laptop").await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    assert_eq!(body["enrolled"]["recoveryCodes"].as_array().unwrap().len(), 10, "the first factor");
    let (_, mfa) = s.get("/me/mfa").await;
    assert_eq!(mfa["mfa"]["methods"], json!(["webauthn"]));
    assert_eq!(mfa["mfa"]["passkeys"][0]["name"], "laptop");

    let p = pending(&app, "ana").await;
    let signed = assertion(&p, "/auth/mfa/webauthn/start", &mut key).await;
    let (status, body) = p.post("/auth/mfa/webauthn/finish", json!({ "credential": signed })).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let full = Session { client: p.client, csrf: body["csrfToken"].as_str().unwrap().into(), base: app.base.clone() };
    assert_eq!(full.get("/me").await.0, StatusCode::OK);
    let (_, mfa) = full.get("/me/mfa").await;
    assert!(mfa["mfa"]["passkeys"][0]["lastUsedAt"].is_string(), "its last use is recorded");
    let verified = app.audit("auth.mfa.verify").await;
    assert_eq!((verified[0].result.as_str(), &verified[0].details["method"]), ("success", &json!("webauthn")));
}

#[tokio::test]
async fn a_replayed_assertion_is_refused() {
    let app = app().await;
    let s = app.signed_in_as("ana", "student", "public").await;
    let mut key = SoftPasskey::new(true);
    register(&s, &mut key, "laptop").await;
    let p = pending(&app, "ana").await;
    let signed = assertion(&p, "/auth/mfa/webauthn/start", &mut key).await;
    let (status, _) = p.post("/auth/mfa/webauthn/finish", json!({ "credential": signed.clone() })).await;
    assert_eq!(status, StatusCode::OK);

    // The same signed answer again, on a new pending session with a challenge of its own.
    let again = pending(&app, "ana").await;
    again.post("/auth/mfa/webauthn/start", json!({})).await;
    let (status, _) = again.post("/auth/mfa/webauthn/finish", json!({ "credential": signed.clone() })).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "another challenge: the old signature does not fit");
    // Without any challenge in progress, nothing to answer.
    let (status, _) = again.post("/auth/mfa/webauthn/finish", json!({ "credential": signed })).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "a ceremony is used once");
}

#[tokio::test]
async fn an_answer_to_a_challenge_of_another_session_is_refused() {
    let app = app().await;
    let s = app.signed_in_as("ana", "student", "public").await;
    let mut key = SoftPasskey::new(true);
    register(&s, &mut key, "laptop").await;
    let first = pending(&app, "ana").await;
    let second = pending(&app, "ana").await;
    let signed = assertion(&first, "/auth/mfa/webauthn/start", &mut key).await;
    second.post("/auth/mfa/webauthn/start", json!({})).await;
    let (status, _) = second.post("/auth/mfa/webauthn/finish", json!({ "credential": signed })).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "the wrong challenge");
    assert_eq!(app.audit("auth.mfa.verify").await[0].result, "fail");
}

#[tokio::test]
async fn another_users_passkey_does_not_open_an_account() {
    let app = app().await;
    let ana = app.signed_in_as("ana", "student", "public").await;
    let bob = app.signed_in_as("bob", "student", "public").await;
    let mut anas = SoftPasskey::new(true);
    let mut bobs = SoftPasskey::new(true);
    register(&ana, &mut anas, "ana's").await;
    register(&bob, &mut bobs, "bob's").await;
    // Bob's authenticator answers Ana's challenge: it holds none of her credentials.
    let p = pending(&app, "ana").await;
    let (_, options) = p.post("/auth/mfa/webauthn/start", json!({})).await;
    assert!(bobs.do_authentication(origin(), serde_json::from_value(options.clone()).unwrap()).is_err());
    // Bob's own assertion, from his own ceremony, presented on Ana's pending session.
    let bp = pending(&app, "bob").await;
    let bobs_answer = assertion(&bp, "/auth/mfa/webauthn/start", &mut bobs).await;
    let (status, _) = p.post("/auth/mfa/webauthn/finish", json!({ "credential": bobs_answer })).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn a_credential_is_excluded_from_its_owners_next_registration_and_an_answer_that_does_not_verify_is_refused() {
    let app = app().await;
    let s = app.signed_in_as("ana", "student", "public").await;
    let mut key = SoftPasskey::new(true);
    register(&s, &mut key, "laptop").await;
    // The server excludes it, so the authenticator itself refuses a second time.
    let (_, options) = s.post("/me/mfa/webauthn/register/start", json!({ "name": "again" })).await;
    assert!(options["publicKey"]["excludeCredentials"].as_array().is_some_and(|e| e.len() == 1), "{options}");
    let (status, body) = s
        .post(
            "/me/mfa/webauthn/register/finish",
            json!({ "credential": {
        "id": "AAAA", "rawId": "AAAA", "type": "public-key",
        "response": { "attestationObject": "AAAA", "clientDataJSON": "AAAA" } } }),
        )
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    let fails = app.audit("auth.mfa.enroll").await;
    assert!(fails.iter().any(|r| r.result == "fail"), "a failed registration is audited");
}

#[tokio::test]
async fn a_fido2_role_is_held_until_a_passkey_is_added_with_a_step_up() {
    let app = app().await;
    let admin = app.admin().await;
    let totp_secret = {
        let (_, setup) = admin.post("/me/mfa/totp/setup", json!({})).await;
        let secret =
            fortifile::auth::mfa::totp::Secret::from_base32(setup["totp"]["secret"].as_str().unwrap()).unwrap();
        let now = fortifile::clock::Clock::now(&app.clock);
        let code = format!("{:06}", secret.code_at(fortifile::auth::mfa::totp::step_of(now)));
        assert_eq!(admin.post("/me/mfa/totp/confirm", json!({ "code": code })).await.0, StatusCode::OK);
        secret
    };
    let mut owner = app.owner_conn().await;
    sqlx::query("UPDATE roles SET requires_mfa = true, mfa_type = 'fido2' WHERE name = 'admin'")
        .execute(&mut owner)
        .await
        .unwrap();
    assert_eq!(admin.get("/api/users").await.0, StatusCode::FORBIDDEN, "TOTP is not enough");
    app.clock.advance(time::Duration::minutes(11));
    let (status, body) = admin.post("/me/mfa/webauthn/register/start", json!({ "name": "key" })).await;
    assert_eq!(
        (status, body["stepUp"].clone()),
        (StatusCode::UNAUTHORIZED, json!(true)),
        "adding a factor needs a step-up"
    );
    let now = fortifile::clock::Clock::now(&app.clock);
    let code = format!("{:06}", totp_secret.code_at(fortifile::auth::mfa::totp::step_of(now)));
    assert_eq!(admin.post("/auth/step-up", json!({ "code": code })).await.0, StatusCode::NO_CONTENT);
    let mut key = SoftPasskey::new(true);
    let (status, body) = register(&admin, &mut key, "key").await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    assert!(body["enrolled"].get("recoveryCodes").is_none(), "not the first factor");
    assert_eq!(admin.get("/api/users").await.0, StatusCode::OK, "compliant now");

    // A passkey step-up works as well as a code.
    app.clock.advance(time::Duration::minutes(11));
    let signed = assertion(&admin, "/auth/step-up/webauthn/start", &mut key).await;
    let (status, body) = admin.post("/auth/step-up", json!({ "method": "webauthn", "credential": signed })).await;
    assert_eq!(status, StatusCode::NO_CONTENT, "{body}");
}

#[tokio::test]
async fn passkeys_are_renamed_and_removed_only_by_their_owner() {
    let app = app().await;
    let ana = app.signed_in_as("ana", "student", "public").await;
    let bob = app.signed_in_as("bob", "student", "public").await;
    let mut key = SoftPasskey::new(true);
    register(&ana, &mut key, "laptop").await;
    let (_, mfa) = ana.get("/me/mfa").await;
    let id = mfa["mfa"]["passkeys"][0]["id"].as_str().unwrap().to_string();
    assert_eq!(bob.patch(&format!("/me/mfa/webauthn/{id}"), json!({ "name": "mine" })).await.0, StatusCode::NOT_FOUND);
    assert_eq!(bob.delete(&format!("/me/mfa/webauthn/{id}")).await.0, StatusCode::NOT_FOUND);
    assert_eq!(
        ana.patch(&format!("/me/mfa/webauthn/{id}"), json!({ "name": "work laptop" })).await.0,
        StatusCode::NO_CONTENT
    );
    let (_, mfa) = ana.get("/me/mfa").await;
    assert_eq!(mfa["mfa"]["passkeys"][0]["name"], "work laptop");
    assert_eq!(ana.delete(&format!("/me/mfa/webauthn/{id}")).await.0, StatusCode::NO_CONTENT);
    let (_, mfa) = ana.get("/me/mfa").await;
    assert_eq!((mfa["mfa"]["enabled"].clone(), mfa["mfa"]["recoveryCodesRemaining"].clone()), (json!(false), json!(0)));
}

#[tokio::test]
async fn with_an_ip_address_as_public_url_passkeys_are_unavailable_and_say_why() {
    let app = TestApp::spawn_with(|c| c.public_url = Some(Url::parse("http://127.0.0.1:8080").unwrap())).await;
    let s = app.signed_in_as("ana", "student", "public").await;
    let (status, body) = s.post("/me/mfa/webauthn/register/start", json!({})).await;
    assert_eq!(status, StatusCode::CONFLICT);
    assert!(body["error"].as_str().unwrap().contains("localhost"), "{body}");
    let (_, mfa) = s.get("/me/mfa").await;
    assert!(mfa["mfa"]["passkeysUnavailable"].as_str().unwrap().contains("IP address"), "{mfa}");
}

#[tokio::test]
async fn a_credential_id_belongs_to_one_account_across_every_tenant() {
    let app = app().await;
    let ana = app.signed_in_as("ana", "student", "public").await;
    app.create_user("bob", "student", "General", "public").await;
    register(&ana, &mut SoftPasskey::new(true), "laptop").await;
    let mut owner = app.owner_conn().await;
    let (credential, passkey): (Vec<u8>, Value) =
        sqlx::query_as("SELECT credential_id, passkey FROM mfa_webauthn").fetch_one(&mut owner).await.unwrap();
    let copy = sqlx::query(
        "INSERT INTO mfa_webauthn (tenant_id, user_id, credential_id, name, passkey, created_at) \
         SELECT tenant_id, id, $1, 'copy', $2, now() FROM users WHERE username = 'bob'",
    )
    .bind(&credential)
    .bind(&passkey)
    .execute(&mut owner)
    .await;
    assert!(copy.is_err_and(|e| e.as_database_error().is_some_and(|d| d.is_unique_violation())));
}

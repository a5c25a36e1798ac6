//! The second factor in pages: the enrolment page, its forms without script,
//! the redirect of a held session, and the step-up page in front of a form.

mod common;

use common::{Session, TestApp};
use fortifile::{
    auth::mfa::totp::{Secret, step_of},
    clock::Clock,
};
use reqwest::{StatusCode, header};
use serde_json::json;

fn code(app: &TestApp, secret: &Secret) -> String {
    format!("{:06}", secret.code_at(step_of(app.clock.now())))
}

async fn form(s: &Session, path: &str, fields: &[(&str, &str)], referer: Option<&str>) -> reqwest::Response {
    let mut body: Vec<(&str, &str)> = vec![("csrf_token", &s.csrf)];
    body.extend_from_slice(fields);
    let mut req = s.client.post(format!("{}{path}", s.base)).form(&body);
    if let Some(r) = referer {
        req = req.header(header::REFERER, format!("{}{r}", s.base));
    }
    req.send().await.unwrap()
}

/// Enrols TOTP through the page's forms; returns the secret the page showed.
async fn enrol_on_the_page(app: &TestApp, s: &Session) -> Secret {
    let page = form(s, "/me/mfa/form/totp-setup", &[], None).await;
    assert_eq!(page.status(), StatusCode::OK);
    let html = page.text().await.unwrap();
    assert!(html.contains("<svg"), "the QR code is in the page");
    let shown = html.split("id=\"totp-secret\">").nth(1).unwrap().split('<').next().unwrap().to_string();
    let secret = Secret::from_base32(&shown).unwrap();

    let wrong = form(s, "/me/mfa/form/totp-confirm", &[("code", "000000"), ("secret", &shown)], None).await;
    assert_eq!(wrong.status(), StatusCode::UNPROCESSABLE_ENTITY);
    assert!(wrong.text().await.unwrap().contains(&shown), "a wrong code shows the same secret again");

    let done = form(s, "/me/mfa/form/totp-confirm", &[("code", &code(app, &secret)), ("secret", &shown)], None).await;
    assert_eq!(done.status(), StatusCode::OK);
    let html = done.text().await.unwrap();
    assert_eq!(html.matches("<li><code>").count(), 10, "the recovery codes, once");
    secret
}

#[tokio::test]
async fn the_enrolment_page_is_html_for_browsers_and_json_for_programs() {
    let app = TestApp::spawn().await;
    let s = app.signed_in_as("ana", "student", "public").await;
    let page = s.client.get(format!("{}/me/mfa", app.base)).header(header::ACCEPT, "text/html").send().await.unwrap();
    assert_eq!(page.status(), StatusCode::OK);
    let csp = page.headers().get("content-security-policy").unwrap().to_str().unwrap().to_string();
    assert!(csp.contains("script-src 'self'"), "{csp}");
    assert!(page.text().await.unwrap().contains("Set up an authenticator app"));
    let (status, body) = s.get("/me/mfa").await;
    assert_eq!((status, body["mfa"]["enabled"].clone()), (StatusCode::OK, json!(false)));
}

#[tokio::test]
async fn an_authenticator_app_is_enrolled_with_the_forms_alone() {
    let app = TestApp::spawn().await;
    let s = app.signed_in_as("ana", "student", "public").await;
    enrol_on_the_page(&app, &s).await;
    let (_, body) = s.get("/me/mfa").await;
    assert_eq!(body["mfa"]["methods"], json!(["totp"]));
    let enrolments = app.audit("auth.mfa.enroll").await;
    assert_eq!(enrolments.iter().map(|r| r.result.as_str()).collect::<Vec<_>>(), ["fail", "success"]);
}

#[tokio::test]
async fn a_held_session_is_sent_from_any_page_to_the_enrolment_page() {
    let app = TestApp::spawn().await;
    let s = app.signed_in_as("ana", "student", "public").await;
    let mut owner = app.owner_conn().await;
    sqlx::query("UPDATE roles SET requires_mfa = true WHERE name = 'student'").execute(&mut owner).await.unwrap();
    let page = s.client.get(format!("{}/", app.base)).header(header::ACCEPT, "text/html").send().await.unwrap();
    assert_eq!(page.url().path(), "/me/mfa");
    assert!(page.text().await.unwrap().contains("Your role requires a second factor"));
    enrol_on_the_page(&app, &s).await;
    let page = s.client.get(format!("{}/", app.base)).send().await.unwrap();
    assert_eq!(page.url().path(), "/", "enrolled: the documents again");
}

#[tokio::test]
async fn a_page_form_without_a_recent_step_up_goes_through_the_step_up_page_and_back() {
    let app = TestApp::spawn().await;
    let admin = app.admin().await;
    let secret = enrol_on_the_page(&app, &admin).await;
    app.clock.advance(time::Duration::minutes(11));
    let role = app.role_id("student").await;
    let res = form(&admin, &format!("/admin/roles/{role}"), &[("grant", "file.download")], Some("/admin/roles")).await;
    assert_eq!(res.url().path(), "/step-up", "sent to the step-up page");
    assert_eq!(res.url().query(), Some("next=%2Fadmin%2Froles"));
    assert_eq!(app.audit_count("role.update").await + app.audit_count("role.permission_revoke").await, 0);

    let page = admin.client.get(format!("{}/step-up?next=%2Fadmin%2Froles", app.base)).send().await.unwrap();
    assert!(page.text().await.unwrap().contains("needs your second factor again"));
    let wrong = form(&admin, "/step-up", &[("code", "000000"), ("next", "/admin/roles")], None).await;
    assert_eq!(wrong.status(), StatusCode::UNAUTHORIZED);
    let right = form(&admin, "/step-up", &[("code", &code(&app, &secret)), ("next", "/admin/roles")], None).await;
    assert_eq!(right.url().path(), "/admin/roles", "back where the form was");
    let res = form(&admin, &format!("/admin/roles/{role}"), &[("grant", "file.download")], Some("/admin/roles")).await;
    assert_eq!(res.url().path(), "/admin/roles", "the form went through");
    assert!(app.audit_count("role.permission_revoke").await > 0, "and changed the role");
}

#[tokio::test]
async fn the_step_up_page_only_returns_to_our_own_pages() {
    let app = TestApp::spawn().await;
    let s = app.signed_in_as("ana", "student", "public").await;
    let page = s.client.get(format!("{}/step-up?next=https%3A%2F%2Fevil.example", app.base)).send().await.unwrap();
    let html = page.text().await.unwrap();
    assert!(html.contains("name=\"next\" value=\"/\""), "an outside target becomes /");
}

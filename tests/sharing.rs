//! Sharing decides before it answers: someone who may not share a file learns
//! nothing about recipients or owners; a share belongs to whoever gave it; and
//! the shares one gave are listed only for documents one may still read.

mod common;

use common::TestApp;
use fortifile::clock::Clock;
use reqwest::StatusCode;
use serde_json::json;
use time::format_description::well_known::Rfc3339;

#[tokio::test]
async fn sharing_a_file_one_may_not_share_is_refused_before_anything_about_the_recipient_is_said() {
    let app = TestApp::spawn().await;
    let admin = app.admin().await;
    admin.post("/api/departments", json!({ "name": "Research" })).await;
    let carol = app.signed_in_as("carol", "staff", "confidential").await;
    let general = carol.upload_ok("budget.txt", b"budget", None).await;
    let secret = carol.upload_ok("salaries.txt", b"salaries", Some("confidential")).await;
    app.create_user("rita", "staff", "Research", "confidential").await;
    let rita = app.session("rita").await;
    let pete = app.signed_in_as("pete", "staff", "public").await;

    // Outside rita's department scope: the same 403 whoever the recipient is.
    let mut answers = Vec::new();
    for recipient in ["nosuchuser", "carol", "pete"] {
        let before = app.audit_count("rbac.denied").await;
        let (status, body) = rita.post(&format!("/api/files/{general}/shares"), json!({ "username": recipient })).await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{recipient}: {body}");
        let rows = app.audit("rbac.denied").await;
        assert_eq!(rows.len(), before + 1, "{recipient}: every attempt is recorded");
        assert_eq!(rows.last().unwrap().details["reason"], "outside_scope");
        answers.push(body);
    }
    assert!(answers.windows(2).all(|w| w[0] == w[1]), "{answers:?}");

    // Above pete's clearance: mac.denied, again before the recipient is looked up.
    for recipient in ["nosuchuser", "carol"] {
        let before = app.audit_count("mac.denied").await;
        let (status, _) = pete.post(&format!("/api/files/{secret}/shares"), json!({ "username": recipient })).await;
        assert_eq!(status, StatusCode::FORBIDDEN);
        assert_eq!(app.audit_count("mac.denied").await, before + 1);
    }
    assert_eq!(app.audit_count("file.share").await, 0);
}

#[tokio::test]
async fn a_share_someone_else_gave_is_theirs_to_change() {
    let app = TestApp::spawn().await;
    let carol = app.signed_in_as("carol", "staff", "public").await;
    let erin = app.signed_in_as("erin", "staff", "public").await;
    app.create_user("dave", "staff", "General", "public").await;
    let id = carol.upload_ok("plan.txt", b"plan", None).await;
    let until = (app.clock.now() + time::Duration::days(2)).format(&Rfc3339).unwrap();
    let (status, _) =
        carol.post(&format!("/api/files/{id}/shares"), json!({ "username": "dave", "expiresAt": until })).await;
    assert_eq!(status, StatusCode::CREATED);

    let (status, body) = erin.post(&format!("/api/files/{id}/shares"), json!({ "username": "dave" })).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    let denied = app.audit("rbac.denied").await;
    assert_eq!(denied.last().unwrap().details["reason"], "share_given_by_another");
    let (_, shares) = carol.get(&format!("/api/files/{id}/shares")).await;
    let share = &shares["shares"][0];
    assert_eq!((share["sharedBy"].clone(), share["expiresAt"].is_string()), (json!("carol"), true), "{share}");
    assert_eq!(app.audit_count("file.share").await, 1);

    // The giver may change their own share.
    let (status, body) = carol.post(&format!("/api/files/{id}/shares"), json!({ "username": "dave" })).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert!(body["share"]["expiresAt"].is_null());
}

#[tokio::test]
async fn the_shares_one_gave_list_only_documents_one_may_still_read() {
    let app = TestApp::spawn().await;
    let admin = app.admin().await;
    let carol = app.signed_in_as("carol", "staff", "confidential").await;
    app.create_user("dave", "staff", "General", "confidential").await;
    let id = carol.upload_ok("acquisition-shortlist.txt", b"names", Some("confidential")).await;
    assert_eq!(
        carol.post(&format!("/api/files/{id}/shares"), json!({ "username": "dave" })).await.0,
        StatusCode::CREATED
    );
    let page = |s: &common::Session| {
        let (client, base) = (s.client.clone(), s.base.clone());
        async move { client.get(format!("{base}/")).send().await.unwrap().text().await.unwrap() }
    };
    assert!(page(&carol).await.contains("acquisition-shortlist.txt"));

    let carol_id = app.user_id("carol").await;
    let (status, _) = admin.put(&format!("/api/users/{carol_id}"), json!({ "clearanceLevel": "public" })).await;
    assert_eq!(status, StatusCode::OK);
    assert!(!page(&carol).await.contains("acquisition-shortlist"), "the name is as classified as its document");
}

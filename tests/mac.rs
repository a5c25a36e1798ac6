//! The mandatory access control matrix (seed 000 §3): clearance × classification
//! × {list, view, download, share to a recipient of each clearance}. Everyone
//! here is an administrator with tenant-wide grants, so RBAC never refuses and
//! every refusal is MAC's: allowed exactly when clearance ≥ classification (and,
//! for shares, the recipient's clearance ≥ classification too), each refusal
//! with exactly one `mac.denied` row.

mod common;

use common::TestApp;
use reqwest::StatusCode;
use serde_json::json;
use uuid::Uuid;

const LEVELS: [(&str, i32); 3] = [("public", 1), ("confidential", 2), ("restricted", 3)];

#[tokio::test]
async fn mac_allows_exactly_when_clearance_dominates_classification_for_every_operation() {
    let app = TestApp::spawn().await;
    let owner = app.signed_in_as("owner", "admin", "restricted").await;
    let mut files: Vec<(Uuid, &str, i32)> = Vec::new();
    for (class, rank) in LEVELS {
        files.push((owner.upload_ok(&format!("{class}.txt"), class.as_bytes(), Some(class)).await, class, rank));
    }
    for (clearance, _) in LEVELS {
        app.create_user(&format!("to-{clearance}"), "student", "General", clearance).await;
    }

    let mut checked = 0;
    for (clearance, cleared) in LEVELS {
        let user = app.signed_in_as(&format!("user-{clearance}"), "admin", clearance).await;

        // list: never a title above the clearance.
        let (_, listed) = user.get("/api/files").await;
        let mut names: Vec<String> =
            listed["files"].as_array().unwrap().iter().map(|f| f["name"].as_str().unwrap().to_string()).collect();
        names.sort();
        let mut expected: Vec<String> =
            files.iter().filter(|(_, _, rank)| cleared >= *rank).map(|(_, c, _)| format!("{c}.txt")).collect();
        expected.sort();
        assert_eq!(names, expected, "list for {clearance}");

        for (id, class, rank) in &files {
            let allowed = cleared >= *rank;
            for (op, path) in [("view", format!("/api/files/{id}")), ("download", format!("/api/files/{id}/download"))]
            {
                let before = app.audit("mac.denied").await.len();
                let status = user.get(&path).await.0;
                let rows = app.audit("mac.denied").await;
                if allowed {
                    assert_eq!(status, StatusCode::OK, "{op} {class} by {clearance}");
                    assert_eq!(rows.len(), before);
                } else {
                    assert_eq!(status, StatusCode::FORBIDDEN, "{op} {class} by {clearance}");
                    assert_eq!(rows.len(), before + 1, "one mac.denied for {op} {class} by {clearance}");
                    let row = rows.last().unwrap();
                    assert_eq!(row.details["operation"], op);
                    assert_eq!(row.details["clearance"], clearance);
                    assert_eq!(row.details["classification"], *class);
                }
                checked += 1;
            }
            for (recipient_clearance, recipient_rank) in LEVELS {
                let before = app.audit("mac.denied").await.len();
                let (status, body) = user
                    .post(
                        &format!("/api/files/{id}/shares"),
                        json!({ "username": format!("to-{recipient_clearance}") }),
                    )
                    .await;
                let rows = app.audit("mac.denied").await;
                let what = format!("share {class} by {clearance} to {recipient_clearance}");
                if allowed && recipient_rank >= *rank {
                    assert_eq!(status, StatusCode::CREATED, "{what}: {body}");
                    assert_eq!(rows.len(), before, "{what}");
                    // Revoked again, so the next sharer's share is a new one of their own
                    // (a share someone else gave is not theirs to change).
                    let share = body["share"]["id"].as_str().unwrap();
                    let (status, _) = user.delete(&format!("/api/files/{id}/shares/{share}")).await;
                    assert_eq!(status, StatusCode::NO_CONTENT, "{what}: revoke");
                } else {
                    assert_eq!(status, StatusCode::FORBIDDEN, "{what}");
                    assert_eq!(rows.len(), before + 1, "{what}");
                    let row = rows.last().unwrap();
                    assert_eq!(row.details["operation"], "share");
                    if allowed {
                        assert_eq!(row.details["recipientClearance"], recipient_clearance, "{what}");
                    } else {
                        assert!(
                            row.details.get("recipientClearance").is_none(),
                            "{what}: the sharer's own clearance fails first"
                        );
                    }
                }
                checked += 1;
            }
        }
    }
    assert_eq!(checked, 3 * 3 * 5);
}

#[tokio::test]
async fn a_share_recipient_is_still_bound_by_mac_when_the_file_is_raised_later() {
    let app = TestApp::spawn().await;
    let admin = app.admin().await;
    let reader = app.signed_in_as("pupil", "student", "public").await;
    let id = admin.upload_ok("memo.txt", b"memo", Some("public")).await;
    let (status, _) = admin.post(&format!("/api/files/{id}/shares"), json!({ "username": "pupil" })).await;
    assert_eq!(status, StatusCode::CREATED);
    assert_eq!(reader.download(id).await.status(), StatusCode::OK);

    let (status, _) = admin.patch(&format!("/api/files/{id}"), json!({ "classification": "confidential" })).await;
    assert_eq!(status, StatusCode::OK);
    let before = app.audit_count("mac.denied").await;
    assert_eq!(reader.download(id).await.status(), StatusCode::FORBIDDEN);
    assert_eq!(app.audit_count("mac.denied").await, before + 1);
    assert_eq!(reader.get("/api/files").await.1["files"], json!([]), "the title is gone from the list too");
}

#[tokio::test]
async fn a_request_failing_both_mac_and_rbac_is_recorded_as_mac_denied() {
    let app = TestApp::spawn().await;
    let admin = app.admin().await;
    let id = admin.upload_ok("secret.txt", b"secret", Some("restricted")).await;
    // A public student: outside the student's own scope AND above their clearance.
    let pupil = app.signed_in_as("pupil", "student", "public").await;
    let (mac, rbac) = (app.audit_count("mac.denied").await, app.audit_count("rbac.denied").await);
    assert_eq!(pupil.download(id).await.status(), StatusCode::FORBIDDEN);
    assert_eq!(app.audit_count("mac.denied").await, mac + 1);
    assert_eq!(app.audit_count("rbac.denied").await, rbac);
}

#[tokio::test]
async fn lowering_a_users_clearance_takes_their_files_away_on_the_next_request() {
    let app = TestApp::spawn().await;
    let admin = app.admin().await;
    let staff = app.signed_in_as("carol", "staff", "confidential").await;
    let id = staff.upload_ok("mine.txt", b"mine", Some("confidential")).await;
    assert_eq!(staff.download(id).await.status(), StatusCode::OK);
    let carol = app.user_id("carol").await;
    let (status, body) = admin.put(&format!("/api/users/{carol}"), json!({ "clearanceLevel": "public" })).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let staff = app.session("carol").await;
    assert_eq!(staff.download(id).await.status(), StatusCode::FORBIDDEN, "MAC binds the owner too");
}

//! `/api/roles`, `/api/departments` and `/api/clearance-levels`: seed 002's
//! shapes, validation, conflicts, and before/after in the audit log.

mod common;

use common::TestApp;
use reqwest::StatusCode;
use serde_json::json;

#[tokio::test]
async fn roles_are_listed_with_seed_002s_nested_permissions_scopes_and_user_counts() {
    let app = TestApp::spawn().await;
    let admin = app.admin().await;
    app.create_user("sam", "student", "General", "public").await;
    let (status, body) = admin.get("/api/roles").await;
    assert_eq!(status, StatusCode::OK);
    let roles = body["roles"].as_array().unwrap();
    let names: Vec<&str> = roles.iter().map(|r| r["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["admin", "staff", "student"]);
    let student = &roles[2];
    assert_eq!(student["userCount"], 1);
    assert_eq!(
        student["permissions"]["file"],
        json!({ "upload": true, "download": true, "share": false, "delete": true, "classify": false })
    );
    assert_eq!(student["permissions"]["users"]["view"], false);
    assert_eq!(student["scopes"]["file"], json!({ "upload": "own", "download": "own", "delete": "own" }));
    assert_eq!(roles[1]["scopes"]["file"]["share"], "department");
    assert_eq!(roles[0]["scopes"]["admin"]["manage_roles"], "tenant");
    assert!(student["sessionTimeoutMinutes"].is_null() && student["requiresMfa"] == false);
}

#[tokio::test]
async fn a_role_is_created_updated_and_deleted_with_each_change_audited() {
    let app = TestApp::spawn().await;
    let admin = app.admin().await;
    let body = json!({
        "name": "auditor",
        "description": "Reads the log",
        "permissions": { "admin": { "view_logs": true }, "file": { "download": "department" } },
        "sessionTimeoutMinutes": 20,
        "requiresMfa": true,
        "mfaType": "totp",
    });
    let (status, created) = admin.post("/api/roles", body.clone()).await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    let role = &created["role"];
    assert_eq!(role["scopes"], json!({ "admin": { "view_logs": "tenant" }, "file": { "download": "department" } }));
    assert_eq!((role["sessionTimeoutMinutes"].clone(), role["requiresMfa"].clone()), (json!(20), json!(true)));
    assert_eq!(admin.post("/api/roles", json!({ "name": "AUDITOR" })).await.0, StatusCode::CONFLICT);
    let id = role["id"].as_str().unwrap();
    let create_row = &app.audit("role.create").await[0];
    assert_eq!(create_row.details["after"]["permissions"].as_array().unwrap().len(), 2);

    let (status, updated) = admin
        .put(
            &format!("/api/roles/{id}"),
            json!({ "description": "Reads the audit log", "sessionTimeoutMinutes": null }),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{updated}");
    assert!(updated["role"]["sessionTimeoutMinutes"].is_null());
    let update_row = &app.audit("role.update").await[0];
    assert_eq!(update_row.details["changes"]["sessionTimeoutMinutes"], json!({ "before": 20, "after": null }));
    assert_eq!(update_row.details["changes"]["description"]["after"], "Reads the audit log");
    assert!(update_row.details["changes"].get("name").is_none(), "unchanged fields are not listed");

    let user = app.create_user("aud", "auditor", "General", "public").await;
    let (status, body) = admin.delete(&format!("/api/roles/{id}")).await;
    assert_eq!(status, StatusCode::CONFLICT, "{body}");
    let mut conn = app.owner_conn().await;
    sqlx::query("DELETE FROM users WHERE id = $1").bind(user).execute(&mut conn).await.unwrap();
    assert_eq!(admin.delete(&format!("/api/roles/{id}")).await.0, StatusCode::NO_CONTENT);
    assert_eq!(admin.get(&format!("/api/roles/{id}")).await.0, StatusCode::NOT_FOUND);
    assert_eq!(app.audit("role.delete").await[0].details["before"]["name"], "auditor");
}

#[tokio::test]
async fn invalid_role_input_answers_422_naming_the_field() {
    let app = TestApp::spawn().await;
    let admin = app.admin().await;
    for (body, field) in [
        (json!({ "name": "x", "permissions": { "file": { "burn": true } } }), "permissions"),
        (json!({ "name": "" }), "name"),
        (json!({ "name": "x", "sessionTimeoutMinutes": 0 }), "sessionTimeoutMinutes"),
        (json!({ "name": "x", "mfaType": "sms" }), "mfaType"),
    ] {
        let (status, answer) = admin.post("/api/roles", body.clone()).await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}: {answer}");
        assert_eq!(answer["field"], field, "{body}: {answer}");
    }
    let (status, _) =
        admin.post("/api/roles", json!({ "name": "x", "permissions": { "file": { "upload": "galaxy" } } })).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
}

#[tokio::test]
async fn what_registration_relies_on_cannot_be_renamed_or_deleted() {
    let app = TestApp::spawn().await;
    let admin = app.admin().await;
    let (_, roles) = admin.get("/api/roles").await;
    let student = roles["roles"].as_array().unwrap().iter().find(|r| r["name"] == "student").unwrap()["id"].clone();
    let student = student.as_str().unwrap();
    let (_, departments) = admin.get("/api/departments").await;
    let general = departments["departments"][0]["id"].as_str().unwrap().to_string();
    let (_, levels) = admin.get("/api/clearance-levels").await;
    let public = levels["clearanceLevels"][0]["id"].as_str().unwrap().to_string();
    // Nobody uses the student role in this database, yet it cannot go.
    assert_eq!(admin.delete(&format!("/api/roles/{student}")).await.0, StatusCode::CONFLICT);
    assert_eq!(admin.put(&format!("/api/roles/{student}"), json!({ "name": "pupil" })).await.0, StatusCode::CONFLICT);
    assert_eq!(
        admin.put(&format!("/api/departments/{general}"), json!({ "name": "Misc" })).await.0,
        StatusCode::CONFLICT
    );
    assert_eq!(
        admin.put(&format!("/api/clearance-levels/{public}"), json!({ "name": "open" })).await.0,
        StatusCode::CONFLICT
    );
    assert_eq!(app.register("newcomer").await.status(), StatusCode::CREATED);
}

#[tokio::test]
async fn departments_are_managed_with_user_counts_and_a_department_in_use_cannot_be_deleted() {
    let app = TestApp::spawn().await;
    let admin = app.admin().await;
    let (status, body) = admin
        .post("/api/departments", json!({ "name": "Legal", "description": "Contracts", "color": "#EF4444" }))
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let id = body["department"]["id"].as_str().unwrap().to_string();
    assert_eq!(admin.post("/api/departments", json!({ "name": "legal" })).await.0, StatusCode::CONFLICT);
    let (status, answer) = admin.post("/api/departments", json!({ "name": "Ops", "color": "red" })).await;
    assert_eq!((status, answer["field"].clone()), (StatusCode::UNPROCESSABLE_ENTITY, json!("color")));

    app.create_user("lena", "staff", "Legal", "public").await;
    let (_, list) = admin.get("/api/departments").await;
    let legal = list["departments"].as_array().unwrap().iter().find(|d| d["name"] == "Legal").unwrap().clone();
    assert_eq!(legal["userCount"], 1);
    let (status, body) = admin.delete(&format!("/api/departments/{id}")).await;
    assert_eq!(status, StatusCode::CONFLICT, "{body}");
    assert!(body["error"].as_str().unwrap().contains("in use"));

    let (status, body) = admin.put(&format!("/api/departments/{id}"), json!({ "name": "Legal & Compliance" })).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let row = &app.audit("department.update").await[0];
    assert_eq!(row.details["changes"]["name"], json!({ "before": "Legal", "after": "Legal & Compliance" }));
    assert_eq!(app.audit_count("department.create").await, 1);

    let (status, body) = admin.post("/api/departments", json!({ "name": "Temp" })).await;
    assert_eq!(status, StatusCode::CREATED);
    let temp = body["department"]["id"].as_str().unwrap().to_string();
    assert_eq!(admin.delete(&format!("/api/departments/{temp}")).await.0, StatusCode::NO_CONTENT);
    assert_eq!(app.audit("department.delete").await[0].details["before"]["name"], "Temp");
    assert_eq!(admin.delete(&format!("/api/departments/{temp}")).await.0, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn clearance_levels_are_managed_with_rank_colour_and_user_counts() {
    let app = TestApp::spawn().await;
    let admin = app.admin().await;
    let (status, body) = admin.get("/api/clearance-levels").await;
    assert_eq!(status, StatusCode::OK);
    let conf = body["clearanceLevels"][1]["id"].as_str().unwrap().to_string();
    let levels: Vec<(String, i64)> = body["clearanceLevels"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| (l["name"].as_str().unwrap().to_string(), l["level"].as_i64().unwrap()))
        .collect();
    assert_eq!(levels, [("public".into(), 1), ("confidential".into(), 2), ("restricted".into(), 3)]);
    assert_eq!(body["clearanceLevels"][2]["userCount"], 1, "the admin");

    let (status, body) =
        admin.post("/api/clearance-levels", json!({ "name": "top secret", "level": 4, "color": "#7c3aed" })).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let id = body["clearanceLevel"]["id"].as_str().unwrap().to_string();
    assert_eq!(
        admin.post("/api/clearance-levels", json!({ "name": "other", "level": 4 })).await.0,
        StatusCode::CONFLICT
    );
    let (status, answer) = admin.post("/api/clearance-levels", json!({ "name": "nolevel" })).await;
    assert_eq!((status, answer["field"].clone()), (StatusCode::UNPROCESSABLE_ENTITY, json!("level")));
    assert_eq!(app.audit("clearance_level.create").await[0].details["after"]["level"], 4);

    // A level above the caller's own clearance is not theirs to edit (issue 10, item 2).
    let (status, _) = admin.put(&format!("/api/clearance-levels/{id}"), json!({ "color": "#6d28d9" })).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let (status, _) = admin.put(&format!("/api/clearance-levels/{conf}"), json!({ "color": "#6d28d9" })).await;
    assert_eq!(status, StatusCode::OK);
    let confidential = app.audit("clearance_level.create").await.len();
    assert_eq!(confidential, 1);
    let (_, levels) = admin.get("/api/clearance-levels").await;
    let conf_id = levels["clearanceLevels"][1]["id"].as_str().unwrap().to_string();
    app.create_user("cleo", "staff", "General", "confidential").await;
    assert_eq!(admin.delete(&format!("/api/clearance-levels/{conf_id}")).await.0, StatusCode::CONFLICT);
    assert_eq!(admin.delete(&format!("/api/clearance-levels/{id}")).await.0, StatusCode::NO_CONTENT);
    assert_eq!(app.audit_count("clearance_level.delete").await, 1);
    assert_eq!(app.audit_count("clearance_level.update").await, 1);
}

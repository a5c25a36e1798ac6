//! Administration that must hold at every future instant: the tenant keeps a
//! permanent administrator whatever expiries are set, and nobody relabels
//! clearance levels or roles beyond what they could grant themselves.

mod common;

use common::{Session, TestApp};
use fortifile::clock::Clock;
use reqwest::StatusCode;
use serde_json::{Value, json};
use time::{Duration, format_description::well_known::Rfc3339};
use uuid::Uuid;

fn in_seconds(app: &TestApp, seconds: i64) -> String {
    (app.clock.now() + Duration::seconds(seconds)).format(&Rfc3339).unwrap()
}

async fn two_admins(app: &TestApp) -> (Session, Uuid, Session, Uuid) {
    let a = app.admin().await;
    let b = app.signed_in_as("root2", "admin", "restricted").await;
    (a, app.user_id("root").await, b, app.user_id("root2").await)
}

async fn permissions_of(session: &Session) -> Value {
    session.get("/me").await.1["user"]["permissions"].clone()
}

#[tokio::test]
async fn two_administrators_cannot_give_each_other_expiring_admin_roles_and_leave_the_tenant_without_one() {
    let app = TestApp::spawn().await;
    let (a, a_id, b, b_id) = two_admins(&app).await;
    let (status, body) =
        a.post(&format!("/api/users/{b_id}/roles"), json!({ "role": "admin", "expiresAt": in_seconds(&app, 8) })).await;
    assert_eq!(status, StatusCode::OK, "one permanent administrator remains: {body}");
    let (status, body) =
        b.post(&format!("/api/users/{a_id}/roles"), json!({ "role": "admin", "expiresAt": in_seconds(&app, 8) })).await;
    assert_eq!(status, StatusCode::CONFLICT, "{body}");
    let refused = app.audit("role.assign").await;
    let last = refused.last().unwrap();
    assert_eq!((last.result.as_str(), last.details["reason"].clone()), ("fail", json!("last_admin")));

    // Past both expiries the tenant still has its administrator.
    app.clock.advance(Duration::seconds(10));
    assert!(permissions_of(&a).await.as_array().unwrap().contains(&json!("admin.manage_roles")));
    assert_eq!(b.get("/api/users").await.0, StatusCode::FORBIDDEN, "b's admin role expired as set");
}

#[tokio::test]
async fn concurrent_mutual_expiries_let_at_most_one_through() {
    let app = TestApp::spawn().await;
    let (a, a_id, b, b_id) = two_admins(&app).await;
    let until = in_seconds(&app, 8);
    let (to_b, to_a) = (format!("/api/users/{b_id}/roles"), format!("/api/users/{a_id}/roles"));
    let a_to_b = a.post(&to_b, json!({ "role": "admin", "expiresAt": until }));
    let b_to_a = b.post(&to_a, json!({ "role": "admin", "expiresAt": until }));
    let ((s1, _), (s2, _)) = tokio::join!(a_to_b, b_to_a);
    let mut statuses = [s1, s2];
    statuses.sort();
    assert_eq!(statuses, [StatusCode::OK, StatusCode::CONFLICT]);
    let mut conn = app.owner_conn().await;
    let permanent: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM user_roles ur JOIN roles r ON r.id = ur.role_id WHERE r.name = 'admin' AND ur.expires_at IS NULL",
    )
    .fetch_one(&mut conn)
    .await
    .unwrap();
    assert_eq!(permanent, 1);
}

#[tokio::test]
async fn an_expiry_on_the_last_permanent_administrator_is_refused_even_when_others_hold_it_for_now() {
    let app = TestApp::spawn().await;
    let (a, a_id, _b, b_id) = two_admins(&app).await;
    // b holds admin until tomorrow only: a is the last permanent administrator.
    let tomorrow = in_seconds(&app, 86_400);
    assert_eq!(
        a.post(&format!("/api/users/{b_id}/roles"), json!({ "role": "admin", "expiresAt": tomorrow })).await.0,
        StatusCode::OK
    );
    let b = app.session("root2").await;
    let (status, _) = b
        .post(&format!("/api/users/{a_id}/roles"), json!({ "role": "admin", "expiresAt": in_seconds(&app, 3600) }))
        .await;
    assert_eq!(status, StatusCode::CONFLICT);
    let (status, _) = b.delete(&format!("/api/users/{a_id}/roles/admin")).await;
    assert_eq!(status, StatusCode::CONFLICT);
    let (status, _) = b.put(&format!("/api/users/{a_id}"), json!({ "status": "suspended" })).await;
    assert_eq!(status, StatusCode::CONFLICT);
}

async fn id_of_level(app: &TestApp, name: &str) -> Uuid {
    let mut conn = app.owner_conn().await;
    sqlx::query_scalar("SELECT id FROM clearance_levels WHERE tenant_id = $1 AND name = $2")
        .bind(app.default_tenant)
        .bind(name)
        .fetch_one(&mut conn)
        .await
        .unwrap()
}

async fn last_denial(app: &TestApp) -> Value {
    app.audit("rbac.denied").await.last().expect("an rbac.denied row").details["reason"].clone()
}

#[tokio::test]
async fn an_administrator_cannot_rename_or_recolour_clearance_levels_above_their_own_so_labels_cannot_be_swapped() {
    let app = TestApp::spawn().await;
    let conf = app.signed_in_as("conf", "admin", "confidential").await;
    let restricted = id_of_level(&app, "restricted").await;
    for body in [json!({ "name": "tmpx" }), json!({ "color": "#000000" }), json!({ "description": "anything" })] {
        let (status, answer) = conf.put(&format!("/api/clearance-levels/{restricted}"), body.clone()).await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{body}: {answer}");
        assert_eq!(last_denial(&app).await, "clearance_above_own");
    }
    assert_eq!(app.audit_count("clearance_level.update").await, 0);

    // The swap of the review cannot start, so a restricted upload stays at rank 3.
    let top = app.signed_in_as("rita", "staff", "restricted").await;
    let id = top.upload_ok("plan.pdf", b"%PDF-1.7 board minutes", Some("restricted")).await;
    let mut db = app.owner_conn().await;
    let rank: i32 = sqlx::query_scalar(
        "SELECT c.level FROM files f JOIN clearance_levels c ON c.id = f.classification_id WHERE f.id = $1",
    )
    .bind(id)
    .fetch_one(&mut db)
    .await
    .unwrap();
    assert_eq!(rank, 3);
    assert_eq!(conf.get(&format!("/api/files/{id}")).await.0, StatusCode::FORBIDDEN);

    // At or below their own clearance the same administrator may edit.
    let public = id_of_level(&app, "public").await;
    assert_eq!(
        conf.put(&format!("/api/clearance-levels/{public}"), json!({ "color": "#16a34a" })).await.0,
        StatusCode::OK
    );
}

#[tokio::test]
async fn editing_a_role_one_could_not_grant_is_refused_like_changing_its_permissions() {
    let app = TestApp::spawn().await;
    let admin = app.admin().await;
    let permissions = json!({
        "admin": { "manage_roles": "tenant" },
        "users": { "view": "tenant" },
        "file": { "upload": "tenant", "download": "tenant", "delete": "tenant" },
    });
    let (status, body) = admin.post("/api/roles", json!({ "name": "rolemgr", "permissions": permissions })).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let rm = app.signed_in_as("rolly", "rolemgr", "restricted").await;
    let admin_role = app.role_id("admin").await;
    for body in [
        json!({ "name": "Intern (read-only)" }),
        json!({ "description": "nothing to see" }),
        json!({ "sessionTimeoutMinutes": 1 }),
        json!({ "requiresMfa": true, "mfaType": "totp" }),
        json!({ "tier": 9 }),
    ] {
        let (status, answer) = rm.put(&format!("/api/roles/{admin_role}"), body.clone()).await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{body}: {answer}");
        assert_eq!(last_denial(&app).await, "grant_exceeds_own");
    }
    let (_, role) = admin.get(&format!("/api/roles/{admin_role}")).await;
    assert_eq!(
        (role["role"]["name"].clone(), role["role"]["sessionTimeoutMinutes"].clone()),
        (json!("admin"), Value::Null)
    );
    assert_eq!(app.audit_count("role.update").await, 0);

    // A role within the manager's own grants is theirs to describe.
    let student = app.role_id("student").await;
    let (status, body) =
        rm.put(&format!("/api/roles/{student}"), json!({ "description": "first-year accounts" })).await;
    assert_eq!(status, StatusCode::OK, "{body}");
}

/// Requests of an administrator that are queued behind the administration lock
/// when their `admin` role is revoked: each was admitted by the guard, but none
/// may act on that admission once the revocation has committed.
#[tokio::test]
async fn queued_role_assignments_of_a_demoted_administrator_never_commit_after_the_revocation() {
    let app = TestApp::spawn().await;
    let (_a, _a_id, b, b_id) = two_admins(&app).await;
    let mut targets = Vec::new();
    for i in 0..30 {
        targets.push(app.create_user(&format!("target{i}"), "student", "General", "public").await);
    }
    // Hold the tenant's administration lock, as a revocation in progress does.
    let mut holder = app.owner_conn().await;
    let key = format!("fortifile.admins.{}", app.default_tenant);
    sqlx::query("SELECT pg_advisory_lock(hashtextextended($1, 0))").bind(&key).execute(&mut holder).await.unwrap();
    let b = std::sync::Arc::new(b);
    let mut burst = Vec::new();
    for target in &targets {
        let (b, path) = (b.clone(), format!("/api/users/{target}/roles"));
        burst.push(tokio::spawn(async move { b.post(&path, json!({ "role": "admin" })).await.0 }));
    }
    // Wait until as many as the server's pool holds (5 in tests) have passed
    // the guard and wait on the lock; the rest wait for a connection.
    let waiting = || async {
        sqlx::query_scalar::<_, i64>("SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted")
            .fetch_one(&mut app.owner_conn().await)
            .await
            .unwrap()
    };
    for _ in 0..400 {
        if waiting().await >= 5 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(25)).await;
    }
    let queued = waiting().await;
    assert!(queued >= 5, "assignments admitted by the guard are queued on the lock: {queued}");
    // The revocation commits (here by the owner), then the lock is released.
    sqlx::query("DELETE FROM user_roles WHERE user_id = $1").bind(b_id).execute(&mut holder).await.unwrap();
    sqlx::query("SELECT pg_advisory_unlock(hashtextextended($1, 0))").bind(&key).execute(&mut holder).await.unwrap();
    let mut statuses = Vec::new();
    for request in burst {
        statuses.push(request.await.unwrap());
    }
    assert!(statuses.iter().all(|s| *s == StatusCode::FORBIDDEN), "{statuses:?}");
    let admins: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM user_roles ur JOIN roles r ON r.id = ur.role_id WHERE r.name = 'admin' AND ur.user_id = ANY($1)",
    )
    .bind(&targets)
    .fetch_one(&mut app.owner_conn().await)
    .await
    .unwrap();
    assert_eq!(admins, 0, "no assignment committed after the revocation");
    // The queued ones were admitted by the guard and refused where they act;
    // the later ones are refused by the guard itself.
    let denied = app.audit("rbac.denied").await;
    assert_eq!(denied.len(), 30);
    let revoked = denied.iter().filter(|r| r.details["reason"] == "permission_revoked").count() as i64;
    assert!(revoked >= queued, "{revoked} refused after the lock, {queued} were queued");
}

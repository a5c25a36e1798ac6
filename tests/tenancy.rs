//! Tenant isolation and audit immutability, proved at the database level with the
//! server's own role and the tenant-scoped transaction.

mod common;

use common::TestApp;
use fortifile::db::{Database, seed, setup};
use reqwest::StatusCode;
use serde_json::{Value, json};
use sqlx::Connection;
use uuid::Uuid;

/// Creates tenant `slug` with its defaults and a user `username` in it.
async fn second_tenant(app: &TestApp, slug: &str, username: &str) -> Uuid {
    let (tenant, created) = seed::ensure_tenant(&app.owner, slug, "Other org").await.unwrap();
    assert!(created);
    seed::apply_defaults(&app.db, tenant).await.unwrap();
    let mut tx = app.db.tenant_tx(tenant, None).await.unwrap();
    let new = fortifile::auth::user::NewUser {
        username,
        email: "other@example.org",
        password_hash: "$argon2id$unused",
        status: "active",
        requested_role: None,
        role: "student",
        department: "General",
        clearance_level: "public",
    };
    fortifile::auth::user::create(&mut tx, &new).await.unwrap();
    tx.commit().await.unwrap();
    tenant
}

#[tokio::test]
async fn inside_a_tenant_transaction_an_unfiltered_select_sees_no_other_tenants_rows() {
    let app = TestApp::spawn().await;
    app.register("alice").await;
    let other = second_tenant(&app, "acme", "mallory").await;

    let mut tx = app.db.tenant_tx(app.default_tenant, None).await.unwrap();
    let rows: Vec<(String, Uuid)> =
        sqlx::query_as("SELECT username, tenant_id FROM users").fetch_all(tx.conn()).await.unwrap();
    assert_eq!(rows, vec![("alice".to_string(), app.default_tenant)]);
    let roles: i64 = sqlx::query_scalar("SELECT count(*) FROM roles WHERE tenant_id = $1")
        .bind(other)
        .fetch_one(tx.conn())
        .await
        .unwrap();
    assert_eq!(roles, 0, "even asking for the other tenant by id finds nothing");
    drop(tx);

    let mut tx = app.db.tenant_tx(other, None).await.unwrap();
    let names: Vec<String> = sqlx::query_scalar("SELECT username FROM users").fetch_all(tx.conn()).await.unwrap();
    assert_eq!(names, vec!["mallory"]);
}

#[tokio::test]
async fn inserting_a_row_for_another_tenant_fails() {
    let app = TestApp::spawn().await;
    let other = second_tenant(&app, "acme", "mallory").await;
    let mut tx = app.db.tenant_tx(app.default_tenant, None).await.unwrap();
    let err = sqlx::query("INSERT INTO departments (tenant_id, name) VALUES ($1, 'Smuggled')")
        .bind(other)
        .execute(tx.conn())
        .await
        .unwrap_err();
    assert!(err.to_string().contains("row-level security"), "{err}");
}

#[tokio::test]
async fn updating_a_row_into_another_tenant_fails() {
    let app = TestApp::spawn().await;
    app.register("alice").await;
    let other = second_tenant(&app, "acme", "mallory").await;
    let mut tx = app.db.tenant_tx(app.default_tenant, None).await.unwrap();
    let err = sqlx::query("UPDATE users SET tenant_id = $1").bind(other).execute(tx.conn()).await.unwrap_err();
    assert!(err.to_string().contains("row-level security"), "{err}");
}

#[tokio::test]
async fn with_no_tenant_set_tenant_tables_return_no_rows() {
    let app = TestApp::spawn().await;
    app.signed_in("alice").await;
    // The serving role on a plain connection: no tenant transaction, no setting.
    let mut conn = sqlx::PgConnection::connect_with(&app.owner.clone().username("fortifile_app")).await.unwrap();
    for table in [
        "users",
        "roles",
        "role_permissions",
        "user_roles",
        "departments",
        "clearance_levels",
        "sessions",
        "audit_logs",
    ] {
        let sql = format!("SELECT count(*) FROM {table}");
        let n: i64 = sqlx::query_scalar(sqlx::AssertSqlSafe(sql)).fetch_one(&mut conn).await.unwrap();
        assert_eq!(n, 0, "{table} leaked rows without a tenant");
    }
}

#[tokio::test]
async fn a_user_cannot_point_at_another_tenants_department() {
    let app = TestApp::spawn().await;
    let other = second_tenant(&app, "acme", "mallory").await;
    let mut conn = app.owner_conn().await;
    let foreign_dept: Uuid = sqlx::query_scalar("SELECT id FROM departments WHERE tenant_id = $1")
        .bind(other)
        .fetch_one(&mut conn)
        .await
        .unwrap();
    let mut tx = app.db.tenant_tx(app.default_tenant, None).await.unwrap();
    let err = sqlx::query(
        "INSERT INTO users (tenant_id, username, email, password_hash, department_id, clearance_level_id) \
         SELECT $1, 'sneaky', 's@example.org', 'x', $2, id FROM clearance_levels LIMIT 1",
    )
    .bind(app.default_tenant)
    .bind(foreign_dept)
    .execute(tx.conn())
    .await
    .unwrap_err();
    assert!(err.to_string().contains("foreign key"), "{err}");
}

#[tokio::test]
async fn a_cookie_naming_another_tenant_finds_no_session() {
    let app = TestApp::spawn().await;
    app.register("alice").await;
    let other = second_tenant(&app, "acme", "mallory").await;
    let res = app.login_with(&app.client, "alice", common::PASSWORD).await;
    let cookie = res.headers()["set-cookie"].to_str().unwrap().split(';').next().unwrap().to_string();
    let token = cookie.split_once('.').unwrap().1;
    let moved = format!("fortifile_session={}.{token}", other.simple());
    let res = common::new_client().get(app.url("/me")).header("cookie", moved).send().await.unwrap();
    assert_eq!(res.status(), StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn users_sign_in_to_their_own_tenant_by_slug() {
    let app = TestApp::spawn().await;
    app.register("alice").await;
    let other = second_tenant(&app, "acme", "mallory").await;
    let body = json!({ "username": "alice", "password": common::PASSWORD, "tenant": "acme" });
    let res = app.client.post(app.url("/auth/login")).json(&body).send().await.unwrap();
    assert_eq!(res.status(), StatusCode::UNAUTHORIZED, "alice does not exist in acme");
    let row = app.audit("auth.login").await.pop().unwrap();
    assert_eq!(row.tenant_id, other, "the failure is recorded in the tenant it was aimed at");
    let body = json!({ "username": "alice", "password": common::PASSWORD, "tenant": "no-such-org" });
    let res = app.client.post(app.url("/auth/login")).json(&body).send().await.unwrap();
    assert_eq!(res.status(), StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn the_server_role_cannot_update_delete_or_truncate_the_audit_log() {
    let app = TestApp::spawn().await;
    app.register("alice").await;
    let mut tx = app.db.tenant_tx(app.default_tenant, None).await.unwrap();
    let seen: i64 = sqlx::query_scalar("SELECT count(*) FROM audit_logs").fetch_one(tx.conn()).await.unwrap();
    assert_eq!(seen, 1, "the server can read its tenant's audit rows");
    drop(tx);
    for sql in ["UPDATE audit_logs SET result = 'success'", "DELETE FROM audit_logs", "TRUNCATE audit_logs"] {
        let mut tx = app.db.tenant_tx(app.default_tenant, None).await.unwrap();
        let err = sqlx::query(sqlx::AssertSqlSafe(sql)).execute(tx.conn()).await.unwrap_err();
        assert!(err.to_string().contains("permission denied"), "{sql}: {err}");
    }
    let mut tx = app.db.tenant_tx(app.default_tenant, None).await.unwrap();
    let err = sqlx::query("UPDATE audit_logs_default SET result = 'fail'").execute(tx.conn()).await.unwrap_err();
    assert!(err.to_string().contains("permission denied"), "partitions are not reachable directly: {err}");
}

#[tokio::test]
async fn even_the_owner_cannot_change_or_delete_audit_rows() {
    let app = TestApp::spawn().await;
    app.register("alice").await;
    let mut conn = app.owner_conn().await;
    for sql in ["UPDATE audit_logs SET result = 'fail'", "DELETE FROM audit_logs"] {
        let err = sqlx::query(sqlx::AssertSqlSafe(sql)).execute(&mut conn).await.unwrap_err();
        assert!(err.to_string().contains("append-only"), "{sql}: {err}");
    }
}

#[tokio::test]
async fn the_audit_log_has_monthly_partitions_a_year_ahead() {
    let app = TestApp::spawn().await;
    let mut conn = app.owner_conn().await;
    let parts: Vec<String> = sqlx::query_scalar(
        "SELECT c.relname::text FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid \
         WHERE i.inhparent = 'audit_logs'::regclass ORDER BY 1",
    )
    .fetch_all(&mut conn)
    .await
    .unwrap();
    let now = time::OffsetDateTime::now_utc();
    let this_month = format!("audit_logs_{}_{:02}", now.year(), u8::from(now.month()));
    let next_year = format!("audit_logs_{}_{:02}", now.year() + 1, u8::from(now.month()));
    assert!(parts.contains(&this_month) && parts.contains(&next_year), "{parts:?}");
    assert_eq!(app.db.ensure_audit_partitions(12).await.unwrap(), 0, "already ahead: nothing to create");
    assert_eq!(app.db.ensure_audit_partitions(14).await.unwrap(), 2, "the serving role can extend them");
}

#[tokio::test]
async fn the_server_refuses_to_run_as_a_role_that_bypasses_row_level_security() {
    let app = TestApp::spawn().await;
    let as_owner = Database::connect(app.owner.clone(), 1).await.unwrap();
    let err = setup::verify_least_privilege(&as_owner).await.unwrap_err();
    assert!(err.to_string().contains("refusing to serve"), "{err}");
    setup::verify_least_privilege(&app.db).await.expect("the serving role passes");
}

#[tokio::test]
async fn audit_rows_record_who_what_where_and_the_outcome() {
    let app = TestApp::spawn().await;
    app.signed_in("alice").await;
    let row = app.audit("auth.login").await.pop().unwrap();
    assert_eq!(row.result, "success");
    assert_eq!(row.user_id, Some(app.user_id("alice").await));
    assert_eq!(row.ip.as_deref(), Some("127.0.0.1"));
    assert_eq!(row.tenant_id, app.default_tenant);
    let mut conn = app.owner_conn().await;
    let (target_type, target_id): (String, String) =
        sqlx::query_as("SELECT target_type, target_id FROM audit_logs WHERE action = 'auth.login'")
            .fetch_one(&mut conn)
            .await
            .unwrap();
    assert_eq!((target_type.as_str(), target_id), ("user", app.user_id("alice").await.to_string()));
    let _: Value = row.details;
}

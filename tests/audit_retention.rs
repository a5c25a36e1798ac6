//! Audit retention (issue 16): a partition past retention is archived, read
//! back, verified and dropped; the chain of the remaining rows goes on from
//! the archive's last hash; a legal hold or a corrupted archive stops the
//! purge; under dual control the purge waits for an approval.

mod common;

use common::{TestApp, seal_everything};
use fortifile::{
    audit::{retention, verify},
    clock::Clock,
};
use reqwest::StatusCode;
use serde_json::json;
use sqlx::PgConnection;

const OLD: &str = "audit_logs_2015_01";

/// An expired month with `n` rows of the default tenant (written as the owner
/// would have then), sealed before the rows written since.
async fn old_month(app: &TestApp, n: i64) {
    expired_month(app, 1, n).await;
}

/// Month `month` of 2015 as a partition with `n` rows of the default tenant, sealed.
async fn expired_month(app: &TestApp, month: u8, n: i64) {
    let mut conn = app.owner_conn().await;
    // DDL takes no parameters; the month is a number from the test itself.
    let ddl = format!(
        "CREATE TABLE audit_logs_2015_{month:02} PARTITION OF audit_logs FOR VALUES FROM ('2015-{month:02}-01 00:00:00+00') \
         TO ('2015-{next:02}-01 00:00:00+00')",
        next = month + 1
    );
    sqlx::raw_sql(sqlx::AssertSqlSafe(ddl)).execute(&mut conn).await.unwrap();
    sqlx::query("SELECT set_config('app.tenant_id', $1, false)")
        .bind(app.default_tenant.to_string())
        .execute(&mut conn)
        .await
        .unwrap();
    sqlx::query(
        "INSERT INTO audit_logs (tenant_id, created_at, action, result, details) \
         SELECT $1, make_timestamptz(2015, $3, 10, 8, 0, 0, 'UTC') + make_interval(mins => i::int), 'file.download', \
                'success', jsonb_build_object('i', i) FROM generate_series(1, $2::int) i",
    )
    .bind(app.default_tenant)
    .bind(n)
    .bind(i32::from(month))
    .execute(&mut conn)
    .await
    .unwrap();
    seal(app).await;
}

async fn seal(app: &TestApp) {
    seal_everything(&app.db, app.default_tenant).await;
}

/// Puts `audit.purge` under dual control in the default tenant.
async fn hold_purges(app: &TestApp) {
    sqlx::query(
        "INSERT INTO approval_policies (tenant_id, operation, enabled, timeout_hours) VALUES ($1, 'audit.purge', true, 24)",
    )
    .bind(app.default_tenant)
    .execute(&mut app.owner_conn().await)
    .await
    .unwrap();
}

async fn partition_exists(conn: &mut PgConnection) -> bool {
    sqlx::query_scalar("SELECT to_regclass($1) IS NOT NULL").bind(OLD).fetch_one(conn).await.unwrap()
}

async fn run(app: &TestApp) -> retention::Report {
    retention::run(&app.state, app.clock.now()).await.unwrap()
}

async fn verified(app: &TestApp) -> verify::Verified {
    let mut tx = app.db.tenant_tx(app.default_tenant, None).await.unwrap();
    let v =
        verify::tenant(&mut tx, &app.state.audit_key.public(), &[]).await.unwrap().unwrap_or_else(|b| panic!("{b}"));
    tx.commit().await.unwrap();
    v
}

fn object_key(app: &TestApp) -> String {
    fortifile::audit::archive::object_key(app.default_tenant, OLD)
}

#[tokio::test]
async fn an_expired_partition_is_archived_verified_and_dropped_and_the_chain_goes_on_from_the_archive() {
    let app = TestApp::spawn().await;
    old_month(&app, 25).await;
    let admin = app.admin().await;
    admin.post("/admin/incidents", json!({ "title": "after the old month", "severity": "low" })).await;
    seal(&app).await;
    let before = verified(&app).await;

    let report = run(&app).await;
    assert_eq!(report.dropped, [OLD], "{report:?}");
    let mut conn = app.owner_conn().await;
    assert!(!partition_exists(&mut conn).await);
    // the archive is on the storage and verifies on its own
    let checked =
        retention::read_back(&app.state.files.storage, &app.state.audit_key.public(), &object_key(&app)).await.unwrap();
    assert_eq!((checked.header.first_seq, checked.header.rows), (1, 25));
    // the remaining rows chain to the archive's last hash
    seal(&app).await;
    let after = verified(&app).await;
    assert_eq!(after.anchor, 25);
    assert!(after.seq > before.seq, "the purge itself is recorded and sealed");
    let archived = app.audit("audit.archive").await;
    assert_eq!(archived.len(), 1);
    assert_eq!(archived[0].details["rows"], 25);
    assert_eq!(archived[0].details["key"], object_key(&app));
    let purged = app.audit("audit.purge").await;
    assert_eq!(purged.last().unwrap().details["partition"], OLD);
    assert_eq!(purged.last().unwrap().details["rows"], 25);
    // and offline, with the binary, as an auditor would
    let binary = |args: &[&str]| {
        std::process::Command::new(env!("CARGO_BIN_EXE_fortifile"))
            .arg("audit")
            .args(args)
            .env("DATABASE_URL", app.owner_url())
            .env("FORTIFILE_DATA_DIR", &*app.data)
            .env("RUST_LOG", "warn")
            .output()
            .unwrap()
    };
    let out = binary(&["verify", "--archive", &object_key(&app)]);
    let text = String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{text}");
    assert!(text.contains("verified") && text.contains("rows 25"), "{text}");
    let out = binary(&["archive", "--list"]);
    assert!(String::from_utf8_lossy(&out.stdout).contains(&object_key(&app)));
    // `audit verify` checks the archives as part of the chain: with one
    // altered in the store, or a forged anchor, it fails.
    let out = binary(&["verify"]);
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stdout).contains("25 archived rows in 1 archives"));
    sqlx::query("SELECT set_config('app.tenant_id', $1, false)")
        .bind(app.default_tenant.to_string())
        .execute(&mut conn)
        .await
        .unwrap();
    // The owner moves the chain's start past row 26 and records an archive
    // for it, so that row 26 is no longer checked in the database.
    for sql in [
        "UPDATE audit_chain c SET anchor_seq = 26, anchor_hash = (SELECT hash FROM audit_seals WHERE seq = 26)",
        "INSERT INTO audit_archives (tenant_id, partition, object_key, first_seq, last_seq, last_hash, rows, sha256) \
         SELECT tenant_id, 'audit_logs_2015_02', 'audit-archives/forged.jsonl.gz', 26, 26, hash, 1, hash \
         FROM audit_seals WHERE seq = 26",
    ] {
        sqlx::raw_sql(sql).execute(&mut conn).await.unwrap();
    }
    let out = binary(&["verify"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("Archive"), "{}", String::from_utf8_lossy(&out.stderr));
    for sql in [
        "DELETE FROM audit_archives WHERE partition = 'audit_logs_2015_02'",
        "UPDATE audit_chain c SET anchor_seq = 25, \
                anchor_hash = (SELECT last_hash FROM audit_archives WHERE partition = 'audit_logs_2015_01')",
    ] {
        sqlx::raw_sql(sql).execute(&mut conn).await.unwrap();
    }
    let path = app.storage_dir().join(object_key(&app));
    let mut bytes = std::fs::read(&path).unwrap();
    let at = bytes.len() / 2;
    bytes[at] ^= 0x55;
    std::fs::write(&path, bytes).unwrap();
    let out = binary(&["verify"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("Archive"), "{}", String::from_utf8_lossy(&out.stderr));
    // a second run finds nothing to do
    let again = run(&app).await;
    assert!(again.dropped.is_empty() && again.archived.is_empty(), "{again:?}");
}

#[tokio::test]
async fn a_legal_hold_stops_the_purge_until_it_is_lifted() {
    let app = TestApp::spawn().await;
    old_month(&app, 5).await;
    let admin = app.admin().await;
    let (status, body) = admin.put("/api/audit-logs/legal-hold", json!({ "hold": true, "reason": "" })).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    let (status, body) =
        admin.put("/api/audit-logs/legal-hold", json!({ "hold": true, "reason": "Matter 2026-114" })).await;
    assert_eq!((status, &body["legalHold"]), (StatusCode::OK, &json!(true)), "{body}");
    let report = run(&app).await;
    assert!(report.dropped.is_empty() && report.waiting.iter().any(|w| w.contains("LegalHold")), "{report:?}");
    assert!(partition_exists(&mut app.owner_conn().await).await);
    let (status, _) = admin.post("/api/audit-logs/purge", json!({})).await;
    assert_eq!(status, StatusCode::CONFLICT, "no purge by hand either");
    let student = app.signed_in_as("sam", "student", "public").await;
    let (status, _) = student.put("/api/audit-logs/legal-hold", json!({ "hold": false, "reason": "x" })).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert_eq!(student.post("/api/audit-logs/purge", json!({})).await.0, StatusCode::FORBIDDEN);
    let denied = app.audit("rbac.denied").await;
    assert_eq!(denied.len(), 2, "both refusals are recorded");
    admin.put("/api/audit-logs/legal-hold", json!({ "hold": false, "reason": "Matter closed" })).await;
    seal(&app).await;
    assert_eq!(run(&app).await.dropped, [OLD]);
    let holds = app.audit("audit.legal_hold").await;
    assert_eq!(holds.len(), 2);
    assert_eq!((holds[0].details["after"].clone(), holds[1].details["after"].clone()), (json!(true), json!(false)));
}

#[tokio::test]
async fn a_corrupted_archive_is_refused_and_nothing_is_dropped() {
    let app = TestApp::spawn().await;
    old_month(&app, 8).await;
    hold_purges(&app).await;
    let report = run(&app).await;
    assert!(report.dropped.is_empty() && report.archived.len() == 1, "archived, waiting for the purge: {report:?}");
    let path = app.storage_dir().join(object_key(&app));
    let mut bytes = std::fs::read(&path).unwrap();
    let at = bytes.len() / 2;
    bytes[at] ^= 0x55;
    std::fs::write(&path, bytes).unwrap();
    assert!(
        retention::read_back(&app.state.files.storage, &app.state.audit_key.public(), &object_key(&app)).await.is_err()
    );
    sqlx::query("UPDATE approval_policies SET enabled = false WHERE operation = 'audit.purge'")
        .execute(&mut app.owner_conn().await)
        .await
        .unwrap();
    let report = retention::run(&app.state, app.clock.now()).await.unwrap();
    assert!(
        report.dropped.is_empty() && report.failed[0].contains(OLD),
        "the bad archive stops its partition: {report:?}"
    );
    assert!(partition_exists(&mut app.owner_conn().await).await);
}

#[tokio::test]
async fn under_dual_control_the_purge_waits_for_a_second_administrator() {
    let app = TestApp::spawn().await;
    old_month(&app, 6).await;
    hold_purges(&app).await;
    let a = app.signed_in_as("alice", "admin", "restricted").await;
    let b = app.signed_in_as("bob", "admin", "restricted").await;
    assert!(run(&app).await.waiting.iter().any(|w| w.contains("audit.purge")));
    let (status, body) = a.post("/api/audit-logs/purge", json!({})).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    let id = body["approval"]["id"].as_str().unwrap().to_string();
    assert!(run(&app).await.dropped.is_empty(), "nothing goes before the approval");
    let (status, body) = b.post(&format!("/api/approvals/{id}/approve"), json!({})).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["approval"]["status"], "executed", "{body}");
    seal(&app).await;
    assert_eq!(run(&app).await.dropped, [OLD]);
    let release = app.audit("audit.purge").await;
    assert_eq!(release[0].details["step"], "release");
    assert_eq!(release[0].details["approvalId"], id.as_str());
}

#[tokio::test]
async fn a_legal_hold_set_after_the_archive_was_written_still_stops_the_purge() {
    let app = TestApp::spawn().await;
    old_month(&app, 4).await;
    hold_purges(&app).await;
    assert_eq!(run(&app).await.archived.len(), 1, "archived, waiting for an approved purge");
    let admin = app.admin().await;
    admin.put("/api/audit-logs/legal-hold", json!({ "hold": true, "reason": "Matter 7" })).await;
    sqlx::query("UPDATE approval_policies SET enabled = false WHERE operation = 'audit.purge'")
        .execute(&mut app.owner_conn().await)
        .await
        .unwrap();
    let report = run(&app).await;
    assert!(report.dropped.is_empty() && report.failed.is_empty(), "{report:?}");
    assert!(report.waiting.iter().any(|w| w.contains("LegalHold")), "{report:?}");
    assert!(partition_exists(&mut app.owner_conn().await).await);
}

#[tokio::test]
async fn the_drop_function_refuses_the_server_role_anything_retention_did_not_earn() {
    let app = TestApp::spawn().await;
    old_month(&app, 3).await;
    let mut tx = app.db.tenant_tx(app.default_tenant, None).await.unwrap();
    for (part, days, why) in [
        ("audit_logs_default", 2557, "no audit partition"),
        ("audit_logs_2015_01; DROP TABLE users", 2557, "no audit partition"),
        (OLD, 400, "retention below the configured"),
        (OLD, 2557, "without a released archive"),
    ] {
        sqlx::query("SAVEPOINT s").execute(tx.conn()).await.unwrap();
        let err = sqlx::query("SELECT audit_drop_partition($1, $2)")
            .bind(part)
            .bind(days)
            .execute(tx.conn())
            .await
            .unwrap_err();
        assert!(err.to_string().contains(why), "{part} {days}: {err}");
        sqlx::query("ROLLBACK TO SAVEPOINT s").execute(tx.conn()).await.unwrap();
    }
    // A released archive that does not cover the rows is refused too.
    sqlx::query(
        "INSERT INTO audit_archives (tenant_id, partition, object_key, first_seq, last_seq, last_hash, rows, sha256, \
                                     released_at) VALUES ($1, $2, 'x', 1, 0, $3, 0, $3, now())",
    )
    .bind(app.default_tenant)
    .bind(OLD)
    .bind(vec![0u8; 32])
    .execute(tx.conn())
    .await
    .unwrap();
    let err = sqlx::query("SELECT audit_drop_partition($1, 2557)").bind(OLD).execute(tx.conn()).await.unwrap_err();
    assert!(err.to_string().contains("does not cover"), "{err}");
    drop(tx);
    assert!(partition_exists(&mut app.owner_conn().await).await);
}

#[tokio::test]
async fn an_approved_purge_releases_only_the_months_its_approvers_saw() {
    let app = TestApp::spawn().await;
    old_month(&app, 5).await;
    hold_purges(&app).await;
    let a = app.signed_in_as("alice", "admin", "restricted").await;
    let b = app.signed_in_as("bob", "admin", "restricted").await;
    let (_, body) = a.post("/api/audit-logs/purge", json!({})).await;
    assert_eq!(body["approval"]["change"]["partitions"], json!([OLD]), "{body}");
    let id = body["approval"]["id"].as_str().unwrap().to_string();
    // Another month expires (appears) before the approval.
    expired_month(&app, 2, 1).await;
    let mut conn = app.owner_conn().await;
    let (_, body) = b.post(&format!("/api/approvals/{id}/approve"), json!({})).await;
    assert_eq!(body["approval"]["status"], "executed", "{body}");
    let released: Vec<String> =
        sqlx::query_scalar("SELECT partition FROM audit_archives WHERE released_at IS NOT NULL ORDER BY 1")
            .fetch_all(&mut conn)
            .await
            .unwrap();
    assert_eq!(released, [OLD]);
}

//! The audit chain (issue 16): concurrent writers in several tenants leave
//! linear, gap-free chains; every kind of tampering by the database's owner is
//! found by verification at the right sequence number; checkpoints are signed,
//! listed and checked; the dashboard's "Verify integrity" runs and is recorded.

mod common;

use std::{
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use common::{TestApp, seal_everything};
use fortifile::{
    audit::{
        self, Action, Entry, Outcome, Source, chain,
        checkpoint::{self, Checkpoint},
        verify::{self, Problem},
    },
    db::Database,
};
use reqwest::StatusCode;
use serde_json::json;
use sqlx::PgConnection;
use uuid::Uuid;

async fn verify(app: &TestApp, tenant: Uuid, outside: &[Checkpoint]) -> Result<verify::Verified, verify::Broken> {
    let mut tx = app.db.tenant_tx(tenant, None).await.unwrap();
    let found = verify::tenant(&mut tx, &app.state.audit_key.public(), outside).await.unwrap();
    tx.commit().await.unwrap();
    found
}

async fn write_rows(db: &Database, tenant: Uuid, n: usize) {
    for i in 0..n {
        let entry = Entry::new(Action::IncidentCreate, Outcome::Success).details(json!({ "n": i, "note": "é\"x" }));
        audit::record_alone(db, tenant, None, &Source::default(), entry).await.unwrap();
    }
}

async fn new_tenant(conn: &mut PgConnection, slug: &str) -> Uuid {
    sqlx::query_scalar("INSERT INTO tenants (slug, name) VALUES ($1, $1) RETURNING id")
        .bind(slug)
        .fetch_one(conn)
        .await
        .unwrap()
}

/// A superuser connection with the append-only trigger off, acting in `tenant`.
async fn tamperer(app: &TestApp, tenant: Uuid) -> PgConnection {
    let mut conn = app.owner_conn().await;
    sqlx::query("SELECT set_config('app.tenant_id', $1, false)")
        .bind(tenant.to_string())
        .execute(&mut conn)
        .await
        .unwrap();
    sqlx::raw_sql("ALTER TABLE audit_logs DISABLE TRIGGER audit_logs_append_only").execute(&mut conn).await.unwrap();
    conn
}

async fn sealed_row(conn: &mut PgConnection, tenant: Uuid, seq: i64) -> Uuid {
    sqlx::query_scalar("SELECT log_id FROM audit_seals WHERE tenant_id = $1 AND seq = $2")
        .bind(tenant)
        .bind(seq)
        .fetch_one(conn)
        .await
        .unwrap()
}

/// A default tenant with 40 sealed rows at least; returns the head's sequence.
async fn sealed_log(app: &TestApp) -> i64 {
    write_rows(&app.db, app.default_tenant, 40).await;
    seal_everything(&app.db, app.default_tenant).await;
    let v = verify(app, app.default_tenant, &[]).await.expect("an untouched chain verifies");
    assert!(v.rows >= 40);
    v.seq
}

#[tokio::test]
async fn thirty_two_concurrent_writers_in_each_of_four_tenants_leave_linear_gap_free_chains() {
    let app = TestApp::spawn().await;
    let mut owner = app.owner_conn().await;
    let mut tenants = vec![app.default_tenant];
    for slug in ["north", "south", "east"] {
        tenants.push(new_tenant(&mut owner, slug).await);
    }
    // Its own pool, so 128 writers and two sealers really run at once.
    let db = Database::connect(app.owner.clone().username("fortifile_app"), 40).await.unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let sealers: Vec<_> = (0..2)
        .map(|_| {
            let (db, stop) = (db.clone(), stop.clone());
            tokio::spawn(async move {
                while !stop.load(Ordering::Relaxed) {
                    chain::seal_all(&db).await.unwrap();
                    tokio::time::sleep(Duration::from_millis(3)).await;
                }
            })
        })
        .collect();
    let mut writers = Vec::new();
    for &tenant in &tenants {
        for _ in 0..32 {
            let db = db.clone();
            writers.push(tokio::spawn(async move { write_rows(&db, tenant, 10).await }));
        }
    }
    for w in writers {
        w.await.unwrap();
    }
    stop.store(true, Ordering::Relaxed);
    for s in sealers {
        s.await.unwrap();
    }
    for &tenant in &tenants {
        seal_everything(&db, tenant).await;
        let v = verify(&app, tenant, &[]).await.unwrap_or_else(|b| panic!("{b}"));
        let (rows, seals, distinct, max): (i64, i64, i64, Option<i64>) = sqlx::query_as(
            "SELECT (SELECT count(*) FROM audit_logs WHERE tenant_id = $1), count(*), count(DISTINCT log_id), max(seq) \
             FROM audit_seals WHERE tenant_id = $1",
        )
        .bind(tenant)
        .fetch_one(&mut owner)
        .await
        .unwrap();
        assert!(rows >= 320, "every write committed");
        assert_eq!(
            (seals, distinct, max),
            (rows, rows, Some(rows)),
            "one seal per row, numbered 1..n: no gap, no fork"
        );
        assert_eq!(v.rows as i64, rows);
    }
}

#[tokio::test]
async fn a_row_changed_by_the_superuser_is_found_at_its_sequence() {
    let app = TestApp::spawn().await;
    let head = sealed_log(&app).await;
    let t = app.default_tenant;
    let mut conn = tamperer(&app, t).await;
    let middle = head / 2;
    let id = sealed_row(&mut conn, t, middle).await;
    sqlx::query("UPDATE audit_logs SET details = '{\"n\": 999}' WHERE id = $1")
        .bind(id)
        .execute(&mut conn)
        .await
        .unwrap();
    let broken = verify(&app, t, &[]).await.unwrap_err();
    assert_eq!((broken.problem, broken.seq, broken.row_id), (Problem::Changed, middle, Some(id)));
}

#[tokio::test]
async fn a_deleted_row_is_found_as_missing_and_a_deleted_seal_as_a_gap() {
    let app = TestApp::spawn().await;
    let head = sealed_log(&app).await;
    let t = app.default_tenant;
    let mut conn = tamperer(&app, t).await;
    let id = sealed_row(&mut conn, t, 7).await;
    sqlx::query("DELETE FROM audit_logs WHERE id = $1").bind(id).execute(&mut conn).await.unwrap();
    let broken = verify(&app, t, &[]).await.unwrap_err();
    assert_eq!((broken.problem, broken.seq, broken.row_id), (Problem::Missing, 7, Some(id)));
    // and removing its seal too leaves a hole in the numbering
    sqlx::query("DELETE FROM audit_seals WHERE tenant_id = $1 AND seq = 7").bind(t).execute(&mut conn).await.unwrap();
    let broken = verify(&app, t, &[]).await.unwrap_err();
    assert_eq!((broken.problem, broken.seq), (Problem::Gap, 7));
    assert!(head > 7);
}

#[tokio::test]
async fn two_rows_whose_sequence_numbers_were_swapped_are_found_out_of_place() {
    let app = TestApp::spawn().await;
    sealed_log(&app).await;
    let t = app.default_tenant;
    let mut conn = tamperer(&app, t).await;
    for (from, to) in [(5, 1_000_000), (9, 5), (1_000_000, 9)] {
        sqlx::query("UPDATE audit_seals SET seq = $3 WHERE tenant_id = $1 AND seq = $2")
            .bind(t)
            .bind(from as i64)
            .bind(to as i64)
            .execute(&mut conn)
            .await
            .unwrap();
    }
    let broken = verify(&app, t, &[]).await.unwrap_err();
    assert_eq!((broken.problem, broken.seq), (Problem::Reordered, 5));
}

/// Deletes the newest `n` rows with their seals and checkpoints, and sets the
/// head back, as an owner covering their tracks would.
async fn cut_the_end(app: &TestApp, n: i64) {
    let t = app.default_tenant;
    let mut conn = tamperer(app, t).await;
    for sql in [
        "WITH gone AS (DELETE FROM audit_seals WHERE tenant_id = $1 \
                         AND seq > (SELECT seq - $2 FROM audit_chain WHERE tenant_id = $1) RETURNING log_id) \
         DELETE FROM audit_logs WHERE id IN (SELECT log_id FROM gone)",
        "UPDATE audit_chain c SET seq = c.seq - $2, \
                hash = (SELECT hash FROM audit_seals s WHERE s.tenant_id = $1 AND s.seq = c.seq - $2) \
         WHERE c.tenant_id = $1",
        "DELETE FROM audit_checkpoints WHERE tenant_id = $1 AND $2 > 0",
    ] {
        sqlx::query(sql).bind(t).bind(n).execute(&mut conn).await.unwrap();
    }
}

#[tokio::test]
async fn deleting_the_newest_rows_passes_without_a_checkpoint_and_is_found_with_an_earlier_one() {
    let app = TestApp::spawn().await;
    let head = sealed_log(&app).await;
    let t = app.default_tenant;
    let kept = checkpoint::seal_and_sign(&app.db, &app.state.audit_key, t, None).await.unwrap().unwrap();
    assert_eq!(kept.seq, head);
    // the checkpoint as copied outside, through the API's listing
    let admin = app.admin().await;
    let (status, listing) = admin.get("/api/audit-logs/checkpoints").await;
    assert_eq!(status, StatusCode::OK);
    let outside = checkpoint::parse_file(&listing.to_string()).unwrap();
    assert!(outside.contains(&kept));
    cut_the_end(&app, 10).await;
    verify(&app, t, &[]).await.expect("the shortened chain is consistent in itself");
    let broken = verify(&app, t, &outside).await.unwrap_err();
    assert_eq!((broken.problem, broken.seq), (Problem::Truncated, head));
}

#[tokio::test]
async fn a_rewritten_history_diverges_from_a_checkpoint_and_a_forged_signature_is_refused() {
    let app = TestApp::spawn().await;
    let head = sealed_log(&app).await;
    let t = app.default_tenant;
    checkpoint::seal_and_sign(&app.db, &app.state.audit_key, t, None).await.unwrap().unwrap();
    let mut conn = tamperer(&app, t).await;
    sqlx::query("UPDATE audit_checkpoints SET signature = set_byte(signature, 0, get_byte(signature, 0) # 1)")
        .execute(&mut conn)
        .await
        .unwrap();
    let broken = verify(&app, t, &[]).await.unwrap_err();
    assert_eq!((broken.problem, broken.seq), (Problem::BadSignature, head));
    // A signed checkpoint with another hash than the chain's at its sequence.
    sqlx::query("DELETE FROM audit_checkpoints").execute(&mut conn).await.unwrap();
    let mut tx = app.db.tenant_tx(t, None).await.unwrap();
    checkpoint::sign(&mut tx, &app.state.audit_key, 3, &[7u8; 32]).await.unwrap();
    tx.commit().await.unwrap();
    let broken = verify(&app, t, &[]).await.unwrap_err();
    assert_eq!((broken.problem, broken.seq), (Problem::Diverged, 3));
}

#[tokio::test]
async fn a_row_slipped_in_behind_the_sealer_is_found() {
    let app = TestApp::spawn().await;
    sealed_log(&app).await;
    let t = app.default_tenant;
    let mut conn = tamperer(&app, t).await;
    let id: Uuid = sqlx::query_scalar(
        "INSERT INTO audit_logs (tenant_id, action, result, txid) VALUES ($1, 'auth.login', 'success', '3') RETURNING id",
    )
    .bind(t)
    .fetch_one(&mut conn)
    .await
    .unwrap();
    let broken = verify(&app, t, &[]).await.unwrap_err();
    assert_eq!((broken.problem, broken.row_id), (Problem::Unsealed, Some(id)));
}

#[tokio::test]
async fn only_log_viewers_see_checkpoints_and_the_chain_and_a_verification_is_recorded() {
    let app = TestApp::spawn().await;
    sealed_log(&app).await;
    let student = app.signed_in_as("sam", "student", "public").await;
    for path in ["/api/audit-logs/checkpoints", "/api/audit-logs/chain"] {
        assert_eq!(student.get(path).await.0, StatusCode::FORBIDDEN, "{path}");
    }
    assert_eq!(student.post("/api/audit-logs/verify", json!({})).await.0, StatusCode::FORBIDDEN);
    let admin = app.admin().await;
    let (status, body) = admin.get("/api/audit-logs/chain").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["chain"]["publicKey"], app.state.audit_key.public().to_hex());
    let (status, body) = admin.post("/api/audit-logs/verify", json!({})).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["verification"]["ok"], true, "{body}");
    let row = app.audit("audit.verify").await.pop().unwrap();
    assert_eq!(row.result, "success");
    assert!(row.details["rows"].as_u64().unwrap() >= 40);
    let (status, body) = admin.get("/api/audit-logs/checkpoints?limit=0").await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
}

#[tokio::test]
async fn the_dashboard_verifies_integrity_and_shows_where_it_broke() {
    let app = TestApp::spawn().await;
    sealed_log(&app).await;
    let admin = app.admin().await;
    let page = admin.client.get(app.url("/admin/logs")).send().await.unwrap().text().await.unwrap();
    assert!(page.contains("id=\"verify-integrity\""), "the dashboard offers the action");
    let verify_page = || async {
        let res = admin
            .client
            .post(app.url("/admin/logs/verify"))
            .form(&[("csrf_token", admin.csrf.as_str())])
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), StatusCode::OK);
        res.text().await.unwrap()
    };
    assert!(verify_page().await.contains("id=\"verified\""));
    let mut conn = tamperer(&app, app.default_tenant).await;
    let id = sealed_row(&mut conn, app.default_tenant, 4).await;
    sqlx::query("UPDATE audit_logs SET action = 'auth.logout' WHERE id = $1")
        .bind(id)
        .execute(&mut conn)
        .await
        .unwrap();
    let page = verify_page().await;
    assert!(page.contains("id=\"broken\"") && page.contains(&id.to_string()), "{page}");
    let rows = app.audit("audit.verify").await;
    assert_eq!(rows.iter().map(|r| r.result.as_str()).collect::<Vec<_>>(), ["success", "fail"]);
    assert_eq!(rows[1].details["seq"], 4);
}

#[tokio::test]
async fn when_the_audit_log_refuses_a_row_the_action_it_records_does_not_happen() {
    let app = TestApp::spawn().await;
    let admin = app.admin().await;
    let mut conn = app.owner_conn().await;
    sqlx::raw_sql(
        "CREATE FUNCTION full_disk() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN \
           IF NEW.action = 'incident.create' THEN RAISE EXCEPTION 'no space' USING ERRCODE = '53100'; END IF; \
           RETURN NEW; END $$; \
         CREATE TRIGGER full_disk BEFORE INSERT ON audit_logs FOR EACH ROW EXECUTE FUNCTION full_disk();",
    )
    .execute(&mut conn)
    .await
    .unwrap();
    let (status, body) = admin.post("/admin/incidents", json!({ "title": "not recorded", "severity": "low" })).await;
    assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR, "{body}");
    assert!(!body.to_string().contains("no space"), "the body is generic: {body}");
    let incidents: i64 = sqlx::query_scalar("SELECT count(*) FROM incidents").fetch_one(&mut conn).await.unwrap();
    assert_eq!(incidents, 0, "no incident without its audit row");
}

#[tokio::test]
async fn rows_left_unsealed_for_long_show_as_an_alarm() {
    let app = TestApp::spawn().await;
    let t = app.default_tenant;
    sealed_log(&app).await;
    let admin = app.admin().await;
    let (_, body) = admin.get("/api/audit-logs/chain").await;
    assert_eq!(body["chain"]["sealingStuck"], false, "{body}");
    // A row whose transaction is still open cannot be sealed; one written a
    // minute "ago" and not sealed is what a stuck sealer leaves.
    let mut conn = tamperer(&app, t).await;
    sqlx::query("INSERT INTO audit_logs (tenant_id, created_at, action, result) VALUES ($1, now() - interval '1 minute', 'auth.login', 'success')")
        .bind(t)
        .execute(&mut conn)
        .await
        .unwrap();
    let (_, body) = admin.get("/api/audit-logs/chain").await;
    assert_eq!(body["chain"]["sealingStuck"], true, "{body}");
    assert!(body["chain"]["unsealed"].as_i64().unwrap() >= 1);
    let page = admin.client.get(app.url("/admin/logs")).send().await.unwrap().text().await.unwrap();
    assert!(page.contains("id=\"sealing-stuck\""));
}

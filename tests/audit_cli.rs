//! `fortifile audit …` (issue 16), the binary against a server's database:
//! `verify` succeeds after traffic, names a row a superuser edited, passes a
//! cut-off chain without a checkpoint and refuses it with one; `public-key`
//! prints the key checkpoints verify with; archives are listed and verified
//! offline.

mod common;

use std::process::{Command, Output, Stdio};

use common::{TestApp, scratch_dir, seal_everything};
use fortifile::audit::checkpoint;
use serde_json::json;
use uuid::Uuid;

fn audit(app: &TestApp, args: &[&str]) -> Output {
    let dir = scratch_dir();
    Command::new(env!("CARGO_BIN_EXE_fortifile"))
        .current_dir(&*dir)
        .arg("audit")
        .args(args)
        .env("DATABASE_URL", app.owner_url())
        .env("FORTIFILE_DATA_DIR", &*app.data)
        .env("FORTIFILE_STORAGE", "")
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .output()
        .unwrap()
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).to_string()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).to_string()
}

async fn traffic(app: &TestApp) {
    let admin = app.admin().await;
    for i in 0..12 {
        let (status, _) =
            admin.post("/admin/incidents", json!({ "title": format!("incident {i}"), "severity": "low" })).await;
        assert!(status.is_success());
    }
    app.me(&admin.client).await;
}

#[tokio::test]
async fn verify_succeeds_after_traffic_and_names_the_row_a_superuser_edited() {
    let app = TestApp::spawn().await;
    traffic(&app).await;
    let out = audit(&app, &["verify"]);
    assert_eq!(out.status.code(), Some(0), "{}{}", stdout(&out), stderr(&out));
    let text = stdout(&out);
    let last = text.lines().last().unwrap();
    assert!(last.starts_with("verified ") && last.contains(" rows of 1 tenants up to sequence "), "{text}");

    let mut conn = app.owner_conn().await;
    let id: Uuid =
        sqlx::query_scalar("SELECT log_id FROM audit_seals WHERE seq = 3").fetch_one(&mut conn).await.unwrap();
    sqlx::raw_sql("ALTER TABLE audit_logs DISABLE TRIGGER audit_logs_append_only").execute(&mut conn).await.unwrap();
    sqlx::query("UPDATE audit_logs SET ip = '203.0.113.9' WHERE id = $1").bind(id).execute(&mut conn).await.unwrap();
    let out = audit(&app, &["verify"]);
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert!(err.contains("tenant default") && err.contains("sequence 3") && err.contains(&id.to_string()), "{err}");
    assert!(err.contains("Changed"), "{err}");
}

#[tokio::test]
async fn a_chain_cut_at_its_end_passes_alone_and_fails_against_a_checkpoint_kept_outside() {
    let app = TestApp::spawn().await;
    traffic(&app).await;
    seal_everything(&app.db, app.default_tenant).await;
    let kept =
        checkpoint::seal_and_sign(&app.db, &app.state.audit_key, app.default_tenant, None).await.unwrap().unwrap();
    let outside = scratch_dir();
    let file = outside.join("checkpoint.json");
    std::fs::write(&file, serde_json::to_string(&kept).unwrap()).unwrap();

    let mut conn = app.owner_conn().await;
    sqlx::query("SELECT set_config('app.tenant_id', $1, false)")
        .bind(app.default_tenant.to_string())
        .execute(&mut conn)
        .await
        .unwrap();
    sqlx::raw_sql("ALTER TABLE audit_logs DISABLE TRIGGER audit_logs_append_only").execute(&mut conn).await.unwrap();
    for sql in [
        "WITH gone AS (DELETE FROM audit_seals WHERE seq > (SELECT seq - 5 FROM audit_chain) RETURNING log_id) \
         DELETE FROM audit_logs WHERE id IN (SELECT log_id FROM gone)",
        "UPDATE audit_chain c SET seq = c.seq - 5, hash = (SELECT hash FROM audit_seals s WHERE s.seq = c.seq - 5)",
        "DELETE FROM audit_checkpoints",
    ] {
        sqlx::raw_sql(sql).execute(&mut conn).await.unwrap();
    }
    let out = audit(&app, &["verify"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let out = audit(&app, &["verify", "--checkpoint", file.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert!(err.contains("Truncated") && err.contains(&format!("sequence {}", kept.seq)), "{err}");

    let out = audit(&app, &["public-key"]);
    assert!(stdout(&out).starts_with(&app.state.audit_key.public().to_hex()), "{}", stdout(&out));
    let out = audit(&app, &["verify", "--public-key", &"00".repeat(32), "--checkpoint", file.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("BadSignature"), "{}", stderr(&out));
}

#[tokio::test]
async fn archives_are_listed_and_an_archive_verifies_offline() {
    let app = TestApp::spawn().await;
    let out = audit(&app, &["archive", "--list"]);
    assert_eq!((out.status.code(), stdout(&out).trim()), (Some(0), "no audit archives yet"));
    let out = audit(&app, &["verify", "--archive", "audit-archives/none.jsonl.gz"]);
    assert_eq!(out.status.code(), Some(1));
}

//! The `fortifile` binary: configuration errors, `create-admin`, and `serve` on the
//! embedded cluster from an empty data directory.

mod common;

use std::{
    path::Path,
    process::{Command, Output, Stdio},
    time::{Duration, Instant},
};

use common::{TestApp, scratch_dir};
use reqwest::StatusCode;
use serde_json::{Value, json};

const ADMIN_PASSWORD: &str = "amber falcon quiet river";

fn fortifile(dir: &Path) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_fortifile"));
    cmd.current_dir(dir)
        .env_remove("DATABASE_URL")
        .env_remove("FORTIFILE_ADMIN_PASSWORD")
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null());
    cmd
}

/// Runs `create-admin` against `app`'s database; `password` goes in the environment.
fn create_admin(app: &TestApp, username: &str, email: &str, password: Option<&str>) -> Output {
    let dir = scratch_dir();
    let mut cmd = fortifile(&dir);
    cmd.args(["create-admin", "--username", username, "--email", email]).env("DATABASE_URL", app.owner_url());
    if let Some(pw) = password {
        cmd.env("FORTIFILE_ADMIN_PASSWORD", pw);
    }
    cmd.output().unwrap()
}

fn text(out: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr))
}

#[test]
fn a_bad_environment_value_stops_the_program_with_a_message_naming_it() {
    let dir = scratch_dir();
    for (var, value) in [("FORTIFILE_BIND", "everywhere"), ("FORTIFILE_REGISTRATION", "sometimes")] {
        let out = fortifile(&dir).arg("migrate").env(var, value).output().unwrap();
        assert_eq!(out.status.code(), Some(2), "{}", text(&out));
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.starts_with(&format!("error: {var}: ")), "{stderr}");
        assert!(!stderr.contains("panicked") && !stderr.contains("backtrace"), "{stderr}");
    }
}

#[test]
fn create_admin_takes_no_password_from_the_command_line() {
    let dir = scratch_dir();
    let out = fortifile(&dir)
        .args(["create-admin", "--username", "root", "--email", "r@example.org", "--password", "x"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(text(&out).contains("unexpected argument '--password'"), "{}", text(&out));
}

#[tokio::test]
async fn create_admin_makes_an_active_restricted_admin_and_audits_it_as_cli() {
    let app = TestApp::spawn().await;
    let out = create_admin(&app, "root-admin", "admin@example.org", Some(ADMIN_PASSWORD));
    assert!(out.status.success(), "{}", text(&out));
    assert!(!text(&out).contains(ADMIN_PASSWORD));

    let res = app.login_with(&app.client, "root-admin", ADMIN_PASSWORD).await;
    assert_eq!(res.status(), StatusCode::OK);
    let user = &res.json::<Value>().await.unwrap()["user"];
    assert_eq!(user["role"], "admin");
    assert_eq!(user["clearanceLevel"], "restricted");
    assert_eq!(user["status"], "active");
    assert!(user["permissions"].as_array().unwrap().contains(&json!("admin.manage_roles")));

    let rows = app.audit("user.create").await;
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0].details["via"], "cli");
    assert!(!rows[0].details.to_string().contains(ADMIN_PASSWORD));

    let again = create_admin(&app, "root-admin", "other@example.org", Some(ADMIN_PASSWORD));
    assert!(!again.status.success());
    assert!(text(&again).contains("already exists"), "{}", text(&again));
}

#[tokio::test]
async fn create_admin_refuses_a_weak_password_and_a_missing_one() {
    let app = TestApp::spawn().await;
    let weak = create_admin(&app, "root-admin", "admin@example.org", Some("password1"));
    assert!(!weak.status.success());
    assert!(text(&weak).contains("too common"), "{}", text(&weak));
    let missing = create_admin(&app, "root-admin", "admin@example.org", None);
    assert!(!missing.status.success());
    assert!(text(&missing).contains("FORTIFILE_ADMIN_PASSWORD"), "{}", text(&missing));
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

#[tokio::test]
async fn serve_runs_on_an_embedded_cluster_that_create_admin_attaches_to_and_stops_it_on_sigterm() {
    let dir = scratch_dir();
    let port = free_port();
    let mut server = fortifile(&dir)
        .arg("serve")
        .env("FORTIFILE_BIND", format!("127.0.0.1:{port}"))
        .env("FORTIFILE_DATA_DIR", dir.join("data"))
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let base = format!("http://127.0.0.1:{port}");
    let client = common::new_client();
    let started = Instant::now();
    loop {
        if let Ok(res) = client.get(format!("{base}/readyz")).send().await
            && res.status() == StatusCode::OK
        {
            break;
        }
        if let Some(status) = server.try_wait().unwrap() {
            panic!("serve exited early: {status}");
        }
        assert!(started.elapsed() < Duration::from_secs(90), "serve did not become ready");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let pid_file = dir.join("data/postgres/data/postmaster.pid");
    assert!(pid_file.exists(), "the cluster lives under FORTIFILE_DATA_DIR");

    let admin = fortifile(&dir)
        .args(["create-admin", "--username", "root-admin", "--email", "admin@example.org"])
        .env("FORTIFILE_DATA_DIR", dir.join("data"))
        .env("FORTIFILE_ADMIN_PASSWORD", ADMIN_PASSWORD)
        .env("RUST_LOG", "info")
        .output()
        .unwrap();
    assert!(admin.status.success(), "{}", text(&admin));
    assert!(pid_file.exists(), "create-admin attached and left the cluster running");
    assert!(
        text(&admin).contains("embedded PostgreSQL left running: this process attached to a cluster it did not start"),
        "the log says why the cluster was left running: {}",
        text(&admin)
    );

    let res = client
        .post(format!("{base}/auth/login"))
        .json(&json!({ "username": "root-admin", "password": ADMIN_PASSWORD }))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::OK);

    let kill = Command::new("kill").args(["-TERM", &server.id().to_string()]).status().unwrap();
    assert!(kill.success());
    let out = server.wait_with_output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(!pid_file.exists(), "serve stopped the cluster it started");

    // The next command reuses the cluster (no initdb) and stops it again.
    let migrate = fortifile(&dir).arg("migrate").env("FORTIFILE_DATA_DIR", dir.join("data")).output().unwrap();
    assert!(migrate.status.success(), "{}", text(&migrate));
    assert!(!pid_file.exists());
}

#[tokio::test]
async fn a_command_that_started_the_cluster_leaves_it_running_while_another_process_uses_it() {
    use fortifile::db::{DbTarget, embedded::EmbeddedPostgres};
    use sqlx::Connection;

    let dir = scratch_dir();
    let pg = tokio::task::spawn_blocking({
        let data = dir.join("data");
        move || EmbeddedPostgres::ensure(&data).unwrap()
    })
    .await
    .unwrap();
    assert!(pg.started_here());
    let owner = pg.connect_options("postgres");
    let pid_file = dir.join("data/postgres/data/postmaster.pid");

    // Another process (a `serve` that attached) holds a connection.
    let other = sqlx::PgConnection::connect_with(&owner).await.unwrap();
    let mut target = DbTarget { owner: owner.clone(), app: owner.clone(), embedded: Some(pg) };
    target.shutdown().await;
    assert!(pid_file.exists(), "the cluster kept running for the attached process");
    other.close().await.unwrap();

    // Once nobody else uses it, the process that started it stops it.
    let pg = tokio::task::spawn_blocking({
        let data = dir.join("data");
        move || EmbeddedPostgres::ensure(&data).unwrap()
    })
    .await
    .unwrap();
    assert!(!pg.started_here(), "a running cluster is attached to, not started again");
    let mut attached = DbTarget { owner: owner.clone(), app: owner.clone(), embedded: Some(pg) };
    attached.shutdown().await;
    assert!(pid_file.exists(), "a process that only attached never stops it");
    let path: Vec<_> = std::env::split_paths(&std::env::var_os("PATH").unwrap_or_default()).collect();
    let bindir = fortifile::db::embedded::find_bindir(&path, None, Path::new("/usr/lib/postgresql")).unwrap();
    let pgdata = dir.join("data/postgres/data");
    let mut stop = if nix_is_root() { Command::new("runuser") } else { Command::new(bindir.join("pg_ctl")) };
    if nix_is_root() {
        stop.args(["-u", "postgres", "--"]).arg(bindir.join("pg_ctl"));
    }
    let out = stop.arg("stop").arg("-D").arg(&pgdata).args(["-m", "fast", "-w"]).output().unwrap();
    assert!(out.status.success(), "{}", text(&out));
}

fn nix_is_root() -> bool {
    std::fs::metadata("/proc/self").map(|m| std::os::unix::fs::MetadataExt::uid(&m) == 0).unwrap_or(false)
}

#[tokio::test]
async fn seed_adds_a_tenant_with_its_defaults_once_and_says_what_it_added() {
    let app = TestApp::spawn().await;
    let dir = scratch_dir();
    let seed =
        || fortifile(&dir).args(["seed", "--tenant", "acme"]).env("DATABASE_URL", app.owner_url()).output().unwrap();
    let first = seed();
    assert!(first.status.success(), "{}", text(&first));
    let out = String::from_utf8_lossy(&first.stdout).to_string();
    assert!(out.contains("tenant created: yes") && out.contains("roles added: admin, staff, student"), "{out}");
    let second = seed();
    let out = String::from_utf8_lossy(&second.stdout).to_string();
    assert!(out.contains("tenant created: no; roles added: none;"), "{out}");
    assert!(out.contains("roles already present (unchanged): admin, staff, student"), "{out}");
    assert!(out.contains("clearance levels added: none; departments added: none"), "{out}");
    assert_eq!(app.db.tenant_by_slug("acme").await.unwrap().unwrap().slug, "acme");

    let bad =
        fortifile(&dir).args(["seed", "--tenant", "Bad Slug"]).env("DATABASE_URL", app.owner_url()).output().unwrap();
    assert!(!bad.status.success());
    assert!(text(&bad).contains("--tenant"), "{}", text(&bad));
}

#[test]
fn as_root_an_unreachable_data_directory_is_named_in_one_clear_message() {
    if !nix_is_root() {
        return; // only root hands the cluster to the postgres user
    }
    use std::os::unix::fs::PermissionsExt;
    let dir = scratch_dir();
    let private = dir.join("private");
    std::fs::create_dir(&private).unwrap();
    std::fs::set_permissions(&private, std::fs::Permissions::from_mode(0o700)).unwrap();
    let out = fortifile(&dir).arg("migrate").env("FORTIFILE_DATA_DIR", private.join("data")).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("cannot reach") && stderr.contains(&private.display().to_string()), "{stderr}");
    assert!(!stderr.contains("panicked"));
}

#[tokio::test]
async fn the_three_presets_load_idempotently_and_say_what_they_added() {
    let app = TestApp::spawn().await;
    let dir = scratch_dir();
    let seed = |preset: &str, tenant: &str| {
        fortifile(&dir)
            .args(["seed", "--preset", preset, "--tenant", tenant])
            .env("DATABASE_URL", app.owner_url())
            .output()
            .unwrap()
    };
    let first = seed("compliance", "acme");
    assert!(first.status.success(), "{}", text(&first));
    let out = String::from_utf8_lossy(&first.stdout).to_string();
    assert!(out.contains("preset \"compliance\"") && out.contains("CompanyAdmin") && out.contains("Auditor"), "{out}");
    assert!(out.contains("clearance levels added: public, confidential, restricted"), "{out}");
    let again = String::from_utf8_lossy(&seed("compliance", "acme").stdout).to_string();
    assert!(again.contains("roles added: none;"), "{again}");

    let eng = seed("engineering", "eng");
    assert!(eng.status.success(), "{}", text(&eng));
    let out = String::from_utf8_lossy(&eng.stdout).to_string();
    assert!(out.contains("roles added: Admin, Engineer, Automation Manager, PM"), "{out}");
    let default = seed("fortifile", "default");
    assert!(String::from_utf8_lossy(&default.stdout).contains("roles added: none;"), "{}", text(&default));

    // Seed 001's policy columns arrive with the roles, and nothing leaks across tenants.
    let mut conn = app.owner_conn().await;
    let row: (Option<String>, Option<i32>, Option<i32>, bool, Option<String>) = sqlx::query_as(
        "SELECT r.portal, r.tier, r.session_timeout_minutes, r.requires_mfa, r.mfa_type FROM roles r \
         JOIN tenants t ON t.id = r.tenant_id WHERE t.slug = 'acme' AND r.name = 'CompanyAdmin'",
    )
    .fetch_one(&mut conn)
    .await
    .unwrap();
    assert_eq!(row, (Some("service_company".into()), Some(1), Some(15), true, Some("fido2".into())));
    let count: i64 =
        sqlx::query_scalar("SELECT count(*) FROM roles r JOIN tenants t ON t.id = r.tenant_id WHERE t.slug = 'acme'")
            .fetch_one(&mut conn)
            .await
            .unwrap();
    assert_eq!(count, 11);

    let unknown = seed("nonsense", "acme");
    assert!(!unknown.status.success());
    assert!(text(&unknown).contains("the presets are: fortifile, compliance, engineering"), "{}", text(&unknown));
}

#[tokio::test]
async fn create_admin_takes_a_presets_admin_role_and_refuses_one_that_cannot_administer() {
    let app = TestApp::spawn().await;
    let dir = scratch_dir();
    let seeded = fortifile(&dir)
        .args(["seed", "--preset", "compliance", "--tenant", "acme"])
        .env("DATABASE_URL", app.owner_url())
        .output()
        .unwrap();
    assert!(seeded.status.success(), "{}", text(&seeded));
    let create = |role: &str, name: &str| {
        fortifile(&dir)
            .args(["create-admin", "--username", name, "--email", &format!("{name}@example.org")])
            .args(["--tenant", "acme", "--role", role])
            .env("DATABASE_URL", app.owner_url())
            .env("FORTIFILE_ADMIN_PASSWORD", ADMIN_PASSWORD)
            .output()
            .unwrap()
    };
    let ok = create("CompanyAdmin", "boss");
    assert!(ok.status.success(), "{}", text(&ok));
    let refused = create("Auditor", "peeker");
    assert!(!refused.status.success());
    assert!(text(&refused).contains("does not grant admin.manage_roles"), "{}", text(&refused));
}

//! Faults lose nothing (issue 18): the server killed with SIGKILL during
//! uploads, downloads and shares; PostgreSQL stopped immediately under load;
//! the storage full; the audit write failing; S3 gone mid-upload. After
//! every fault one function checks the invariants (`common::invariants`).
//!
//! Counts are reduced here; `FORTIFILE_FAULT_KILLS` and
//! `FORTIFILE_FAULT_STOPS` raise them for the full run (`bench/faults`).

mod common;

use std::{
    path::Path,
    process::Command,
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

use common::{
    TestApp,
    fleet::{Client, Fleet},
    invariants::{self, Evidence},
    moto::S3Server,
    sha256_hex,
};
use fortifile::config::{S3Settings, StorageSpec};
use reqwest::StatusCode;
use serde_json::json;

/// The kill, stop and soak tests each load the machine for minutes: one at a
/// time, so that none measures (or times out on) another's load.
static HEAVY: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

fn count(var: &str, default: usize) -> usize {
    std::env::var(var).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

/// What the load saw acknowledged.
#[derive(Default)]
struct Acked {
    uploads: Mutex<Vec<(String, String)>>,
    shares: AtomicUsize,
    /// Documents the checker has downloaded and verified.
    verified: Mutex<std::collections::HashSet<String>>,
}

/// Uploads, downloads and shares as `user0` until `stop`; failures are
/// expected while a fault lasts, so only what was acknowledged is kept.
async fn load(base: String, stop: Arc<AtomicBool>, acked: Arc<Acked>) {
    let mut round = 0usize;
    while !stop.load(Ordering::Relaxed) {
        let Ok(client) = Client::sign_in(&base, "user0").await else {
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        };
        for _ in 0..20 {
            if stop.load(Ordering::Relaxed) {
                return;
            }
            round += 1;
            let bytes =
                format!("fault load {round} {}\n", uuid::Uuid::new_v4()).repeat(500 + (round % 11) * 700).into_bytes();
            let sha = sha256_hex(&bytes);
            match client.upload(&format!("load-{round}.txt"), bytes).await {
                Ok((StatusCode::CREATED, body)) => {
                    let id = body["file"]["id"].as_str().unwrap_or_default().to_string();
                    acked.uploads.lock().unwrap().push((id.clone(), sha));
                    if let Ok((StatusCode::CREATED, _)) =
                        client.post(&format!("/api/files/{id}/shares"), json!({ "username": "user1" })).await
                    {
                        acked.shares.fetch_add(1, Ordering::Relaxed);
                    }
                }
                Ok(_) => {}
                Err(_) => break, // the server is gone: sign in again once it is back
            }
            let known = acked.uploads.lock().unwrap().last().cloned();
            if let Some((id, _)) = known {
                let _ = client.download(&id).await;
            }
        }
    }
}

/// The administrator, `user0` (staff) and `user1` (staff) on a started fleet.
async fn people(fleet: &Fleet) -> Client {
    fleet.create_admin();
    let admin = Client::sign_in(&fleet.instances[0].base(), "admin").await.unwrap();
    for u in ["user0", "user1"] {
        let (status, body) = admin
            .post(
                "/api/users",
                json!({ "username": u, "email": format!("{u}@example.org"), "password": common::PASSWORD,
                        "role": "staff", "department": "General", "clearanceLevel": "public" }),
            )
            .await
            .unwrap();
        assert_eq!(status, StatusCode::CREATED, "{body}");
    }
    admin
}

/// Checks every invariant; panics naming the broken ones.
async fn assert_invariants(fleet: &Fleet, admin: &Client, acked: &Acked, postgres_log: &Path, after: &str) {
    let mut db = invariants::connect(&fleet.owner).await;
    let uploads = acked.uploads.lock().unwrap().clone();
    let storage = fleet.storage_dir();
    let evidence =
        Evidence { reader: admin, acknowledged: &uploads, storage: &storage, postgres_log, verified: &acked.verified };
    let broken = invariants::check(&mut db, &evidence, || fleet.audit_verify()).await;
    let errors: Vec<String> = fleet.log_text(0).lines().filter(|l| l.contains("\"ERROR\"")).map(String::from).collect();
    assert!(broken.is_empty(), "after {after}: {broken:#?}\nthe server's errors: {errors:#?}");
}

/// The shared test cluster's log (tests on `DATABASE_URL` have none to read).
fn cluster_log() -> std::path::PathBuf {
    Path::new(&common::test_cluster_dir()).join("postgres").join("postgres.log")
}

#[tokio::test]
async fn killing_the_server_during_uploads_downloads_and_shares_loses_nothing_acknowledged() {
    let _heavy = HEAVY.lock().await;
    let kills = count("FORTIFILE_FAULT_KILLS", 20);
    let mut fleet = Fleet::local().await;
    fleet.start(0);
    fleet.wait_ready(0).await;
    let admin = people(&fleet).await;
    let base = fleet.instances[0].base();
    let acked = Arc::new(Acked::default());
    for kill in 1..=kills {
        let stop = Arc::new(AtomicBool::new(false));
        let workers: Vec<_> = (0..3).map(|_| tokio::spawn(load(base.clone(), stop.clone(), acked.clone()))).collect();
        // A moment into the load, different each time.
        let at = 300 + (kill * 7919) % 900;
        tokio::time::sleep(Duration::from_millis(at as u64)).await;
        fleet.kill(0).await;
        stop.store(true, Ordering::Relaxed);
        for w in workers {
            w.await.unwrap();
        }
        fleet.start(0);
        fleet.wait_ready(0).await;
        let admin = Client::sign_in(&base, "admin").await.unwrap();
        assert_invariants(&fleet, &admin, &acked, &cluster_log(), &format!("kill {kill} at {at} ms")).await;
    }
    let uploads = acked.uploads.lock().unwrap().len();
    // I3's second half: what the kills left in flight, once past the grace
    // period, the sweep removes, leaving exactly the documents' objects.
    let mut db = invariants::connect(&fleet.owner).await;
    let left: i64 = sqlx::query_scalar("SELECT count(*) FROM pending_objects").fetch_one(&mut db).await.unwrap();
    // Two hours pass, for the records and for the files' times (a local
    // object written within the grace period may be an upload still writing).
    sqlx::query("UPDATE pending_objects SET since = since - interval '2 hours'").execute(&mut db).await.unwrap();
    let aged = Command::new("find")
        .arg(fleet.storage_dir())
        .args(["-type", "f", "-exec", "touch", "-d", "2 hours ago", "{}", "+"])
        .status()
        .unwrap();
    assert!(aged.success());
    sqlx::query("UPDATE job_schedule SET next_run_at = now() WHERE job = 'objects.sweep'")
        .execute(&mut db)
        .await
        .unwrap();
    let started = Instant::now();
    loop {
        let pending: i64 = sqlx::query_scalar("SELECT count(*) FROM pending_objects").fetch_one(&mut db).await.unwrap();
        if pending == 0 {
            break;
        }
        assert!(started.elapsed() < Duration::from_secs(30), "the sweep did not settle {pending} records");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let mut referenced: Vec<String> =
        sqlx::query_scalar("SELECT object_key FROM files").fetch_all(&mut db).await.unwrap();
    let mut stored = invariants::object_keys(&fleet.storage_dir());
    referenced.sort();
    stored.sort();
    assert_eq!(stored, referenced, "after the sweep, exactly the documents' objects are stored");
    eprintln!(
        "{kills} kills: {uploads} acknowledged uploads, {} shares, every invariant held; \
         the sweep settled {left} objects the kills left in flight",
        acked.shares.load(Ordering::Relaxed)
    );
    assert!(uploads > kills, "the load acknowledged uploads between the kills");
    drop(admin);
}

#[tokio::test]
async fn stopping_postgresql_immediately_under_load_loses_nothing_acknowledged_and_the_server_starts_it_again() {
    let _heavy = HEAVY.lock().await;
    let stops = count("FORTIFILE_FAULT_STOPS", 5);
    let mut fleet = Fleet::embedded();
    fleet.start(0);
    fleet.wait_ready(0).await;
    let admin = people(&fleet).await;
    let base = fleet.instances[0].base();
    let acked = Arc::new(Acked::default());
    let log = fleet.data.join("postgres").join("postgres.log");
    let http = reqwest::Client::new();
    for n in 1..=stops {
        let stop = Arc::new(AtomicBool::new(false));
        let workers: Vec<_> = (0..3).map(|_| tokio::spawn(load(base.clone(), stop.clone(), acked.clone()))).collect();
        tokio::time::sleep(Duration::from_millis(300 + (n as u64 * 7919) % 700)).await;
        // No waiting (-W): the server may start the cluster again before
        // pg_ctl would have seen it gone.
        let stopped =
            fleet.pg_ctl(&["stop", "-m", "immediate", "-W"]).stderr(std::process::Stdio::piped()).output().unwrap();
        assert!(stopped.status.success(), "pg_ctl stop {n}: {}", String::from_utf8_lossy(&stopped.stderr));
        // Not ready while the cluster is down, ready again once the server restarted it.
        let (mut unready, started) = (false, Instant::now());
        loop {
            let status = http.get(format!("{base}/readyz")).send().await.map(|r| r.status());
            match status {
                Ok(StatusCode::OK) if unready => break,
                Ok(StatusCode::OK) => {}
                _ => unready = true,
            }
            assert!(started.elapsed() < Duration::from_secs(60), "the server did not come back after stop {n}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        stop.store(true, Ordering::Relaxed);
        for w in workers {
            w.await.unwrap();
        }
        let admin = Client::sign_in(&base, "admin").await.unwrap();
        assert_invariants(&fleet, &admin, &acked, &log, &format!("immediate stop {n}")).await;
    }
    let uploads = acked.uploads.lock().unwrap().len();
    eprintln!("{stops} immediate stops: {uploads} acknowledged uploads, every invariant held");
    assert!(uploads > stops);
    assert!(fleet.log_text(0).contains("started it again"), "the server restarted its cluster");
    drop(admin);
    assert!(fleet.terminate(0).await.success(), "{}", fleet.log_text(0));
}

/// A size-limited tmpfs mounted for one test, unmounted when dropped.
struct SmallDisk(std::path::PathBuf);

impl SmallDisk {
    fn mount(dir: &Path, size: &str) -> SmallDisk {
        std::fs::create_dir_all(dir).unwrap();
        let ok = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size},mode=0700"), "tmpfs"])
            .arg(dir)
            .status();
        assert!(ok.is_ok_and(|s| s.success()), "the storage-full test mounts a tmpfs: it must run as root (CI does)");
        SmallDisk(dir.to_path_buf())
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

#[tokio::test]
async fn a_full_disk_answers_507_keeps_nothing_and_uploads_work_again_once_space_is_freed() {
    let scratch = common::scratch_dir();
    let disk = SmallDisk::mount(&scratch.join("disk"), "4m");
    let store = disk.0.join("files");
    let dir = store.clone();
    let app = TestApp::spawn_with(move |c| c.storage = StorageSpec::Local(dir)).await;
    let staff = app.signed_in_as("carol", "staff", "public").await;
    let filler = disk.0.join("filler");
    std::fs::write(&filler, vec![7u8; 3 * 1024 * 1024 + 512 * 1024]).unwrap();

    let (status, body) = staff.upload("big.txt", &b"does not fit\n".repeat(100_000), None, None).await;
    assert_eq!(status, StatusCode::INSUFFICIENT_STORAGE, "{body}");
    assert!(body["error"].as_str().unwrap().contains("full"), "{body}");
    let mut db = app.owner_conn().await;
    let rows: i64 = sqlx::query_scalar("SELECT count(*) FROM files").fetch_one(&mut db).await.unwrap();
    assert_eq!(rows, 0, "no row for an upload that did not fit");
    let pending: i64 = sqlx::query_scalar("SELECT count(*) FROM pending_objects").fetch_one(&mut db).await.unwrap();
    assert_eq!(pending, 0, "its record settled at once");
    assert_eq!(invariants::object_keys(&store), Vec::<String>::new(), "its partial object removed");

    std::fs::remove_file(&filler).unwrap();
    let data = b"fits now\n".repeat(100_000);
    let id = staff.upload_ok("big.txt", &data, None).await;
    let res = staff.download(id).await;
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(sha256_hex(&res.bytes().await.unwrap()), sha256_hex(&data));
    drop(app);
}

/// A test-only trigger: audit rows of the actions listed in `fault_audit`
/// fail to insert, as a full disk or a broken constraint would make them.
async fn break_audit_writes(app: &TestApp) -> sqlx::PgConnection {
    let mut db = app.owner_conn().await;
    sqlx::raw_sql(
        "CREATE TABLE fault_audit (action text PRIMARY KEY); \
         CREATE FUNCTION fault_audit_refuse() RETURNS trigger LANGUAGE plpgsql SECURITY DEFINER AS $$ \
         BEGIN IF EXISTS (SELECT 1 FROM fault_audit WHERE action = NEW.action) THEN \
           RAISE EXCEPTION 'injected audit write failure for %', NEW.action; END IF; RETURN NEW; END $$; \
         CREATE TRIGGER fault_audit_refuse BEFORE INSERT ON audit_logs FOR EACH ROW EXECUTE FUNCTION fault_audit_refuse();",
    )
    .execute(&mut db)
    .await
    .unwrap();
    db
}

async fn fail_audit_of(db: &mut sqlx::PgConnection, action: &str) {
    sqlx::query("DELETE FROM fault_audit").execute(&mut *db).await.unwrap();
    sqlx::query("INSERT INTO fault_audit VALUES ($1)").bind(action).execute(&mut *db).await.unwrap();
}

#[tokio::test]
async fn when_the_audit_write_fails_the_action_is_refused_with_5xx_and_nothing_of_it_is_committed() {
    let app = TestApp::spawn().await;
    let staff = app.signed_in_as("carol", "staff", "public").await;
    app.create_user("dave", "staff", "General", "public").await;
    let admin = app.admin().await;
    let kept = staff.upload_ok("kept.txt", b"uploaded before the fault", None).await;
    let mut db = break_audit_writes(&app).await;

    fail_audit_of(&mut db, "file.upload").await;
    let (status, _) = staff.upload("lost.txt", b"never kept", None, None).await;
    assert!(status.is_server_error(), "{status}");
    let rows: i64 = sqlx::query_scalar("SELECT count(*) FROM files").fetch_one(&mut db).await.unwrap();
    assert_eq!(rows, 1, "no document without its audit row");
    let objects = common::stored_objects(&app);
    assert_eq!(objects.len(), 1, "its object removed: {objects:?}");
    let pending: i64 = sqlx::query_scalar("SELECT count(*) FROM pending_objects").fetch_one(&mut db).await.unwrap();
    assert_eq!(pending, 0);

    fail_audit_of(&mut db, "file.share").await;
    let (status, _) = staff.post(&format!("/api/files/{kept}/shares"), json!({ "username": "dave" })).await;
    assert!(status.is_server_error(), "{status}");
    let shares: i64 = sqlx::query_scalar("SELECT count(*) FROM file_shares").fetch_one(&mut db).await.unwrap();
    assert_eq!(shares, 0, "no share without its audit row");

    fail_audit_of(&mut db, "incident.create").await;
    let (status, _) = admin
        .post(
            "/admin/incidents",
            json!({ "title": "Lost laptop", "description": "left on a train", "severity": "high" }),
        )
        .await;
    assert!(status.is_server_error(), "{status}");
    let incidents: i64 = sqlx::query_scalar("SELECT count(*) FROM incidents").fetch_one(&mut db).await.unwrap();
    assert_eq!(incidents, 0, "no incident without its audit row");

    fail_audit_of(&mut db, "role.assign").await;
    let dave = app.user_id("dave").await;
    let (status, _) = admin.post(&format!("/api/users/{dave}/roles"), json!({ "role": "student" })).await;
    assert!(status.is_server_error(), "{status}");
    let roles: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM user_roles ur JOIN roles r ON r.id = ur.role_id WHERE ur.user_id = $1 AND r.name = 'student'",
    )
    .bind(dave)
    .fetch_one(&mut db)
    .await
    .unwrap();
    assert_eq!(roles, 0, "no role change without its audit row");

    // Once the log takes rows again, so does everything else.
    sqlx::query("DELETE FROM fault_audit").execute(&mut db).await.unwrap();
    staff.upload_ok("after.txt", b"kept again", None).await;
}

#[tokio::test]
async fn s3_gone_mid_upload_keeps_no_row_and_leaves_nothing_once_it_is_back() {
    let mut s3 = S3Server::start().await;
    s3.create_bucket("faults").await;
    let endpoint = s3.endpoint.clone();
    let app = TestApp::spawn_with(move |c| {
        c.storage = StorageSpec::S3 {
            bucket: "faults".into(),
            prefix: String::new(),
            settings: S3Settings(vec![
                ("AWS_ENDPOINT_URL", endpoint),
                ("AWS_ACCESS_KEY_ID", "testing".into()),
                ("AWS_SECRET_ACCESS_KEY", "testing".into()),
                ("AWS_REGION", "us-east-1".into()),
            ]),
        }
    })
    .await;
    let staff = app.signed_in_as("carol", "staff", "public").await;
    // 12 MiB sent slowly: parts go to S3 as they fill; S3 goes away after the first.
    let chunk = vec![b'x'; 1024 * 1024];
    let body = futures::stream::unfold(0usize, move |n| {
        let chunk = chunk.clone();
        async move {
            if n == 12 {
                return None;
            }
            tokio::time::sleep(Duration::from_millis(150)).await;
            Some((Ok::<_, std::io::Error>(chunk), n + 1))
        }
    });
    let part = reqwest::multipart::Part::stream(reqwest::Body::wrap_stream(body)).file_name("big.bin");
    let form = reqwest::multipart::Form::new().part("file", part);
    let upload = tokio::spawn({
        let client = staff.client.clone();
        let url = app.url("/api/files");
        let csrf = staff.csrf.clone();
        async move { client.post(url).header("x-csrf-token", csrf).multipart(form).send().await }
    });
    tokio::time::sleep(Duration::from_millis(1200)).await;
    s3.stop();
    let res = upload.await.unwrap().unwrap();
    assert_eq!(res.status(), StatusCode::SERVICE_UNAVAILABLE);
    let mut db = app.owner_conn().await;
    let rows: i64 = sqlx::query_scalar("SELECT count(*) FROM files").fetch_one(&mut db).await.unwrap();
    assert_eq!(rows, 0);

    // Back (moto keeps nothing across a restart, so the bucket is made again),
    // the sweep settles what the failed upload left recorded.
    s3.restart().await;
    s3.create_bucket("faults").await;
    sqlx::query("UPDATE pending_objects SET since = since - interval '2 hours'").execute(&mut db).await.unwrap();
    fortifile::files::sweep_unreferenced(&app.state, fortifile::files::ORPHAN_AGE).await.unwrap();
    let pending: i64 = sqlx::query_scalar("SELECT count(*) FROM pending_objects").fetch_one(&mut db).await.unwrap();
    assert_eq!(pending, 0, "nothing left recorded in flight");
    assert!(s3.keys("faults").await.is_empty(), "nothing left in the bucket");
    staff.upload_ok("after.txt", b"S3 is back", None).await;
}

#[tokio::test]
async fn the_invariant_checker_finds_each_kind_of_breakage() {
    let mut fleet = Fleet::local().await;
    fleet.start(0);
    fleet.wait_ready(0).await;
    let admin = people(&fleet).await;
    let user = Client::sign_in(&fleet.instances[0].base(), "user0").await.unwrap();
    let acked = Acked::default();
    for n in 0..3 {
        let bytes = format!("document {n}\n").repeat(1000).into_bytes();
        let (status, body) = user.upload(&format!("d{n}.txt"), bytes.clone()).await.unwrap();
        assert_eq!(status, StatusCode::CREATED);
        acked.uploads.lock().unwrap().push((body["file"]["id"].as_str().unwrap().to_string(), sha256_hex(&bytes)));
    }
    tokio::time::sleep(Duration::from_secs(2)).await; // sealed
    let log = cluster_log();
    let storage = fleet.storage_dir();
    let mut db = invariants::connect(&fleet.owner).await;
    let check = |uploads: Vec<(String, String)>| {
        let (admin, storage, log, fleet) = (&admin, &storage, &log, &fleet);
        async move {
            let mut db = invariants::connect(&fleet.owner).await;
            // A fresh record each time: every document downloaded again.
            let verified = Mutex::new(std::collections::HashSet::new());
            let evidence =
                Evidence { reader: admin, acknowledged: &uploads, storage, postgres_log: log, verified: &verified };
            invariants::check(&mut db, &evidence, || fleet.audit_verify()).await
        }
    };
    let uploads = acked.uploads.lock().unwrap().clone();
    assert_eq!(check(uploads.clone()).await, Vec::<String>::new(), "all hold to begin with");

    // I1: an acknowledged upload that is not what was sent.
    let mut wrong = uploads.clone();
    wrong[0].1 = sha256_hex(b"something else");
    assert!(check(wrong).await.iter().any(|b| b.starts_with("I1")));

    // I3: an object nobody recorded.
    let stray = storage.join(uuid::Uuid::new_v4().to_string());
    std::fs::write(&stray, b"stray").unwrap();
    assert!(check(uploads.clone()).await.iter().any(|b| b.starts_with("I3")));
    std::fs::remove_file(&stray).unwrap();

    // I4 and I5: a document row whose audit row is gone (the superuser,
    // around the append-only trigger).
    sqlx::raw_sql(
        "ALTER TABLE audit_logs DISABLE TRIGGER USER; \
         DELETE FROM audit_logs WHERE action = 'file.upload' AND target_id = (SELECT min(id::text) FROM files); \
         ALTER TABLE audit_logs ENABLE TRIGGER USER;",
    )
    .execute(&mut db)
    .await
    .unwrap();
    let broken = check(uploads.clone()).await;
    assert!(broken.iter().any(|b| b.starts_with("I4")), "{broken:?}");
    assert!(broken.iter().any(|b| b.starts_with("I5")), "{broken:?}");

    // I2: a document whose stored object was damaged.
    let key: String =
        sqlx::query_scalar("SELECT object_key FROM files ORDER BY id LIMIT 1").fetch_one(&mut db).await.unwrap();
    let path = storage.join(&key);
    let mut bytes = std::fs::read(&path).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 1;
    std::fs::write(&path, bytes).unwrap();
    assert!(check(uploads).await.iter().any(|b| b.starts_with("I2")));
}

/// The server's resident memory, in KiB.
fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        .unwrap_or(0)
}

/// One soak client: sign in, then `/me`, upload, download, share and (for
/// the administrator) the dashboard, each timed, until `stop`.
async fn soak_client(
    base: String,
    user: &'static str,
    stop: Arc<AtomicBool>,
    seen: Arc<Mutex<Vec<(Instant, u16, Duration)>>>,
) {
    let started = Instant::now();
    let timed = |status: u16, took: Duration| seen.lock().unwrap().push((Instant::now(), status, took));
    let mut round = 0usize;
    while !stop.load(Ordering::Relaxed) {
        let t = Instant::now();
        let client = match Client::sign_in(&base, user).await {
            Ok(c) => {
                timed(200, t.elapsed());
                c
            }
            Err(e) => {
                timed(e.status().map_or(599, |s| s.as_u16()), t.elapsed());
                continue;
            }
        };
        for _ in 0..25 {
            if stop.load(Ordering::Relaxed) {
                break;
            }
            round += 1;
            let t = Instant::now();
            let me = client.get("/me").await.map(|r| r.0.as_u16()).unwrap_or(599);
            timed(me, t.elapsed());
            let bytes = format!("{user} soak {round}\n").repeat(200 + round % 2000).into_bytes();
            let t = Instant::now();
            let (status, body) =
                client.upload("soak.txt", bytes).await.unwrap_or((StatusCode::BAD_GATEWAY, json!(null)));
            timed(status.as_u16(), t.elapsed());
            if let Some(id) = body["file"]["id"].as_str() {
                let t = Instant::now();
                let got = client.download(id).await.map(|r| r.map_or_else(|s| s.as_u16(), |_| 200)).unwrap_or(599);
                timed(got, t.elapsed());
                let to = if user == "user0" { "user1" } else { "user0" };
                let t = Instant::now();
                let shared = client.post(&format!("/api/files/{id}/shares"), json!({ "username": to })).await;
                timed(shared.map(|r| r.0.as_u16()).unwrap_or(599), t.elapsed());
            }
            if user == "admin" {
                let t = Instant::now();
                let page = client.get("/api/audit-logs").await.map(|r| r.0.as_u16()).unwrap_or(599);
                timed(page, t.elapsed());
            }
        }
        let _ = started;
    }
}

fn p99(mut took: Vec<Duration>) -> Duration {
    took.sort();
    took.get(took.len().saturating_sub(1) * 99 / 100).copied().unwrap_or_default()
}

#[tokio::test]
async fn a_soak_of_mixed_load_with_the_jobs_running_has_no_5xx_flat_memory_and_flat_latency() {
    let _heavy = HEAVY.lock().await;
    let seconds = count("FORTIFILE_SOAK_SECONDS", 120) as u64;
    let mut fleet = Fleet::local().await;
    fleet.start(0);
    fleet.wait_ready(0).await;
    let _admin = people(&fleet).await;
    let base = fleet.instances[0].base();
    let pid = fleet.pid(0);
    let stop = Arc::new(AtomicBool::new(false));
    let seen = Arc::new(Mutex::new(Vec::new()));
    let clients: Vec<_> = ["user0", "user1", "admin"]
        .into_iter()
        .map(|u| tokio::spawn(soak_client(base.clone(), u, stop.clone(), seen.clone())))
        .collect();
    let mut db = invariants::connect(&fleet.owner).await;
    let (start, mut rss) = (Instant::now(), Vec::new());
    while start.elapsed() < Duration::from_secs(seconds) {
        tokio::time::sleep(Duration::from_secs(5)).await;
        rss.push((start.elapsed(), rss_kib(pid)));
        // Every job runs every 30 s of the soak, not every 5 minutes.
        if rss.len() % 6 == 0 {
            sqlx::query("UPDATE job_schedule SET next_run_at = now()").execute(&mut db).await.unwrap();
        }
    }
    stop.store(true, Ordering::Relaxed);
    for c in clients {
        c.await.unwrap();
    }
    let seen = seen.lock().unwrap().clone();
    let errors: Vec<_> = seen.iter().filter(|(_, s, _)| *s >= 500).collect();
    assert!(
        errors.is_empty(),
        "{} of {} requests answered 5xx: {:?}",
        errors.len(),
        seen.len(),
        &errors[..errors.len().min(5)]
    );
    // After a quarter of the run as warm-up: memory within 10 %, p99 within 2× (+20 ms).
    let warm = Duration::from_secs(seconds / 4);
    let after: Vec<u64> = rss.iter().filter(|(t, _)| *t >= warm).map(|r| r.1).collect();
    let (first, most) = (after[0], *after.iter().max().unwrap());
    let quarter = |q: u64| -> Vec<Duration> {
        let (from, to) =
            (start + Duration::from_secs(seconds * q / 4), start + Duration::from_secs(seconds * (q + 1) / 4));
        seen.iter().filter(|(at, _, _)| *at >= from && *at < to).map(|r| r.2).collect()
    };
    let (early, late) = (p99(quarter(1)), p99(quarter(3)));
    let runs: i64 = sqlx::query_scalar("SELECT count(*) FROM job_runs").fetch_one(&mut db).await.unwrap();
    eprintln!(
        "soak {seconds} s: {} requests, 0 5xx; RSS after warm-up {} → max {} KiB; p99 {:?} (2nd quarter) → {:?} (last); {runs} job runs",
        seen.len(),
        first,
        most,
        early,
        late
    );
    assert!(most as f64 <= first as f64 * 1.10, "RSS grew from {first} to {most} KiB: {rss:?}");
    assert!(late <= early * 2 + Duration::from_millis(20), "p99 grew from {early:?} to {late:?}");
    let failed: i64 =
        sqlx::query_scalar("SELECT count(*) FROM job_runs WHERE outcome = 'failed'").fetch_one(&mut db).await.unwrap();
    assert_eq!(failed, 0, "no job failed during the soak");
}

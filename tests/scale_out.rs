//! Scale-out (issue 17): three `fortifile serve` processes on loopback, one
//! PostgreSQL, moto as the S3 store, nginx in front. They start together on
//! an empty database, share their periodic jobs (each run once per period,
//! by whichever instance holds its lock), obey each other's revocations on
//! the very next request, and are restarted one by one under load without a
//! failed request or a lost upload.

mod common;

use std::{
    collections::HashMap,
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

use common::{
    fleet::{Client, Fleet, Nginx},
    sha256_hex,
};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use sqlx::{Connection, PgConnection};

/// The jobs `serve` schedules (src/cli/jobs.rs).
const JOBS: &[&str] = &[
    "audit.partitions",
    "sessions.sweep",
    "objects.sweep",
    "idempotency.sweep",
    "approvals.expire",
    "audit.retention",
    "throttles.forget",
    "jobs.history",
];

/// Each test runs a fleet of its own; two at once would share two cores
/// among six servers and time out for no reason of theirs.
static ONE_FLEET_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

async fn owner(fleet: &Fleet) -> PgConnection {
    PgConnection::connect_with(&fleet.owner).await.unwrap()
}

/// Per job: finished runs and runs in all.
async fn runs(conn: &mut PgConnection) -> HashMap<String, (i64, i64)> {
    let rows: Vec<(String, i64, i64)> = sqlx::query_as(
        "SELECT job, count(*) FILTER (WHERE finished_at IS NOT NULL), count(*) FROM job_runs GROUP BY job",
    )
    .fetch_all(&mut *conn)
    .await
    .unwrap();
    rows.into_iter().map(|(j, f, a)| (j, (f, a))).collect()
}

/// Waits until every job has `n` finished runs (or fails after 60 s).
async fn until_every_job_ran(conn: &mut PgConnection, n: i64) -> HashMap<String, (i64, i64)> {
    let started = Instant::now();
    loop {
        let seen = runs(conn).await;
        if JOBS.iter().all(|j| seen.get(*j).is_some_and(|(f, _)| *f >= n)) {
            return seen;
        }
        assert!(started.elapsed() < Duration::from_secs(60), "jobs did not all run {n} times: {seen:?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Starts the three instances at once and waits for all of them.
async fn start_all(fleet: &mut Fleet) {
    for i in 0..fleet.instances.len() {
        fleet.start(i);
    }
    for i in 0..fleet.instances.len() {
        fleet.wait_ready(i).await;
    }
}

#[tokio::test]
async fn three_instances_started_together_migrate_once_and_run_each_job_once_per_period() {
    let _one = ONE_FLEET_AT_A_TIME.lock().await;
    let mut fleet = Fleet::new(3).await;
    start_all(&mut fleet).await;
    let mut db = owner(&fleet).await;

    // Migrations applied once each, all of them, and no instance logged an error.
    let versions: Vec<(i64, i64)> =
        sqlx::query_as("SELECT version, count(*) FROM _sqlx_migrations GROUP BY version ORDER BY version")
            .fetch_all(&mut db)
            .await
            .unwrap();
    let files = std::fs::read_dir("migrations")
        .unwrap()
        .filter(|e| e.as_ref().unwrap().path().extension().is_some_and(|x| x == "sql"))
        .count();
    assert_eq!(versions.len(), files, "{versions:?}");
    assert!(versions.iter().all(|(_, n)| *n == 1));
    let tenants: i64 = sqlx::query_scalar("SELECT count(*) FROM tenants").fetch_one(&mut db).await.unwrap();
    assert_eq!(tenants, 1, "the default tenant is seeded once");

    // Each job ran once at start-up, in one instance, not three times.
    let first = until_every_job_ran(&mut db, 1).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let settled = runs(&mut db).await;
    assert_eq!(first, settled, "no job ran again within its period");
    for job in JOBS {
        assert_eq!(settled[*job], (1, 1), "{job} ran once: {settled:?}");
    }

    // The next period, made due now for every job at once: again one run each.
    sqlx::query("UPDATE job_schedule SET next_run_at = now()").execute(&mut db).await.unwrap();
    until_every_job_ran(&mut db, 2).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let second = runs(&mut db).await;
    for job in JOBS {
        assert_eq!(second[*job], (2, 2), "{job} ran once more: {second:?}");
    }
    let overlapping: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM job_runs a JOIN job_runs b ON a.job = b.job AND a.id < b.id \
         WHERE b.started_at < a.finished_at",
    )
    .fetch_one(&mut db)
    .await
    .unwrap();
    assert_eq!(overlapping, 0, "no two runs of a job overlapped");
    // Each instance counts the runs it made: together, every run once.
    let mut counted = 0.0;
    for inst in &fleet.instances {
        let text = reqwest::get(format!("http://127.0.0.1:{}/metrics", inst.metrics_port))
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        counted += text
            .lines()
            .filter(|l| l.starts_with("fortifile_job_runs_total{"))
            .filter_map(|l| l.rsplit_once(' ')?.1.parse::<f64>().ok())
            .sum::<f64>();
    }
    assert_eq!(counted as usize, 2 * JOBS.len(), "job runs counted in the instances' metrics");

    // A job whose holder dies mid-run is taken by another instance. The test
    // holds the session-sweep's lock as a crashed instance would, on a
    // connection that then goes away.
    let mut holder = owner(&fleet).await;
    let locked: bool = sqlx::query_scalar("SELECT pg_try_advisory_lock(7262, hashtext('sessions.sweep'))")
        .fetch_one(&mut holder)
        .await
        .unwrap();
    assert!(locked);
    sqlx::query("UPDATE job_schedule SET next_run_at = now() WHERE job = 'sessions.sweep'")
        .execute(&mut db)
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(runs(&mut db).await["sessions.sweep"], (2, 2), "nobody runs a job whose lock is held");
    drop(holder); // the "instance" dies: its connection, and its lock, go
    let started = Instant::now();
    while runs(&mut db).await["sessions.sweep"].0 < 3 {
        assert!(started.elapsed() < Duration::from_secs(10), "the job was not taken over");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // An expired session is swept once (one audit row), though three could sweep.
    fleet.create_admin();
    let admin = Client::sign_in(&fleet.instances[0].base(), "admin").await.unwrap();
    let ends: i64 = sqlx::query_scalar(
        "WITH s AS (UPDATE sessions SET expires_at = now() - interval '1 minute' RETURNING 1) SELECT count(*) FROM s",
    )
    .fetch_one(&mut db)
    .await
    .unwrap();
    assert_eq!(ends, 1);
    sqlx::query("UPDATE job_schedule SET next_run_at = now() WHERE job = 'sessions.sweep'")
        .execute(&mut db)
        .await
        .unwrap();
    let started = Instant::now();
    while runs(&mut db).await["sessions.sweep"].0 < 4 {
        assert!(started.elapsed() < Duration::from_secs(10), "the sweep did not run");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let expired: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM audit_logs WHERE action = 'auth.session_expired' AND details->>'via' = 'sweep'",
    )
    .fetch_one(&mut db)
    .await
    .unwrap();
    assert_eq!(expired, 1);
    assert_eq!(admin.get("/me").await.unwrap().0, StatusCode::UNAUTHORIZED);

    // One audit checkpoint per tenant in the first period, though every
    // instance looks: the decision is taken under the chain head's lock.
    let checkpoints: i64 =
        sqlx::query_scalar("SELECT count(*) FROM audit_checkpoints").fetch_one(&mut db).await.unwrap();
    assert!(checkpoints <= 1, "{checkpoints} checkpoints in the first period");

    let not_ok: Vec<(String, Option<String>, Option<String>)> =
        sqlx::query_as("SELECT job, outcome, detail FROM job_runs WHERE outcome IS DISTINCT FROM 'ok'")
            .fetch_all(&mut db)
            .await
            .unwrap();
    assert!(not_ok.is_empty(), "every run succeeded: {not_ok:?}");
    for i in 0..3 {
        let lines = fleet.log_lines(i);
        let errors: Vec<&Value> =
            lines.iter().filter(|l| l["level"] == "ERROR" || l["message"] == "job failed").collect();
        assert!(errors.is_empty(), "instance {i} logged errors: {errors:?}");
    }
    for i in 0..3 {
        assert!(fleet.terminate(i).await.success());
    }
    let unfinished: i64 =
        sqlx::query_scalar("SELECT count(*) FROM job_runs WHERE finished_at IS NULL").fetch_one(&mut db).await.unwrap();
    assert_eq!(unfinished, 0, "a clean shutdown leaves no run unrecorded");
}

#[tokio::test]
async fn a_revocation_through_one_instance_is_obeyed_by_another_on_the_next_request() {
    let _one = ONE_FLEET_AT_A_TIME.lock().await;
    let mut fleet = Fleet::new(3).await;
    start_all(&mut fleet).await;
    fleet.create_admin();
    let (one, two, three) = (fleet.instances[0].base(), fleet.instances[1].base(), fleet.instances[2].base());
    let admin = Client::sign_in(&one, "admin").await.unwrap();
    let (status, carol) = admin
        .post(
            "/api/users",
            json!({ "username": "carol", "email": "carol@example.org", "password": common::PASSWORD,
                    "role": "staff", "department": "General", "clearanceLevel": "public" }),
        )
        .await
        .unwrap();
    assert_eq!(status, StatusCode::CREATED, "{carol}");
    let carol_id = carol["user"]["id"].as_str().unwrap().to_string();

    // Signed in at instance 3, ended at instance 1: refused at 3 at once.
    let carol = Client::sign_in(&three, "carol").await.unwrap();
    assert_eq!(carol.get("/me").await.unwrap().0, StatusCode::OK);
    let (status, _) = admin.send(Method::DELETE, &format!("/api/users/{carol_id}/sessions"), None).await.unwrap();
    assert_eq!(status, StatusCode::OK);
    assert_eq!(carol.get("/me").await.unwrap().0, StatusCode::UNAUTHORIZED);

    // A role taken at instance 1 no longer grants at instance 3.
    let carol = Client::sign_in(&three, "carol").await.unwrap();
    assert_eq!(carol.get("/api/files").await.unwrap().0, StatusCode::OK);
    let (status, body) = admin.send(Method::DELETE, &format!("/api/users/{carol_id}/roles/staff"), None).await.unwrap();
    assert!(status.is_success(), "{status} {body}");
    assert_eq!(carol.get("/api/files").await.unwrap().0, StatusCode::FORBIDDEN);

    // Failed logins at instances 1 and 2 add up: the account is held at 3.
    let http = reqwest::Client::new();
    for base in [&one, &two, &one, &two, &one] {
        let res = http
            .post(format!("{base}/auth/login"))
            .json(&json!({ "username": "carol", "password": "not her password" }))
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), StatusCode::UNAUTHORIZED);
    }
    let res = http
        .post(format!("{three}/auth/login"))
        .json(&json!({ "username": "carol", "password": common::PASSWORD }))
        .send()
        .await
        .unwrap();
    // Held: the right password gets a wrong password's answer, and the log says why.
    assert_eq!(res.status(), StatusCode::UNAUTHORIZED, "the lockout is shared");
    let mut db = owner(&fleet).await;
    let reason: Option<String> = sqlx::query_scalar(
        "SELECT details->>'reason' FROM audit_logs WHERE action = 'auth.login' AND result = 'fail' \
         ORDER BY created_at DESC LIMIT 1",
    )
    .fetch_one(&mut db)
    .await
    .unwrap();
    assert_eq!(reason.as_deref(), Some("throttled"));
    for i in 0..3 {
        assert!(fleet.terminate(i).await.success());
    }
}

/// What the load saw.
#[derive(Default)]
struct Tally {
    ok: AtomicUsize,
    failures: std::sync::Mutex<Vec<String>>,
    uploads: std::sync::Mutex<Vec<(String, String)>>,
}

impl Tally {
    fn check(&self, what: &str, result: reqwest::Result<StatusCode>) {
        match result {
            Ok(s) if s.is_success() => {
                self.ok.fetch_add(1, Ordering::Relaxed);
            }
            Ok(s) => self.failures.lock().unwrap().push(format!("{what}: {s}")),
            Err(e) => self.failures.lock().unwrap().push(format!("{what}: {e}")),
        }
    }
}

/// One client's mixed load until `stop`: sign in, `/me`, download a known
/// file, upload, share, over and over.
async fn load(base: String, user: String, known: (String, String), stop: Arc<AtomicBool>, tally: Arc<Tally>) {
    let mut round = 0u32;
    while !stop.load(Ordering::Relaxed) {
        round += 1;
        let client = match Client::sign_in(&base, &user).await {
            Ok(c) => {
                tally.ok.fetch_add(1, Ordering::Relaxed);
                c
            }
            Err(e) => {
                tally.failures.lock().unwrap().push(format!("login: {e}"));
                continue;
            }
        };
        for _ in 0..3 {
            tally.check("me", client.get("/me").await.map(|r| r.0));
            match client.download(&known.0).await {
                Ok(Ok(bytes)) if sha256_hex(&bytes) == known.1 => {
                    tally.ok.fetch_add(1, Ordering::Relaxed);
                }
                Ok(Ok(_)) => tally.failures.lock().unwrap().push("download: wrong bytes".into()),
                Ok(Err(s)) => tally.failures.lock().unwrap().push(format!("download: {s}")),
                Err(e) => tally.failures.lock().unwrap().push(format!("download: {e}")),
            }
        }
        let bytes: Vec<u8> = format!("{user} round {round} {}\n", uuid::Uuid::new_v4())
            .repeat(2000 + (round as usize % 7) * 3000)
            .into_bytes();
        let sha = sha256_hex(&bytes);
        match client.upload(&format!("{user}-{round}.txt"), bytes).await {
            Ok((StatusCode::CREATED, body)) => {
                tally.ok.fetch_add(1, Ordering::Relaxed);
                let id = body["file"]["id"].as_str().unwrap_or_default().to_string();
                tally.uploads.lock().unwrap().push((id.clone(), sha));
                let to = if user == "user0" { "user1" } else { "user0" };
                tally.check(
                    "share",
                    client.post(&format!("/api/files/{id}/shares"), json!({ "username": to })).await.map(|r| r.0),
                );
            }
            Ok((s, body)) => tally.failures.lock().unwrap().push(format!("upload: {s} {body}")),
            Err(e) => tally.failures.lock().unwrap().push(format!("upload: {e}")),
        }
    }
}

#[tokio::test]
async fn a_rolling_restart_behind_nginx_under_load_fails_no_request_and_loses_no_upload() {
    let _one = ONE_FLEET_AT_A_TIME.lock().await;
    let mut fleet = Fleet::new(3).await;
    start_all(&mut fleet).await;
    fleet.create_admin();
    let ports: Vec<u16> = fleet.instances.iter().map(|i| i.port).collect();
    let nginx = Nginx::start(&ports).await;
    let admin = Client::sign_in(&nginx.base, "admin").await.unwrap();
    const USERS: usize = 4;
    for u in 0..USERS {
        let (status, body) = admin
            .post(
                "/api/users",
                json!({ "username": format!("user{u}"), "email": format!("user{u}@example.org"),
                        "password": common::PASSWORD, "role": "staff", "department": "General",
                        "clearanceLevel": "public" }),
            )
            .await
            .unwrap();
        assert_eq!(status, StatusCode::CREATED, "{body}");
    }
    let known_bytes = b"a document every client downloads\n".repeat(30_000);
    let (status, body) = admin.upload("known.txt", known_bytes.clone()).await.unwrap();
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let known = (body["file"]["id"].as_str().unwrap().to_string(), sha256_hex(&known_bytes));
    // Every user may read it: a share per user.
    for u in 0..USERS {
        let (status, body) = admin
            .post(&format!("/api/files/{}/shares", known.0), json!({ "username": format!("user{u}") }))
            .await
            .unwrap();
        assert_eq!(status, StatusCode::CREATED, "{body}");
    }

    let stop = Arc::new(AtomicBool::new(false));
    let tally = Arc::new(Tally::default());
    let clients: Vec<_> = (0..USERS)
        .map(|u| tokio::spawn(load(nginx.base.clone(), format!("user{u}"), known.clone(), stop.clone(), tally.clone())))
        .collect();
    tokio::time::sleep(Duration::from_secs(2)).await;
    for i in 0..3 {
        let before = tally.ok.load(Ordering::Relaxed);
        let status = fleet.terminate(i).await;
        assert!(status.success(), "instance {i} exited with {status}: {}", fleet.log_text(i));
        fleet.start(i);
        fleet.wait_ready(i).await;
        // Give the restarted instance some of the load before the next goes.
        tokio::time::sleep(Duration::from_secs(1)).await;
        assert!(tally.ok.load(Ordering::Relaxed) > before, "the load kept going while instance {i} restarted");
    }
    stop.store(true, Ordering::Relaxed);
    for c in clients {
        c.await.unwrap();
    }
    let failures = tally.failures.lock().unwrap().clone();
    let ok = tally.ok.load(Ordering::Relaxed);
    assert!(failures.is_empty(), "{} of {} requests failed: {failures:?}", failures.len(), ok + failures.len());
    assert!(ok > 100, "only {ok} requests ran");

    // Every acknowledged upload is there, byte for byte.
    let uploads = tally.uploads.lock().unwrap().clone();
    assert!(!uploads.is_empty());
    for (id, sha) in &uploads {
        let bytes = admin.download(id).await.unwrap().unwrap_or_else(|s| panic!("upload {id}: {s}"));
        assert_eq!(&sha256_hex(&bytes), sha, "upload {id}");
    }
    eprintln!(
        "rolling restart: {ok} requests, {} uploads, 0 failed; nginx moved on from an instance {} times",
        uploads.len(),
        nginx.upstream_errors()
    );
    // And nothing else: one stored object per document, none in flight.
    let mut db = owner(&fleet).await;
    let files: i64 = sqlx::query_scalar("SELECT count(*) FROM files").fetch_one(&mut db).await.unwrap();
    let pending: i64 = sqlx::query_scalar("SELECT count(*) FROM pending_objects").fetch_one(&mut db).await.unwrap();
    assert_eq!(files as usize, uploads.len() + 1, "each acknowledged upload is a document");
    assert_eq!(pending, 0, "no upload left in flight");
    assert_eq!(
        fleet.s3.as_ref().unwrap().keys(common::fleet::BUCKET).await.len() as i64,
        files,
        "no object without its document"
    );

    // Metrics answer on their own port, counting what the instance served.
    let metrics = reqwest::get(format!("http://127.0.0.1:{}/metrics", fleet.instances[0].metrics_port))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    for name in
        ["fortifile_http_requests_total", "fortifile_http_request_duration_seconds", "fortifile_db_pool_connections"]
    {
        assert!(metrics.contains(name), "{name} missing from /metrics:\n{metrics}");
    }
    assert!(metrics.contains("route=\"/api/files/{id}/download\""), "requests are labelled by route pattern");
    let main = reqwest::get(format!("{}/metrics", fleet.instances[0].base())).await.unwrap();
    assert_eq!(main.status(), StatusCode::NOT_FOUND, "metrics are not on the public listener");

    // The JSON log carries the request id on a request's lines.
    let lines = fleet.log_lines(0);
    assert!(
        lines.iter().any(|l| l["span"]["request_id"].as_str().is_some_and(|id| !id.is_empty())),
        "no log line carried a request id"
    );
    for i in 0..3 {
        assert!(fleet.terminate(i).await.success());
    }
}

#[tokio::test]
async fn on_sigterm_an_instance_reports_not_ready_serves_what_it_still_gets_finishes_an_upload_then_exits() {
    let _one = ONE_FLEET_AT_A_TIME.lock().await;
    let mut fleet = Fleet::new(1).await;
    start_all(&mut fleet).await;
    fleet.create_admin();
    let base = fleet.instances[0].base();
    let admin = Client::sign_in(&base, "admin").await.unwrap();

    // An upload whose body arrives slowly, over longer than the drain.
    let chunk = b"slow upload line\n".repeat(4096);
    let chunks = 8;
    let expected: Vec<u8> = chunk.repeat(chunks);
    let body = futures::stream::unfold(0, move |n| {
        let chunk = chunk.clone();
        async move {
            if n == chunks {
                return None;
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
            Some((Ok::<_, std::io::Error>(chunk), n + 1))
        }
    });
    let part = reqwest::multipart::Part::stream(reqwest::Body::wrap_stream(body)).file_name("slow.txt");
    let upload = admin
        .http
        .post(format!("{base}/api/files"))
        .header("x-csrf-token", &admin.csrf)
        .multipart(reqwest::multipart::Form::new().part("file", part))
        .send();
    let upload = tokio::spawn(upload);
    tokio::time::sleep(Duration::from_millis(300)).await;

    let sent = Instant::now();
    fleet.sigterm(0);
    let http = reqwest::Client::new();
    loop {
        let res = http.get(format!("{base}/readyz")).send().await.unwrap();
        if res.status() == StatusCode::SERVICE_UNAVAILABLE {
            let body: Value = res.json().await.unwrap();
            assert!(body["error"].as_str().unwrap().contains("Shutting down"), "{body}");
            break;
        }
        assert!(sent.elapsed() < Duration::from_secs(1), "/readyz still ready after SIGTERM");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // Still serving while draining, each answer closing its connection.
    let res = http.get(format!("{base}/healthz")).send().await.unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(res.headers()["connection"], "close", "no keep-alive to a draining instance");
    assert_eq!(admin.get("/me").await.unwrap().0, StatusCode::OK);

    let res = upload.await.unwrap().expect("the upload in flight is answered");
    assert_eq!(res.status(), StatusCode::CREATED);
    let status = fleet.wait_exit(0).await;
    assert!(status.success(), "{}", fleet.log_text(0));
    assert!(sent.elapsed() >= Duration::from_secs(common::fleet::DRAIN_SECONDS), "exited before the drain ended");
    let mut db = owner(&fleet).await;
    let stored: Vec<u8> =
        sqlx::query_scalar("SELECT sha256 FROM files WHERE name = 'slow.txt'").fetch_one(&mut db).await.unwrap();
    assert_eq!(hex::encode(stored), sha256_hex(&expected));
    let pending: i64 = sqlx::query_scalar("SELECT count(*) FROM pending_objects").fetch_one(&mut db).await.unwrap();
    assert_eq!(pending, 0, "nothing left in flight");
}

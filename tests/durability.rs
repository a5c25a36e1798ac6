//! Uploads and crashes, with the real binary: an upload is acknowledged only
//! once its object and directory are on stable storage (seen by tracing the
//! server's system calls), and a server killed mid-upload leaves nothing that
//! the next sweep does not find and remove.

mod common;

use std::{
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use common::{PASSWORD, TestApp};
use reqwest::StatusCode;
use serde_json::{Value, json};

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// `fortifile serve` on `app`'s database and storage directory, optionally
/// under `strace` writing to `trace`.
fn serve(app: &TestApp, port: u16, trace: Option<&Path>) -> Child {
    let bin = env!("CARGO_BIN_EXE_fortifile");
    let mut cmd = match trace {
        Some(log) => {
            let mut c = Command::new("strace");
            // The fsyncs, and what the server writes (its statements to PostgreSQL
            // among them), in the order they happened.
            c.args(["-f", "-y", "-qq", "-s", "128", "-e", "trace=fsync,fdatasync,write,writev,sendto", "-o"]);
            c.arg(log).arg(bin);
            c
        }
        None => Command::new(bin),
    };
    cmd.arg("serve")
        .current_dir(&*app.data)
        .env("DATABASE_URL", app.owner_url())
        .env("FORTIFILE_BIND", format!("127.0.0.1:{port}"))
        .env("FORTIFILE_DATA_DIR", &*app.data)
        .env("FORTIFILE_STORAGE", format!("file://{}", app.storage_dir().display()))
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    cmd.spawn().expect("start the server (the fsync test needs strace: the README's test command installs it)")
}

async fn wait_ready(base: &str, server: &mut Child) {
    let client = common::new_client();
    let started = Instant::now();
    loop {
        if let Ok(res) = client.get(format!("{base}/readyz")).send().await
            && res.status() == StatusCode::OK
        {
            return;
        }
        assert!(server.try_wait().unwrap().is_none(), "serve exited early");
        assert!(started.elapsed() < Duration::from_secs(60), "serve did not become ready");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn sign_in(base: &str) -> (reqwest::Client, String) {
    let client = common::new_client();
    let res = client
        .post(format!("{base}/auth/login"))
        .json(&json!({ "username": "carol", "password": PASSWORD }))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    let csrf = res.json::<Value>().await.unwrap()["csrfToken"].as_str().unwrap().to_string();
    (client, csrf)
}

fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let path = entry.path();
        if path.is_dir() {
            out.extend(files_under(&path));
        } else {
            out.push(path);
        }
    }
    out
}

#[tokio::test]
async fn an_upload_is_acknowledged_only_after_its_object_and_directory_are_fsynced() {
    let app = TestApp::spawn().await;
    app.create_user("carol", "staff", "General", "public").await;
    let port = free_port();
    let trace = app.data.join("strace.log");
    let mut server = serve(&app, port, Some(&trace));
    let base = format!("http://127.0.0.1:{port}");
    wait_ready(&base, &mut server).await;
    let (client, csrf) = sign_in(&base).await;
    let form = reqwest::multipart::Form::new()
        .part("file", reqwest::multipart::Part::bytes(vec![7u8; 3 << 20]).file_name("ledger.bin"));
    let res =
        client.post(format!("{base}/api/files")).header("x-csrf-token", &csrf).multipart(form).send().await.unwrap();
    assert_eq!(res.status(), StatusCode::CREATED);
    let id = res.json::<Value>().await.unwrap()["file"]["id"].as_str().unwrap().to_string();
    // Stop the server itself (strace's child): strace ends with it.
    let children = std::fs::read_to_string(format!("/proc/{0}/task/{0}/children", server.id())).unwrap();
    let traced = children.split_whitespace().next().expect("strace runs the server").to_string();
    Command::new("kill").args(["-TERM", &traced]).status().unwrap();
    server.wait().unwrap();

    let key: String = sqlx::query_scalar("SELECT object_key FROM files WHERE id = $1::uuid")
        .bind(&id)
        .fetch_one(&mut app.owner_conn().await)
        .await
        .unwrap();
    let storage = std::fs::canonicalize(app.storage_dir()).unwrap();
    let object = storage.join(&key);
    let directory = object.parent().unwrap().to_path_buf();
    let log = std::fs::read_to_string(&trace).unwrap();
    let synced =
        |path: &Path| log.lines().any(|l| l.contains("fsync(") && l.contains(&format!("<{}>)", path.display())));
    // The staging file is fsynced before it is renamed to the object's path.
    let staged = log.lines().any(|l| l.contains("fsync(") && l.contains(&format!("<{}#", object.display())));
    assert!(staged || synced(&object), "the object's data was fsynced:\n{log}");
    assert!(synced(&directory), "the object's directory was fsynced after the rename:\n{log}");
    // ... and both before the row that acknowledges the document is written.
    let lines: Vec<&str> = log.lines().collect();
    let position = |test: &dyn Fn(&str) -> bool| lines.iter().position(|l| test(l));
    let dir_synced = position(&|l| l.contains("fsync(") && l.contains(&format!("<{}>)", directory.display())));
    let row_written = position(&|l| l.contains("INSERT INTO files"));
    assert!(row_written.is_some(), "the server's statements are visible in the trace");
    assert!(dir_synced < row_written, "fsync at {dir_synced:?}, the files row at {row_written:?}");
}

#[tokio::test]
async fn a_server_killed_mid_upload_leaves_nothing_that_the_next_sweep_does_not_remove() {
    let app = TestApp::spawn().await;
    app.create_user("carol", "staff", "General", "public").await;
    let port = free_port();
    let mut server = serve(&app, port, None);
    let base = format!("http://127.0.0.1:{port}");
    wait_ready(&base, &mut server).await;
    let (client, csrf) = sign_in(&base).await;

    // A 60 MB upload whose body stops after 18 MB and then waits.
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<Vec<u8>, std::io::Error>>(4);
    let body = reqwest::Body::wrap_stream(tokio_stream_from(rx));
    let part = reqwest::multipart::Part::stream_with_length(body, 60 << 20).file_name("video.bin");
    let form = reqwest::multipart::Form::new().part("file", part);
    let upload =
        tokio::spawn(client.post(format!("{base}/api/files")).header("x-csrf-token", &csrf).multipart(form).send());
    for _ in 0..18 {
        tx.send(Ok(vec![9u8; 1 << 20])).await.unwrap();
    }
    let started = Instant::now();
    let staging = loop {
        let found = files_under(&app.storage_dir()).into_iter().find(|p| p.to_string_lossy().contains('#'));
        if let Some(path) = found
            && std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0) >= 5 << 20
        {
            break path;
        }
        assert!(started.elapsed() < Duration::from_secs(30), "no staging part appeared");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    Command::new("kill").args(["-KILL", &server.id().to_string()]).status().unwrap();
    server.wait().unwrap();
    drop(tx);
    let _ = upload.await;
    assert!(staging.exists(), "the crash left a staging part: {}", staging.display());
    let rows: i64 =
        sqlx::query_scalar("SELECT count(*) FROM files").fetch_one(&mut app.owner_conn().await).await.unwrap();
    assert_eq!(rows, 0, "nothing was acknowledged");

    // The next sweep after the grace period (any instance's) removes it.
    let settled = fortifile::files::sweep_unreferenced(&app.state, fortifile::files::ORPHAN_AGE).await.unwrap();
    assert_eq!(settled, 0, "not before the grace period");
    app.clock.advance(time::Duration::hours(2));
    fortifile::files::sweep_unreferenced(&app.state, fortifile::files::ORPHAN_AGE).await.unwrap();
    assert!(!staging.exists(), "the staging part is gone");
    assert!(files_under(&app.storage_dir()).is_empty(), "{:?}", files_under(&app.storage_dir()));
}

/// A stream of the chunks sent on `rx`.
fn tokio_stream_from(
    rx: tokio::sync::mpsc::Receiver<Result<Vec<u8>, std::io::Error>>,
) -> impl futures::Stream<Item = Result<Vec<u8>, std::io::Error>> {
    futures::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|item| (item, rx)) })
}

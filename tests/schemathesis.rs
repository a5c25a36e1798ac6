//! schemathesis (PyPI, v4) against the real server and its own description:
//! every check, with an administrator's API key, a student's, and without
//! credentials, must find nothing. Bounded (`-n` examples per operation) and
//! seeded, so a run is repeatable. The exceptions, each for one check on one
//! operation with its reason, are in `schemathesis.toml`.
//!
//! `scripts/test` installs schemathesis; `FORTIFILE_SCHEMATHESIS_EXAMPLES`
//! changes the number of examples.

mod common;

use common::{Session, TestApp};
use reqwest::StatusCode;
use serde_json::json;

/// A new API key of `session`'s user, with everything the user holds.
async fn api_key(session: &Session) -> String {
    let (status, body) = session.post("/me/api-keys", json!({ "name": "schemathesis" })).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    body["apiKey"]["key"].as_str().unwrap().to_string()
}

/// Runs schemathesis against `app`, sending `header` with every request.
async fn schemathesis(app: &TestApp, who: &str, header: Option<String>) {
    let examples = std::env::var("FORTIFILE_SCHEMATHESIS_EXAMPLES").unwrap_or_else(|_| "30".into());
    let mut command = tokio::process::Command::new("schemathesis");
    command
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .env("NO_COLOR", "1")
        .args(["--config-file", "schemathesis.toml", "run"])
        .arg(app.url("/api/openapi.json"))
        .args(["--url", &app.url("")])
        // Every check is on unless schemathesis.toml says otherwise for an
        // operation (`--checks` on the command line would override that file).
        .args(["--max-examples", &examples, "--seed", "20261202"])
        // One worker: CPython 3.11's `ast.parse` is not safe across threads,
        // and hypothesis parses lambdas while it generates (a runtime error
        // in schemathesis, not a finding, with two workers).
        .args(["--generation-deterministic", "--workers", "1", "--request-timeout", "20"]);
    if let Some(header) = header {
        command.args(["--header", &header]);
    }
    let output = command.output().await.expect("schemathesis runs (scripts/test installs it)");
    let text = format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr));
    let summary: Vec<&str> = text.lines().rev().take(12).collect::<Vec<_>>().into_iter().rev().collect();
    eprintln!("schemathesis as {who}:\n{}", summary.join("\n"));
    assert!(output.status.success(), "schemathesis found failures as {who}:\n{text}");
}

/// A server with something in it: a document, a share, an incident.
async fn populated() -> (TestApp, Session, Session) {
    let app = TestApp::spawn().await;
    let admin = app.admin().await;
    let student = app.signed_in_as("ana", "student", "public").await;
    let file = admin.upload_ok("plan.txt", b"the plan", Some("public")).await;
    let (status, body) = admin.post(&format!("/api/files/{file}/shares"), json!({ "username": "ana" })).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    student.upload_ok("notes.txt", b"my notes", None).await;
    let (status, body) = admin.post("/admin/incidents", json!({ "title": "Badge reader", "severity": "low" })).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    (app, admin, student)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn schemathesis_finds_nothing_with_an_administrators_api_key() {
    let (app, admin, _) = populated().await;
    let key = api_key(&admin).await;
    schemathesis(&app, "an administrator's key", Some(format!("Authorization: Bearer {key}"))).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn schemathesis_finds_nothing_with_a_students_api_key() {
    let (app, _, student) = populated().await;
    let key = api_key(&student).await;
    schemathesis(&app, "a student's key", Some(format!("Authorization: Bearer {key}"))).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn schemathesis_finds_nothing_without_credentials() {
    let (app, _, _) = populated().await;
    schemathesis(&app, "no one", None).await;
}

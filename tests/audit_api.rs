//! The security dashboard's data: `GET /api/audit-logs` (filters that combine,
//! keyset pages) and `GET /api/audit-logs/highlights` (each rule exactly at and
//! just below its threshold, and evidence that selects exactly its rows).

mod common;

use common::{Session, TestApp};
use fortifile::clock::Clock;
use reqwest::StatusCode;
use serde_json::{Value, json};
use time::{Duration, OffsetDateTime};
use uuid::Uuid;

/// Inserts `n` audit rows one `step` apart from `start` (as the owner: the
/// fixture needs chosen times, which the server takes from the database).
#[allow(clippy::too_many_arguments)]
async fn rows(
    app: &TestApp,
    n: usize,
    start: OffsetDateTime,
    step: Duration,
    action: &str,
    result: &str,
    user: Option<Uuid>,
    ip: &str,
    details: impl Fn(usize) -> Value,
) {
    let mut conn = app.owner_conn().await;
    for i in 0..n {
        sqlx::query(
            "INSERT INTO audit_logs (tenant_id, created_at, user_id, action, result, ip, details) \
             VALUES ($1, $2, $3, $4, $5, $6::inet, $7)",
        )
        .bind(app.default_tenant)
        .bind(start + step * i as i32)
        .bind(user)
        .bind(action)
        .bind(result)
        .bind(ip)
        .bind(details(i))
        .execute(&mut conn)
        .await
        .unwrap();
    }
}

async fn highlights(admin: &Session, kind: &str) -> Vec<Value> {
    let (status, body) = admin.get("/api/audit-logs/highlights").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    body["highlights"].as_array().unwrap().iter().filter(|h| h["kind"] == kind).cloned().collect()
}

fn ago(app: &TestApp, minutes: i64) -> OffsetDateTime {
    app.clock.now() - Duration::minutes(minutes)
}

#[tokio::test]
async fn failed_logins_are_highlighted_at_five_in_fifteen_minutes_for_one_username_and_not_at_four() {
    let app = TestApp::spawn().await;
    let admin = app.admin().await;
    let tried = |name: &'static str| move |_| json!({ "reason": "bad_password", "username": name });
    // Five for bob within 14 minutes; four for eve; five for mallory spread over 20 minutes.
    rows(
        &app,
        5,
        ago(&app, 120),
        Duration::minutes(3) + Duration::seconds(30),
        "auth.login",
        "fail",
        None,
        "10.0.0.1",
        tried("bob"),
    )
    .await;
    rows(&app, 4, ago(&app, 100), Duration::minutes(1), "auth.login", "fail", None, "10.0.0.2", tried("eve")).await;
    rows(&app, 5, ago(&app, 90), Duration::minutes(5), "auth.login", "fail", None, "10.0.0.3", tried("mallory")).await;

    let found = highlights(&admin, "failed_logins").await;
    assert_eq!(found.len(), 1, "{found:?}");
    let h = &found[0];
    assert_eq!((h["subject"].as_str(), h["count"].as_i64(), h["threshold"].as_i64()), (Some("bob"), Some(5), Some(5)));
    assert_eq!(h["windowMinutes"], 15);
    // The evidence link selects exactly those five rows.
    let (status, logs) = admin.get(h["logs"].as_str().unwrap()).await;
    assert_eq!(status, StatusCode::OK, "{logs}");
    assert_eq!(logs["logs"].as_array().unwrap().len(), 5);
    assert!(logs["logs"].as_array().unwrap().iter().all(|r| r["details"]["username"] == "bob"));
}

#[tokio::test]
async fn password_spraying_needs_five_distinct_usernames_from_one_address() {
    let app = TestApp::spawn().await;
    let admin = app.admin().await;
    let names = ["ann", "ben", "cal", "dan", "eva"];
    rows(
        &app,
        5,
        ago(&app, 60),
        Duration::minutes(2),
        "auth.login",
        "fail",
        None,
        "192.0.2.7",
        |i| json!({ "username": names[i] }),
    )
    .await;
    rows(
        &app,
        4,
        ago(&app, 60),
        Duration::minutes(2),
        "auth.login",
        "fail",
        None,
        "192.0.2.8",
        |i| json!({ "username": names[i] }),
    )
    .await;
    // Many failures, one username: not spraying.
    rows(
        &app,
        6,
        ago(&app, 30),
        Duration::minutes(1),
        "auth.login",
        "fail",
        None,
        "192.0.2.9",
        |_| json!({ "username": "zed" }),
    )
    .await;
    let found = highlights(&admin, "password_spraying").await;
    assert_eq!(found.len(), 1, "{found:?}");
    assert_eq!(found[0]["subject"], "192.0.2.7");
    assert_eq!(found[0]["count"], 5);
}

#[tokio::test]
async fn mac_rbac_and_download_highlights_fire_exactly_at_their_thresholds() {
    let app = TestApp::spawn().await;
    let admin = app.admin().await;
    let at = app.create_user("atthreshold", "student", "General", "public").await;
    let below = app.create_user("belowit", "student", "General", "public").await;
    let none = |_| json!({});
    for (action, result, n, step_minutes) in
        [("mac.denied", "fail", 3, 29), ("rbac.denied", "fail", 5, 3), ("file.download", "success", 50, 0)]
    {
        let step = if step_minutes == 0 { Duration::seconds(10) } else { Duration::minutes(step_minutes) };
        rows(&app, n, ago(&app, 200), step, action, result, Some(at), "10.1.1.1", none).await;
        rows(&app, n - 1, ago(&app, 200), step, action, result, Some(below), "10.1.1.2", none).await;
    }
    for (kind, count) in [("mac_denials", 3), ("rbac_denials", 5), ("bulk_downloads", 50)] {
        let found = highlights(&admin, kind).await;
        assert_eq!(found.len(), 1, "{kind}: {found:?}");
        assert_eq!(found[0]["subject"], "atthreshold", "{kind}");
        assert_eq!(found[0]["userId"], at.to_string());
        assert_eq!(found[0]["count"], count, "{kind}");
        let (_, logs) = admin.get(&format!("{}&limit=1000", found[0]["logs"].as_str().unwrap())).await;
        assert_eq!(logs["logs"].as_array().unwrap().len(), count as usize, "{kind}: the evidence rows");
    }
}

#[tokio::test]
async fn highlight_thresholds_come_from_configuration() {
    let app =
        TestApp::spawn_with(|c| c.highlights.mac_denials = fortifile::config::Threshold { count: 2, minutes: 5 }).await;
    let admin = app.admin().await;
    let user = app.create_user("probe", "student", "General", "public").await;
    rows(&app, 2, ago(&app, 30), Duration::minutes(4), "mac.denied", "fail", Some(user), "10.2.2.2", |_| json!({}))
        .await;
    let found = highlights(&admin, "mac_denials").await;
    assert_eq!(found.len(), 1);
    assert_eq!((found[0]["threshold"].as_i64(), found[0]["windowMinutes"].as_i64()), (Some(2), Some(5)));
}

#[tokio::test]
async fn audit_log_filters_combine_and_pages_follow_the_cursor() {
    let app = TestApp::spawn().await;
    let admin = app.admin().await;
    let sam = app.create_user("sam", "student", "General", "public").await;
    rows(
        &app,
        3,
        ago(&app, 50),
        Duration::minutes(1),
        "file.download",
        "success",
        Some(sam),
        "10.3.3.3",
        |_| json!({}),
    )
    .await;
    rows(&app, 2, ago(&app, 40), Duration::minutes(1), "mac.denied", "fail", Some(sam), "10.3.3.3", |_| json!({}))
        .await;

    let (_, only) = admin.get("/api/audit-logs?user=sam&action=mac.denied&result=fail").await;
    assert_eq!(only["logs"].as_array().unwrap().len(), 2);
    assert_eq!(only["logs"][0]["username"], "sam");
    let (_, none) = admin.get("/api/audit-logs?user=sam&action=mac.denied&result=success").await;
    assert_eq!(none["logs"], json!([]));
    let (_, unknown) = admin.get("/api/audit-logs?user=nobody").await;
    assert_eq!(unknown["logs"], json!([]), "an unknown user matches nothing");

    // Newest first, two at a time, through the cursor.
    let mut seen = Vec::new();
    let mut path = "/api/audit-logs?user=sam&limit=2".to_string();
    loop {
        let (status, page) = admin.get(&path).await;
        assert_eq!(status, StatusCode::OK);
        seen.extend(page["logs"].as_array().unwrap().iter().map(|r| r["createdAt"].as_str().unwrap().to_string()));
        match page["nextCursor"].as_str() {
            Some(next) => path = format!("/api/audit-logs?user=sam&limit=2&after={next}"),
            None => break,
        }
    }
    assert_eq!(seen.len(), 5);
    assert!(seen.windows(2).all(|w| w[0] >= w[1]), "newest first: {seen:?}");

    // A date range.
    let from = (ago(&app, 39) - Duration::seconds(30)).format(&time::format_description::well_known::Rfc3339).unwrap();
    let (_, recent) = admin.get(&format!("/api/audit-logs?user=sam&from={}", urlencode(&from))).await;
    assert_eq!(recent["logs"].as_array().unwrap().len(), 1);

    for bad in ["result=maybe", "ip=not-an-ip", "after=garbage", "limit=0", "colour=red"] {
        assert_eq!(admin.get(&format!("/api/audit-logs?{bad}")).await.0, StatusCode::UNPROCESSABLE_ENTITY, "{bad}");
    }
}

#[tokio::test]
async fn a_student_cannot_read_the_audit_log_or_its_highlights() {
    let app = TestApp::spawn().await;
    let student = app.signed_in_as("pupil", "student", "public").await;
    let before = app.audit_count("rbac.denied").await;
    assert_eq!(student.get("/api/audit-logs").await.0, StatusCode::FORBIDDEN);
    assert_eq!(student.get("/api/audit-logs/highlights").await.0, StatusCode::FORBIDDEN);
    assert_eq!(app.audit_count("rbac.denied").await, before + 2);
}

fn urlencode(text: &str) -> String {
    url::form_urlencoded::byte_serialize(text.as_bytes()).collect()
}

#[tokio::test]
async fn exports_stream_every_matching_row_neutralise_formulas_and_are_audited() {
    let app = TestApp::spawn().await;
    let admin = app.admin().await;
    // 2,500 rows (more than two export pages), one with formula-like cells.
    let mut conn = app.owner_conn().await;
    sqlx::query(
        "INSERT INTO audit_logs (tenant_id, created_at, action, result, user_agent, details) \
         SELECT $1, now() - make_interval(secs => g), 'file.download', 'success', 'agent', jsonb_build_object('n', g) \
         FROM generate_series(1, 2500) AS g",
    )
    .bind(app.default_tenant)
    .execute(&mut conn)
    .await
    .unwrap();
    sqlx::query(
        "INSERT INTO audit_logs (tenant_id, action, result, user_agent, details) \
         VALUES ($1, 'file.download', 'success', '=HYPERLINK(\"http://evil\")', '{}')",
    )
    .bind(app.default_tenant)
    .execute(&mut conn)
    .await
    .unwrap();

    let res = admin.client.get(app.url("/api/audit-logs/export.csv?action=file.download")).send().await.unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    assert!(res.headers()["content-disposition"].to_str().unwrap().starts_with("attachment"));
    let text = res.text().await.unwrap();
    let mut reader = csv::Reader::from_reader(text.as_bytes());
    let records: Vec<csv::StringRecord> = reader.records().map(Result::unwrap).collect();
    assert_eq!(records.len(), 2501);
    assert_eq!(reader.headers().unwrap().get(3), Some("action"));
    let agents: Vec<&str> = records.iter().map(|r| r.get(7).unwrap()).collect();
    assert!(agents.contains(&"'=HYPERLINK(\"http://evil\")"), "the formula is neutralised");
    assert!(!agents.iter().any(|a| a.starts_with('=')));

    let res =
        admin.client.get(app.url("/api/audit-logs/export.jsonl?action=file.download&limit=5")).send().await.unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    let text = res.text().await.unwrap();
    let lines: Vec<Value> = text.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(lines.len(), 2501, "an export ignores the page limit");
    assert_eq!(lines[0]["userAgent"], "=HYPERLINK(\"http://evil\")", "JSON needs no neutralising");

    let exports = app.audit("audit.export").await;
    assert_eq!(exports.len(), 2);
    assert_eq!(exports[0].details["format"], "csv");
    assert!(exports[0].details["filters"].as_str().unwrap().contains("action=file.download"));
    // A bad filter is refused before anything is recorded.
    let (status, _) = admin.get("/api/audit-logs/export.csv?result=maybe").await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(app.audit_count("audit.export").await, 2);
}

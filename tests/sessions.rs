//! Server-side sessions: timeouts on an injected clock, revocation, fixation,
//! hashing at rest, cookie attributes and CSRF.

mod common;

use std::sync::Arc;

use common::{TestApp, new_client};
use reqwest::StatusCode;
use ring::digest;
use serde_json::{Value, json};
use time::Duration;
use url::Url;

fn session_cookie(res: &reqwest::Response) -> String {
    res.headers().get("set-cookie").unwrap().to_str().unwrap().to_string()
}

#[tokio::test]
async fn a_session_idles_out_after_the_idle_timeout_and_the_expiry_is_audited() {
    let app = TestApp::spawn_with(|c| c.session_idle_timeout = std::time::Duration::from_secs(2)).await;
    app.signed_in("alice").await;
    assert_eq!(app.me(&app.client).await, StatusCode::OK);
    app.clock.advance(Duration::seconds(3));
    assert_eq!(app.me(&app.client).await, StatusCode::UNAUTHORIZED);
    let rows = app.audit("auth.session_expired").await;
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0].details["reason"], "idle_timeout");
    assert_eq!(rows[0].user_id, Some(app.user_id("alice").await));
    let mut conn = app.owner_conn().await;
    let left: i64 = sqlx::query_scalar("SELECT count(*) FROM sessions").fetch_one(&mut conn).await.unwrap();
    assert_eq!(left, 0, "the expired session is deleted server-side");
}

#[tokio::test]
async fn activity_extends_the_idle_timer() {
    let app = TestApp::spawn_with(|c| c.session_idle_timeout = std::time::Duration::from_secs(10)).await;
    app.signed_in("bob").await;
    for _ in 0..4 {
        app.clock.advance(Duration::seconds(7));
        assert_eq!(app.me(&app.client).await, StatusCode::OK);
    }
}

#[tokio::test]
async fn a_session_ends_at_the_absolute_timeout_despite_activity() {
    let app = TestApp::spawn_with(|c| {
        c.session_idle_timeout = std::time::Duration::from_secs(60);
        c.session_absolute_timeout = std::time::Duration::from_secs(100);
    })
    .await;
    app.signed_in("carol").await;
    for _ in 0..3 {
        app.clock.advance(Duration::seconds(30));
        assert_eq!(app.me(&app.client).await, StatusCode::OK);
    }
    app.clock.advance(Duration::seconds(11));
    assert_eq!(app.me(&app.client).await, StatusCode::UNAUTHORIZED);
    assert_eq!(app.audit("auth.session_expired").await[0].details["reason"], "absolute_timeout");
}

#[tokio::test]
async fn the_periodic_sweep_deletes_expired_sessions_and_audits_them() {
    let app = TestApp::spawn_with(|c| c.session_idle_timeout = std::time::Duration::from_secs(5)).await;
    app.signed_in("dora").await;
    app.clock.advance(Duration::seconds(6));
    let swept = fortifile::auth::account::sweep_expired_sessions(&app.state).await.unwrap();
    assert_eq!(swept, 1);
    assert_eq!(app.audit("auth.session_expired").await[0].details["via"], "sweep");
}

#[tokio::test]
async fn a_suspended_user_loses_every_session() {
    let app = TestApp::spawn().await;
    app.signed_in("erin").await;
    let laptop = new_client();
    app.login_as(&laptop, "erin").await;
    assert_eq!(app.me(&laptop).await, StatusCode::OK);

    let id = app.user_id("erin").await;
    let mut tx = app.db.tenant_tx(app.default_tenant, None).await.unwrap();
    sqlx::query("UPDATE users SET status = 'suspended' WHERE id = $1").bind(id).execute(tx.conn()).await.unwrap();
    tx.commit().await.unwrap();

    assert_eq!(app.me(&app.client).await, StatusCode::UNAUTHORIZED);
    assert_eq!(app.me(&laptop).await, StatusCode::UNAUTHORIZED);
    let mut conn = app.owner_conn().await;
    let left: i64 = sqlx::query_scalar("SELECT count(*) FROM sessions WHERE user_id = $1")
        .bind(id)
        .fetch_one(&mut conn)
        .await
        .unwrap();
    assert_eq!(left, 0);
    let res = app.login_with(&new_client(), "erin", common::PASSWORD).await;
    assert_eq!(res.status(), StatusCode::FORBIDDEN);
}

#[tokio::test]
async fn every_login_issues_a_fresh_session_and_retires_the_one_it_replaces() {
    let app = TestApp::spawn().await;
    app.register("frank").await;
    let first = app.login_with(&app.client, "frank", common::PASSWORD).await;
    let old_cookie = session_cookie(&first);
    let second = app.login_with(&app.client, "frank", common::PASSWORD).await;
    let new_cookie = session_cookie(&second);
    assert_ne!(old_cookie, new_cookie);
    let old_value = old_cookie.split(';').next().unwrap().to_string();
    let res = new_client().get(app.url("/me")).header("cookie", old_value).send().await.unwrap();
    assert_eq!(res.status(), StatusCode::UNAUTHORIZED, "the pre-login session is gone");
    assert_eq!(app.me(&app.client).await, StatusCode::OK);
}

#[tokio::test]
async fn the_database_keeps_only_a_hash_of_the_session_token() {
    let app = TestApp::spawn().await;
    app.register("gina").await;
    let res = app.login_with(&app.client, "gina", common::PASSWORD).await;
    let cookie = session_cookie(&res);
    let value = cookie.split(';').next().unwrap().split_once('=').unwrap().1;
    let token = value.split_once('.').unwrap().1;
    assert_eq!(token.len(), 64, "256 bits of randomness, hex");

    let mut conn = app.owner_conn().await;
    let stored: Vec<u8> = sqlx::query_scalar("SELECT token_hash FROM sessions").fetch_one(&mut conn).await.unwrap();
    assert_eq!(stored, digest::digest(&digest::SHA256, token.as_bytes()).as_ref());
    let dump: String =
        sqlx::query_scalar("SELECT string_agg(s::text, ' ') FROM sessions s").fetch_one(&mut conn).await.unwrap();
    assert!(!dump.contains(token));
}

#[tokio::test]
async fn the_session_cookie_is_httponly_samesite_lax_on_path_root() {
    let app = TestApp::spawn().await;
    app.register("hank").await;
    let cookie = session_cookie(&app.login_with(&app.client, "hank", common::PASSWORD).await);
    assert!(cookie.starts_with("fortifile_session="));
    for attr in ["HttpOnly", "SameSite=Lax", "Path=/"] {
        assert!(cookie.contains(attr), "{cookie}");
    }
    assert!(!cookie.contains("Secure"), "plain http cannot carry a Secure cookie");
}

#[tokio::test]
async fn behind_an_https_public_url_the_cookie_is_secure_and_host_prefixed() {
    let app = TestApp::spawn_with(|c| c.public_url = Some(Url::parse("https://files.example.org").unwrap())).await;
    app.register_with(&new_client(), "ines", common::PASSWORD).await;
    let res = app.login_with(&app.client, "ines", common::PASSWORD).await;
    let cookie = session_cookie(&res);
    assert!(cookie.starts_with("__Host-fortifile_session="), "{cookie}");
    assert!(cookie.contains("Secure"));
    assert!(res.headers().get("strict-transport-security").is_some());
}

#[tokio::test]
async fn an_unsafe_request_without_the_csrf_token_is_forbidden() {
    let app = TestApp::spawn().await;
    let csrf = app.signed_in("jack").await;
    let res = app.client.post(app.url("/auth/logout")).send().await.unwrap();
    assert_eq!(res.status(), StatusCode::FORBIDDEN);
    assert!(res.json::<Value>().await.unwrap()["error"].as_str().unwrap().contains("CSRF"));
    let res = app.client.post(app.url("/auth/logout")).header("x-csrf-token", "0".repeat(64)).send().await.unwrap();
    assert_eq!(res.status(), StatusCode::FORBIDDEN);
    assert_eq!(app.me(&app.client).await, StatusCode::OK, "the refused logout did nothing");
    let rows = app.audit("auth.csrf_denied").await;
    assert_eq!(rows.len(), 2, "each refusal is recorded");
    assert_eq!((rows[0].result.as_str(), rows[0].user_id), ("fail", Some(app.user_id("jack").await)));
    assert_eq!(rows[0].details, json!({ "reason": "token", "method": "POST", "path": "/auth/logout" }));
    let res = app.client.post(app.url("/auth/logout")).header("x-csrf-token", csrf).send().await.unwrap();
    assert_eq!(res.status(), StatusCode::NO_CONTENT);
}

#[tokio::test]
async fn a_form_post_may_carry_the_csrf_token_as_a_field() {
    let app = TestApp::spawn().await;
    let csrf = app.signed_in("kate").await;
    let res = app.client.post(app.url("/auth/logout")).form(&[("csrf_token", "wrong")]).send().await.unwrap();
    assert_eq!(res.status(), StatusCode::FORBIDDEN);
    let res = app.client.post(app.url("/auth/logout")).form(&[("csrf_token", csrf.as_str())]).send().await.unwrap();
    assert_eq!(res.status(), StatusCode::NO_CONTENT);
}

#[tokio::test]
async fn a_login_from_another_origin_is_refused_and_a_same_origin_one_accepted() {
    let app = TestApp::spawn().await;
    app.register("liam").await;
    let body = json!({ "username": "liam", "password": common::PASSWORD });
    for (path, origin) in
        [("/auth/login", "https://evil.example"), ("/auth/login", "null"), ("/auth/register", "https://evil.example")]
    {
        let res = app.post_json(path, &body, &[("origin", origin)]).await;
        assert_eq!(res.status(), StatusCode::FORBIDDEN, "{path} from {origin}");
    }
    let res = app.post_json("/auth/login", &body, &[("origin", &app.base)]).await;
    assert_eq!(res.status(), StatusCode::OK);
}

#[tokio::test]
async fn with_a_public_url_only_that_origin_is_accepted() {
    let app = TestApp::spawn_with(|c| c.public_url = Some(Url::parse("https://files.example.org").unwrap())).await;
    app.register("mona").await;
    let body = json!({ "username": "mona", "password": common::PASSWORD });
    let res = app.post_json("/auth/login", &body, &[("origin", &app.base)]).await;
    assert_eq!(res.status(), StatusCode::FORBIDDEN);
    let res = app.post_json("/auth/login", &body, &[("origin", "https://files.example.org")]).await;
    assert_eq!(res.status(), StatusCode::OK);
}

#[tokio::test]
async fn concurrent_sweeps_and_requests_record_each_expiry_once() {
    let app = TestApp::spawn_with(|c| c.session_idle_timeout = std::time::Duration::from_secs(5)).await;
    app.signed_in("olga").await;
    let others: Vec<_> = (0..3).map(|_| new_client()).collect();
    for (i, client) in others.iter().enumerate() {
        let name = format!("user{i}");
        app.register(&name).await;
        app.login_as(client, &name).await;
    }
    app.clock.advance(Duration::seconds(6));
    let (a, b, me1, me2) = tokio::join!(
        fortifile::auth::account::sweep_expired_sessions(&app.state),
        fortifile::auth::account::sweep_expired_sessions(&app.state),
        app.me(&app.client),
        app.me(&app.client),
    );
    assert_eq!((me1, me2), (StatusCode::UNAUTHORIZED, StatusCode::UNAUTHORIZED));
    let rows = app.audit("auth.session_expired").await;
    assert_eq!(rows.len(), 4, "one row per session: {rows:?}");
    assert!(a.unwrap() + b.unwrap() <= 4);
}

#[tokio::test]
async fn a_foreign_origin_on_an_unsafe_request_with_a_real_session_is_refused_and_recorded() {
    let app = TestApp::spawn().await;
    let csrf = app.signed_in("jack").await;
    for origin in ["https://evil.example", "null"] {
        let res = app
            .client
            .post(app.url("/auth/logout"))
            .header("x-csrf-token", &csrf)
            .header("origin", origin)
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), StatusCode::FORBIDDEN, "{origin}");
    }
    assert_eq!(app.me(&app.client).await, StatusCode::OK, "the forged logouts did nothing");
    let rows = app.audit("auth.csrf_denied").await;
    assert_eq!(rows.len(), 2, "each refusal is recorded like a missing token");
    assert_eq!(rows[0].user_id, Some(app.user_id("jack").await));
    assert_eq!(rows[0].details, json!({ "reason": "origin", "method": "POST", "path": "/auth/logout" }));
    // Without a real session a foreign origin writes nothing anywhere.
    let res = new_client().post(app.url("/auth/logout")).header("origin", "https://evil.example").send().await.unwrap();
    assert_eq!(res.status(), StatusCode::FORBIDDEN);
    assert_eq!(app.audit_count("auth.csrf_denied").await, 2);
}

#[tokio::test]
async fn many_requests_due_to_refresh_the_idle_timer_at_once_never_wait_on_each_other_for_connections() {
    // More requests than the pool (5) has connections, all finding the session's
    // idle timer due: none may hold its connection while waiting for another.
    let app = TestApp::spawn().await;
    let admin = Arc::new(app.admin().await);
    app.clock.advance(Duration::minutes(2));
    let requests: Vec<_> = (0..16)
        .map(|_| {
            let admin = admin.clone();
            tokio::spawn(async move { admin.get("/me").await.0 })
        })
        .collect();
    for request in requests {
        assert_eq!(request.await.unwrap(), StatusCode::OK);
    }
}

//! The pages people use, driven over HTTP without a browser: redirects for
//! anonymous pages (401 for the API), headers on every page, the login and
//! logout forms, and the documents page's forms with their CSRF rules.

mod common;

use common::{PASSWORD, TestApp};
use reqwest::{Client, StatusCode, redirect::Policy};

fn browser() -> Client {
    Client::builder().cookie_store(true).redirect(Policy::none()).build().unwrap()
}

/// Signs `username` in through the login form; returns the client and the
/// page's CSRF token (read from the documents page).
async fn sign_in(app: &TestApp, username: &str) -> (Client, String) {
    let client = browser();
    let res = client
        .post(app.url("/login"))
        .form(&[("username", username), ("password", PASSWORD), ("next", "/")])
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::SEE_OTHER);
    let page = client.get(app.url("/")).send().await.unwrap().text().await.unwrap();
    let token = page.split("name=\"csrf_token\" value=\"").nth(1).unwrap().split('"').next().unwrap().to_string();
    (client, token)
}

fn location(res: &reqwest::Response) -> String {
    res.headers()["location"].to_str().unwrap().to_string()
}

#[tokio::test]
async fn an_anonymous_page_request_is_redirected_to_login_while_the_api_answers_401() {
    let app = TestApp::spawn().await;
    let client = browser();
    let res = client.get(app.url("/?name=x")).send().await.unwrap();
    assert_eq!(res.status(), StatusCode::SEE_OTHER);
    assert_eq!(location(&res), "/login?next=%2F%3Fname%3Dx");
    let res = client.get(app.url("/api/files")).send().await.unwrap();
    assert_eq!(res.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(res.json::<serde_json::Value>().await.unwrap()["error"], "Authentication required");
}

#[tokio::test]
async fn every_page_carries_a_strict_csp_nosniff_and_no_framing() {
    let app = TestApp::spawn().await;
    app.create_user("carol", "staff", "General", "public").await;
    let (client, _) = sign_in(&app, "carol").await;
    let anonymous = browser();
    for (c, path) in [(&anonymous, "/login"), (&client, "/"), (&anonymous, "/static/app.css")] {
        let res = c.get(app.url(path)).send().await.unwrap();
        assert_eq!(res.status(), StatusCode::OK, "{path}");
        let h = res.headers();
        assert_eq!(h["x-content-type-options"], "nosniff", "{path}");
        assert_eq!(h["x-frame-options"], "DENY", "{path}");
        let csp = h["content-security-policy"].to_str().unwrap();
        assert!(csp.contains("frame-ancestors 'none'") && !csp.contains("unsafe-inline"), "{path}: {csp}");
        if path != "/static/app.css" {
            assert!(csp.contains("script-src 'self'"), "{path}: {csp}");
        }
    }
    let page = client.get(app.url("/")).send().await.unwrap().text().await.unwrap();
    assert!(!page.contains("<script>") && !page.contains(" style="), "no inline script or style");
}

#[tokio::test]
async fn the_login_form_signs_in_refuses_bad_passwords_and_follows_only_same_site_next() {
    let app = TestApp::spawn().await;
    app.create_user("carol", "staff", "General", "public").await;
    let client = browser();
    let res = client
        .post(app.url("/login"))
        .form(&[("username", "carol"), ("password", "not the password"), ("next", "/")])
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::UNAUTHORIZED);
    assert!(res.text().await.unwrap().contains("Invalid username or password"));
    assert_eq!(app.audit("auth.login").await.last().unwrap().result, "fail");

    let res = client
        .post(app.url("/login"))
        .form(&[("username", "carol"), ("password", PASSWORD), ("next", "//evil.example/x")])
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::SEE_OTHER);
    assert_eq!(location(&res), "/", "another site is never a target");
    assert_eq!(app.audit("auth.login").await.last().unwrap().result, "success");
    assert_eq!(client.get(app.url("/")).send().await.unwrap().status(), StatusCode::OK);
    // Signed in already: the login page sends the browser on.
    let res = client.get(app.url("/login?next=/%3Fname%3Dx")).send().await.unwrap();
    assert_eq!(res.status(), StatusCode::SEE_OTHER);
    assert_eq!(location(&res), "/?name=x");
}

#[tokio::test]
async fn the_documents_page_uploads_shares_and_revokes_through_its_forms() {
    let app = TestApp::spawn().await;
    app.create_user("carol", "staff", "General", "confidential").await;
    // A confidential student: own scope, so only the share lets them read it.
    app.create_user("erin", "student", "General", "confidential").await;
    app.create_user("pupil", "student", "General", "public").await;
    let (client, csrf) = sign_in(&app, "carol").await;

    // The upload form, without script: multipart, token in the action's query.
    let form = || {
        reqwest::multipart::Form::new()
            .text("classification", "confidential")
            .text("department", "General")
            .part("file", reqwest::multipart::Part::bytes(b"quarterly numbers".to_vec()).file_name("q3.txt"))
    };
    let res = client.post(app.url("/files")).multipart(form()).send().await.unwrap();
    assert_eq!(res.status(), StatusCode::FORBIDDEN, "no token, no upload");
    assert_eq!(app.audit_count("auth.csrf_denied").await, 1);
    let res = client.post(app.url(&format!("/files?csrf_token={csrf}"))).multipart(form()).send().await.unwrap();
    assert_eq!(res.status(), StatusCode::SEE_OTHER);
    assert_eq!(location(&res), "/?done=uploaded");
    let page = client.get(app.url("/?done=uploaded")).send().await.unwrap().text().await.unwrap();
    assert!(page.contains("q3.txt") && page.contains("Document uploaded."));
    let id = page.split("/api/files/").nth(1).unwrap().split('/').next().unwrap().to_string();

    // Sharing down to a public student is refused (and recorded); to a colleague it works.
    let share = |to: &'static str| {
        client.post(app.url(&format!("/files/{id}/shares"))).form(&[
            ("csrf_token", csrf.as_str()),
            ("username", to),
            ("expires", ""),
        ])
    };
    let res = share("pupil").send().await.unwrap();
    assert_eq!(location(&res), "/?error=share_denied");
    assert_eq!(app.audit_count("mac.denied").await, 1);
    let (erin, _) = sign_in(&app, "erin").await;
    assert_eq!(
        erin.get(app.url(&format!("/api/files/{id}/download"))).send().await.unwrap().status(),
        StatusCode::FORBIDDEN
    );
    let res = share("erin").send().await.unwrap();
    assert_eq!(location(&res), "/?done=shared");
    let page = client.get(app.url("/")).send().await.unwrap().text().await.unwrap();
    assert!(page.contains("Shares you gave") && page.contains("erin"));
    assert_eq!(erin.get(app.url(&format!("/api/files/{id}/download"))).send().await.unwrap().status(), StatusCode::OK);

    let share_id: String =
        sqlx::query_scalar("SELECT id::text FROM file_shares").fetch_one(&mut app.owner_conn().await).await.unwrap();
    let res = client
        .post(app.url(&format!("/files/{id}/shares/{share_id}/revoke")))
        .form(&[("csrf_token", csrf.as_str())])
        .send()
        .await
        .unwrap();
    assert_eq!(location(&res), "/?done=unshared");
    assert_eq!(
        erin.get(app.url(&format!("/api/files/{id}/download"))).send().await.unwrap().status(),
        StatusCode::FORBIDDEN
    );
}

#[tokio::test]
async fn the_logout_form_ends_the_session_and_needs_its_token() {
    let app = TestApp::spawn().await;
    app.create_user("carol", "staff", "General", "public").await;
    let (client, csrf) = sign_in(&app, "carol").await;
    let res = client.post(app.url("/logout")).form(&[("csrf_token", "forged")]).send().await.unwrap();
    assert_eq!(res.status(), StatusCode::FORBIDDEN);
    let res = client.post(app.url("/logout")).form(&[("csrf_token", csrf.as_str())]).send().await.unwrap();
    assert_eq!(res.status(), StatusCode::SEE_OTHER);
    assert_eq!(location(&res), "/login");
    assert_eq!(client.get(app.url("/")).send().await.unwrap().status(), StatusCode::SEE_OTHER);
    assert_eq!(app.audit_count("auth.logout").await, 1);
}

#[tokio::test]
async fn a_page_the_user_may_not_see_answers_the_403_page_and_is_recorded() {
    let app = TestApp::spawn().await;
    let id = app.create_user("nobody", "student", "General", "public").await;
    sqlx::query("DELETE FROM user_roles WHERE user_id = $1")
        .bind(id)
        .execute(&mut app.owner_conn().await)
        .await
        .unwrap();
    let client = browser();
    client.post(app.url("/login")).form(&[("username", "nobody"), ("password", PASSWORD)]).send().await.unwrap();
    let res = client.get(app.url("/")).send().await.unwrap();
    assert_eq!(res.status(), StatusCode::FORBIDDEN);
    assert!(res.headers()["content-type"].to_str().unwrap().starts_with("text/html"));
    assert!(res.text().await.unwrap().contains("Not allowed"));
    assert_eq!(app.audit("rbac.denied").await.last().unwrap().details["route"], "/");
}

#[tokio::test]
async fn a_student_gets_the_403_page_for_the_security_log_and_incidents() {
    let app = TestApp::spawn().await;
    app.create_user("pupil", "student", "General", "public").await;
    let (client, _) = sign_in(&app, "pupil").await;
    for path in ["/admin/logs", "/admin/incidents", "/admin/incidents/new"] {
        let before = app.audit_count("rbac.denied").await;
        let res = client.get(app.url(path)).send().await.unwrap();
        assert_eq!(res.status(), StatusCode::FORBIDDEN, "{path}");
        assert!(res.text().await.unwrap().contains("Not allowed"), "{path}");
        assert_eq!(app.audit_count("rbac.denied").await, before + 1, "{path}");
    }
}

#[tokio::test]
async fn the_incident_pages_create_from_an_entry_and_change_status_through_forms() {
    let app = TestApp::spawn().await;
    app.create_user("root", "admin", "General", "restricted").await;
    let (client, csrf) = sign_in(&app, "root").await;
    let entry: String = sqlx::query_scalar("SELECT id::text FROM audit_logs WHERE action = 'auth.login' LIMIT 1")
        .fetch_one(&mut app.owner_conn().await)
        .await
        .unwrap();
    let page =
        client.get(app.url(&format!("/admin/incidents/new?audit={entry}"))).send().await.unwrap().text().await.unwrap();
    assert!(page.contains("Related audit entry") && page.contains(&entry));
    let res = client
        .post(app.url("/admin/incidents"))
        .form(&[
            ("csrf_token", csrf.as_str()),
            ("title", "<script>x</script>"),
            ("severity", "medium"),
            ("related_audit_log_id", &entry),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::SEE_OTHER);
    let detail = location(&res);
    let page = client.get(app.url(&detail)).send().await.unwrap().text().await.unwrap();
    assert!(page.contains("&#60;script&#62;x") && !page.contains("<script>x"), "titles are escaped");
    let res = client
        .post(app.url(&detail))
        .form(&[("csrf_token", csrf.as_str()), ("status", "resolved"), ("severity", "medium")])
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::SEE_OTHER);
    let page = client.get(app.url(&detail)).send().await.unwrap().text().await.unwrap();
    assert!(page.contains("id=\"incident-status\">resolved"));
    // A bad form goes back to the form with an error, creating nothing.
    let res = client
        .post(app.url("/admin/incidents"))
        .form(&[("csrf_token", csrf.as_str()), ("title", "x"), ("severity", "urgent")])
        .send()
        .await
        .unwrap();
    assert_eq!(location(&res), "/admin/incidents/new?error=invalid");
    assert_eq!(app.audit_count("incident.create").await, 1);
    // The dashboard renders with highlights, chart and entries.
    let page = client.get(app.url("/admin/logs?action=incident.create")).send().await.unwrap().text().await.unwrap();
    assert!(page.contains("Events per hour") && page.contains("data-action=\"incident.create\""));
}

#[tokio::test]
async fn the_people_page_approves_pending_accounts_and_changes_clearance_as_the_api_does() {
    let app = TestApp::spawn_with(|c| c.registration = fortifile::config::Registration::Approval).await;
    app.create_user("root", "admin", "General", "restricted").await;
    app.create_user("carol", "staff", "General", "public").await;
    assert_eq!(app.register("newbie").await.status(), StatusCode::CREATED);
    let (client, csrf) = sign_in(&app, "root").await;
    let page = client.get(app.url("/admin/users?status=pending")).send().await.unwrap().text().await.unwrap();
    assert!(page.contains("data-username=\"newbie\"") && !page.contains("data-username=\"carol\""));

    let newbie = app.user_id("newbie").await;
    let res = client
        .post(app.url(&format!("/admin/users/{newbie}/approve")))
        .form(&[("csrf_token", csrf.as_str()), ("role", "staff")])
        .send()
        .await
        .unwrap();
    assert_eq!(location(&res), "/admin/users?done=saved");
    assert_eq!(app.audit_count("user.approve").await, 1);

    let carol = app.user_id("carol").await;
    let form = [
        ("csrf_token", csrf.as_str()),
        ("role", "staff"),
        ("department", "General"),
        ("clearance_level", "confidential"),
        ("status", "active"),
        ("current_role", "staff"),
        ("current_department", "General"),
        ("current_clearance_level", "public"),
        ("current_status", "active"),
    ];
    let res = client.post(app.url(&format!("/admin/users/{carol}"))).form(&form).send().await.unwrap();
    assert_eq!(location(&res), "/admin/users?done=saved");
    let row = app.audit("user.update").await.pop().unwrap();
    assert_eq!(row.details["changes"]["clearanceLevel"]["after"], "confidential", "{}", row.details);

    // Staff hold no users.view: the page is refused.
    let (staff, _) = sign_in(&app, "carol").await;
    assert_eq!(staff.get(app.url("/admin/users")).send().await.unwrap().status(), StatusCode::FORBIDDEN);
    assert_eq!(staff.get(app.url("/admin/roles")).send().await.unwrap().status(), StatusCode::FORBIDDEN);
}

#[tokio::test]
async fn the_roles_matrix_grants_and_revokes_with_scopes() {
    let app = TestApp::spawn().await;
    let api = app.admin().await;
    let (client, csrf) = sign_in(&app, "root").await;
    let page = client.get(app.url("/admin/roles")).send().await.unwrap().text().await.unwrap();
    assert!(page.contains("id=\"role-matrix\"") && page.contains("file.classify"));

    // Staff: keep upload, download and delete, drop share, add users.view at department scope.
    let staff = app.role_id("staff").await;
    let form = [
        ("csrf_token", csrf.as_str()),
        ("grant", "file.upload"),
        ("scope.file.upload", "department"),
        ("grant", "file.download"),
        ("scope.file.download", "department"),
        ("grant", "file.delete"),
        ("scope.file.delete", "own"),
        ("grant", "users.view"),
        ("scope.users.view", "department"),
        ("scope.file.share", "department"),
    ];
    let res = client.post(app.url(&format!("/admin/roles/{staff}"))).form(&form).send().await.unwrap();
    assert_eq!(location(&res), "/admin/roles?done=saved");
    let (_, role) = api.get(&format!("/api/roles/{staff}")).await;
    assert_eq!(role["role"]["permissions"]["file"]["share"], false);
    assert_eq!(role["role"]["scopes"]["users"]["view"], "department");
    assert!(app.audit("role.permission_revoke").await.iter().any(|r| r.details["permission"] == "file.share"));
}

#[tokio::test]
async fn every_declared_page_answers_with_the_security_headers() {
    let app = TestApp::spawn().await;
    app.create_user("root", "admin", "General", "restricted").await;
    let (client, _) = sign_in(&app, "root").await;
    let pages: Vec<_> = fortifile::app::route_table(app.state.clone())
        .into_iter()
        .filter(|r| r.method == reqwest::Method::GET && (r.html || r.path == "/login"))
        .collect();
    assert!(pages.len() >= 7, "the route table lost its pages");
    for rule in pages {
        let path = rule.path.replace("{id}", &uuid::Uuid::new_v4().to_string());
        let res = client.get(app.url(&path)).send().await.unwrap();
        let h = res.headers();
        assert_eq!(h["x-content-type-options"], "nosniff", "{path}");
        assert_eq!(h["x-frame-options"], "DENY", "{path}");
        let csp = h["content-security-policy"].to_str().unwrap();
        assert!(csp.contains("frame-ancestors 'none'") && csp.contains("object-src 'none'"), "{path}: {csp}");
        assert!(!csp.contains("unsafe-inline") && !csp.contains("unsafe-eval"), "{path}: {csp}");
    }
}

#[tokio::test]
async fn an_unknown_incident_or_a_bad_log_filter_is_an_html_error_page_with_the_page_policy() {
    let app = TestApp::spawn().await;
    app.create_user("root", "admin", "General", "restricted").await;
    let (client, _) = sign_in(&app, "root").await;
    let unknown = format!("/admin/incidents/{}", uuid::Uuid::new_v4());
    for (path, status, text) in [
        (unknown.as_str(), StatusCode::NOT_FOUND, "Not found"),
        ("/admin/incidents/not-a-uuid", StatusCode::NOT_FOUND, "Not found"),
        ("/admin/logs?from=yesterday", StatusCode::UNPROCESSABLE_ENTITY, "from: dates are YYYY-MM-DD"),
    ] {
        let res = client.get(app.url(path)).send().await.unwrap();
        assert_eq!(res.status(), status, "{path}");
        assert!(res.headers()["content-type"].to_str().unwrap().starts_with("text/html"), "{path}");
        assert!(res.headers()["content-security-policy"].to_str().unwrap().contains("script-src 'self'"), "{path}");
        let body = res.text().await.unwrap();
        assert!(body.contains(text), "{path}: {body}");
        assert!(!body.contains("reference"), "only a server error shows a reference: {path}");
    }
}

#[tokio::test]
async fn a_server_error_on_a_page_is_a_generic_page_whose_reference_is_the_request_id() {
    let app = TestApp::spawn().await;
    app.create_user("root", "admin", "General", "restricted").await;
    let (client, _) = sign_in(&app, "root").await;
    sqlx::query("ALTER TABLE incidents RENAME TO incidents_moved").execute(&mut app.owner_conn().await).await.unwrap();
    let res = client.get(app.url("/admin/incidents")).send().await.unwrap();
    assert_eq!(res.status(), StatusCode::INTERNAL_SERVER_ERROR);
    assert!(res.headers()["content-type"].to_str().unwrap().starts_with("text/html"));
    let request_id = res.headers()["x-request-id"].to_str().unwrap().to_string();
    let body = res.text().await.unwrap();
    assert!(body.contains("Internal server error"), "{body}");
    assert!(body.contains(&format!("<code class=\"reference\">{request_id}</code>")), "{body}");
    assert!(!body.contains("relation") && !body.contains("incidents_moved"), "no database detail: {body}");
}

#[tokio::test]
async fn an_unknown_address_is_a_page_for_a_browser_and_json_for_everyone_else() {
    let app = TestApp::spawn().await;
    let client = browser();
    let res = client.get(app.url("/no/such/page")).header("accept", "text/html,*/*;q=0.8").send().await.unwrap();
    assert_eq!(res.status(), StatusCode::NOT_FOUND);
    assert!(res.headers()["content-type"].to_str().unwrap().starts_with("text/html"));
    assert!(res.text().await.unwrap().contains("Not found"));
    for accept in ["application/json", "*/*"] {
        let res = client.get(app.url("/api/no-such-thing")).header("accept", accept).send().await.unwrap();
        assert_eq!(res.status(), StatusCode::NOT_FOUND);
        assert_eq!(res.json::<serde_json::Value>().await.unwrap()["error"], "Not found", "{accept}");
    }
}

#[tokio::test]
async fn the_upload_script_still_gets_json_errors_from_the_upload_form() {
    let app = TestApp::spawn().await;
    app.create_user("pupil", "student", "General", "public").await;
    let (client, csrf) = sign_in(&app, "pupil").await;
    let form = reqwest::multipart::Form::new()
        .text("classification", "restricted")
        .part("file", reqwest::multipart::Part::bytes(b"above my clearance".to_vec()).file_name("x.txt"));
    let res = client
        .post(app.url(&format!("/files?csrf_token={csrf}")))
        .header("accept", "application/json")
        .multipart(form)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::FORBIDDEN);
    let body: serde_json::Value = res.json().await.unwrap();
    assert!(body["error"].is_string(), "{body}");
    assert_eq!(app.audit_count("mac.denied").await, 1);
}

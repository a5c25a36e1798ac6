//! Test harness: the real HTTP stack on a loopback port, against real PostgreSQL,
//! with a fresh database per test.
//!
//! The cluster is `DATABASE_URL` (an admin connection that may create databases)
//! when set, else the embedded cluster mechanism under the target directory. Each
//! test binary migrates and seeds one template database once; each test clones it
//! (`CREATE DATABASE ... TEMPLATE`), which takes milliseconds. Databases left by
//! finished test processes are dropped at the next start.
#![allow(dead_code)]

pub mod fleet;
pub mod invariants;
pub mod moto;

use std::{
    net::SocketAddr,
    sync::{Arc, OnceLock},
};

use fortifile::{
    app,
    clock::ManualClock,
    config::{Config, StorageSpec},
    db::{Database, embedded::EmbeddedPostgres, seed, setup},
    http::AppState,
};
use reqwest::{Client, Response, StatusCode};
use serde_json::{Value, json};
use sqlx::{Connection, PgConnection, postgres::PgConnectOptions};
use time::OffsetDateTime;
use uuid::Uuid;

pub const PASSWORD: &str = "violet staple orbit lantern";

struct Cluster {
    /// Admin connection options (database left to the caller).
    admin: PgConnectOptions,
    /// A URL form of `admin`, for the binary's DATABASE_URL.
    admin_url: String,
    template: String,
}

static CLUSTER: OnceLock<Cluster> = OnceLock::new();

fn cluster() -> &'static Cluster {
    CLUSTER.get_or_init(|| {
        // Tests run on their own runtimes; set up on a thread with its own.
        std::thread::spawn(|| {
            tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(init_cluster())
        })
        .join()
        .expect("test cluster setup panicked")
    })
}

async fn init_cluster() -> Cluster {
    let (admin, admin_url) = match std::env::var("DATABASE_URL").ok().filter(|u| !u.is_empty()) {
        Some(url) => (url.parse::<PgConnectOptions>().expect("DATABASE_URL"), url),
        None => {
            let dir = std::env::var("FORTIFILE_TEST_DATA_DIR").unwrap_or_else(|_| test_cluster_dir());
            let pg = EmbeddedPostgres::ensure(std::path::Path::new(&dir)).expect("embedded test cluster");
            let url = format!("postgres://postgres@localhost/postgres?host={}&port=5432", pg.root().display());
            // Left running for the other test binaries; .ci/run stops it.
            let admin = pg.connect_options("postgres");
            std::mem::forget(pg);
            (admin, url)
        }
    };
    let mut conn = PgConnection::connect_with(&admin.clone().database("postgres")).await.expect("admin connection");
    drop_stale_databases(&mut conn).await;

    let template = format!("ft_{}_template", std::process::id());
    create_database(&mut conn, &template, None).await;
    conn.close().await.ok();

    let owner = admin.clone().database(&template);
    setup::migrate(&owner).await.expect("migrate template");
    let db = Database::connect(owner.clone().username("fortifile_app"), 2).await.expect("app connection");
    seed::seed_default(&owner, &db).await.expect("seed template");
    db.close().await;
    Cluster { admin, admin_url, template }
}

/// A short path under /tmp, one per checkout: the socket path must fit in 107
/// bytes, and when tests run as root the `postgres` user must be able to reach it
/// (a checkout under /root is not reachable).
pub fn test_cluster_dir() -> String {
    let digest = ring::digest::digest(&ring::digest::SHA256, env!("CARGO_TARGET_TMPDIR").as_bytes());
    format!("/tmp/fortifile-test-{}", &hex::encode(digest.as_ref())[..12])
}

/// A fresh, short scratch directory under /tmp (same reasons as above), removed
/// when dropped.
pub fn scratch_dir() -> Scratch {
    let dir =
        std::path::PathBuf::from(format!("/tmp/fortifile-scratch-{}", &Uuid::new_v4().simple().to_string()[..12]));
    std::fs::create_dir_all(&dir).unwrap();
    Scratch(dir)
}

pub struct Scratch(std::path::PathBuf);

impl std::ops::Deref for Scratch {
    type Target = std::path::Path;
    fn deref(&self) -> &std::path::Path {
        &self.0
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A database with nothing in it (not even migrations), on the test cluster:
/// its owner URL for the binary's `DATABASE_URL`, and its connect options.
/// Dropped by a later test run once this process is gone.
pub async fn empty_database() -> (String, PgConnectOptions) {
    let cluster = cluster();
    let name = format!("ft_{}_{}", std::process::id(), Uuid::new_v4().simple());
    let mut admin = PgConnection::connect_with(&cluster.admin.clone().database("postgres")).await.unwrap();
    create_database(&mut admin, &name, None).await;
    admin.close().await.ok();
    (database_url(&name), cluster.admin.clone().database(&name))
}

/// The test cluster's admin URL, naming database `name`.
fn database_url(name: &str) -> String {
    let url = &cluster().admin_url;
    match url.split_once('?') {
        Some((before, query)) => format!("{}/{name}?{query}", before.rsplit_once('/').unwrap().0),
        None => format!("{}/{name}", url.rsplit_once('/').unwrap().0),
    }
}

/// Databases named `ft_<pid>_…` whose process is gone are leftovers.
async fn drop_stale_databases(conn: &mut PgConnection) {
    let names: Vec<String> = sqlx::query_scalar("SELECT datname::text FROM pg_database WHERE datname LIKE 'ft\\_%'")
        .fetch_all(&mut *conn)
        .await
        .unwrap();
    for name in names {
        let pid = name.split('_').nth(1).and_then(|p| p.parse::<u32>().ok());
        if pid.is_some_and(|p| !std::path::Path::new(&format!("/proc/{p}")).exists()) {
            // Our own generated names; identifiers cannot be bound.
            let sql = format!("DROP DATABASE IF EXISTS \"{}\" WITH (FORCE)", generated_name(&name));
            let _ = sqlx::raw_sql(sqlx::AssertSqlSafe(sql)).execute(&mut *conn).await;
        }
    }
}

/// Database names are made here from a pid and a UUID; CREATE/DROP DATABASE take
/// no bind parameters, so each name is checked to be exactly that before use.
fn generated_name(name: &str) -> &str {
    assert!(
        name.starts_with("ft_") && name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_'),
        "not a generated test database name: {name:?}"
    );
    name
}

async fn create_database(conn: &mut PgConnection, name: &str, template: Option<&str>) {
    let name = generated_name(name);
    let sql = match template {
        Some(t) => format!("CREATE DATABASE \"{name}\" TEMPLATE \"{}\"", generated_name(t)),
        None => format!("CREATE DATABASE \"{name}\""),
    };
    sqlx::raw_sql(sqlx::AssertSqlSafe(sql)).execute(conn).await.expect("create test database");
}

pub struct TestApp {
    pub base: String,
    pub addr: SocketAddr,
    pub client: Client,
    pub db: Database,
    pub state: AppState,
    pub clock: ManualClock,
    pub owner: PgConnectOptions,
    pub db_name: String,
    pub default_tenant: Uuid,
    pub data: Scratch,
}

impl TestApp {
    pub async fn spawn() -> TestApp {
        Self::spawn_with(|_| {}).await
    }

    /// Starts a server on a fresh database; `configure` adjusts the configuration.
    pub async fn spawn_with(configure: impl FnOnce(&mut Config)) -> TestApp {
        Self::spawn_with_addr(|config, _| configure(config)).await
    }

    /// A server whose public URL is `http://localhost:<its port>`: what
    /// browsers need for passkeys (a relying-party id cannot be an IP address).
    pub async fn spawn_on_localhost() -> TestApp {
        Self::spawn_with_addr(|config, addr| {
            config.public_url = Some(url::Url::parse(&format!("http://localhost:{}", addr.port())).unwrap());
        })
        .await
    }

    /// Starts a server on a fresh database; `configure` adjusts the
    /// configuration, knowing the address the server will listen on.
    pub async fn spawn_with_addr(configure: impl FnOnce(&mut Config, std::net::SocketAddr)) -> TestApp {
        Self::spawn_with_pool(5, configure).await
    }

    /// Starts a server whose database pool holds `connections` connections.
    pub async fn spawn_with_pool(
        connections: u32,
        configure: impl FnOnce(&mut Config, std::net::SocketAddr),
    ) -> TestApp {
        let cluster = cluster();
        let db_name = format!("ft_{}_{}", std::process::id(), Uuid::new_v4().simple());
        let mut admin = PgConnection::connect_with(&cluster.admin.clone().database("postgres")).await.unwrap();
        create_database(&mut admin, &db_name, Some(&cluster.template)).await;
        admin.close().await.ok();

        let owner = cluster.admin.clone().database(&db_name);
        let db = Database::connect(owner.clone().username("fortifile_app"), connections).await.unwrap();
        setup::verify_least_privilege(&db).await.expect("least privilege");
        let default_tenant = db.tenant_by_slug("default").await.unwrap().unwrap().id;

        // Each test keeps its data directory (master key file) and file storage
        // in a scratch directory of its own.
        let data = scratch_dir();
        let mut config = Config::from_lookup(|_| None).unwrap();
        config.data_dir = data.to_path_buf();
        config.storage = StorageSpec::Local(data.join("files"));
        // The clock does not move by itself here, so buckets would never
        // refill: the rate-limit tests turn the limits on themselves.
        config.rate_limit = None;
        config.anon_rate_limit = None;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        configure(&mut config, addr);
        let clock = ManualClock::new(OffsetDateTime::now_utc());
        let state = AppState::new(db.clone(), config, Arc::new(clock.clone())).await.expect("server state");
        tokio::spawn(app::serve(listener, state.clone(), std::future::pending()));
        TestApp {
            base: format!("http://{addr}"),
            addr,
            client: new_client(),
            db,
            state,
            clock,
            owner,
            db_name,
            default_tenant,
            data,
        }
    }

    /// The local file storage directory (unless the test configured S3).
    pub fn storage_dir(&self) -> std::path::PathBuf {
        self.data.join("files")
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// A URL for the `fortifile` binary's DATABASE_URL, naming this test's database.
    pub fn owner_url(&self) -> String {
        database_url(&self.db_name)
    }

    /// A connection as the owner (superuser on the embedded cluster: sees every tenant).
    pub async fn owner_conn(&self) -> PgConnection {
        PgConnection::connect_with(&self.owner).await.unwrap()
    }

    /// POSTs `body` as JSON to `path` with `self.client`, adding `headers`.
    pub async fn post_json(&self, path: &str, body: &Value, headers: &[(&str, &str)]) -> Response {
        let mut req = self.client.post(self.url(path)).json(body);
        for (name, value) in headers {
            req = req.header(*name, *value);
        }
        req.send().await.unwrap()
    }

    pub async fn register_with(&self, client: &Client, username: &str, password: &str) -> Response {
        client
            .post(self.url("/auth/register"))
            .json(&json!({ "username": username, "email": format!("{username}@example.org"), "password": password }))
            .send()
            .await
            .unwrap()
    }

    pub async fn register(&self, username: &str) -> Response {
        self.register_with(&self.client, username, PASSWORD).await
    }

    pub async fn login_with(&self, client: &Client, username: &str, password: &str) -> Response {
        client
            .post(self.url("/auth/login"))
            .json(&json!({ "username": username, "password": password }))
            .send()
            .await
            .unwrap()
    }

    /// Registers `username` and signs in with `self.client`; returns the CSRF token.
    pub async fn signed_in(&self, username: &str) -> String {
        assert_eq!(self.register(username).await.status(), StatusCode::CREATED);
        self.login_as(&self.client, username).await
    }

    /// Signs in an existing user with `client`; returns the CSRF token.
    pub async fn login_as(&self, client: &Client, username: &str) -> String {
        let res = self.login_with(client, username, PASSWORD).await;
        assert_eq!(res.status(), StatusCode::OK);
        let body: Value = res.json().await.unwrap();
        body["csrfToken"].as_str().unwrap().to_string()
    }

    pub async fn me(&self, client: &Client) -> StatusCode {
        client.get(self.url("/me")).send().await.unwrap().status()
    }

    /// Audit rows of `action`, oldest first, as (result, user_id, ip, user_agent, details).
    pub async fn audit(&self, action: &str) -> Vec<AuditRow> {
        let mut conn = self.owner_conn().await;
        sqlx::query_as(
            "SELECT result, user_id, host(ip) AS ip, user_agent, details, tenant_id, target_id FROM audit_logs \
             WHERE action = $1 ORDER BY created_at, id",
        )
        .bind(action)
        .fetch_all(&mut conn)
        .await
        .unwrap()
    }

    pub async fn user_id(&self, username: &str) -> Uuid {
        let mut conn = self.owner_conn().await;
        sqlx::query_scalar("SELECT id FROM users WHERE username = $1")
            .bind(username)
            .fetch_one(&mut conn)
            .await
            .unwrap()
    }
}

/// The Argon2 hash of [`PASSWORD`], computed once per test process.
async fn password_hash(app: &TestApp) -> String {
    static HASH: tokio::sync::OnceCell<String> = tokio::sync::OnceCell::const_new();
    HASH.get_or_init(|| async {
        let secret = secrecy::SecretString::from(PASSWORD.to_string());
        app.state.passwords.hash(&secret).await.unwrap()
    })
    .await
    .clone()
}

impl TestApp {
    /// Creates an active user in the default tenant directly (as the CLI would),
    /// with password [`PASSWORD`].
    pub async fn create_user(&self, username: &str, role: &str, department: &str, clearance: &str) -> Uuid {
        let hash = password_hash(self).await;
        let mut tx = self.db.tenant_tx(self.default_tenant, None).await.unwrap();
        let new = fortifile::auth::user::NewUser {
            username,
            email: &format!("{username}@example.org"),
            password_hash: &hash,
            status: "active",
            requested_role: None,
            role,
            department,
            clearance_level: clearance,
        };
        let id = fortifile::auth::user::create(&mut tx, &new).await.unwrap();
        tx.commit().await.unwrap();
        id
    }

    /// Signs `username` in with a client of its own.
    pub async fn session(&self, username: &str) -> Session {
        let client = new_client();
        let csrf = self.login_as(&client, username).await;
        Session { client, csrf, base: self.base.clone() }
    }

    /// A new user with `role` (General department, `clearance`), signed in.
    pub async fn signed_in_as(&self, username: &str, role: &str, clearance: &str) -> Session {
        self.create_user(username, role, "General", clearance).await;
        self.session(username).await
    }

    /// An administrator (role admin, clearance restricted), signed in.
    pub async fn admin(&self) -> Session {
        self.signed_in_as("root", "admin", "restricted").await
    }

    /// The id of the default tenant's role `name`.
    pub async fn role_id(&self, name: &str) -> Uuid {
        let mut conn = self.owner_conn().await;
        sqlx::query_scalar("SELECT id FROM roles WHERE tenant_id = $1 AND name = $2")
            .bind(self.default_tenant)
            .bind(name)
            .fetch_one(&mut conn)
            .await
            .unwrap()
    }

    /// How many audit rows of `action` exist.
    pub async fn audit_count(&self, action: &str) -> usize {
        self.audit(action).await.len()
    }
}

/// A signed-in client and its CSRF token.
pub struct Session {
    pub client: Client,
    pub csrf: String,
    pub base: String,
}

impl Session {
    /// Sends `method path` with an optional JSON body and the CSRF header;
    /// returns the status and the JSON body (`Null` when empty).
    pub async fn send(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> (StatusCode, Value) {
        let mut req = self.client.request(method, format!("{}{path}", self.base)).header("x-csrf-token", &self.csrf);
        if let Some(body) = body {
            req = req.json(&body);
        }
        let res = req.send().await.unwrap();
        let status = res.status();
        let text = res.text().await.unwrap();
        (status, if text.is_empty() { Value::Null } else { serde_json::from_str(&text).unwrap_or(Value::String(text)) })
    }

    pub async fn get(&self, path: &str) -> (StatusCode, Value) {
        self.send(reqwest::Method::GET, path, None).await
    }

    pub async fn post(&self, path: &str, body: Value) -> (StatusCode, Value) {
        self.send(reqwest::Method::POST, path, Some(body)).await
    }

    pub async fn put(&self, path: &str, body: Value) -> (StatusCode, Value) {
        self.send(reqwest::Method::PUT, path, Some(body)).await
    }

    pub async fn delete(&self, path: &str) -> (StatusCode, Value) {
        self.send(reqwest::Method::DELETE, path, None).await
    }

    pub async fn patch(&self, path: &str, body: Value) -> (StatusCode, Value) {
        self.send(reqwest::Method::PATCH, path, Some(body)).await
    }

    /// Uploads `bytes` as `name` to `POST /api/files`, with the optional
    /// `classification` and `department` parts first.
    pub async fn upload(
        &self,
        name: &str,
        bytes: &[u8],
        classification: Option<&str>,
        department: Option<&str>,
    ) -> (StatusCode, Value) {
        let mut form = reqwest::multipart::Form::new();
        if let Some(c) = classification {
            form = form.text("classification", c.to_string());
        }
        if let Some(d) = department {
            form = form.text("department", d.to_string());
        }
        let part = reqwest::multipart::Part::bytes(bytes.to_vec()).file_name(name.to_string());
        let res = self.post_form(form.part("file", part)).await.unwrap();
        let status = res.status();
        (status, res.json().await.unwrap_or(Value::Null))
    }

    /// POSTs a multipart `form` to `/api/files` with the CSRF header.
    pub async fn post_form(&self, form: reqwest::multipart::Form) -> reqwest::Result<Response> {
        self.client
            .post(format!("{}/api/files", self.base))
            .header("x-csrf-token", &self.csrf)
            .multipart(form)
            .send()
            .await
    }

    /// Uploads and returns the new file's id (the upload must succeed).
    pub async fn upload_ok(&self, name: &str, bytes: &[u8], classification: Option<&str>) -> Uuid {
        let (status, body) = self.upload(name, bytes, classification, None).await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
        body["file"]["id"].as_str().unwrap().parse().unwrap()
    }

    /// Starts an upload whose body the test feeds chunk by chunk through the
    /// returned sender (dropping it ends the body); the task answers the status.
    pub fn held_upload(
        &self,
        name: &str,
    ) -> (tokio::sync::mpsc::Sender<Result<Vec<u8>, std::io::Error>>, tokio::task::JoinHandle<StatusCode>) {
        let (tx, rx) = tokio::sync::mpsc::channel::<Result<Vec<u8>, std::io::Error>>(2);
        let stream = futures::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|item| (item, rx)) });
        let part = reqwest::multipart::Part::stream(reqwest::Body::wrap_stream(stream)).file_name(name.to_string());
        let form = reqwest::multipart::Form::new().part("file", part);
        let (client, url, csrf) = (self.client.clone(), format!("{}/api/files", self.base), self.csrf.clone());
        let task = tokio::spawn(async move {
            client.post(url).header("x-csrf-token", csrf).multipart(form).send().await.unwrap().status()
        });
        (tx, task)
    }

    /// `GET /api/files/{id}/download`.
    pub async fn download(&self, id: Uuid) -> Response {
        self.client.get(format!("{}/api/files/{id}/download", self.base)).send().await.unwrap()
    }
}

#[derive(Debug, sqlx::FromRow)]
pub struct AuditRow {
    pub result: String,
    pub user_id: Option<Uuid>,
    pub ip: Option<String>,
    pub user_agent: Option<String>,
    pub details: Value,
    pub tenant_id: Uuid,
    pub target_id: Option<String>,
}

/// Hex SHA-256 of `bytes`.
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(ring::digest::digest(&ring::digest::SHA256, bytes).as_ref())
}

/// Every stored object under `app`'s local storage directory.
pub fn stored_objects(app: &TestApp) -> Vec<std::path::PathBuf> {
    fn walk(dir: &std::path::Path, out: &mut Vec<std::path::PathBuf>) {
        for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
            let path = entry.path();
            if path.is_dir() { walk(&path, out) } else { out.push(path) }
        }
    }
    let mut out = Vec::new();
    walk(&app.storage_dir(), &mut out);
    out
}

pub fn new_client() -> Client {
    Client::builder().cookie_store(true).user_agent("fortifile-tests/1").build().unwrap()
}

/// Seals `tenant`'s audit rows until none is left unsealed (other tests'
/// transactions on the same cluster can hold the sealing horizon back a while).
#[allow(dead_code)]
pub async fn seal_everything(db: &Database, tenant: Uuid) {
    for _ in 0..600 {
        fortifile::audit::chain::seal(db, tenant).await.unwrap();
        let mut tx = db.tenant_tx(tenant, None).await.unwrap();
        let (left, _) = fortifile::audit::chain::unsealed(&mut tx).await.unwrap();
        tx.commit().await.unwrap();
        if left == 0 {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    panic!("audit rows of {tenant} stayed unsealed");
}

//! Several `fortifile serve` processes on one database and one S3 store
//! (moto), optionally behind Debian's nginx: what issue 17's scale-out tests
//! drive. Every instance logs JSON lines to a file of its own.

use std::{
    path::PathBuf,
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use reqwest::StatusCode;
use serde_json::{Value, json};
use sqlx::postgres::PgConnectOptions;

use super::{PASSWORD, Scratch, moto::S3Server, scratch_dir};

pub const BUCKET: &str = "fleet";
/// How long each instance drains on SIGTERM in these tests.
pub const DRAIN_SECONDS: u64 = 2;

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

pub struct Instance {
    pub port: u16,
    pub metrics_port: u16,
    pub log: PathBuf,
    child: Option<Child>,
}

impl Instance {
    pub fn base(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }
}

pub struct Fleet {
    /// `None`: the instances run on the embedded cluster under the data directory.
    pub database_url: Option<String>,
    pub owner: PgConnectOptions,
    pub data: Scratch,
    /// `None`: local storage under the data directory (`files/`).
    pub s3: Option<S3Server>,
    pub instances: Vec<Instance>,
}

impl Fleet {
    /// `n` instances on a new, empty database of the test cluster and one
    /// moto bucket, none started yet.
    pub async fn new(n: usize) -> Fleet {
        let (database_url, owner) = super::empty_database().await;
        let s3 = S3Server::start().await;
        s3.create_bucket(BUCKET).await;
        Self::with(n, Some(database_url), |_| owner, Some(s3))
    }

    /// One instance that owns its embedded PostgreSQL (started by `serve`
    /// under the data directory), with local storage: what a single-machine
    /// installation runs.
    pub fn embedded() -> Fleet {
        Self::with(
            1,
            None,
            |data| {
                PgConnectOptions::new()
                    .socket(data.join("postgres"))
                    .port(5432)
                    .username("postgres")
                    .database("fortifile")
            },
            None,
        )
    }

    /// One instance on a new database of the test cluster, with local storage.
    pub async fn local() -> Fleet {
        let (database_url, owner) = super::empty_database().await;
        Self::with(1, Some(database_url), |_| owner, None)
    }

    fn with(
        n: usize,
        database_url: Option<String>,
        owner: impl FnOnce(&std::path::Path) -> PgConnectOptions,
        s3: Option<S3Server>,
    ) -> Fleet {
        let data = scratch_dir();
        let instances = (0..n)
            .map(|i| Instance {
                port: free_port(),
                metrics_port: free_port(),
                log: data.join(format!("instance-{i}.log")),
                child: None,
            })
            .collect();
        let owner = owner(&data);
        Fleet { database_url, owner, data, s3, instances }
    }

    /// The local storage directory (when not on S3).
    pub fn storage_dir(&self) -> PathBuf {
        self.data.join("files")
    }

    fn database(&self, cmd: &mut Command) {
        match &self.database_url {
            Some(url) => cmd.env("DATABASE_URL", url),
            None => cmd.env_remove("DATABASE_URL"),
        };
        cmd.env_remove("FORTIFILE_APP_DATABASE_URL");
    }

    /// `fortifile audit verify` on the fleet's database: whether it passed, and what it printed.
    pub fn audit_verify(&self) -> (bool, String) {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_fortifile"));
        cmd.args(["audit", "verify"])
            .current_dir(&*self.data)
            .env("FORTIFILE_DATA_DIR", &*self.data)
            .env("RUST_LOG", "warn");
        self.database(&mut cmd);
        let out = cmd.output().unwrap();
        (
            out.status.success(),
            format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr)),
        )
    }

    /// The process id of running instance `i`.
    pub fn pid(&self, i: usize) -> u32 {
        self.instances[i].child.as_ref().expect("running").id()
    }

    /// SIGKILL to instance `i`, and wait for it to be gone.
    pub async fn kill(&mut self, i: usize) {
        let mut child = self.instances[i].child.take().expect("running");
        let _ = child.kill();
        tokio::task::spawn_blocking(move || child.wait().unwrap()).await.unwrap();
    }

    fn command(&self, i: usize) -> Command {
        let inst = &self.instances[i];
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_fortifile"));
        self.database(&mut cmd);
        cmd.arg("serve")
            .current_dir(&*self.data)
            .env("FORTIFILE_BIND", format!("127.0.0.1:{}", inst.port))
            .env("FORTIFILE_METRICS_BIND", format!("127.0.0.1:{}", inst.metrics_port))
            .env("FORTIFILE_LOG_FORMAT", "json")
            .env("FORTIFILE_SHUTDOWN_DRAIN_SECONDS", DRAIN_SECONDS.to_string())
            // One data directory for all: the key files are created once, by
            // whichever instance gets there first, and read by the others.
            .env("FORTIFILE_DATA_DIR", &*self.data)
            .env("FORTIFILE_TRUSTED_PROXIES", "127.0.0.1/32")
            .env("FORTIFILE_RATE_LIMIT", "0")
            .env("FORTIFILE_ANON_RATE_LIMIT", "0")
            .env("FORTIFILE_REGISTRATION_LIMIT", "100000/1")
            .env("FORTIFILE_DB_POOL_SIZE", "6")
            // Each answered request logs a line in its span (with its id).
            .env("RUST_LOG", "info,sqlx=warn,tower_http::trace=debug")
            .env_remove("FORTIFILE_MASTER_KEY")
            .env_remove("FORTIFILE_AUDIT_SIGNING_KEY")
            .stdin(Stdio::null())
            .stdout(Stdio::null());
        match &self.s3 {
            Some(s3) => cmd
                .env("FORTIFILE_STORAGE", format!("s3://{BUCKET}/docs"))
                .env("AWS_ENDPOINT_URL", &s3.endpoint)
                .env("AWS_ACCESS_KEY_ID", "testing")
                .env("AWS_SECRET_ACCESS_KEY", "testing")
                .env("AWS_REGION", "us-east-1")
                .env("AWS_ALLOW_HTTP", "true"),
            None => cmd.env("FORTIFILE_STORAGE", format!("file://{}", self.storage_dir().display())),
        };
        cmd
    }

    /// Starts instance `i` (its log appended to).
    pub fn start(&mut self, i: usize) {
        let log = std::fs::OpenOptions::new().create(true).append(true).open(&self.instances[i].log).unwrap();
        let child = self.command(i).stderr(log).spawn().expect("start fortifile serve");
        self.instances[i].child = Some(child);
    }

    /// Waits until instance `i` answers 200 on `/readyz`.
    pub async fn wait_ready(&mut self, i: usize) {
        let client = reqwest::Client::new();
        let url = format!("{}/readyz", self.instances[i].base());
        let started = Instant::now();
        loop {
            if let Ok(res) = client.get(&url).send().await
                && res.status() == StatusCode::OK
            {
                return;
            }
            let child = self.instances[i].child.as_mut().expect("started");
            if let Some(status) = child.try_wait().unwrap() {
                panic!("instance {i} exited ({status}): {}", self.log_text(i));
            }
            assert!(started.elapsed() < Duration::from_secs(90), "instance {i} never became ready");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Sends SIGTERM to instance `i`; returns its exit status once it is gone.
    pub async fn terminate(&mut self, i: usize) -> std::process::ExitStatus {
        self.sigterm(i);
        self.wait_exit(i).await
    }

    pub fn sigterm(&self, i: usize) {
        let child = self.instances[i].child.as_ref().expect("running");
        Command::new("kill").args(["-TERM", &child.id().to_string()]).status().unwrap();
    }

    pub async fn wait_exit(&mut self, i: usize) -> std::process::ExitStatus {
        let mut child = self.instances[i].child.take().expect("running");
        tokio::task::spawn_blocking(move || child.wait().unwrap()).await.unwrap()
    }

    pub fn log_text(&self, i: usize) -> String {
        std::fs::read_to_string(&self.instances[i].log).unwrap_or_default()
    }

    /// Every line instance `i` logged, parsed (each one must be JSON).
    pub fn log_lines(&self, i: usize) -> Vec<Value> {
        self.log_text(i)
            .lines()
            .map(|l| {
                serde_json::from_str(l).unwrap_or_else(|_| panic!("instance {i} logged a line that is not JSON: {l}"))
            })
            .collect()
    }

    /// Creates the first administrator with the binary (as an operator would).
    pub fn create_admin(&self) {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_fortifile"));
        cmd.args(["create-admin", "--username", "admin", "--email", "admin@example.org"])
            .current_dir(&*self.data)
            .env("FORTIFILE_DATA_DIR", &*self.data)
            .env("FORTIFILE_ADMIN_PASSWORD", PASSWORD)
            .env("RUST_LOG", "warn");
        self.database(&mut cmd);
        let out = cmd.output().unwrap();
        assert!(out.status.success(), "create-admin: {}", String::from_utf8_lossy(&out.stderr));
    }
}

impl Drop for Fleet {
    fn drop(&mut self) {
        for inst in &mut self.instances {
            if let Some(mut child) = inst.child.take() {
                let _ = child.kill();
                let _ = child.wait();
            }
        }
        // An embedded cluster the killed server started would outlive it.
        if self.database_url.is_none() && self.pgdata().join("postmaster.pid").exists() {
            let _ = self.pg_ctl(&["stop", "-m", "immediate", "-w"]).status();
        }
    }
}

impl Fleet {
    /// The embedded cluster's data directory.
    pub fn pgdata(&self) -> PathBuf {
        self.data.join("postgres").join("data")
    }

    /// `pg_ctl ARGS -D <the embedded cluster>`, as the cluster's user when root.
    pub fn pg_ctl(&self, args: &[&str]) -> Command {
        let path: Vec<PathBuf> = std::env::split_paths(&std::env::var_os("PATH").unwrap_or_default()).collect();
        let bindir = fortifile::db::embedded::find_bindir(&path, None, std::path::Path::new("/usr/lib/postgresql"))
            .expect("PostgreSQL binaries");
        let mut cmd = if nix_is_root() {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--"]).arg(bindir.join("pg_ctl"));
            c
        } else {
            Command::new(bindir.join("pg_ctl"))
        };
        cmd.args(args).arg("-D").arg(self.pgdata()).stdout(Stdio::null()).stderr(Stdio::null());
        cmd
    }
}

fn nix_is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| s.lines().find(|l| l.starts_with("Uid:")).map(|l| l.split_whitespace().nth(1) == Some("0")))
        .unwrap_or(false)
}

/// A signed-in client of one base URL.
#[derive(Clone)]
pub struct Client {
    pub http: reqwest::Client,
    pub base: String,
    pub csrf: String,
}

impl Client {
    /// Signs `username` in at `base`.
    pub async fn sign_in(base: &str, username: &str) -> reqwest::Result<Client> {
        let http = super::new_client();
        let res = http
            .post(format!("{base}/auth/login"))
            .json(&json!({ "username": username, "password": PASSWORD }))
            .send()
            .await?
            .error_for_status()?;
        let csrf = res.json::<Value>().await?["csrfToken"].as_str().unwrap_or_default().to_string();
        Ok(Client { http, base: base.to_string(), csrf })
    }

    /// The same session (cookie jar) sent to another instance.
    pub fn at(&self, base: &str) -> Client {
        Client { base: base.to_string(), ..self.clone() }
    }

    pub async fn send(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> reqwest::Result<(StatusCode, Value)> {
        let mut req = self.http.request(method, format!("{}{path}", self.base)).header("x-csrf-token", &self.csrf);
        if let Some(b) = body {
            req = req.json(&b);
        }
        let res = req.send().await?;
        let status = res.status();
        Ok((status, res.json().await.unwrap_or(Value::Null)))
    }

    pub async fn get(&self, path: &str) -> reqwest::Result<(StatusCode, Value)> {
        self.send(reqwest::Method::GET, path, None).await
    }

    pub async fn post(&self, path: &str, body: Value) -> reqwest::Result<(StatusCode, Value)> {
        self.send(reqwest::Method::POST, path, Some(body)).await
    }

    pub async fn upload(&self, name: &str, bytes: Vec<u8>) -> reqwest::Result<(StatusCode, Value)> {
        let part = reqwest::multipart::Part::bytes(bytes).file_name(name.to_string());
        let res = self
            .http
            .post(format!("{}/api/files", self.base))
            .header("x-csrf-token", &self.csrf)
            .multipart(reqwest::multipart::Form::new().part("file", part))
            .send()
            .await?;
        let status = res.status();
        Ok((status, res.json().await.unwrap_or(Value::Null)))
    }

    /// The file's bytes, or the status that refused them.
    pub async fn download(&self, id: &str) -> reqwest::Result<Result<Vec<u8>, StatusCode>> {
        let res = self.http.get(format!("{}/api/files/{id}/download", self.base)).send().await?;
        if !res.status().is_success() {
            return Ok(Err(res.status()));
        }
        Ok(Ok(res.bytes().await?.to_vec()))
    }
}

/// Debian's nginx on a loopback port in front of `upstreams`, with passive
/// health checks and retries on the next instance; killed when dropped.
pub struct Nginx {
    child: Child,
    pub base: String,
    dir: Scratch,
}

impl Nginx {
    pub async fn start(upstreams: &[u16]) -> Nginx {
        let dir = scratch_dir();
        let port = free_port();
        for sub in ["body", "proxy", "fastcgi", "uwsgi", "scgi"] {
            std::fs::create_dir_all(dir.join(sub)).unwrap();
        }
        // Worker processes run as an unprivileged user when the test is root.
        Command::new("chmod").args(["-R", "a+rwx"]).arg(&*dir).status().unwrap();
        let servers: String =
            upstreams.iter().map(|p| format!("        server 127.0.0.1:{p} max_fails=1 fail_timeout=2s;\n")).collect();
        let d = dir.display();
        // docs/deploy.md's configuration, on loopback and without TLS, its
        // upstream keep-alive shorter than the instances' drain (2 s here).
        let conf = format!(
            "daemon off;\nworker_processes 1;\npid {d}/nginx.pid;\nerror_log {d}/error.log warn;\n\
             events {{ worker_connections 1024; }}\n\
             http {{\n    access_log off;\n\
                 client_body_temp_path {d}/body; proxy_temp_path {d}/proxy; fastcgi_temp_path {d}/fastcgi;\n\
                 uwsgi_temp_path {d}/uwsgi; scgi_temp_path {d}/scgi;\n\
                 upstream fortifile {{\n{servers}        keepalive 32;\n        keepalive_timeout 1s;\n    }}\n\
                 server {{\n        listen 127.0.0.1:{port};\n        client_max_body_size 101m;\n\
                     location / {{\n            proxy_pass http://fortifile;\n\
                         proxy_http_version 1.1;\n            proxy_set_header Connection \"\";\n\
                         proxy_set_header Host $host;\n\
                         proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;\n\
                         proxy_set_header X-Request-Id $request_id;\n\
                         proxy_buffering off;\n\
                         proxy_connect_timeout 2s;\n            proxy_read_timeout 60s;\n\
                         proxy_next_upstream error timeout http_502 http_503 non_idempotent;\n\
                         proxy_next_upstream_tries 3;\n\
                     }}\n    }}\n}}\n"
        );
        std::fs::write(dir.join("nginx.conf"), conf).unwrap();
        let child = Command::new("nginx")
            .arg("-c")
            .arg(dir.join("nginx.conf"))
            .arg("-p")
            .arg(&*dir)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("the scale-out test needs nginx (the README's test command installs nginx-light)");
        // Owned at once: dropped (killed and waited for) on every path.
        let nginx = Nginx { child, base: format!("http://127.0.0.1:{port}"), dir };
        let client = reqwest::Client::new();
        for _ in 0..100 {
            if client.get(format!("{}/healthz", nginx.base)).send().await.is_ok_and(|r| r.status().is_success()) {
                return nginx;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("nginx did not start: {}", std::fs::read_to_string(nginx.dir.join("error.log")).unwrap_or_default());
    }
}

impl Nginx {
    /// Lines of nginx's error log naming an upstream it could not use (and
    /// passed the request on from).
    pub fn upstream_errors(&self) -> usize {
        let log = std::fs::read_to_string(self.dir.join("error.log")).unwrap_or_default();
        log.lines().filter(|l| l.contains("upstream")).count()
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

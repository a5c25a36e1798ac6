//! A moto S3 server (PyPI `moto[server]`, installed by the README's test
//! command) on a free loopback port: a real S3-compatible server, never a mock.

use std::{
    process::{Child, Command, Stdio},
    time::Duration,
};

/// A moto S3 server on a free loopback port, killed when dropped.
pub struct S3Server {
    child: Child,
    port: u16,
    pub endpoint: String,
}

impl S3Server {
    pub async fn start() -> S3Server {
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let server = S3Server { child: spawn(port), port, endpoint: format!("http://127.0.0.1:{port}") };
        server.wait().await;
        server
    }

    async fn wait(&self) {
        let client = reqwest::Client::new();
        for _ in 0..300 {
            if client.get(format!("{}/", self.endpoint)).send().await.is_ok() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("moto's S3 server did not start on {}", self.endpoint);
    }

    /// Kills the server: the store is gone (and, moto keeping everything in
    /// memory, its contents with it).
    pub fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// A new, empty server on the same port.
    pub async fn restart(&mut self) {
        self.child = spawn(self.port);
        self.wait().await;
    }

    pub async fn create_bucket(&self, bucket: &str) {
        let res = reqwest::Client::new().put(format!("{}/{bucket}", self.endpoint)).send().await.unwrap();
        assert!(res.status().is_success(), "creating bucket: {}", res.status());
    }

    /// The keys in `bucket` (a raw ListObjectsV2, outside FortiFile).
    pub async fn keys(&self, bucket: &str) -> Vec<String> {
        let xml = reqwest::get(format!("{}/{bucket}?list-type=2", self.endpoint)).await.unwrap().text().await.unwrap();
        xml.split("<Key>").skip(1).filter_map(|s| s.split_once("</Key>").map(|(k, _)| k.to_string())).collect()
    }

    pub async fn get_raw(&self, bucket: &str, key: &str) -> Vec<u8> {
        reqwest::get(format!("{}/{bucket}/{key}", self.endpoint)).await.unwrap().bytes().await.unwrap().to_vec()
    }

    pub async fn put_raw(&self, bucket: &str, key: &str, bytes: Vec<u8>) {
        let res =
            reqwest::Client::new().put(format!("{}/{bucket}/{key}", self.endpoint)).body(bytes).send().await.unwrap();
        assert!(res.status().is_success());
    }
}

impl Drop for S3Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn spawn(port: u16) -> Child {
    // The interpreter .ci/run installs into first; a `moto_server` script otherwise.
    let has_module = Command::new("python3")
        .args(["-c", "import moto.server"])
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    let mut command = if has_module {
        let mut c = Command::new("python3");
        c.args(["-m", "moto.server"]);
        c
    } else {
        Command::new("moto_server")
    };
    command
        .args(["-H", "127.0.0.1", "-p", &port.to_string()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("the S3 tests need moto's server: pip install 'moto[server]' (.ci/run installs it)")
}

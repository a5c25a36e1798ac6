//! The S3 backend against a real S3-compatible server: moto's server (PyPI
//! `moto[server]`, installed by .ci/run), started on a loopback port by each
//! test. Nothing here mocks the client: the server speaks the S3 protocol and
//! FortiFile talks to it through `object_store`'s S3 client, as in production.

mod common;

use std::{
    process::{Child, Command, Stdio},
    time::Duration,
};

use common::{TestApp, sha256_hex};
use fortifile::config::{S3Settings, StorageSpec};
use reqwest::StatusCode;
use uuid::Uuid;

/// A moto S3 server on a free loopback port, killed when dropped.
struct S3Server {
    child: Child,
    endpoint: String,
}

impl S3Server {
    async fn start() -> S3Server {
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
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
        let child = command
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("the S3 tests need moto's server: pip install 'moto[server]' (.ci/run installs it)");
        let endpoint = format!("http://127.0.0.1:{port}");
        let server = S3Server { child, endpoint };
        let client = reqwest::Client::new();
        for _ in 0..300 {
            if client.get(format!("{}/", server.endpoint)).send().await.is_ok() {
                return server;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("moto's S3 server did not start on {}", server.endpoint);
    }

    async fn create_bucket(&self, bucket: &str) {
        let res = reqwest::Client::new().put(format!("{}/{bucket}", self.endpoint)).send().await.unwrap();
        assert!(res.status().is_success(), "creating bucket: {}", res.status());
    }

    /// The keys in `bucket` (a raw ListObjectsV2, outside FortiFile).
    async fn keys(&self, bucket: &str) -> Vec<String> {
        let xml = reqwest::get(format!("{}/{bucket}?list-type=2", self.endpoint)).await.unwrap().text().await.unwrap();
        xml.split("<Key>").skip(1).filter_map(|s| s.split_once("</Key>").map(|(k, _)| k.to_string())).collect()
    }

    async fn get_raw(&self, bucket: &str, key: &str) -> Vec<u8> {
        reqwest::get(format!("{}/{bucket}/{key}", self.endpoint)).await.unwrap().bytes().await.unwrap().to_vec()
    }

    async fn put_raw(&self, bucket: &str, key: &str, bytes: Vec<u8>) {
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

const BUCKET: &str = "fortifile-test";

async fn app_on_s3(server: &S3Server) -> TestApp {
    server.create_bucket(BUCKET).await;
    let endpoint = server.endpoint.clone();
    TestApp::spawn_with(move |c| {
        c.storage = StorageSpec::S3 {
            bucket: BUCKET.into(),
            prefix: "docs/prod".into(),
            settings: S3Settings(vec![
                ("AWS_ENDPOINT_URL", endpoint),
                ("AWS_ACCESS_KEY_ID", "testing".into()),
                ("AWS_SECRET_ACCESS_KEY", "testing".into()),
                ("AWS_REGION", "us-east-1".into()),
            ]),
        }
    })
    .await
}

#[tokio::test]
async fn files_upload_download_and_delete_on_an_s3_compatible_server() {
    let server = S3Server::start().await;
    let app = app_on_s3(&server).await;
    let staff = app.signed_in_as("carol", "staff", "confidential").await;
    let marker = format!("S3MARKER-{}", Uuid::new_v4());
    let data = format!("{marker} ").repeat(20_000).into_bytes();
    let (status, body) = staff.upload("report.txt", &data, Some("confidential"), None).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    assert_eq!(body["file"]["sha256"], sha256_hex(&data));
    let id: Uuid = body["file"]["id"].as_str().unwrap().parse().unwrap();

    let keys = server.keys(BUCKET).await;
    assert_eq!(keys.len(), 1, "{keys:?}");
    assert!(keys[0].starts_with(&format!("docs/prod/{}/", app.default_tenant)), "{keys:?}");
    let raw = server.get_raw(BUCKET, &keys[0]).await;
    assert!(!raw.windows(marker.len()).any(|w| w == marker.as_bytes()), "only ciphertext reaches the bucket");

    let res = staff.download(id).await;
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(sha256_hex(&res.bytes().await.unwrap()), sha256_hex(&data));

    let (status, _) = staff.delete(&format!("/api/files/{id}")).await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    assert!(server.keys(BUCKET).await.is_empty(), "the object is deleted from the bucket");
}

#[tokio::test]
async fn a_multi_part_upload_to_s3_round_trips_and_a_tampered_object_fails() {
    let server = S3Server::start().await;
    let app = app_on_s3(&server).await;
    let staff = app.signed_in_as("carol", "staff", "public").await;
    // Larger than two 5 MiB parts.
    let data: Vec<u8> = (0..12 * 1024 * 1024u32).map(|i| (i.wrapping_mul(2654435761) >> 24) as u8).collect();
    let id = staff.upload_ok("big.bin", &data, None).await;
    let res = staff.download(id).await;
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(sha256_hex(&res.bytes().await.unwrap()), sha256_hex(&data));

    let key = server.keys(BUCKET).await.pop().unwrap();
    let mut raw = server.get_raw(BUCKET, &key).await;
    raw[40] ^= 0x01; // inside the first segment
    server.put_raw(BUCKET, &key, raw).await;
    let res = staff.download(id).await;
    assert_eq!(res.status(), StatusCode::INTERNAL_SERVER_ERROR);
    let fail = app.audit("file.download").await.into_iter().find(|r| r.result == "fail").unwrap();
    assert_eq!(fail.details["reason"], "integrity_check_failed");
}

#[tokio::test]
async fn an_aborted_upload_leaves_no_object_in_the_bucket() {
    let server = S3Server::start().await;
    let app = app_on_s3(&server).await;
    let staff = app.signed_in_as("carol", "staff", "public").await;
    let chunks: Vec<Result<Vec<u8>, std::io::Error>> =
        vec![Ok(vec![1u8; 3 << 20]), Ok(vec![2u8; 3 << 20]), Err(std::io::Error::other("client went away"))];
    let part = reqwest::multipart::Part::stream(reqwest::Body::wrap_stream(futures::stream::iter(chunks)))
        .file_name("big.bin");
    let form = reqwest::multipart::Form::new().part("file", part);
    let result = staff.post_form(form).await;
    assert!(result.is_err() || !result.unwrap().status().is_success());
    // The multipart upload itself is aborted, not only left incomplete.
    let mut pending = String::new();
    for _ in 0..50 {
        pending = reqwest::get(format!("{}/{BUCKET}?uploads", server.endpoint)).await.unwrap().text().await.unwrap();
        if !pending.contains("<Upload>") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(!pending.contains("<Upload>"), "{pending}");
    assert!(server.keys(BUCKET).await.is_empty());
    let rows: i64 =
        sqlx::query_scalar("SELECT count(*) FROM files").fetch_one(&mut app.owner_conn().await).await.unwrap();
    assert_eq!(rows, 0);
}

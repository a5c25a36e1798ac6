//! The S3 backend against a real S3-compatible server: moto's server (PyPI
//! `moto[server]`, installed by .ci/run), started on a loopback port by each
//! test. Nothing here mocks the client: the server speaks the S3 protocol and
//! FortiFile talks to it through `object_store`'s S3 client, as in production.

mod common;

use std::time::Duration;

use common::{TestApp, moto::S3Server, sha256_hex};
use fortifile::config::{S3Settings, StorageSpec};
use reqwest::StatusCode;
use uuid::Uuid;

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

//! Streaming both ways: a 1 GiB upload and its download must not grow the
//! process's resident memory by more than a few tens of MiB. This binary holds
//! one test so that nothing else runs in the process while it measures; the
//! client (reqwest, streaming a generated body and hashing the download) runs in
//! the same process, so the bound covers both ends.

mod common;

use std::{
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::Duration,
};

use common::TestApp;
use futures::StreamExt;
use reqwest::StatusCode;

const GIB: u64 = 1 << 30;
const CHUNK: usize = 256 * 1024;
/// "A few tens of MiB".
const MAX_GROWTH: u64 = 64 << 20;

fn rss_bytes() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let line = status.lines().find(|l| l.starts_with("VmRSS:")).unwrap();
    line.split_whitespace().nth(1).unwrap().parse::<u64>().unwrap() * 1024
}

/// Samples RSS every 10 ms until stopped; returns the peak.
fn sample_peak(stop: Arc<AtomicBool>) -> std::thread::JoinHandle<u64> {
    let peak = Arc::new(AtomicU64::new(0));
    std::thread::spawn(move || {
        while !stop.load(Ordering::Relaxed) {
            peak.fetch_max(rss_bytes(), Ordering::Relaxed);
            std::thread::sleep(Duration::from_millis(10));
        }
        peak.load(Ordering::Relaxed)
    })
}

fn chunk(i: u64) -> Vec<u8> {
    let seed = (i as u8).wrapping_mul(31);
    (0..CHUNK).map(|j| seed.wrapping_add(j as u8)).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_one_gib_upload_and_download_stream_in_bounded_memory() {
    let app = TestApp::spawn_with(|c| c.max_upload_bytes = 2 * GIB).await;
    let staff = app.signed_in_as("carol", "staff", "public").await;
    // Warm up the pools and allocator on a small file first.
    staff.upload_ok("warm.bin", &chunk(0), None).await;
    let baseline = rss_bytes();

    let stop = Arc::new(AtomicBool::new(false));
    let sampler = sample_peak(stop.clone());
    let chunks = GIB / CHUNK as u64;
    let mut expected = ring::digest::Context::new(&ring::digest::SHA256);
    for i in 0..chunks {
        expected.update(&chunk(i));
    }
    let expected = hex::encode(expected.finish().as_ref());
    let body = futures::stream::iter(0..chunks).map(|i| Ok::<_, std::io::Error>(chunk(i)));
    let part = reqwest::multipart::Part::stream_with_length(reqwest::Body::wrap_stream(body), GIB).file_name("big.bin");
    let form = reqwest::multipart::Form::new().part("file", part);
    let res = staff.post_form(form).await.unwrap();
    assert_eq!(res.status(), StatusCode::CREATED);
    let file: serde_json::Value = res.json().await.unwrap();
    assert_eq!(file["file"]["sha256"], expected);
    assert_eq!(file["file"]["size"], GIB);
    let id: uuid::Uuid = file["file"]["id"].as_str().unwrap().parse().unwrap();

    let res = staff.download(id).await;
    assert_eq!(res.status(), StatusCode::OK);
    let mut got = ring::digest::Context::new(&ring::digest::SHA256);
    let mut size = 0u64;
    let mut stream = res.bytes_stream();
    while let Some(piece) = stream.next().await {
        let piece = piece.unwrap();
        size += piece.len() as u64;
        got.update(&piece);
    }
    stop.store(true, Ordering::Relaxed);
    let peak = sampler.join().unwrap();
    assert_eq!(size, GIB);
    assert_eq!(hex::encode(got.finish().as_ref()), expected);
    let growth = peak.saturating_sub(baseline);
    eprintln!("RSS baseline {} MiB, peak {} MiB, growth {} MiB", baseline >> 20, peak >> 20, growth >> 20);
    assert!(growth < MAX_GROWTH, "memory grew by {} MiB", growth >> 20);
}

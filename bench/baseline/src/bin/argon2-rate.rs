//! The raw-Argon2id baseline of bench/run: as many threads as FortiFile's
//! hashing permits (the CPU count) verifying a password with FortiFile's
//! parameters (m = 19 MiB, t = 2, p = 1) for SECONDS; prints verifications per
//! second. `argon2-rate SECONDS [THREADS]`.

use std::{
    sync::atomic::{AtomicU64, Ordering},
    time::{Duration, Instant},
};

use argon2::{Algorithm, Argon2, Params, Version};

fn main() {
    let seconds: u64 = std::env::args().nth(1).and_then(|s| s.parse().ok()).unwrap_or(5);
    let threads: usize = std::env::args()
        .nth(2)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| std::thread::available_parallelism().map(|n| n.get()).unwrap_or(2));
    let params = Params::new(19 * 1024, 2, 1, Some(32)).expect("params");
    let done = AtomicU64::new(0);
    let until = Instant::now() + Duration::from_secs(seconds);
    std::thread::scope(|scope| {
        for _ in 0..threads {
            scope.spawn(|| {
                let argon = Argon2::new(Algorithm::Argon2id, Version::V0x13, params.clone());
                let mut out = [0u8; 32];
                while Instant::now() < until {
                    argon.hash_password_into(b"violet staple orbit lantern", b"sixteen byte salt", &mut out).expect("hash");
                    done.fetch_add(1, Ordering::Relaxed);
                }
            });
        }
    });
    println!("{:.1}", done.load(Ordering::Relaxed) as f64 / seconds as f64);
}

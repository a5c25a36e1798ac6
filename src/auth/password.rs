//! Password hashing (Argon2id) and the password policy (NIST SP 800-63B).
//!
//! Hashing runs on the blocking pool behind a semaphore sized to the CPU count, so
//! a login storm queues for the hasher instead of starving the async executor or
//! exhausting memory. Each permit owns one preallocated 19 MiB block of Argon2
//! memory, reused by every hash made under it: the process holds exactly that
//! much however many logins arrive (allocating per hash left each blocking
//! thread's freed 19 MiB behind in its allocator arena, 300 MiB after a storm).

use std::sync::{Arc, Mutex};

use anyhow::Context;
use argon2::{
    Algorithm, Argon2, Block, Params, Version,
    password_hash::phc::{Output, ParamsString, PasswordHash, Salt},
};
use ring::rand::SecureRandom;
use secrecy::{ExposeSecret, SecretString};
use tokio::sync::Semaphore;

/// OWASP's minimum for Argon2id: m = 19 MiB, t = 2, p = 1.
const M_COST_KIB: u32 = 19 * 1024;
const T_COST: u32 = 2;
const P_COST: u32 = 1;
const SALT_LEN: usize = 16;
const OUTPUT_LEN: usize = 32;

pub const MIN_CHARS: usize = 8;
/// Bounds the hashing cost; 64 characters of any script fit well inside.
pub const MAX_BYTES: usize = 1024;

fn params() -> Params {
    // The constants above are valid parameters; `Params::new` cannot fail on them.
    Params::new(M_COST_KIB, T_COST, P_COST, Some(OUTPUT_LEN)).unwrap_or_default()
}

fn argon2() -> Argon2<'static> {
    Argon2::new(Algorithm::Argon2id, Version::V0x13, params())
}

/// One hasher's working memory: `m` KiB of Argon2 blocks.
type Memory = Vec<Block>;

/// One hash waiting for or holding a permit, counted in the Argon2 queue
/// metric until dropped (also when its caller gives up while waiting).
struct Queued;

impl Queued {
    fn new() -> Queued {
        crate::telemetry::argon2_queue(1.0);
        Queued
    }
}

impl Drop for Queued {
    fn drop(&mut self) {
        crate::telemetry::argon2_queue(-1.0);
    }
}

/// Hashes and verifies passwords off the async executor.
#[derive(Clone)]
pub struct Passwords {
    permits: Arc<Semaphore>,
    /// One block of working memory per permit: a holder of a permit always finds one.
    memory: Arc<Mutex<Vec<Memory>>>,
    /// A real hash of a random password, verified against when the user is
    /// unknown so that path costs the same as a wrong password.
    dummy_hash: Arc<str>,
}

impl std::fmt::Debug for Passwords {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Passwords").field("permits", &self.permits.available_permits()).finish()
    }
}

impl Passwords {
    pub async fn new() -> anyhow::Result<Self> {
        let parallel = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(2);
        let blocks = params().block_count();
        let memory: Vec<Memory> = (0..parallel).map(|_| vec![Block::default(); blocks]).collect();
        let passwords = Passwords {
            permits: Arc::new(Semaphore::new(parallel)),
            memory: Arc::new(Mutex::new(memory)),
            dummy_hash: Arc::from(""),
        };
        let random = SecretString::from(uuid::Uuid::new_v4().to_string());
        let dummy_hash = passwords.hash(&random).await?;
        Ok(Passwords { dummy_hash: dummy_hash.into(), ..passwords })
    }

    /// Runs `work` on the blocking pool with a permit and its memory. The
    /// permit travels with the work, so it is released only when the work is
    /// done (not when a caller that gave up drops its future), and the memory
    /// goes back to the pool however the work ends.
    async fn with_memory<T: Send + 'static>(
        &self,
        work: impl FnOnce(&mut Memory) -> T + Send + 'static,
    ) -> anyhow::Result<T> {
        let queued = Queued::new();
        let permit = self.permits.clone().acquire_owned().await.context("password hasher closed")?;
        let pool = self.memory.clone();
        tokio::task::spawn_blocking(move || {
            let (_permit, _queued) = (permit, queued);
            let taken = pool.lock().unwrap_or_else(|e| e.into_inner()).pop();
            // Never empty while permits and blocks are paired; should it be, a
            // block of its own (returned to the pool after) keeps the hash going.
            let memory = taken.unwrap_or_else(|| vec![Block::default(); params().block_count()]);
            let mut lent = Lent { memory: Some(memory), pool };
            Ok(work(lent.memory.as_mut().expect("lent memory")))
        })
        .await
        .context("hashing task panicked")?
    }

    /// Hashes `password` into a PHC string.
    pub async fn hash(&self, password: &SecretString) -> anyhow::Result<String> {
        let password = password.clone();
        self.with_memory(move |memory| hash_into(memory, password.expose_secret())).await?
    }

    /// Verifies `password` against `stored`; with no stored hash (unknown user) it
    /// spends the same work on the dummy hash and answers false.
    pub async fn verify(&self, password: &SecretString, stored: Option<&str>) -> anyhow::Result<bool> {
        let known = stored.is_some();
        let phc = stored.unwrap_or(&self.dummy_hash).to_string();
        let password = password.clone();
        let matched = self.with_memory(move |memory| verify_with(memory, password.expose_secret(), &phc)).await?;
        Ok(known && matched)
    }
}

/// Working memory on loan from the pool; it goes back when dropped, also
/// when the work panicked.
struct Lent {
    memory: Option<Memory>,
    pool: Arc<Mutex<Vec<Memory>>>,
}

impl Drop for Lent {
    fn drop(&mut self) {
        if let Some(memory) = self.memory.take() {
            self.pool.lock().unwrap_or_else(|e| e.into_inner()).push(memory);
        }
    }
}

fn hash_into(memory: &mut Memory, password: &str) -> anyhow::Result<String> {
    let mut salt = [0u8; SALT_LEN];
    ring::rand::SystemRandom::new()
        .fill(&mut salt)
        .map_err(|_| anyhow::anyhow!("the system random generator failed"))?;
    let mut out = [0u8; OUTPUT_LEN];
    argon2()
        .hash_password_into_with_memory(password.as_bytes(), &salt, &mut out, memory.as_mut_slice())
        .map_err(|e| anyhow::anyhow!("argon2 hashing failed: {e}"))?;
    let hash = PasswordHash {
        algorithm: Algorithm::Argon2id.ident(),
        version: Some(Version::V0x13.into()),
        params: ParamsString::try_from(&params()).map_err(|e| anyhow::anyhow!("argon2 parameters: {e}"))?,
        salt: Some(Salt::new(&salt).map_err(|e| anyhow::anyhow!("encoding a salt: {e}"))?),
        hash: Some(Output::new(&out).map_err(|e| anyhow::anyhow!("encoding a hash: {e}"))?),
    };
    Ok(hash.to_string())
}

/// Recomputes `phc`'s hash of `password` in `memory` and compares in constant
/// time. A hash made with more memory than ours (another deployment's) is
/// checked with memory of its own.
fn verify_with(memory: &mut Memory, password: &str, phc: &str) -> bool {
    let Ok(parsed) = PasswordHash::new(phc) else { return false };
    let (Some(salt), Some(expected)) = (&parsed.salt, &parsed.hash) else { return false };
    let (Ok(params), Ok(algorithm)) = (Params::try_from(&parsed), Algorithm::try_from(parsed.algorithm.as_str()))
    else {
        return false;
    };
    let version = parsed.version.and_then(|v| Version::try_from(v).ok()).unwrap_or_default();
    let argon = Argon2::new(algorithm, version, params.clone());
    let mut out = vec![0u8; expected.len()];
    let done = if params.block_count() <= memory.len() {
        argon.hash_password_into_with_memory(password.as_bytes(), salt, &mut out, memory.as_mut_slice())
    } else {
        argon.hash_password_into(password.as_bytes(), salt, &mut out)
    };
    // `Output`'s equality is constant-time.
    done.is_ok() && Output::new(&out).is_ok_and(|computed| &computed == expected)
}

/// Why a password is refused, worded for the person choosing it.
#[derive(Debug, PartialEq, Eq)]
pub struct PolicyViolation(pub String);

/// NIST SP 800-63B: at least 8 characters, up to 1024 bytes (more than 64
/// characters of any script), no composition rules, no truncation; refuse
/// passwords equal to the username or email, and common or easily guessed ones
/// (zxcvbn's bundled lists of common passwords, names and words).
pub fn check_policy(password: &SecretString, username: &str, email: &str) -> Result<(), PolicyViolation> {
    let pw = password.expose_secret();
    if pw.chars().count() < MIN_CHARS {
        return Err(PolicyViolation(format!("must be at least {MIN_CHARS} characters long")));
    }
    if pw.len() > MAX_BYTES {
        return Err(PolicyViolation(format!("must be at most {MAX_BYTES} bytes long")));
    }
    let lower = pw.to_lowercase();
    let local_part = email.split('@').next().unwrap_or(email);
    if lower == username.to_lowercase() || lower == email.to_lowercase() || lower == local_part.to_lowercase() {
        return Err(PolicyViolation("must not be your username or email address".into()));
    }
    let estimate = zxcvbn::zxcvbn(pw, &[username, email, local_part, "fortifile"]);
    if estimate.score() < zxcvbn::Score::Two {
        let why = estimate.feedback().and_then(|f| f.warning()).map(|w| format!(" ({w})")).unwrap_or_default();
        return Err(PolicyViolation(format!(
            "is too common or too easy to guess{why}; a longer phrase of unrelated words works well"
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(pw: &str) -> Result<(), PolicyViolation> {
        check_policy(&SecretString::from(pw), "alice", "alice@example.org")
    }

    #[test]
    fn short_passwords_are_refused() {
        assert!(check("x7#kQ2").unwrap_err().0.contains("at least 8"));
    }

    #[test]
    fn common_passwords_are_refused() {
        for pw in ["password", "password1", "12345678", "qwertyuiop", "iloveyou"] {
            assert!(check(pw).unwrap_err().0.contains("too common"), "{pw}");
        }
    }

    #[test]
    fn the_username_or_email_is_refused() {
        assert!(check_policy(&"Kq8vZ3mWt1".into(), "Kq8vZ3mWt1", "k@example.org").is_err());
        assert!(check("alice@example.org").unwrap_err().0.contains("username or email"));
    }

    #[test]
    fn long_unicode_passphrases_with_spaces_are_accepted() {
        assert!(check("correct horse battery staple").is_ok());
        let long: String = "ünïcødé pässphräse ".repeat(4);
        assert!(long.chars().count() >= 64);
        assert!(check(&long).is_ok());
    }

    #[test]
    fn passwords_over_the_byte_cap_are_refused() {
        let huge = "Zq9!".repeat(300);
        assert!(check(&huge).unwrap_err().0.contains("at most"));
    }

    #[tokio::test]
    async fn a_hash_verifies_only_its_own_password() {
        let p = Passwords::new().await.unwrap();
        let pw = SecretString::from("violet staple orbit lantern");
        let hash = p.hash(&pw).await.unwrap();
        assert!(hash.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"));
        assert!(p.verify(&pw, Some(&hash)).await.unwrap());
        assert!(!p.verify(&SecretString::from("violet staple orbit lanterN"), Some(&hash)).await.unwrap());
        assert!(!p.verify(&pw, None).await.unwrap(), "an unknown user never verifies");
    }

    #[tokio::test]
    async fn hashes_made_by_the_argon2_crate_itself_still_verify_and_ours_verify_there() {
        use argon2::password_hash::{PasswordHasher, PasswordVerifier};
        let p = Passwords::new().await.unwrap();
        let pw = SecretString::from("violet staple orbit lantern");
        let theirs = argon2().hash_password(pw.expose_secret().as_bytes()).unwrap().to_string();
        assert!(p.verify(&pw, Some(&theirs)).await.unwrap());
        let ours = p.hash(&pw).await.unwrap();
        assert!(argon2().verify_password(pw.expose_secret().as_bytes(), &PasswordHash::new(&ours).unwrap()).is_ok());
        // A stronger hash than ours (more memory) verifies too, with memory of its own.
        let strong = Argon2::new(Algorithm::Argon2id, Version::V0x13, Params::new(32 * 1024, 2, 1, None).unwrap());
        let stronger = strong.hash_password(pw.expose_secret().as_bytes()).unwrap().to_string();
        assert!(p.verify(&pw, Some(&stronger)).await.unwrap());
        assert!(!p.verify(&SecretString::from("nope nope nope"), Some(&stronger)).await.unwrap());
    }

    #[tokio::test]
    async fn a_caller_that_gives_up_mid_hash_keeps_neither_a_permit_nor_the_memory_from_the_next() {
        let p = Passwords::new().await.unwrap();
        let blocks = p.memory.lock().unwrap().len();
        let pw = SecretString::from("violet staple orbit lantern");
        for _ in 0..4 {
            // Dropped after a millisecond: the hash itself runs on.
            let _ = tokio::time::timeout(std::time::Duration::from_millis(1), p.hash(&pw)).await;
        }
        let hashes = futures::future::join_all((0..4).map(|_| p.hash(&pw))).await;
        assert!(hashes.iter().all(|h| h.is_ok()), "{hashes:?}");
        // Every block is back, and no more are in use than there are permits.
        for _ in 0..100 {
            if p.memory.lock().unwrap().len() >= blocks {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
        assert!(p.memory.lock().unwrap().len() >= blocks);
        assert_eq!(p.permits.available_permits(), blocks);
    }
}

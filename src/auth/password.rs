//! Password hashing (Argon2id) and the password policy (NIST SP 800-63B).
//!
//! Hashing runs on the blocking pool behind a semaphore sized to the CPU count, so
//! a login storm queues for the hasher instead of starving the async executor or
//! exhausting memory (each hash holds 19 MiB).

use std::sync::Arc;

use anyhow::Context;
use argon2::{
    Algorithm, Argon2, Params, Version,
    password_hash::{PasswordHasher, PasswordVerifier, phc::PasswordHash},
};
use secrecy::{ExposeSecret, SecretString};
use tokio::sync::Semaphore;

/// OWASP's minimum for Argon2id: m = 19 MiB, t = 2, p = 1.
const M_COST_KIB: u32 = 19 * 1024;
const T_COST: u32 = 2;
const P_COST: u32 = 1;

pub const MIN_CHARS: usize = 8;
/// Bounds the hashing cost; 64 characters of any script fit well inside.
pub const MAX_BYTES: usize = 1024;

fn argon2() -> Argon2<'static> {
    // The constants above are valid parameters; `Params::new` cannot fail on them.
    let params = Params::new(M_COST_KIB, T_COST, P_COST, None).unwrap_or_default();
    Argon2::new(Algorithm::Argon2id, Version::V0x13, params)
}

/// Hashes and verifies passwords off the async executor.
#[derive(Clone)]
pub struct Passwords {
    permits: Arc<Semaphore>,
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
        let random = uuid::Uuid::new_v4().to_string();
        let dummy_hash =
            tokio::task::spawn_blocking(move || hash_blocking(&random)).await.context("hashing task panicked")??;
        Ok(Passwords { permits: Arc::new(Semaphore::new(parallel)), dummy_hash: dummy_hash.into() })
    }

    /// Hashes `password` into a PHC string.
    pub async fn hash(&self, password: &SecretString) -> anyhow::Result<String> {
        let _permit = self.permits.acquire().await.context("password hasher closed")?;
        let password = password.clone();
        tokio::task::spawn_blocking(move || hash_blocking(password.expose_secret()))
            .await
            .context("hashing task panicked")?
    }

    /// Verifies `password` against `stored`; with no stored hash (unknown user) it
    /// spends the same work on the dummy hash and answers false.
    pub async fn verify(&self, password: &SecretString, stored: Option<&str>) -> anyhow::Result<bool> {
        let _permit = self.permits.acquire().await.context("password hasher closed")?;
        let known = stored.is_some();
        let phc = stored.unwrap_or(&self.dummy_hash).to_string();
        let password = password.clone();
        let matched = tokio::task::spawn_blocking(move || {
            let Ok(parsed) = PasswordHash::new(&phc) else { return false };
            argon2().verify_password(password.expose_secret().as_bytes(), &parsed).is_ok()
        })
        .await
        .context("verification task panicked")?;
        Ok(known && matched)
    }
}

fn hash_blocking(password: &str) -> anyhow::Result<String> {
    argon2()
        .hash_password(password.as_bytes())
        .map(|h| h.to_string())
        .map_err(|e| anyhow::anyhow!("argon2 hashing failed: {e}"))
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
}

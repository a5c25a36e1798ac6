//! TOTP (RFC 6238 over RFC 4226): HMAC-SHA1, 6 digits, 30-second steps, a code
//! accepted one step either side of now. Only what authenticator apps need, and
//! the matched step is returned so the caller can refuse its reuse.
//!
//! Secrets are 160 random bits (RFC 4226's recommended length), shown to the
//! user once as base32 and in an `otpauth://` URI, and stored sealed with
//! AES-256-GCM under a key derived from the master key, bound to the tenant and
//! the user (a sealed secret copied to another row does not open).

use std::fmt;

use data_encoding::BASE32_NOPAD;
use ring::{
    aead::{AES_256_GCM, Aad, LessSafeKey, NONCE_LEN, Nonce, UnboundKey},
    hmac,
    rand::{SecureRandom, SystemRandom},
};
use time::OffsetDateTime;
use uuid::Uuid;
use zeroize::Zeroizing;

pub const STEP_SECONDS: i64 = 30;
pub const DIGITS: u32 = 6;
const SECRET_LEN: usize = 20;
/// What [`crate::files::crypto::MasterKey::derive`] derives the sealing key for.
pub const PURPOSE: &str = "mfa.totp.v1";

/// A TOTP secret. Its `Debug` shows nothing of it.
pub struct Secret(Zeroizing<Vec<u8>>);

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret([redacted])")
    }
}

impl Secret {
    pub fn generate() -> anyhow::Result<Secret> {
        let mut bytes = Zeroizing::new(vec![0u8; SECRET_LEN]);
        SystemRandom::new().fill(&mut bytes).map_err(|_| anyhow::anyhow!("the system random generator failed"))?;
        Ok(Secret(bytes))
    }

    /// A secret as typed into an app (base32, case and spaces ignored).
    pub fn from_base32(text: &str) -> Option<Secret> {
        let normal: String = text.chars().filter(|c| !c.is_whitespace()).map(|c| c.to_ascii_uppercase()).collect();
        BASE32_NOPAD.decode(normal.as_bytes()).ok().filter(|b| !b.is_empty()).map(|b| Secret(Zeroizing::new(b)))
    }

    /// The base32 form authenticator apps take when typed in.
    pub fn base32(&self) -> String {
        BASE32_NOPAD.encode(&self.0)
    }

    /// The `otpauth://` URI a QR code carries (Google Authenticator's key URI format).
    pub fn uri(&self, issuer: &str, account: &str) -> String {
        let label = format!("{}:{}", encode(issuer), encode(account));
        format!(
            "otpauth://totp/{label}?secret={}&issuer={}&algorithm=SHA1&digits={DIGITS}&period={STEP_SECONDS}",
            self.base32(),
            encode(issuer)
        )
    }

    /// The code for time step `step`.
    pub fn code_at(&self, step: i64) -> u32 {
        let key = hmac::Key::new(hmac::HMAC_SHA1_FOR_LEGACY_USE_ONLY, &self.0);
        let tag = hmac::sign(&key, &step.to_be_bytes());
        let mac = tag.as_ref();
        let offset = (mac[mac.len() - 1] & 0x0f) as usize;
        let binary = u32::from_be_bytes([mac[offset] & 0x7f, mac[offset + 1], mac[offset + 2], mac[offset + 3]]);
        binary % 10u32.pow(DIGITS)
    }

    /// The time step `code` matches at `now`, within one step either side;
    /// checks every candidate step so the time taken does not say which matched.
    pub fn matching_step(&self, code: &str, now: OffsetDateTime) -> Option<i64> {
        let code = parse_code(code)?;
        let current = step_of(now);
        let mut found = None;
        for step in [current - 1, current, current + 1] {
            // One integer comparison per candidate, no early exit.
            let equal = (self.code_at(step) ^ code) == 0;
            found = found.or(equal.then_some(step));
        }
        found
    }

    /// Seals the secret for storage in `tenant`'s row for `user`.
    pub fn seal(&self, key: &[u8; 32], tenant: Uuid, user: Uuid) -> anyhow::Result<Vec<u8>> {
        let mut nonce = [0u8; NONCE_LEN];
        SystemRandom::new().fill(&mut nonce).map_err(|_| anyhow::anyhow!("the system random generator failed"))?;
        let mut sealed = self.0.to_vec();
        aead_key(key)
            .seal_in_place_append_tag(Nonce::assume_unique_for_key(nonce), aad(tenant, user), &mut sealed)
            .map_err(|_| anyhow::anyhow!("sealing a TOTP secret failed"))?;
        Ok([nonce.as_slice(), &sealed].concat())
    }

    /// Opens what [`Secret::seal`] stored for `tenant` and `user`.
    pub fn open(key: &[u8; 32], tenant: Uuid, user: Uuid, stored: &[u8]) -> anyhow::Result<Secret> {
        anyhow::ensure!(stored.len() > NONCE_LEN, "a stored TOTP secret is malformed");
        let (nonce, sealed) = stored.split_at(NONCE_LEN);
        let nonce = Nonce::try_assume_unique_for_key(nonce).map_err(|_| anyhow::anyhow!("a malformed nonce"))?;
        let mut buffer = Zeroizing::new(sealed.to_vec());
        let plain = aead_key(key)
            .open_in_place(nonce, aad(tenant, user), &mut buffer)
            .map_err(|_| anyhow::anyhow!("a stored TOTP secret failed its integrity check"))?;
        Ok(Secret(Zeroizing::new(plain.to_vec())))
    }
}

/// The RFC 6238 time step of `at`.
pub fn step_of(at: OffsetDateTime) -> i64 {
    at.unix_timestamp().div_euclid(STEP_SECONDS)
}

/// Six digits, spaces allowed between them (as apps show them); anything else is no code.
fn parse_code(code: &str) -> Option<u32> {
    let digits: String = code.chars().filter(|c| !c.is_whitespace()).collect();
    (digits.len() == DIGITS as usize && digits.bytes().all(|b| b.is_ascii_digit())).then(|| digits.parse().ok())?
}

fn aead_key(key: &[u8; 32]) -> LessSafeKey {
    LessSafeKey::new(UnboundKey::new(&AES_256_GCM, key).expect("a 32-byte AES-256 key"))
}

fn aad(tenant: Uuid, user: Uuid) -> Aad<[u8; 48]> {
    let mut out = [0u8; 48];
    out[..16].copy_from_slice(b"fortifile-totp-1");
    out[16..32].copy_from_slice(tenant.as_bytes());
    out[32..].copy_from_slice(user.as_bytes());
    Aad::from(out)
}

/// Percent-encodes everything but unreserved characters (RFC 3986).
fn encode(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rfc_secret() -> Secret {
        Secret(Zeroizing::new(b"12345678901234567890".to_vec()))
    }

    #[test]
    fn codes_match_the_rfc_6238_sha1_test_vectors() {
        // RFC 6238 appendix B, SHA-1, the last six of its eight digits.
        for (time, code) in [
            (59, 94287082u32),
            (1111111109, 7081804),
            (1111111111, 14050471),
            (1234567890, 89005924),
            (2000000000, 69279037),
        ] {
            assert_eq!(rfc_secret().code_at(time / STEP_SECONDS), code % 1_000_000, "at {time}");
        }
    }

    #[test]
    fn a_code_matches_one_step_either_side_and_not_two() {
        let secret = rfc_secret();
        let now = OffsetDateTime::from_unix_timestamp(1_234_567_890).unwrap();
        let step = step_of(now);
        for offset in [-1, 0, 1] {
            let code = format!("{:06}", secret.code_at(step + offset));
            assert_eq!(secret.matching_step(&code, now), Some(step + offset), "offset {offset}");
        }
        for offset in [-2, 2] {
            let code = format!("{:06}", secret.code_at(step + offset));
            assert_eq!(secret.matching_step(&code, now), None, "offset {offset}");
        }
    }

    #[test]
    fn malformed_codes_match_nothing() {
        let now = OffsetDateTime::from_unix_timestamp(59).unwrap();
        for code in ["", "12345", "1234567", "12a456", "-28708", "２８７０８２"] {
            assert_eq!(rfc_secret().matching_step(code, now), None, "{code:?}");
        }
        assert_eq!(rfc_secret().matching_step("287 082", now), Some(1), "spaces between digits are fine");
    }

    #[test]
    fn a_sealed_secret_opens_only_for_its_own_tenant_and_user() {
        let key = [7u8; 32];
        let (tenant, user) = (Uuid::new_v4(), Uuid::new_v4());
        let secret = Secret::generate().unwrap();
        let sealed = secret.seal(&key, tenant, user).unwrap();
        assert!(!sealed.windows(SECRET_LEN).any(|w| w == secret.0.as_slice()), "sealed, not stored in plain");
        assert_eq!(Secret::open(&key, tenant, user, &sealed).unwrap().base32(), secret.base32());
        assert!(Secret::open(&key, tenant, Uuid::new_v4(), &sealed).is_err());
        assert!(Secret::open(&key, Uuid::new_v4(), user, &sealed).is_err());
        assert!(Secret::open(&[8u8; 32], tenant, user, &sealed).is_err());
        assert!(format!("{secret:?}").contains("redacted"));
    }

    #[test]
    fn the_uri_carries_issuer_account_and_parameters() {
        let uri = rfc_secret().uri("FortiFile", "ana@example.org");
        assert_eq!(
            uri,
            "otpauth://totp/FortiFile:ana%40example.org?secret=GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ&issuer=FortiFile\
             &algorithm=SHA1&digits=6&period=30"
        );
    }
}

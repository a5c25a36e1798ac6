//! What the log keeps of a name typed at login that matches no account.
//!
//! People type passwords into the username field. For an unknown account the
//! log therefore keeps a keyed hash of the name (HMAC-SHA256 under a key derived
//! from the master key, of the trimmed, lower-cased text) and its length, never
//! the text: equal names still hash equally, so password spraying is still
//! counted by distinct values, and an administrator who types a name into the
//! dashboard's filter finds its attempts, but nobody reading the log, an export
//! or a backup of the database learns what was typed. Known accounts are
//! recorded by their own username.

use std::fmt;

use ring::hmac;

/// The purpose the key is derived for (see `MasterKey::derive`).
pub const PURPOSE: &str = "audit.login-name.v1";
/// Marks a stored value as a hash, not a name (names cannot contain `:`).
const PREFIX: &str = "hmac:";

#[derive(Clone)]
pub struct LoginNames {
    key: hmac::Key,
}

impl fmt::Debug for LoginNames {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("LoginNames([redacted])")
    }
}

impl LoginNames {
    pub fn new(secret: &[u8; 32]) -> Self {
        LoginNames { key: hmac::Key::new(hmac::HMAC_SHA256, secret) }
    }

    /// The stored form of a typed name: `hmac:` and 32 hex digits.
    pub fn digest(&self, typed: &str) -> String {
        let tag = hmac::sign(&self.key, typed.trim().to_lowercase().as_bytes());
        format!("{PREFIX}{}", hex::encode(&tag.as_ref()[..16]))
    }

    /// Whether `value` is a stored digest rather than a name.
    pub fn is_digest(value: &str) -> bool {
        value.strip_prefix(PREFIX).is_some_and(|h| h.len() == 32 && h.bytes().all(|b| b.is_ascii_hexdigit()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_typed_name_is_kept_only_as_a_keyed_hash_equal_for_equal_names() {
        let names = LoginNames::new(&[7; 32]);
        let d = names.digest("  Hunter2-Password ");
        assert!(LoginNames::is_digest(&d), "{d}");
        assert!(!d.to_lowercase().contains("hunter2"));
        assert_eq!(d, names.digest("hunter2-password"), "case and spaces do not make a new value");
        assert_ne!(d, names.digest("hunter3-password"));
        assert_ne!(d, LoginNames::new(&[8; 32]).digest("hunter2-password"), "the key matters");
        assert!(!LoginNames::is_digest("alice"));
        assert!(!format!("{names:?}").contains('7'));
    }
}

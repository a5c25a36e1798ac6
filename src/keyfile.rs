//! Keys kept like the master key: given in an environment variable as 64 hex
//! characters, or read from a file under the data directory that is created
//! (mode 0600, a new random key) the first time and refused when others may
//! read it. Used by the file master key and the audit signing key.

use std::{io::Write, os::unix::fs::OpenOptionsExt, os::unix::fs::PermissionsExt, path::Path};

use anyhow::Context;
use ring::rand::{SecureRandom, SystemRandom};
use secrecy::{ExposeSecret, SecretString};
use zeroize::Zeroizing;

/// A 32-byte key: from `configured` (the value of `var`) when set, else from
/// `path`, created if missing. `what` names the key in messages and logs.
pub fn load_32(
    configured: Option<&SecretString>,
    var: &str,
    path: &Path,
    what: &str,
) -> anyhow::Result<Zeroizing<[u8; 32]>> {
    if let Some(secret) = configured {
        return from_hex(secret.expose_secret())
            .with_context(|| format!("{var}: expected 64 hex characters (32 bytes), e.g. `openssl rand -hex 32`"));
    }
    match std::fs::metadata(path) {
        Ok(meta) => {
            if meta.permissions().mode() & 0o077 != 0 {
                anyhow::bail!("{}: the {what} file must be readable by its owner only (chmod 600)", path.display());
            }
            let text =
                Zeroizing::new(std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?);
            from_hex(&text).with_context(|| format!("{}: expected 64 hex characters", path.display()))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            if let Some(dir) = path.parent() {
                std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
            }
            let mut bytes = Zeroizing::new([0u8; 32]);
            SystemRandom::new().fill(bytes.as_mut()).map_err(|_| anyhow::anyhow!("the system random source failed"))?;
            // Written whole under a name of its own, then linked into place:
            // instances starting together on one data directory never read a
            // half-written key, and the one whose link fails uses the winner's.
            let staging = path.with_extension(format!("new-{}", std::process::id()));
            let written = (|| {
                let mut file = std::fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(&staging)?;
                file.write_all(Zeroizing::new(format!("{}\n", hex::encode(bytes.as_ref()))).as_bytes())?;
                file.sync_all()?;
                std::fs::hard_link(&staging, path)
            })();
            let _ = std::fs::remove_file(&staging);
            match written {
                Ok(()) => {
                    if let Some(dir) = path.parent() {
                        std::fs::File::open(dir).and_then(|d| d.sync_all()).ok();
                    }
                    tracing::warn!(path = %path.display(), "generated a new {what}; back it up");
                    Ok(bytes)
                }
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => load_32(None, var, path, what),
                Err(e) => Err(e).with_context(|| format!("creating the {what} file {}", path.display())),
            }
        }
        Err(e) => Err(e).with_context(|| format!("reading {}", path.display())),
    }
}

fn from_hex(text: &str) -> Option<Zeroizing<[u8; 32]>> {
    let bytes = Zeroizing::new(hex::decode(text.trim()).ok()?);
    let array: [u8; 32] = bytes.as_slice().try_into().ok()?;
    Some(Zeroizing::new(array))
}

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
    match read(path, what)? {
        Some(key) => Ok(key),
        None => match create(path, what)? {
            Some(key) => Ok(key),
            // Another process linked its key in first: that one is the key.
            None => read(path, what)?
                .with_context(|| format!("{}: exists but cannot be read as the {what} file", path.display())),
        },
    }
}

/// The key in `path`, or `None` when there is no such file.
fn read(path: &Path, what: &str) -> anyhow::Result<Option<Zeroizing<[u8; 32]>>> {
    let meta = match std::fs::metadata(path) {
        Ok(meta) => meta,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
    };
    if meta.permissions().mode() & 0o077 != 0 {
        anyhow::bail!("{}: the {what} file must be readable by its owner only (chmod 600)", path.display());
    }
    let text = Zeroizing::new(std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?);
    from_hex(&text).with_context(|| format!("{}: expected 64 hex characters", path.display())).map(Some)
}

/// Writes a new random key to `path`, or `None` when another process created
/// the file meanwhile. The key is written whole under a random name of its
/// own, then hard-linked into place, so that processes starting together on
/// one data directory never read half a key and all end up with the first.
fn create(path: &Path, what: &str) -> anyhow::Result<Option<Zeroizing<[u8; 32]>>> {
    let dir = path.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let random = SystemRandom::new();
    let mut bytes = Zeroizing::new([0u8; 32]);
    random.fill(bytes.as_mut()).map_err(|_| anyhow::anyhow!("the system random source failed"))?;
    let mut suffix = [0u8; 8];
    random.fill(&mut suffix).map_err(|_| anyhow::anyhow!("the system random source failed"))?;
    let staging = path.with_extension(format!("new-{}", hex::encode(suffix)));
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&staging)
        .with_context(|| format!("creating the {what} file {}", staging.display()))?;
    let written = file
        .write_all(Zeroizing::new(format!("{}\n", hex::encode(bytes.as_ref()))).as_bytes())
        .and_then(|_| file.sync_all())
        .and_then(|_| std::fs::hard_link(&staging, path));
    // Ours alone (a random name, created here): removed however it went.
    let _ = std::fs::remove_file(&staging);
    match written {
        Ok(()) => {
            std::fs::File::open(dir).and_then(|d| d.sync_all()).ok();
            tracing::warn!(path = %path.display(), "generated a new {what}; back it up");
            Ok(Some(bytes))
        }
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(None),
        Err(e) => Err(e).with_context(|| format!("creating the {what} file {}", path.display())),
    }
}

fn from_hex(text: &str) -> Option<Zeroizing<[u8; 32]>> {
    let bytes = Zeroizing::new(hex::decode(text.trim()).ok()?);
    let array: [u8; 32] = bytes.as_slice().try_into().ok()?;
    Some(Zeroizing::new(array))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn processes_creating_the_key_at_once_all_end_up_with_the_same_key() {
        let dir = std::env::temp_dir().join(format!("fortifile-keyfile-{}", uuid::Uuid::new_v4()));
        let path = dir.join("master.key");
        let keys: Vec<[u8; 32]> = std::thread::scope(|s| {
            let handles: Vec<_> = (0..16)
                .map(|_| s.spawn(|| *load_32(None, "FORTIFILE_MASTER_KEY", &path, "master key").unwrap()))
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        });
        assert!(keys.iter().all(|k| k == &keys[0]), "one key for all");
        let files: Vec<_> = std::fs::read_dir(&dir).unwrap().map(|e| e.unwrap().file_name()).collect();
        assert_eq!(files, vec![std::ffi::OsString::from("master.key")], "no staging file left behind");
        assert_eq!(*load_32(None, "X", &path, "master key").unwrap(), keys[0]);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_name_that_exists_but_is_not_a_readable_key_stops_the_start_instead_of_looping() {
        let dir = std::env::temp_dir().join(format!("fortifile-keyfile-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("master.key");
        std::os::unix::fs::symlink(dir.join("nowhere"), &path).unwrap();
        let err = load_32(None, "FORTIFILE_MASTER_KEY", &path, "master key").unwrap_err();
        assert!(format!("{err:#}").contains("cannot be read"), "{err:#}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}

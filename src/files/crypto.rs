//! Encryption at rest: envelope encryption with a fresh data key per file, and a
//! segmented AES-256-GCM stream so that downloads decrypt as they go and any
//! truncation, reordering or alteration of the stored object is detected.
//!
//! Object layout (all of it is authenticated):
//!
//! ```text
//! header   = "FFE1" | segment size (u32 BE) | nonce prefix (4 random bytes)
//! segment  = AES-256-GCM(data key, nonce = prefix | counter (u64 BE),
//!                        aad = header | file id | last flag, plaintext ≤ segment size)
//! object   = header | segment 0 | segment 1 | … | last segment
//! ```
//!
//! Every segment but the last carries exactly `segment size` bytes of plaintext;
//! the last carries 0 to `segment size` bytes and has the last flag set, so a cut
//! at any point (even at a segment boundary) fails authentication. The data key
//! is wrapped by the master key with AES-256-GCM, its AAD binding it to the
//! tenant and the file, so a wrapped key copied to another row does not open.

use std::{fmt, path::Path};

use bytes::{Bytes, BytesMut};

use ring::{
    aead::{AES_256_GCM, Aad, LessSafeKey, NONCE_LEN, Nonce, UnboundKey},
    digest,
    rand::{SecureRandom, SystemRandom},
};
use secrecy::SecretString;
use uuid::Uuid;

pub const TAG_LEN: usize = 16;
const KEY_LEN: usize = 32;
const MAGIC: &[u8; 4] = b"FFE1";
pub const HEADER_LEN: usize = 12;
/// Plaintext bytes per segment.
pub const SEGMENT_SIZE: usize = 64 * 1024;
const WRAP_CONTEXT: &[u8] = b"fortifile-data-key-v1";

#[derive(Debug, thiserror::Error)]
pub enum CryptoError {
    /// The stored object or wrapped key failed authentication or is malformed.
    #[error("the stored file failed its integrity check")]
    Integrity,
    #[error("the file's key was wrapped by master key {0}, which is not configured")]
    UnknownMasterKey(String),
    #[error("no randomness available")]
    Random,
}

fn random<const N: usize>() -> Result<[u8; N], CryptoError> {
    let mut out = [0u8; N];
    SystemRandom::new().fill(&mut out).map_err(|_| CryptoError::Random)?;
    Ok(out)
}

fn aes_key(bytes: &[u8; KEY_LEN]) -> LessSafeKey {
    LessSafeKey::new(UnboundKey::new(&AES_256_GCM, bytes).expect("a 32-byte AES-256 key"))
}

/// The key that wraps every file's data key. Its `Debug` shows only its id.
pub struct MasterKey {
    key: LessSafeKey,
    id: String,
    /// For keys derived for other purposes (see [`MasterKey::derive`]).
    derivation: ring::hmac::Key,
}

impl fmt::Debug for MasterKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "MasterKey({})", self.id)
    }
}

impl MasterKey {
    pub fn from_bytes(bytes: &[u8; KEY_LEN]) -> Self {
        // The id names the key (for rotation) without revealing it.
        let digest = digest::digest(&digest::SHA256, &[b"fortifile-key-id".as_slice(), bytes].concat());
        let derivation = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, bytes);
        MasterKey { key: aes_key(bytes), id: hex::encode(&digest.as_ref()[..8]), derivation }
    }

    /// A 256-bit key for `purpose`, derived from the master key (HMAC-SHA256
    /// of a domain-separated label), so one secret to back up serves every use
    /// and no derived key reveals the master key or another derived key.
    pub fn derive(&self, purpose: &str) -> [u8; KEY_LEN] {
        let label = [b"fortifile.derive.v1\0".as_slice(), purpose.as_bytes()].concat();
        let tag = ring::hmac::sign(&self.derivation, &label);
        let mut out = [0u8; KEY_LEN];
        out.copy_from_slice(&tag.as_ref()[..KEY_LEN]);
        out
    }

    /// Parses 64 hex characters.
    pub fn from_hex(text: &str) -> Option<Self> {
        let bytes: [u8; KEY_LEN] = hex::decode(text.trim()).ok()?.try_into().ok()?;
        Some(Self::from_bytes(&bytes))
    }

    /// `FORTIFILE_MASTER_KEY` when set; otherwise the key file `path`, created with
    /// a new random key and mode 0600 if it does not exist. A key file that
    /// others may read is refused.
    pub fn load(configured: Option<&SecretString>, path: &Path) -> anyhow::Result<Self> {
        let bytes = crate::keyfile::load_32(configured, "FORTIFILE_MASTER_KEY", path, "master key")?;
        Ok(Self::from_bytes(&bytes))
    }

    pub fn id(&self) -> &str {
        &self.id
    }

    /// A new random data key for `file` of `tenant`, and its wrapped form to store.
    pub fn new_data_key(&self, tenant: Uuid, file: Uuid) -> Result<(DataKey, Vec<u8>), CryptoError> {
        let bytes: [u8; KEY_LEN] = random()?;
        let nonce: [u8; NONCE_LEN] = random()?;
        let mut wrapped = bytes.to_vec();
        let aad = wrap_aad(tenant, file);
        self.key
            .seal_in_place_append_tag(Nonce::assume_unique_for_key(nonce), Aad::from(&aad), &mut wrapped)
            .map_err(|_| CryptoError::Integrity)?;
        let mut stored = nonce.to_vec();
        stored.extend_from_slice(&wrapped);
        Ok((DataKey { key: aes_key(&bytes), file }, stored))
    }

    /// Unwraps a stored data key, checking it was wrapped by this key for this file.
    pub fn open_data_key(&self, key_id: &str, tenant: Uuid, file: Uuid, stored: &[u8]) -> Result<DataKey, CryptoError> {
        if key_id != self.id {
            return Err(CryptoError::UnknownMasterKey(key_id.to_string()));
        }
        if stored.len() != NONCE_LEN + KEY_LEN + TAG_LEN {
            return Err(CryptoError::Integrity);
        }
        let (nonce, sealed) = stored.split_at(NONCE_LEN);
        let nonce = Nonce::try_assume_unique_for_key(nonce).map_err(|_| CryptoError::Integrity)?;
        let mut buf = sealed.to_vec();
        let aad = wrap_aad(tenant, file);
        let plain = self.key.open_in_place(nonce, Aad::from(&aad), &mut buf).map_err(|_| CryptoError::Integrity)?;
        let bytes: [u8; KEY_LEN] = plain.try_into().map_err(|_| CryptoError::Integrity)?;
        Ok(DataKey { key: aes_key(&bytes), file })
    }
}

fn wrap_aad(tenant: Uuid, file: Uuid) -> Vec<u8> {
    [WRAP_CONTEXT, tenant.as_bytes(), file.as_bytes()].concat()
}

/// One file's data key.
pub struct DataKey {
    key: LessSafeKey,
    file: Uuid,
}

impl fmt::Debug for DataKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "DataKey(file {})", self.file)
    }
}

fn nonce(prefix: &[u8; 4], counter: u64) -> Nonce {
    let mut n = [0u8; NONCE_LEN];
    n[..4].copy_from_slice(prefix);
    n[4..].copy_from_slice(&counter.to_be_bytes());
    Nonce::assume_unique_for_key(n)
}

fn segment_aad(header: &[u8; HEADER_LEN], file: Uuid, last: bool) -> [u8; HEADER_LEN + 17] {
    let mut aad = [0u8; HEADER_LEN + 17];
    aad[..HEADER_LEN].copy_from_slice(header);
    aad[HEADER_LEN..HEADER_LEN + 16].copy_from_slice(file.as_bytes());
    aad[HEADER_LEN + 16] = last as u8;
    aad
}

/// Encrypts a plaintext stream into the object layout, segment by segment.
pub struct Sealer {
    key: DataKey,
    header: [u8; HEADER_LEN],
    prefix: [u8; 4],
    counter: u64,
    buffer: Vec<u8>,
}

impl Sealer {
    /// A sealer and the header to write first.
    pub fn new(key: DataKey) -> Result<(Sealer, Vec<u8>), CryptoError> {
        let prefix: [u8; 4] = random()?;
        let mut header = [0u8; HEADER_LEN];
        header[..4].copy_from_slice(MAGIC);
        header[4..8].copy_from_slice(&(SEGMENT_SIZE as u32).to_be_bytes());
        header[8..].copy_from_slice(&prefix);
        let sealer = Sealer { key, header, prefix, counter: 0, buffer: Vec::with_capacity(SEGMENT_SIZE + TAG_LEN) };
        Ok((sealer, header.to_vec()))
    }

    /// Takes plaintext; appends every segment that is complete (and known not to
    /// be the last) to `out`.
    pub fn push(&mut self, mut data: &[u8], out: &mut Vec<u8>) -> Result<(), CryptoError> {
        while !data.is_empty() {
            // A full buffer is sealed only once more data proves it is not the last.
            if self.buffer.len() == SEGMENT_SIZE {
                self.seal(false, out)?;
            }
            let take = (SEGMENT_SIZE - self.buffer.len()).min(data.len());
            self.buffer.extend_from_slice(&data[..take]);
            data = &data[take..];
        }
        Ok(())
    }

    /// Seals the last segment (possibly empty) into `out`.
    pub fn finish(mut self, out: &mut Vec<u8>) -> Result<(), CryptoError> {
        self.seal(true, out)
    }

    fn seal(&mut self, last: bool, out: &mut Vec<u8>) -> Result<(), CryptoError> {
        let aad = segment_aad(&self.header, self.key.file, last);
        let tag = self
            .key
            .key
            .seal_in_place_separate_tag(nonce(&self.prefix, self.counter), Aad::from(&aad), &mut self.buffer)
            .map_err(|_| CryptoError::Integrity)?;
        out.extend_from_slice(&self.buffer);
        out.extend_from_slice(tag.as_ref());
        self.buffer.clear();
        self.counter += 1;
        Ok(())
    }
}

/// Decrypts the object layout as it streams in, in place: each segment is
/// opened where it arrived and handed on as a slice of the same buffer (no
/// copy, unless a chunk boundary splits a segment). Nothing is returned from a
/// segment until its tag has been verified. The plaintext length (the file
/// row's size) tells which segment is the last, so none is held back; the
/// last-segment flag in every segment's AAD still proves it, so a cut, an
/// extension or a wrong length fails authentication.
pub struct Opener {
    key: DataKey,
    header: Option<[u8; HEADER_LEN]>,
    counter: u64,
    /// Segments in the object, and the sealed length of the last one.
    segments: u64,
    last_sealed: usize,
    buffer: BytesMut,
    /// A segment failed: what was sound before it has been handed on; nothing more is.
    failed: bool,
}

impl Opener {
    pub fn new(key: DataKey, plaintext_len: u64) -> Opener {
        let segments = plaintext_len.div_ceil(SEGMENT_SIZE as u64).max(1);
        let last_plain = plaintext_len - (segments - 1) * SEGMENT_SIZE as u64;
        Opener {
            key,
            header: None,
            counter: 0,
            segments,
            last_sealed: last_plain as usize + TAG_LEN,
            buffer: BytesMut::new(),
            failed: false,
        }
    }

    /// Takes ciphertext; returns the plaintext of every segment now complete,
    /// as slices of the chunk it arrived in.
    pub fn push(&mut self, chunk: Bytes) -> Result<Vec<Bytes>, CryptoError> {
        if self.failed {
            return Err(CryptoError::Integrity);
        }
        if self.buffer.is_empty() {
            // The reader's own buffer becomes ours: opened in place, no copy.
            self.buffer = chunk.try_into_mut().unwrap_or_else(|shared| BytesMut::from(&shared[..]));
        } else {
            self.buffer.extend_from_slice(&chunk);
        }
        if self.header.is_none() {
            if self.buffer.len() < HEADER_LEN {
                return Ok(Vec::new());
            }
            let header: [u8; HEADER_LEN] = self.buffer[..HEADER_LEN].try_into().expect("header length");
            let size = u32::from_be_bytes(header[4..8].try_into().expect("4 bytes"));
            if &header[..4] != MAGIC || size as usize != SEGMENT_SIZE {
                return Err(CryptoError::Integrity);
            }
            self.header = Some(header);
            let _ = self.buffer.split_to(HEADER_LEN);
        }
        let mut plain = Vec::new();
        loop {
            if self.counter >= self.segments {
                // Bytes past the last segment: the object is not what was stored.
                return if self.buffer.is_empty() { Ok(plain) } else { Err(CryptoError::Integrity) };
            }
            let last = self.counter + 1 == self.segments;
            let sealed = if last { self.last_sealed } else { SEGMENT_SIZE + TAG_LEN };
            if self.buffer.len() < sealed {
                return Ok(plain);
            }
            let mut segment = self.buffer.split_to(sealed);
            let len = match self.open(&mut segment, last) {
                Ok(len) => len,
                // The segments before this one verified: hand them on, then fail.
                Err(e) if plain.is_empty() => return Err(e),
                Err(_) => {
                    self.failed = true;
                    return Ok(plain);
                }
            };
            segment.truncate(len);
            if len > 0 {
                plain.push(segment.freeze());
            }
        }
    }

    /// At the end of the object: every segment must have arrived and opened.
    pub fn finish(self) -> Result<(), CryptoError> {
        if !self.failed && self.header.is_some() && self.counter == self.segments && self.buffer.is_empty() {
            Ok(())
        } else {
            Err(CryptoError::Integrity)
        }
    }

    /// Opens `segment` in place; returns the length of its plaintext.
    fn open(&mut self, segment: &mut [u8], last: bool) -> Result<usize, CryptoError> {
        let header = self.header.as_ref().ok_or(CryptoError::Integrity)?;
        let prefix: [u8; 4] = header[8..].try_into().expect("4 bytes");
        let aad = segment_aad(header, self.key.file, last);
        let plain = self
            .key
            .key
            .open_in_place(nonce(&prefix, self.counter), Aad::from(&aad), segment)
            .map_err(|_| CryptoError::Integrity)?;
        self.counter += 1;
        Ok(plain.len())
    }
}

/// The size of the stored object for `plaintext` bytes.
pub fn sealed_len(plaintext: u64) -> u64 {
    // Full segments, the last one possibly short; an empty file has one empty segment.
    let segments = plaintext.div_ceil(SEGMENT_SIZE as u64).max(1);
    HEADER_LEN as u64 + plaintext + segments * TAG_LEN as u64
}

#[cfg(test)]
mod tests {
    use super::*;

    fn master() -> MasterKey {
        MasterKey::from_bytes(&[7u8; 32])
    }

    fn seal(key: DataKey, plaintext: &[u8], chunk: usize) -> Vec<u8> {
        let (mut sealer, mut out) = Sealer::new(key).unwrap();
        for piece in plaintext.chunks(chunk.max(1)) {
            sealer.push(piece, &mut out).unwrap();
        }
        sealer.finish(&mut out).unwrap();
        out
    }

    fn open(key: DataKey, object: &[u8], len: usize, chunk: usize) -> Result<Vec<u8>, CryptoError> {
        let mut opener = Opener::new(key, len as u64);
        let mut plain = Vec::new();
        for piece in object.chunks(chunk.max(1)) {
            for part in opener.push(Bytes::copy_from_slice(piece))? {
                plain.extend_from_slice(&part);
            }
        }
        opener.finish()?;
        Ok(plain)
    }

    fn keys(m: &MasterKey) -> (DataKey, DataKey) {
        let (tenant, file) = (Uuid::new_v4(), Uuid::new_v4());
        let (key, wrapped) = m.new_data_key(tenant, file).unwrap();
        (key, m.open_data_key(m.id(), tenant, file, &wrapped).unwrap())
    }

    #[test]
    fn every_length_round_trips_whatever_the_chunking() {
        let m = master();
        for len in [0, 1, SEGMENT_SIZE - 1, SEGMENT_SIZE, SEGMENT_SIZE + 1, 3 * SEGMENT_SIZE, 3 * SEGMENT_SIZE + 17] {
            let data: Vec<u8> = (0..len).map(|i| (i * 31 % 251) as u8).collect();
            for (write, read) in [(1000, 7000), (SEGMENT_SIZE, 13), (len + 1, len + 100)] {
                let (seal_key, open_key) = keys(&m);
                let object = seal(seal_key, &data, write);
                assert_eq!(object.len() as u64, sealed_len(len as u64));
                assert_eq!(open(open_key, &object, len, read).unwrap(), data, "len {len}");
                // A wrong plaintext length is an integrity failure, never wrong bytes.
                let (seal_key, open_key) = keys(&m);
                let object = seal(seal_key, &data, write);
                assert!(open(open_key, &object, len + 1, read).is_err(), "len {len} + 1");
            }
        }
    }

    #[test]
    fn a_flipped_byte_anywhere_is_detected() {
        let m = master();
        let data = vec![42u8; 2 * SEGMENT_SIZE + 5];
        let (seal_key, _) = keys(&m);
        let object = seal(seal_key, &data, 4096);
        for at in [0, 5, 9, HEADER_LEN, HEADER_LEN + SEGMENT_SIZE + 3, object.len() - 1] {
            let (tenant, file) = (Uuid::new_v4(), Uuid::new_v4());
            let (key, wrapped) = m.new_data_key(tenant, file).unwrap();
            let mut object = seal(key, &data, 4096);
            object[at] ^= 1;
            let key = m.open_data_key(m.id(), tenant, file, &wrapped).unwrap();
            assert!(matches!(open(key, &object, data.len(), 5000), Err(CryptoError::Integrity)), "flip at {at}");
        }
    }

    #[test]
    fn a_chunk_holding_a_bad_segment_yields_the_sound_ones_before_it_and_nothing_after() {
        let m = master();
        let data: Vec<u8> = (0..3 * SEGMENT_SIZE + 10).map(|i| (i % 251) as u8).collect();
        let (seal_key, open_key) = keys(&m);
        let mut object = seal(seal_key, &data, 4096);
        object[HEADER_LEN + SEGMENT_SIZE + TAG_LEN + 5] ^= 1; // inside the second segment
        let mut opener = Opener::new(open_key, data.len() as u64);
        let first = opener.push(Bytes::from(object)).unwrap();
        assert_eq!(first.len(), 1, "only the first segment verified");
        assert_eq!(&first[0][..], &data[..SEGMENT_SIZE]);
        assert!(opener.push(Bytes::from_static(b"more")).is_err());
        assert!(opener.finish().is_err());
    }

    #[test]
    fn truncation_even_at_a_segment_boundary_and_appended_bytes_are_detected() {
        let m = master();
        let data = vec![9u8; 2 * SEGMENT_SIZE + 100];
        let (seal_key, _) = keys(&m);
        let full = seal(seal_key, &data, 9999);
        let boundary = HEADER_LEN + SEGMENT_SIZE + TAG_LEN;
        for cut in [full.len() - 1, boundary * 2 - HEADER_LEN, boundary, HEADER_LEN + 3, 4] {
            let (_, open_key) = keys(&m);
            assert!(open(open_key, &full[..cut], data.len(), 777).is_err(), "cut at {cut}");
        }
        let (seal_key, open_key) = keys(&m);
        let mut longer = seal(seal_key, &data, 9999);
        longer.extend_from_slice(&[0u8; 20]);
        assert!(open(open_key, &longer, data.len(), 777).is_err());
    }

    #[test]
    fn a_wrapped_key_opens_only_for_its_own_file_tenant_and_master_key() {
        let m = master();
        let (tenant, file) = (Uuid::new_v4(), Uuid::new_v4());
        let (_, wrapped) = m.new_data_key(tenant, file).unwrap();
        assert!(m.open_data_key(m.id(), tenant, Uuid::new_v4(), &wrapped).is_err());
        assert!(m.open_data_key(m.id(), Uuid::new_v4(), file, &wrapped).is_err());
        let other = MasterKey::from_bytes(&[8u8; 32]);
        assert!(matches!(other.open_data_key(m.id(), tenant, file, &wrapped), Err(CryptoError::UnknownMasterKey(_))));
        assert!(other.open_data_key(other.id(), tenant, file, &wrapped).is_err());
    }

    #[test]
    fn the_master_key_file_is_created_owner_only_and_a_readable_one_is_refused() {
        use std::os::unix::fs::PermissionsExt;
        let dir = std::env::temp_dir().join(format!("ff-key-{}", Uuid::new_v4().simple()));
        let path = dir.join("master.key");
        let first = MasterKey::load(None, &path).unwrap();
        assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
        assert_eq!(MasterKey::load(None, &path).unwrap().id(), first.id(), "the same key on the next start");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        assert!(MasterKey::load(None, &path).is_err());
        std::fs::remove_dir_all(&dir).unwrap();
        assert!(format!("{first:?}").starts_with("MasterKey("));
        assert!(MasterKey::load(Some(&SecretString::from("abcd".to_string())), &path).is_err());
    }
}

//! The audit archive: gzip-compressed JSON Lines, one per tenant and expired
//! monthly partition. The first line is the header (what the archive covers:
//! its first and last sequence, the hash it chains from and the last hash, the
//! row count, and a checkpoint signing the last hash); every other line is a
//! row with its sequence, digest and hash. [`Checker`] verifies an archive as
//! its bytes stream in (constant memory): every digest recomputed, every link
//! followed from the header's previous hash, the count and the last hash
//! matched, and the checkpoint's signature checked.

use std::io::Write;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::{
    chain::{self, Hash, Row},
    checkpoint::{Checkpoint, PublicKey},
};

pub const FORMAT: &str = "fortifile.audit.archive.v1";

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Header {
    pub format: String,
    pub tenant_id: Uuid,
    pub partition: String,
    pub first_seq: i64,
    pub last_seq: i64,
    /// The hash the first row chains from (hex): the genesis, or the last
    /// hash of the previous archive.
    pub prev_hash: String,
    pub last_hash: String,
    pub rows: i64,
    pub checkpoint: Checkpoint,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Line {
    pub seq: i64,
    pub digest: String,
    pub hash: String,
    pub row: Row,
}

/// Where an archive lives in the storage.
pub fn object_key(tenant: Uuid, partition: &str) -> String {
    format!("audit-archives/{tenant}/{partition}.jsonl.gz")
}

/// Writes an archive into memory chunks: feed lines, take the compressed bytes
/// as they come ([`Writer::take`]) and stream them to the store.
pub struct Writer {
    gz: flate2::write::GzEncoder<Vec<u8>>,
    sha: ring::digest::Context,
}

impl Writer {
    pub fn new(header: &Header) -> std::io::Result<Writer> {
        let mut w = Writer {
            gz: flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default()),
            sha: ring::digest::Context::new(&ring::digest::SHA256),
        };
        w.line(header)?;
        Ok(w)
    }

    pub fn line(&mut self, value: &impl Serialize) -> std::io::Result<()> {
        serde_json::to_writer(&mut self.gz, value)?;
        self.gz.write_all(b"\n")
    }

    /// The compressed bytes so far.
    pub fn take(&mut self) -> Vec<u8> {
        let bytes = std::mem::take(self.gz.get_mut());
        self.sha.update(&bytes);
        bytes
    }

    /// The last compressed bytes and the SHA-256 of the whole archive.
    pub fn finish(mut self) -> std::io::Result<(Vec<u8>, Hash)> {
        let tail = self.gz.finish()?;
        self.sha.update(&tail);
        Ok((tail, self.sha.finish().as_ref().try_into().expect("32 bytes")))
    }
}

/// What a verified archive covers.
#[derive(Debug, Clone)]
pub struct Checked {
    pub header: Header,
    pub sha256: Hash,
}

/// Verifies an archive fed to it in compressed chunks ([`Checker::feed`]).
pub struct Checker {
    gz: flate2::write::GzDecoder<Lines>,
    sha: ring::digest::Context,
}

struct Lines {
    key: PublicKey,
    /// Hashes checkpoints give for sequences inside the archive (hex).
    pins: std::collections::BTreeMap<i64, String>,
    partial: Vec<u8>,
    header: Option<Header>,
    prev: Hash,
    next_seq: i64,
    rows: i64,
    failed: Option<String>,
}

impl Checker {
    pub fn new(key: PublicKey) -> Checker {
        Self::pinned(key, Default::default())
    }

    /// A checker that also holds the rows against checkpoints (`seq` → hex hash).
    pub fn pinned(key: PublicKey, pins: std::collections::BTreeMap<i64, String>) -> Checker {
        let lines =
            Lines { key, pins, partial: Vec::new(), header: None, prev: [0; 32], next_seq: 0, rows: 0, failed: None };
        Checker { gz: flate2::write::GzDecoder::new(lines), sha: ring::digest::Context::new(&ring::digest::SHA256) }
    }

    pub fn feed(&mut self, compressed: &[u8]) -> Result<(), String> {
        self.sha.update(compressed);
        let written = self.gz.write_all(compressed);
        if let Some(why) = &self.gz.get_ref().failed {
            return Err(why.clone());
        }
        written.map_err(|e| format!("the archive is not valid gzip: {e}"))
    }

    pub fn finish(mut self) -> Result<Checked, String> {
        self.gz.try_finish().map_err(|e| format!("the archive is not valid gzip: {e}"))?;
        let sha256: Hash = self.sha.finish().as_ref().try_into().expect("32 bytes");
        let mut lines = self.gz.finish().map_err(|e| format!("the archive is not valid gzip: {e}"))?;
        if !lines.partial.is_empty() {
            let rest = std::mem::take(&mut lines.partial);
            lines.line(&rest);
        }
        if let Some(why) = lines.failed {
            return Err(why);
        }
        let header = lines.header.ok_or("the archive is empty")?;
        if lines.rows != header.rows || lines.next_seq != header.last_seq + 1 {
            return Err(format!(
                "the archive holds {} rows up to sequence {}, its header says {} up to {}",
                lines.rows,
                lines.next_seq - 1,
                header.rows,
                header.last_seq
            ));
        }
        if hex::encode(lines.prev) != header.last_hash {
            return Err("the archive's last hash is not the one its rows chain to".into());
        }
        Ok(Checked { header, sha256 })
    }
}

impl Lines {
    fn fail(&mut self, why: String) {
        if self.failed.is_none() {
            self.failed = Some(why);
        }
    }

    fn line(&mut self, bytes: &[u8]) {
        if self.failed.is_some() || bytes.is_empty() {
            return;
        }
        let Some(header) = &self.header else {
            match serde_json::from_slice::<Header>(bytes) {
                Ok(h) => self.start(h),
                Err(e) => self.fail(format!("the archive's header is unreadable: {e}")),
            }
            return;
        };
        let tenant = header.tenant_id;
        let line: Line = match serde_json::from_slice(bytes) {
            Ok(l) => l,
            Err(e) => return self.fail(format!("line for sequence {} is unreadable: {e}", self.next_seq)),
        };
        if line.seq != self.next_seq {
            return self.fail(format!("sequence {} is missing: the next line is {}", self.next_seq, line.seq));
        }
        let digest = line.row.digest();
        if line.row.tenant_id != tenant || hex::encode(digest) != line.digest {
            return self.fail(format!("sequence {} (row {}) was changed", line.seq, line.row.id));
        }
        let hash = chain::link(&self.prev, line.seq, &digest);
        if hex::encode(hash) != line.hash {
            return self.fail(format!("sequence {} (row {}) is out of its place in the chain", line.seq, line.row.id));
        }
        if self.pins.get(&line.seq).is_some_and(|pinned| *pinned != line.hash) {
            return self.fail(format!("sequence {} differs from a signed checkpoint: history was rewritten", line.seq));
        }
        self.prev = hash;
        self.next_seq += 1;
        self.rows += 1;
    }

    fn start(&mut self, header: Header) {
        if header.format != FORMAT {
            return self.fail(format!("not an audit archive ({:?})", header.format));
        }
        let cp = &header.checkpoint;
        if !cp.signed_by(&self.key) {
            return self.fail("the archive's checkpoint does not verify with this key".into());
        }
        if cp.tenant_id != header.tenant_id || cp.seq != header.last_seq || cp.hash != header.last_hash {
            return self.fail("the archive's checkpoint is not about its last row".into());
        }
        let Some(prev) = hex::decode(&header.prev_hash).ok().and_then(|b| <Hash>::try_from(b).ok()) else {
            return self.fail("the archive's previous hash is not a hash".into());
        };
        self.prev = prev;
        self.next_seq = header.first_seq;
        self.header = Some(header);
    }
}

impl Write for Lines {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let mut rest = buf;
        while let Some(at) = rest.iter().position(|b| *b == b'\n') {
            let (line, tail) = rest.split_at(at);
            if self.partial.is_empty() {
                self.line(line);
            } else {
                let mut whole = std::mem::take(&mut self.partial);
                whole.extend_from_slice(line);
                self.line(&whole);
            }
            rest = &tail[1..];
        }
        self.partial.extend_from_slice(rest);
        if self.partial.len() > 16 * 1024 * 1024 {
            self.fail("a line of the archive is longer than 16 MiB".into());
            self.partial.clear();
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

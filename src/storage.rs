//! Object storage behind one interface: a local directory or an S3-compatible
//! bucket (AWS S3, MinIO, Ceph RGW), through Apache Arrow's `object_store`.
//!
//! Keys are generated here (`<tenant>/<random uuid>`); a user's filename never
//! becomes part of one. Objects are written with multipart uploads so memory
//! stays bounded, and an upload that is not finished is aborted, also when its
//! request is dropped mid-body.
//!
//! An object is durable when its upload completes: a local object is fsynced,
//! and so is its directory after the staging file is renamed into place (S3
//! acknowledges a completed multipart upload only once it is stored). Callers
//! commit the `files` row only after that, so an acknowledged document never
//! points at a missing or short object after a power loss.

use std::{path::PathBuf, sync::Arc};

use anyhow::Context;
use bytes::Bytes;
use futures::{StreamExt, TryStreamExt, stream::BoxStream};
use object_store::{
    GetResultPayload, ObjectStore, ObjectStoreExt, WriteMultipart, aws::AmazonS3Builder, local::LocalFileSystem,
    path::Path, prefix::PrefixStore,
};
use time::OffsetDateTime;
use uuid::Uuid;

use crate::config::StorageSpec;

/// Bytes buffered per part (S3's minimum part size is 5 MiB).
const PART_SIZE: usize = 5 * 1024 * 1024;
/// Parts uploading at once per upload; with [`PART_SIZE`] this bounds an
/// upload's buffers to about 15 MiB.
const PARTS_IN_FLIGHT: usize = 2;

#[derive(Clone)]
pub struct Storage {
    store: Arc<dyn ObjectStore>,
    label: String,
    /// The directory of a local store: where staging files live.
    local_root: Option<PathBuf>,
}

impl std::fmt::Debug for Storage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Storage({})", self.label)
    }
}

impl Storage {
    pub fn open(spec: &StorageSpec) -> anyhow::Result<Storage> {
        match spec {
            StorageSpec::Local(dir) => {
                use std::os::unix::fs::DirBuilderExt;
                std::fs::DirBuilder::new()
                    .recursive(true)
                    .mode(0o700)
                    .create(dir)
                    .with_context(|| format!("FORTIFILE_STORAGE: cannot create {}", dir.display()))?;
                let store = LocalFileSystem::new_with_prefix(dir)
                    .with_context(|| format!("FORTIFILE_STORAGE: cannot use {}", dir.display()))?
                    .with_fsync(true);
                let root = std::fs::canonicalize(dir).unwrap_or_else(|_| dir.clone());
                Ok(Storage {
                    store: Arc::new(store),
                    label: format!("file://{}", dir.display()),
                    local_root: Some(root),
                })
            }
            StorageSpec::S3 { bucket, prefix, settings } => {
                let mut builder = AmazonS3Builder::new().with_bucket_name(bucket);
                for (name, value) in &settings.0 {
                    let key =
                        name.to_ascii_lowercase().parse().with_context(|| format!("{name}: not an S3 setting"))?;
                    builder = builder.with_config(key, value);
                    if name.starts_with("AWS_ENDPOINT") && value.starts_with("http://") {
                        builder = builder.with_allow_http(true);
                    }
                }
                // A store that does not answer fails the request within
                // seconds (503), instead of after the client's default three
                // minutes of retries.
                let retry = object_store::RetryConfig {
                    max_retries: 3,
                    retry_timeout: std::time::Duration::from_secs(10),
                    ..Default::default()
                };
                let s3 = builder.with_retry(retry).build().context("FORTIFILE_STORAGE: configuring the S3 client")?;
                let label = format!("s3://{bucket}/{prefix}");
                let store: Arc<dyn ObjectStore> =
                    if prefix.is_empty() { Arc::new(s3) } else { Arc::new(PrefixStore::new(s3, prefix.as_str())) };
                Ok(Storage { store, label, local_root: None })
            }
        }
    }

    pub fn label(&self) -> &str {
        &self.label
    }

    /// A new, unused object key for a file of `tenant`.
    pub fn new_key(tenant: Uuid) -> String {
        format!("{tenant}/{}", Uuid::new_v4())
    }

    /// Starts writing the object `key`.
    pub async fn writer(&self, key: &str) -> anyhow::Result<ObjectWriter> {
        let path = Path::parse(key)?;
        let upload = self.store.put_multipart(&path).await.context("starting an object upload")?;
        Ok(ObjectWriter {
            upload: Some(WriteMultipart::new_with_chunk_size(upload, PART_SIZE)),
            store: self.store.clone(),
            path,
        })
    }

    /// The object `key`, streamed: a local file in blocks of `first` bytes, then
    /// `block` bytes (whole segments, so the decryption never has to copy), each
    /// read on the blocking pool straight into its buffer (the store's own file
    /// stream reads small chunks and copies them); S3 as the store streams it.
    pub async fn read(
        &self,
        key: &str,
        first: usize,
        block: usize,
    ) -> anyhow::Result<BoxStream<'static, anyhow::Result<Bytes>>> {
        let got = self.store.get(&Path::parse(key)?).await.context("reading a stored object")?;
        match got.payload {
            GetResultPayload::File(mut file, _) => {
                use std::io::{Read, Seek};
                file.seek(std::io::SeekFrom::Start(got.range.start)).context("reading a stored object")?;
                let remaining = got.range.end - got.range.start;
                let blocks = futures::stream::try_unfold(
                    (Some(file), remaining, first),
                    move |(file, remaining, size)| async move {
                        let Some(file) = file.filter(|_| remaining > 0) else { return Ok(None) };
                        let want = (size as u64).min(remaining);
                        let (file, bytes) = tokio::task::spawn_blocking(move || {
                            // `read_to_end` fills spare capacity: no zeroing, no copy.
                            let mut buffer = Vec::with_capacity(want as usize);
                            let read = (&file).take(want).read_to_end(&mut buffer);
                            (file, read.map(|_| buffer))
                        })
                        .await
                        .context("reading a stored object")?;
                        let bytes = bytes.context("reading a stored object")?;
                        if bytes.is_empty() {
                            anyhow::bail!("a stored object ended early");
                        }
                        let left = remaining - bytes.len() as u64;
                        Ok(Some((Bytes::from(bytes), (Some(file), left, block))))
                    },
                );
                Ok(blocks.boxed())
            }
            GetResultPayload::Stream(stream) => Ok(stream.map_err(anyhow::Error::from).boxed()),
        }
    }

    pub async fn delete(&self, key: &str) -> anyhow::Result<()> {
        match self.store.delete(&Path::parse(key)?).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(e).context("deleting a stored object"),
        }
    }

    /// Deletes the object `key` and, in a local store, the staging files an
    /// interrupted upload of it left (`<key>#<n>`; the store's own listing never
    /// shows them). S3 keeps the parts of an upload nobody completed or aborted
    /// until the bucket's lifecycle rule removes them (see the README).
    pub async fn delete_with_staging(&self, key: &str) -> anyhow::Result<()> {
        self.delete(key).await?;
        for staging in self.staging_files(key)? {
            match std::fs::remove_file(&staging) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(e).with_context(|| format!("removing {}", staging.display())),
            }
        }
        Ok(())
    }

    /// Whether a local upload of `key` wrote since `since` (so it is still in
    /// progress, however long it has taken). Always false for S3.
    pub fn written_since(&self, key: &str, since: OffsetDateTime) -> bool {
        let Ok(staging) = self.staging_files(key) else { return false };
        staging.iter().any(|path| {
            std::fs::metadata(path).and_then(|m| m.modified()).is_ok_and(|at| OffsetDateTime::from(at) >= since)
        })
    }

    /// The local staging files of `key` (none for S3).
    fn staging_files(&self, key: &str) -> anyhow::Result<Vec<PathBuf>> {
        let Some(root) = &self.local_root else { return Ok(Vec::new()) };
        // Keys are ours: "<tenant uuid>/<uuid>", never a path of the client's.
        let (tenant, name) = key.split_once('/').context("not an object key")?;
        anyhow::ensure!(Uuid::parse_str(tenant).is_ok() && Uuid::parse_str(name).is_ok(), "not an object key");
        let dir = root.join(tenant);
        let prefix = format!("{name}#");
        let entries = match std::fs::read_dir(&dir) {
            Ok(entries) => entries,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(e).with_context(|| format!("reading {}", dir.display())),
        };
        Ok(entries
            .filter_map(|e| e.ok())
            .filter(|e| e.file_name().to_str().is_some_and(|n| n.starts_with(&prefix)))
            .map(|e| e.path())
            .collect())
    }
}

/// A store failure a client is told about (the rest are internal errors).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Trouble {
    /// No space left (local disk full, quota): 507.
    Full,
    /// The store does not answer (S3 unreachable, refused, timed out): 503.
    Unavailable,
}

/// What `error` says about the store, if it is one of the [`Trouble`]s: the
/// cause chain's I/O errors first, then (for S3, whose client wraps its
/// transport's errors in text) the messages.
pub fn trouble(error: &anyhow::Error) -> Option<Trouble> {
    use std::io::ErrorKind as K;
    for cause in error.chain() {
        if let Some(io) = cause.downcast_ref::<std::io::Error>() {
            if matches!(io.kind(), K::StorageFull | K::QuotaExceeded) || matches!(io.raw_os_error(), Some(28 | 122)) {
                return Some(Trouble::Full);
            }
            if matches!(
                io.kind(),
                K::ConnectionRefused
                    | K::ConnectionReset
                    | K::ConnectionAborted
                    | K::NotConnected
                    | K::TimedOut
                    | K::HostUnreachable
                    | K::NetworkUnreachable
            ) {
                return Some(Trouble::Unavailable);
            }
        }
    }
    let text = format!("{error:#}");
    if text.contains("No space left on device") || text.contains("Disk quota exceeded") {
        return Some(Trouble::Full);
    }
    let unreachable = [
        "Connection refused",
        "error sending request",
        "connection closed before message completed",
        "operation timed out",
        "dns error",
        "Connection reset",
    ];
    if unreachable.iter().any(|m| text.contains(m)) {
        return Some(Trouble::Unavailable);
    }
    None
}

/// An object being written. Finish it, or it is aborted: explicitly with
/// [`ObjectWriter::abort`], or in the background when dropped (a request
/// cancelled mid-body leaves no object behind).
pub struct ObjectWriter {
    upload: Option<WriteMultipart>,
    store: Arc<dyn ObjectStore>,
    path: Path,
}

impl ObjectWriter {
    /// Queues `data`; waits while too many parts are in flight.
    pub async fn write(&mut self, data: &[u8]) -> anyhow::Result<()> {
        let upload = self.upload.as_mut().context("object writer already closed")?;
        upload.wait_for_capacity(PARTS_IN_FLIGHT).await.context("uploading an object part")?;
        upload.write(data);
        Ok(())
    }

    pub async fn finish(mut self) -> anyhow::Result<()> {
        let upload = self.upload.take().context("object writer already closed")?;
        upload.finish().await.context("completing an object upload")?;
        Ok(())
    }

    pub async fn abort(mut self) {
        if let Some(upload) = self.upload.take() {
            abort(upload, self.store.clone(), self.path.clone()).await;
        }
    }
}

async fn abort(upload: WriteMultipart, store: Arc<dyn ObjectStore>, path: Path) {
    if let Err(e) = upload.abort().await {
        tracing::warn!(error = %e, "could not abort an object upload; the sweep will remove what is left");
    }
    // Some stores complete parts eagerly; make sure nothing stays at the key.
    let _ = store.delete(&path).await;
}

impl Drop for ObjectWriter {
    fn drop(&mut self) {
        if let Some(upload) = self.upload.take()
            && let Ok(runtime) = tokio::runtime::Handle::try_current()
        {
            runtime.spawn(abort(upload, self.store.clone(), self.path.clone()));
        }
    }
}

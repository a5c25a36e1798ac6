//! Documents: upload, list, view, download, classify, share and delete, with
//! encryption at rest and storage on local disk or S3-compatible object storage.
//!
//! - [`catalog`]: the `files` table (views, the stored facts access depends on,
//!   the list query that applies MAC and scope in SQL) and filename rules.
//! - [`upload`]: a streamed multipart upload: decide, encrypt as it arrives,
//!   store, then commit the row and its audit row together.
//! - [`download`]: a streamed, decrypting download that never returns bytes
//!   that failed authentication.
//! - [`manage`]: view, reclassify, delete; [`shares`]: sharing with a colleague.
//! - [`crypto`]: envelope encryption in authenticated segments; [`storage`]: the
//!   object store, multipart writers that abort when dropped, and the sweep.
//!
//! Every decision is `authz::files`; every operation runs in one `TenantTx` with
//! its audit row.

pub mod catalog;
pub mod crypto;
pub mod download;
pub mod handlers;
pub mod manage;
pub mod shares;
pub mod storage;
pub mod upload;

use std::{sync::Arc, time::Duration};

use crate::{config::Config, http::AppState};
pub use catalog::FileView;
use crypto::MasterKey;
use storage::Storage;

/// Where files go and the key that protects them.
#[derive(Debug)]
pub struct Vault {
    pub storage: Storage,
    pub master: MasterKey,
    pub max_upload_bytes: u64,
}

impl Vault {
    pub fn open(config: &Config) -> anyhow::Result<Arc<Vault>> {
        let master = MasterKey::load(config.master_key.as_ref(), &config.master_key_file())?;
        let storage = Storage::open(&config.storage)?;
        tracing::info!(storage = storage.label(), master_key = master.id(), "file storage ready");
        Ok(Arc::new(Vault { storage, master, max_upload_bytes: config.max_upload_bytes }))
    }
}

/// Objects older than this with no `files` row are removed by the sweep: what a
/// crashed or cancelled upload, or a failed delete, left behind.
pub const ORPHAN_AGE: Duration = Duration::from_secs(3600);

/// Removes stored objects older than `min_age` that no file row references.
/// Returns how many were removed.
pub async fn sweep_unreferenced(state: &AppState, min_age: Duration) -> anyhow::Result<usize> {
    let before = state.clock.now() - min_age;
    let mut removed = 0;
    for (tenant, key) in state.files.storage.objects_older_than(before).await? {
        let mut tx = state.db.tenant_tx(tenant, None).await?;
        let referenced = catalog::object_referenced(&mut tx, &key).await?;
        tx.commit().await?;
        if !referenced {
            state.files.storage.delete(&key).await?;
            removed += 1;
        }
    }
    Ok(removed)
}

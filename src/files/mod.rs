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
//!   object store (fsynced locally) and multipart writers that abort when
//!   dropped; [`pending`]: objects in flight, and the sweep of what a crash or a
//!   failure left behind.
//!
//! Every decision is `authz::files`; every operation runs in one `TenantTx` with
//! its audit row.

pub mod catalog;
pub mod crypto;
pub mod download;
pub mod handlers;
pub mod manage;
pub mod pending;
pub mod shares;
pub mod upload;

use std::sync::Arc;

use crate::config::Config;
use crate::storage::Storage;
pub use catalog::FileView;
use crypto::MasterKey;

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

pub use pending::{GRACE as ORPHAN_AGE, sweep as sweep_unreferenced};

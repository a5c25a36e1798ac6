//! `fortifile audit …`: verify the chain (and archives), print the public key
//! that checks checkpoints, list archives.

use anyhow::{Context, bail};
use clap::Subcommand;

use crate::{
    audit::{
        chain,
        checkpoint::{self, AuditKey, Checkpoint, PublicKey},
        retention, verify,
    },
    config::Config,
    db::{Database, DbTarget},
    storage::Storage,
};

#[derive(Subcommand)]
pub enum AuditCommand {
    /// Walk every tenant's audit chain (or one) and check every signature.
    /// Exits 0 with `verified N rows of T tenants up to …`, or 1 naming the
    /// first bad tenant, sequence and row and what is wrong.
    Verify {
        /// Only this tenant (its slug).
        #[arg(long)]
        tenant: Option<String>,
        /// A checkpoint file kept outside the database (one checkpoint, a list,
        /// or what GET /api/audit-logs/checkpoints answers). Repeatable.
        #[arg(long = "checkpoint", value_name = "FILE")]
        checkpoints: Vec<std::path::PathBuf>,
        /// The public key (hex) to check signatures with; default: the one of
        /// the configured signing key.
        #[arg(long)]
        public_key: Option<String>,
        /// Verify an archive written by retention instead (its storage key).
        #[arg(long, value_name = "KEY")]
        archive: Option<String>,
    },
    /// Print the public key (hex) that checks the audit checkpoints.
    PublicKey,
    /// Audit archives written by retention.
    Archive {
        /// List them.
        #[arg(long)]
        list: bool,
    },
}

pub async fn run(config: &Config, target: &DbTarget, command: AuditCommand) -> anyhow::Result<()> {
    match command {
        AuditCommand::PublicKey => {
            let key = existing_key(config)?;
            println!("{}  (key id {})", key.public().to_hex(), key.id());
            Ok(())
        }
        AuditCommand::Verify { tenant, checkpoints, public_key, archive } => {
            let key = match public_key {
                Some(hex) => PublicKey::from_hex(&hex).context("--public-key: expected 64 hex characters")?,
                None => existing_key(config)?.public(),
            };
            let mut outside: Vec<Checkpoint> = Vec::new();
            for path in &checkpoints {
                let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
                outside.extend(checkpoint::parse_file(&text).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?);
            }
            if let Some(object) = archive {
                return verify_archive(config, &key, &object).await;
            }
            let storage = Storage::open(&config.storage)?;
            let db = super::connect(target, 2).await?;
            let result = verify_chains(&db, &storage, &key, tenant.as_deref(), &outside).await;
            db.close().await;
            result
        }
        AuditCommand::Archive { list } => {
            if !list {
                bail!("say what to do: `fortifile audit archive --list`");
            }
            let db = super::connect(target, 2).await?;
            let result = list_archives(&db).await;
            db.close().await;
            result
        }
    }
}

/// The configured key, never a new one: a key made now would check nothing.
fn existing_key(config: &Config) -> anyhow::Result<AuditKey> {
    let path = config.audit_signing_key_file();
    if config.audit.signing_key.is_none() && !path.exists() {
        bail!(
            "no audit signing key: set FORTIFILE_AUDIT_SIGNING_KEY or FORTIFILE_DATA_DIR as the server has it \
             ({} does not exist), or give --public-key",
            path.display()
        );
    }
    AuditKey::load(config.audit.signing_key.as_ref(), &path)
}

async fn verify_chains(
    db: &Database,
    storage: &Storage,
    key: &PublicKey,
    only: Option<&str>,
    outside: &[Checkpoint],
) -> anyhow::Result<()> {
    let tenants = match only {
        Some(slug) => vec![db.tenant_by_slug(slug).await?.with_context(|| format!("no tenant {slug:?}"))?],
        None => db.tenants().await?,
    };
    let mut rows = 0u64;
    let mut ends = Vec::new();
    for tenant in &tenants {
        chain::seal(db, tenant.id).await?;
        let mut tx = db.tenant_tx(tenant.id, None).await?;
        let mut found = verify::tenant(&mut tx, key, outside).await?;
        // What retention archived: every archive read back and checked as one chain.
        let mut archived = (0, 0);
        if found.is_ok() {
            match retention::verify_archives(storage, key, &mut tx, outside)
                .await
                .map_err(|e| anyhow::anyhow!("{e}"))?
            {
                Ok(counted) => archived = counted,
                Err(broken) => found = Err(broken),
            }
        }
        tx.commit().await?;
        match found {
            Ok(v) => {
                println!(
                    "tenant {}: {}{} rows verified, sequence {}..{}, head {}, {} checkpoints{}",
                    tenant.slug,
                    if archived.1 > 0 {
                        format!("{} archived rows in {} archives and ", archived.0, archived.1)
                    } else {
                        String::new()
                    },
                    v.rows,
                    v.anchor + 1,
                    v.seq,
                    v.hash,
                    v.checkpoints,
                    if v.unsealed > 0 { format!(", {} newer rows not sealed yet", v.unsealed) } else { String::new() }
                );
                rows += v.rows + archived.0 as u64;
                ends.push(format!("{} ({})", v.seq, tenant.slug));
            }
            Err(broken) => {
                let row = broken.row_id.map(|r| format!(" row {r}")).unwrap_or_default();
                bail!(
                    "audit chain broken: tenant {} ({}) sequence {}{row}: {:?}: {}",
                    tenant.slug,
                    tenant.id,
                    broken.seq,
                    broken.problem,
                    broken.detail
                );
            }
        }
    }
    println!("verified {rows} rows of {} tenants up to sequence {}", tenants.len(), ends.join(", "));
    Ok(())
}

/// Reads an archive from the configured storage and verifies it: no database needed.
async fn verify_archive(config: &Config, key: &PublicKey, object: &str) -> anyhow::Result<()> {
    let storage = Storage::open(&config.storage)?;
    let checked = retention::read_back(&storage, key, object).await.map_err(|e| anyhow::anyhow!("{e}"))?;
    let h = &checked.header;
    println!(
        "archive {object} verified: tenant {} partition {} rows {} (sequence {}..{}), last hash {}, sha256 {}",
        h.tenant_id,
        h.partition,
        h.rows,
        h.first_seq,
        h.last_seq,
        h.last_hash,
        hex::encode(checked.sha256)
    );
    Ok(())
}

async fn list_archives(db: &Database) -> anyhow::Result<()> {
    let mut any = false;
    for tenant in db.tenants().await? {
        let mut tx = db.tenant_tx(tenant.id, None).await?;
        for a in retention::archives(&mut tx).await? {
            any = true;
            let released = if a.released_at.is_some() { "released" } else { "kept" };
            println!(
                "{}\t{}\t{}\trows {}\tsequence {}..{}\tsha256 {}\t{released}",
                tenant.slug, a.partition, a.object_key, a.rows, a.first_seq, a.last_seq, a.sha256
            );
        }
        tx.commit().await?;
    }
    if !any {
        println!("no audit archives yet");
    }
    Ok(())
}

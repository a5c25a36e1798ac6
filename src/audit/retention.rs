//! Retention (AU-11): a monthly partition whose rows are all older than
//! `FORTIFILE_AUDIT_RETENTION_DAYS` is archived per tenant to the file storage
//! ([`super::archive`]), read back and verified, released, and only when every
//! tenant with rows in it has released them (and none is under legal hold) is
//! the partition dropped, by `audit_drop_partition` (migration 0011), which
//! checks all of that again and records `audit.purge` in each tenant's log.
//!
//! A tenant whose dual-control policy holds `audit.purge` releases only through
//! an approved `POST /api/audit-logs/purge`; the others release at once. The
//! chain goes on across a purge: the head's anchor keeps the archived last
//! sequence and hash, and the first remaining row chains to it.

use futures::TryStreamExt;
use serde::Serialize;
use serde_json::json;
use time::{Date, Month, OffsetDateTime};
use uuid::Uuid;

use super::{
    Action, Entry, Outcome, Source,
    archive::{self, Checker, Header, Line, Writer},
    chain::{self, Head},
    checkpoint::{self, AuditKey},
    verify::Link,
};
use crate::link_select;
use crate::{
    authz::dual::{self, Operation},
    db::{Database, TenantTx},
    http::{AppState, error::AppError},
    storage::Storage,
};

/// An expired monthly partition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Partition {
    pub name: String,
    pub from: OffsetDateTime,
    pub to: OffsetDateTime,
}

impl Partition {
    /// `audit_logs_YYYY_MM`, or `None` for any other name.
    pub fn parse(name: &str) -> Option<Partition> {
        let rest = name.strip_prefix("audit_logs_")?;
        let (year, month) = rest.split_once('_')?;
        if year.len() != 4 || month.len() != 2 {
            return None;
        }
        let month = Month::try_from(month.parse::<u8>().ok()?).ok()?;
        let from = Date::from_calendar_date(year.parse().ok()?, month, 1).ok()?;
        let to = if month == Month::December {
            Date::from_calendar_date(from.year() + 1, Month::January, 1).ok()?
        } else {
            Date::from_calendar_date(from.year(), month.next(), 1).ok()?
        };
        Some(Partition { name: name.to_string(), from: from.midnight().assume_utc(), to: to.midnight().assume_utc() })
    }
}

/// The partitions whose every row is past retention at `now`, oldest first.
pub async fn expired(db: &Database, now: OffsetDateTime, days: u32) -> Result<Vec<Partition>, sqlx::Error> {
    let cutoff = now - time::Duration::days(days.into());
    let mut found: Vec<Partition> =
        db.audit_partitions().await?.iter().filter_map(|n| Partition::parse(n)).filter(|p| p.to <= cutoff).collect();
    found.sort_by_key(|p| p.from);
    Ok(found)
}

/// An archive, as `audit_archives` records it.
#[derive(Debug, Clone, Serialize, sqlx::FromRow, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ArchiveRecord {
    pub tenant_id: Uuid,
    pub partition: String,
    pub object_key: String,
    pub first_seq: i64,
    pub last_seq: i64,
    pub rows: i64,
    pub sha256: String,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339::option")]
    pub released_at: Option<OffsetDateTime>,
}

macro_rules! archive_select {
    () => {
        "SELECT tenant_id, partition, object_key, first_seq, last_seq, rows, encode(sha256, 'hex') AS sha256, \
                created_at, released_at FROM audit_archives WHERE tenant_id = $1"
    };
}

pub async fn archives(tx: &mut TenantTx) -> Result<Vec<ArchiveRecord>, sqlx::Error> {
    sqlx::query_as(concat!(archive_select!(), " ORDER BY first_seq")).bind(tx.tenant_id()).fetch_all(tx.conn()).await
}

async fn archive_of(tx: &mut TenantTx, partition: &str) -> Result<Option<ArchiveRecord>, sqlx::Error> {
    sqlx::query_as(concat!(archive_select!(), " AND partition = $2"))
        .bind(tx.tenant_id())
        .bind(partition)
        .fetch_optional(tx.conn())
        .await
}

/// Why a tenant's rows of a partition could not be archived yet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NotYet {
    /// None of its rows are in the partition.
    NoRows,
    /// Some of its rows there are not sealed yet.
    Unsealed,
    LegalHold,
}

/// Archives `tx`'s tenant's rows of `part` (with `head` locked in `tx`), unless
/// done before: writes the archive, reads it back and verifies it, records it
/// and moves the chain's anchor. Returns the archive's record.
pub async fn archive(
    storage: &Storage,
    key: &AuditKey,
    tx: &mut TenantTx,
    source: &Source,
    head: &Head,
    part: &Partition,
) -> Result<Result<ArchiveRecord, NotYet>, AppError> {
    if head.legal_hold {
        return Ok(Err(NotYet::LegalHold));
    }
    if let Some(done) = archive_of(tx, &part.name).await? {
        // Written by an earlier run: read it back again before anything relies on it.
        let checked = read_back(storage, &key.public(), &done.object_key).await?;
        if hex::encode(checked.sha256) != done.sha256 {
            return Err(AppError::Conflict(format!("the audit archive {} is not the one recorded", done.object_key)));
        }
        return Ok(Ok(done));
    }
    let tenant = tx.tenant_id();
    let (rows, unsealed, last): (i64, i64, Option<i64>) = sqlx::query_as(
        "SELECT count(*), count(*) FILTER (WHERE a.txid >= ($4::text)::xid8), max(s.seq) FROM audit_logs a \
         LEFT JOIN audit_seals s ON s.tenant_id = a.tenant_id AND s.log_id = a.id \
         WHERE a.tenant_id = $1 AND a.created_at >= $2 AND a.created_at < $3",
    )
    .bind(tenant)
    .bind(part.from)
    .bind(part.to)
    .bind(head.horizon.to_string())
    .fetch_one(tx.conn())
    .await?;
    if rows == 0 {
        return Ok(Err(NotYet::NoRows));
    }
    if unsealed > 0 {
        return Ok(Err(NotYet::Unsealed));
    }
    // Everything up to the partition's last sealed row; rows sealed with it that
    // sit in a later partition are archived too (and stay until that one goes).
    let last_seq = last.unwrap_or(head.anchor_seq).max(head.anchor_seq);
    let last_hash: Vec<u8> = if last_seq == head.anchor_seq {
        head.anchor_hash.clone()
    } else {
        sqlx::query_scalar("SELECT hash FROM audit_seals WHERE tenant_id = $1 AND seq = $2")
            .bind(tenant)
            .bind(last_seq)
            .fetch_one(tx.conn())
            .await?
    };
    let cp = checkpoint::sign(tx, key, last_seq, &last_hash).await?;
    let header = Header {
        format: archive::FORMAT.into(),
        tenant_id: tenant,
        partition: part.name.clone(),
        first_seq: head.anchor_seq + 1,
        last_seq,
        prev_hash: hex::encode(&head.anchor_hash),
        last_hash: hex::encode(&last_hash),
        rows: last_seq - head.anchor_seq,
        checkpoint: cp,
    };
    let object = archive::object_key(tenant, &part.name);
    let sha256 = write(storage, tx, &header, &object).await?;
    let checked = read_back(storage, &key.public(), &object).await?;
    if checked.sha256 != sha256 || checked.header.last_hash != header.last_hash || checked.header.rows != header.rows {
        return Err(AppError::Internal(anyhow::anyhow!(
            "the audit archive {object} read back differs from what was written"
        )));
    }
    sqlx::query(
        "INSERT INTO audit_archives (tenant_id, partition, object_key, first_seq, last_seq, last_hash, rows, sha256) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
    )
    .bind(tenant)
    .bind(&part.name)
    .bind(&object)
    .bind(header.first_seq)
    .bind(last_seq)
    .bind(&last_hash)
    .bind(header.rows)
    .bind(&sha256[..])
    .execute(tx.conn())
    .await?;
    sqlx::query("UPDATE audit_chain SET anchor_seq = $2, anchor_hash = $3 WHERE tenant_id = $1")
        .bind(tenant)
        .bind(last_seq)
        .bind(&last_hash)
        .execute(tx.conn())
        .await?;
    let entry = Entry::new(Action::AuditArchive, Outcome::Success).target("audit_archive", &object).details(json!({
        "partition": part.name,
        "key": object,
        "rows": header.rows,
        "firstSeq": header.first_seq,
        "lastSeq": last_seq,
        "lastHash": header.last_hash,
        "sha256": hex::encode(sha256),
    }));
    super::record(tx, source, entry).await?;
    archive_of(tx, &part.name).await?.ok_or(AppError::NotFound).map(Ok)
}

/// Streams the archive of the seals in `header`'s range, with their rows, to `object`.
async fn write(storage: &Storage, tx: &mut TenantTx, header: &Header, object: &str) -> Result<[u8; 32], AppError> {
    let mut out = Writer::new(header).map_err(anyhow::Error::from)?;
    let mut upload = storage.writer(object).await?;
    let mut after = header.first_seq - 1;
    while after < header.last_seq {
        let page: Vec<Link> = sqlx::query_as(concat!(link_select!(), " LIMIT 2000"))
            .bind(header.tenant_id)
            .bind(after)
            .bind(header.last_seq)
            .fetch_all(tx.conn())
            .await?;
        let Some(end) = page.last().map(|l| l.seq) else { break };
        for link in page {
            let Some(row) = link.row else {
                upload.abort().await;
                return Err(AppError::Conflict(format!(
                    "the audit row sealed as sequence {} is missing: run `fortifile audit verify` before archiving",
                    link.seq
                )));
            };
            let line = Line { seq: link.seq, digest: hex::encode(link.digest), hash: hex::encode(link.hash), row };
            out.line(&line).map_err(anyhow::Error::from)?;
        }
        upload.write(&out.take()).await?;
        after = end;
    }
    let (tail, sha256) = out.finish().map_err(anyhow::Error::from)?;
    upload.write(&tail).await?;
    upload.finish().await?;
    Ok(sha256)
}

/// Reads the archive `object` back and verifies it with `key`.
pub async fn read_back(
    storage: &Storage,
    key: &checkpoint::PublicKey,
    object: &str,
) -> Result<archive::Checked, AppError> {
    let mut stream = storage.read(object, 1 << 20, 1 << 20).await?;
    let mut checker = Checker::new(key.clone());
    while let Some(chunk) = stream.try_next().await? {
        checker.feed(&chunk).map_err(|why| AppError::Conflict(format!("the audit archive {object}: {why}")))?;
    }
    checker.finish().map_err(|why| AppError::Conflict(format!("the audit archive {object}: {why}")))
}

/// Verifies the tenant's archives as one chain: contiguous from the genesis,
/// each read from the storage and checked line by line (and against every
/// checkpoint, kept or given, that falls inside it), each continuing the one
/// before, the last ending where the chain in the database starts. Returns the
/// archived rows checked.
pub async fn verify_archives(
    storage: &Storage,
    key: &checkpoint::PublicKey,
    tx: &mut TenantTx,
    outside: &[checkpoint::Checkpoint],
) -> Result<Result<(i64, usize), crate::audit::verify::Broken>, AppError> {
    use crate::audit::verify::{Broken, Problem};
    let tenant = tx.tenant_id();
    let head = chain::head(tx).await?;
    let broken = |seq: i64, detail: String| {
        Ok(Err(Broken { tenant_id: tenant, seq, row_id: None, problem: Problem::Archive, detail }))
    };
    let mut pins = std::collections::BTreeMap::new();
    for cp in checkpoint::all(tx).await?.iter().chain(outside.iter().filter(|c| c.tenant_id == tenant)) {
        if cp.seq <= head.anchor_seq && cp.seq > 0 && cp.signed_by(key) {
            pins.insert(cp.seq, cp.hash.clone());
        }
    }
    let records = archives(tx).await?;
    let (mut next, mut prev, mut rows) = (1i64, hex::encode(chain::genesis(tenant)), 0i64);
    for record in &records {
        if record.first_seq != next {
            return broken(next, format!("no archive holds sequence {next}: the archives do not continue each other"));
        }
        let mut stream = match storage.read(&record.object_key, 1 << 20, 1 << 20).await {
            Ok(stream) => stream,
            Err(e) => {
                let detail = format!("the archive {} cannot be read from the storage: {e:#}", record.object_key);
                return broken(record.first_seq, detail);
            }
        };
        let mut checker = Checker::pinned(key.clone(), pins.clone());
        let mut failed = None;
        while let Some(chunk) = stream.try_next().await.transpose() {
            let fed = chunk.map_err(|e| format!("reading it failed: {e:#}")).and_then(|c| checker.feed(&c));
            if let Err(why) = fed {
                failed = Some(why);
                break;
            }
        }
        let checked = match failed.map_or_else(|| checker.finish(), Err) {
            Ok(c) => c,
            Err(why) => return broken(record.first_seq, format!("the archive {}: {why}", record.object_key)),
        };
        let h = &checked.header;
        if hex::encode(checked.sha256) != record.sha256
            || h.first_seq != record.first_seq
            || h.last_seq != record.last_seq
        {
            return broken(record.first_seq, format!("the archive {} is not the one recorded", record.object_key));
        }
        if h.prev_hash != prev {
            return broken(
                record.first_seq,
                format!("the archive {} does not continue the one before", record.object_key),
            );
        }
        prev = h.last_hash.clone();
        next = h.last_seq + 1;
        rows += h.rows;
    }
    if next - 1 != head.anchor_seq || prev != hex::encode(&head.anchor_hash) {
        return broken(head.anchor_seq, "the chain in the database does not start where the archives end".into());
    }
    Ok(Ok((rows, records.len())))
}

/// Lets the tenant's archived rows of `part` go (the drop can then take them).
async fn release(tx: &mut TenantTx, part: &Partition) -> Result<(), sqlx::Error> {
    sqlx::query(
        "UPDATE audit_archives SET released_at = now() WHERE tenant_id = $1 AND partition = $2 AND released_at IS NULL",
    )
    .bind(tx.tenant_id())
    .bind(&part.name)
    .execute(tx.conn())
    .await
    .map(|_| ())
}

/// What a retention run did.
#[derive(Debug, Default, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Report {
    /// Archives written or found, as `tenant/partition`.
    pub archived: Vec<String>,
    /// Partitions dropped.
    pub dropped: Vec<String>,
    /// Partitions kept, and why.
    pub waiting: Vec<String>,
    /// Partitions whose run failed, and the error.
    pub failed: Vec<String>,
}

/// Archives, releases and drops what retention allows at `now` (the daily job).
/// A partition that fails (an unreadable archive, a store that is down) is
/// reported and kept; the others go on.
pub async fn run(state: &AppState, now: OffsetDateTime) -> Result<Report, AppError> {
    let mut report = Report::default();
    for part in expired(&state.db, now, state.config.audit.retention_days).await? {
        if let Err(e) = partition(state, &part, &mut report).await {
            report.failed.push(format!("{}: {e}", part.name));
        }
    }
    Ok(report)
}

async fn partition(state: &AppState, part: &Partition, report: &mut Report) -> Result<(), AppError> {
    let mut ready = true;
    let tenants = state.db.tenant_ids().await?;
    for &tenant in &tenants {
        let mut tx = state.db.tenant_tx(tenant, None).await?;
        let head = chain::lock_head(&mut tx, true).await?.ok_or(AppError::NotFound)?;
        match archive(&state.files.storage, &state.audit_key, &mut tx, &Source::default(), &head, part).await? {
            Err(NotYet::NoRows) => {}
            Err(why) => {
                ready = false;
                report.waiting.push(format!("{}: tenant {tenant}: {why:?}", part.name));
            }
            Ok(record) => {
                report.archived.push(format!("{tenant}/{}", part.name));
                if record.released_at.is_none() {
                    if dual::holds(&mut tx, Operation::AuditPurge).await? {
                        ready = false;
                        let why = "waiting for an approved audit.purge";
                        report.waiting.push(format!("{}: tenant {tenant}: {why}", part.name));
                    } else {
                        release(&mut tx, part).await?;
                    }
                }
            }
        }
        tx.commit().await?;
    }
    let Some(&first) = tenants.first() else { return Ok(()) };
    if !ready {
        return Ok(());
    }
    let mut tx = state.db.tenant_tx(first, None).await?;
    // One instance drops at a time; the others find it gone.
    let still_there: bool =
        sqlx::query_scalar("SELECT pg_try_advisory_xact_lock(7261, 16) AND to_regclass($1) IS NOT NULL")
            .bind(&part.name)
            .fetch_one(tx.conn())
            .await?;
    if still_there {
        sqlx::query("SELECT audit_drop_partition($1, $2)")
            .bind(&part.name)
            .bind(state.config.audit.retention_days as i32)
            .execute(tx.conn())
            .await?;
        tx.commit().await?;
        report.dropped.push(part.name.clone());
    }
    Ok(())
}

/// `POST /api/audit-logs/purge`, once it may run: archives and releases the
/// tenant's rows of the partitions `only` names (those the request showed its
/// approvers) that are past retention. The partitions go at the next
/// retention run, once every tenant with rows in them has released theirs.
pub async fn release_expired(
    state: &AppState,
    tx: &mut TenantTx,
    source: &Source,
    now: OffsetDateTime,
    only: &[String],
) -> Result<Vec<ArchiveRecord>, AppError> {
    let head = chain::lock_head(tx, true).await?.ok_or(AppError::NotFound)?;
    if head.legal_hold {
        return Err(AppError::Conflict("the audit log is under legal hold: nothing is purged".into()));
    }
    let mut released = Vec::new();
    let expired = expired(&state.db, now, state.config.audit.retention_days).await?;
    for part in expired.iter().filter(|p| only.contains(&p.name)) {
        let head = chain::lock_head(tx, true).await?.ok_or(AppError::NotFound)?;
        match archive(&state.files.storage, &state.audit_key, tx, source, &head, part).await? {
            Ok(record) => {
                release(tx, part).await?;
                released.push(ArchiveRecord { released_at: Some(now), ..record });
            }
            Err(NotYet::NoRows) => {}
            Err(NotYet::Unsealed) => {
                return Err(AppError::Conflict(format!("rows of {} are not sealed yet: try again", part.name)));
            }
            Err(NotYet::LegalHold) => {
                return Err(AppError::Conflict("the audit log is under legal hold: nothing is purged".into()));
            }
        }
    }
    Ok(released)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn partition_names_give_their_month_and_others_are_ignored() {
        let p = Partition::parse("audit_logs_2019_12").unwrap();
        assert_eq!(p.from.date(), Date::from_calendar_date(2019, Month::December, 1).unwrap());
        assert_eq!(p.to.date(), Date::from_calendar_date(2020, Month::January, 1).unwrap());
        for bad in ["audit_logs_default", "audit_logs_2019_13", "audit_logs_19_01", "users", "audit_logs_2019_1"] {
            assert_eq!(Partition::parse(bad), None, "{bad}");
        }
    }
}

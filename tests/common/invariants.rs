//! Issue 18's invariants, checked by one function after every fault:
//! I1 acknowledged uploads intact, I2 every document decrypts and verifies,
//! I3 objects without a row are recorded for the sweep (and never served),
//! I4 a business row exists if and only if its audit row does, I5 the audit
//! chain verifies, I6 no PANIC in PostgreSQL's log.

use std::path::{Path, PathBuf};

use sqlx::{Connection, PgConnection};

use super::{fleet::Client, sha256_hex};

/// What the checker needs to know of the run so far.
pub struct Evidence<'a> {
    /// A client allowed to download every document (the administrator).
    pub reader: &'a Client,
    /// Uploads answered 2xx: id and SHA-256 as the client computed it.
    pub acknowledged: &'a [(String, String)],
    /// The local storage directory.
    pub storage: &'a Path,
    /// PostgreSQL's log.
    pub postgres_log: &'a Path,
    /// Documents downloaded and verified by an earlier check. Stored objects
    /// never change, so these are checked for their row and object only,
    /// not downloaded again: a check stays proportional to what is new.
    pub verified: &'a std::sync::Mutex<std::collections::HashSet<String>>,
}

/// Every violation found (empty: all hold).
pub async fn check(
    db: &mut PgConnection,
    evidence: &Evidence<'_>,
    verify: impl FnOnce() -> (bool, String),
) -> Vec<String> {
    let mut broken = Vec::new();

    let rows: Vec<(uuid::Uuid, Vec<u8>, String)> =
        sqlx::query_as("SELECT id, sha256, object_key FROM files").fetch_all(&mut *db).await.unwrap();
    let by_id: std::collections::HashMap<String, (String, String)> =
        rows.iter().map(|(id, sha, key)| (id.to_string(), (hex::encode(sha), key.clone()))).collect();
    let known = |id: &str| evidence.verified.lock().unwrap().contains(id);

    // I1: each acknowledged upload, byte for byte (once; then its row and object).
    for (id, sha) in evidence.acknowledged {
        if known(id) {
            match by_id.get(id) {
                Some((stored, key)) if stored == sha && evidence.storage.join(key).exists() => {}
                _ => broken.push(format!("I1: acknowledged upload {id} lost its row or object")),
            }
            continue;
        }
        match evidence.reader.download(id).await {
            Ok(Ok(bytes)) if &sha256_hex(&bytes) == sha => {
                evidence.verified.lock().unwrap().insert(id.clone());
            }
            Ok(Ok(_)) => broken.push(format!("I1: acknowledged upload {id} changed")),
            Ok(Err(status)) => broken.push(format!("I1: acknowledged upload {id} answers {status}")),
            Err(e) => broken.push(format!("I1: acknowledged upload {id}: {e}")),
        }
    }

    // I2: every document row's object decrypts and verifies (the server
    // checks each segment's tag while streaming; a failure cuts the body).
    for (id, (sha, key)) in &by_id {
        if known(id) {
            if !evidence.storage.join(key).exists() {
                broken.push(format!("I2: document {id} lost its object"));
            }
            continue;
        }
        match evidence.reader.download(id).await {
            Ok(Ok(bytes)) if &sha256_hex(&bytes) == sha => {
                evidence.verified.lock().unwrap().insert(id.clone());
            }
            Ok(Ok(_)) => broken.push(format!("I2: document {id} does not match its SHA-256")),
            Ok(Err(status)) => broken.push(format!("I2: document {id} answers {status}")),
            Err(e) => broken.push(format!("I2: document {id}: {e}")),
        }
    }

    // I3: an object no row references is one the sweep knows about.
    let referenced: std::collections::HashSet<String> = rows.iter().map(|r| r.2.clone()).collect();
    let pending: std::collections::HashSet<String> = sqlx::query_scalar("SELECT object_key FROM pending_objects")
        .fetch_all(&mut *db)
        .await
        .unwrap()
        .into_iter()
        .collect();
    for key in object_keys(evidence.storage) {
        // A staging part is named after its object: `<object>#<part>`.
        let base = key.split('#').next().unwrap_or(&key).to_string();
        if !referenced.contains(&base) && !pending.contains(&base) {
            broken.push(format!("I3: object {key} has no row and no in-flight record"));
        }
    }

    // I4: business rows and their audit rows, both ways.
    let checks = [
        (
            "uploads without their audit row",
            "SELECT count(*) FROM files f WHERE NOT EXISTS (SELECT 1 FROM audit_logs a \
             WHERE a.action = 'file.upload' AND a.result = 'success' AND a.target_id = f.id::text)",
        ),
        (
            "upload audit rows without their document",
            "SELECT count(*) FROM audit_logs a WHERE a.action = 'file.upload' AND a.result = 'success' \
             AND NOT EXISTS (SELECT 1 FROM files f WHERE f.id::text = a.target_id)",
        ),
        (
            "shares without their audit row",
            "SELECT count(*) FROM file_shares s WHERE NOT EXISTS (SELECT 1 FROM audit_logs a \
             WHERE a.action = 'file.share' AND a.result = 'success' AND a.details->>'share' = s.id::text)",
        ),
        (
            "share audit rows without their share",
            "SELECT count(*) FROM audit_logs a WHERE a.action = 'file.share' AND a.result = 'success' \
             AND NOT EXISTS (SELECT 1 FROM file_shares s WHERE s.id::text = a.details->>'share')",
        ),
    ];
    for (what, sql) in checks {
        let n: i64 = sqlx::query_scalar(sqlx::AssertSqlSafe(sql)).fetch_one(&mut *db).await.unwrap();
        if n > 0 {
            broken.push(format!("I4: {n} {what}"));
        }
    }

    // I5: the audit chain verifies.
    let (ok, out) = verify();
    if !ok {
        broken.push(format!("I5: audit verify failed: {out}"));
    }

    // I6: PostgreSQL never panicked.
    let log = std::fs::read_to_string(evidence.postgres_log).unwrap_or_default();
    if let Some(line) = log.lines().find(|l| l.contains("PANIC:")) {
        broken.push(format!("I6: PostgreSQL: {line}"));
    }
    broken
}

/// Object names under a local storage directory, relative to it.
pub fn object_keys(root: &Path) -> Vec<String> {
    fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
        for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
            let path = entry.path();
            if path.is_dir() { walk(&path, out) } else { out.push(path) }
        }
    }
    let mut files = Vec::new();
    walk(root, &mut files);
    files.iter().filter_map(|p| p.strip_prefix(root).ok()).map(|p| p.to_string_lossy().into_owned()).collect()
}

/// Opens a connection, retrying while the database comes back.
pub async fn connect(options: &sqlx::postgres::PgConnectOptions) -> PgConnection {
    for _ in 0..100 {
        if let Ok(c) = PgConnection::connect_with(options).await {
            return c;
        }
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
    panic!("the database did not come back")
}

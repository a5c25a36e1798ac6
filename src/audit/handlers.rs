//! HTTP handlers for the audit log's JSON API (the security dashboard's data).

use axum::{Json, extract::State, response::IntoResponse};
use serde_json::json;

use serde::Deserialize;
use time::OffsetDateTime;
use utoipa::IntoParams;

use super::{
    checkpoint::{self, Checkpoint},
    export::{self, Format},
    highlights, holds,
    integrity::{self, ChainState, Verification},
    query, retention,
};
use crate::{
    authz::Permit,
    http::{
        AppState,
        apidoc::Op,
        client::ClientSource,
        guard::Tx,
        json::ApiJson,
        params::ApiQuery,
        reply::{Answer, committed, done, ok},
    },
};

pub async fn list(
    State(s): State<AppState>,
    permit: Permit,
    Tx(mut tx): Tx,
    ApiQuery(filter): ApiQuery<query::LogFilter>,
) -> Answer {
    let (logs, next) = query::list(&s, &permit, &mut tx, &filter).await?;
    tx.end_read_only().await?;
    Ok(Json(json!({ "logs": logs, "nextCursor": next })).into_response())
}

pub async fn highlights(
    State(s): State<AppState>,
    Tx(mut tx): Tx,
    ApiQuery(range): ApiQuery<highlights::Range>,
) -> Answer {
    let found = highlights::find(&s, &mut tx, &range).await?;
    committed(tx, "highlights", found).await
}

pub async fn export_csv(
    State(s): State<AppState>,
    ClientSource(src): ClientSource,
    permit: Permit,
    Tx(tx): Tx,
    ApiQuery(filter): ApiQuery<query::LogFilter>,
) -> Answer {
    export::export(&s, &permit, &src, tx, Format::Csv, filter).await
}

pub async fn export_jsonl(
    State(s): State<AppState>,
    ClientSource(src): ClientSource,
    permit: Permit,
    Tx(tx): Tx,
    ApiQuery(filter): ApiQuery<query::LogFilter>,
) -> Answer {
    export::export(&s, &permit, &src, tx, Format::Jsonl, filter).await
}

/// `GET /api/audit-logs/checkpoints`' query.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct CheckpointQuery {
    /// Checkpoints signed before this instant (RFC 3339): the next page.
    #[serde(default, with = "time::serde::rfc3339::option")]
    pub before: Option<OffsetDateTime>,
    /// How many (1 to 1000, default 100).
    #[param(minimum = 1, maximum = 1000)]
    pub limit: Option<i64>,
}

pub async fn checkpoints(State(s): State<AppState>, Tx(mut tx): Tx, ApiQuery(q): ApiQuery<CheckpointQuery>) -> Answer {
    let limit = q.limit.unwrap_or(100);
    if !(1..=1000).contains(&limit) {
        return Err(crate::http::error::AppError::invalid("limit", "must be between 1 and 1000"));
    }
    let list = checkpoint::list(&mut tx, q.before, limit).await?;
    tx.end_read_only().await?;
    Ok(Json(json!({
        "checkpoints": list,
        "keyId": s.audit_key.id(),
        "publicKey": s.audit_key.public().to_hex(),
    }))
    .into_response())
}

pub async fn chain(State(s): State<AppState>, Tx(mut tx): Tx) -> Answer {
    let found = integrity::state(&s, &mut tx).await?;
    committed(tx, "chain", found).await
}

/// Answers a dual-controlled audit operation and commits: done, held (202),
/// or refused (recorded as `rbac.denied`).
async fn settle<T>(
    tx: crate::db::TenantTx,
    permit: &Permit,
    src: &crate::audit::Source,
    key: &'static str,
    outcome: holds::Gated<T>,
) -> Answer
where
    T: serde::Serialize,
{
    match outcome? {
        Err(denial) => Err(crate::authz::refuse(tx, permit, src, denial).await),
        Ok(finished) => {
            tx.commit().await?;
            done(finished, |value| ok(key, value))
        }
    }
}

pub async fn purge(
    State(s): State<AppState>,
    ClientSource(src): ClientSource,
    permit: Permit,
    Tx(mut tx): Tx,
) -> Answer {
    let outcome = holds::purge_in(&s, &permit, &src, &mut tx, s.clock.now(), None).await;
    settle(tx, &permit, &src, "released", outcome).await
}

pub async fn legal_hold(
    State(s): State<AppState>,
    ClientSource(src): ClientSource,
    permit: Permit,
    Tx(mut tx): Tx,
    ApiJson(input): ApiJson<holds::LegalHold>,
) -> Answer {
    let outcome = holds::legal_hold_in(&s, &permit, &src, &mut tx, input).await;
    settle(tx, &permit, &src, "legalHold", outcome).await
}

pub async fn verify(State(s): State<AppState>, ClientSource(src): ClientSource, Tx(mut tx): Tx) -> Answer {
    let found = integrity::verify_and_record(&s, &mut tx, &src).await?;
    committed(tx, "verification", found).await
}

/// The export's query: the list's filters, where `limit` and `after` are
/// accepted (as a whole number and text) and ignored, since an export holds
/// every matching row.
fn export_query(op: Op) -> Op {
    let mut op = op.query::<query::LogFilter>();
    for parameter in &mut op.params {
        let constraints: &[&str] = match parameter["name"].as_str() {
            Some("limit") => &["minimum", "maximum"],
            Some("after") => &["pattern"],
            _ => continue,
        };
        parameter["description"] = json!("Accepted and ignored: the export holds every matching row.");
        if let Some(schema) = parameter["schema"].as_object_mut() {
            for constraint in constraints {
                schema.remove(*constraint);
            }
        }
        if parameter["name"] == "after" {
            parameter["schema"]["pattern"] = json!(r"^[^\x00]*$");
        }
    }
    op
}

/// This module's operations, for the OpenAPI document.
pub fn api() -> Vec<Op> {
    const EXPORT: &str = "Every entry matching the filters, newest first, streamed; the export is recorded \
                          (`audit.export`, with its format and filters) before the first byte. Entries about \
                          objects classified above the caller's clearance have their details withheld.";
    vec![
        Op::get("/api/audit-logs", "List audit log entries")
            .describe(
                "A page of the organisation's audit log, newest first, filtered. Entries about objects classified \
                 above the caller's clearance have their details withheld (`redacted`).",
            )
            .query::<query::LogFilter>()
            .without_param("approval")
            .page::<query::LogView>("logs")
            .error(
                422,
                "`limit` is not between 1 and 1000, `result` is not `success` or `fail`, `ip` is not an address, \
                 `after` is not a cursor from a previous page, or `approval` (exports only) is given",
            ),
        Op::get("/api/audit-logs/highlights", "Suspicious activity")
            .describe(
                "Subjects with at least N events of a kind within W minutes in the range (failed logins, password \
                 spraying, MAC and RBAC denials, bulk downloads, failed second factors), each with its evidence: \
                 the count, the window, and the filter that selects those entries.",
            )
            .query::<highlights::Range>()
            .ok::<Vec<highlights::Highlight>>("highlights")
            .error(422, "`from` is not before `to`"),
        export_query(Op::get("/api/audit-logs/export.csv", "Export the audit log as CSV").held().describe(EXPORT))
            .content(
                "text/csv",
                "CSV with a header row (`time, user, user_id, action, target_type, target_id, ip, user_agent, \
                 result, details, id`); cells a spreadsheet would take for a formula are prefixed with `'`",
            )
            .error(422, "`result` is not `success` or `fail`, or `ip` is not an address"),
        export_query(
            Op::get("/api/audit-logs/export.jsonl", "Export the audit log as JSON Lines").held().describe(EXPORT),
        )
        .content("application/jsonl", "One entry (as in `GET /api/audit-logs`) per line")
        .error(422, "`result` is not `success` or `fail`, or `ip` is not an address"),
        Op::get("/api/audit-logs/checkpoints", "Signed checkpoints of the audit chain")
            .describe(
                "The organisation's signed checkpoints, newest first: each signs (tenant, sequence, hash, time) with \
                 the server's Ed25519 audit key. Copy them somewhere the database's owner cannot reach and give \
                 them to `fortifile audit verify --checkpoint FILE`: history rewritten or cut off before one of \
                 them no longer verifies. The answer also names the key (`keyId`, `publicKey`).",
            )
            .query::<CheckpointQuery>()
            .answers(
                200,
                crate::http::apidoc::Reply::new()
                    .field::<Vec<Checkpoint>>("checkpoints")
                    .field::<String>("keyId")
                    .field::<String>("publicKey"),
            )
            .error(422, "`limit` is not between 1 and 1000, or `before` is not an RFC 3339 instant"),
        Op::get("/api/audit-logs/chain", "The audit chain's state")
            .describe(
                "The last sealed sequence and hash, the rows not sealed yet (and whether they have waited too \
                 long: sealing stuck), the rows not yet forwarded to the syslog receiver, the legal hold, and the \
                 newest checkpoint.",
            )
            .ok::<ChainState>("chain"),
        Op::post("/api/audit-logs/verify", "Verify the audit chain")
            .describe(
                "Walks the organisation's chain: every sealed row is recomputed and linked, and the chain is held \
                 against every stored checkpoint. Answers 200 either way: `ok` false names the first sequence, \
                 row and problem (changed, missing, gap, reordered, truncated, diverged, bad_signature, unsealed, \
                 head). Recorded as `audit.verify`.",
            )
            .ok::<Verification>("verification"),
        Op::post("/api/audit-logs/purge", "Purge the audit data past retention")
            .held()
            .describe(
                "Archives the organisation's rows of every monthly partition past `FORTIFILE_AUDIT_RETENTION_DAYS` \
                 (compressed JSON Lines with the chain state and a signed checkpoint, read back and verified) and \
                 releases them; the retention run drops a partition once every organisation with rows in it has \
                 released them. Under dual control (`audit.purge`) the purge is requested and runs once approved. \
                 Recorded as `audit.archive` per archive and `audit.purge`.",
            )
            .ok::<Vec<retention::ArchiveRecord>>("released")
            .error(409, "Nothing is past retention, the log is under legal hold, or rows are not sealed yet"),
        Op::put("/api/audit-logs/legal-hold", "Set or lift the legal hold")
            .held()
            .describe(
                "While the hold is set no audit data of the organisation is purged, whatever its age. Under dual \
                 control (`audit.legal_hold`) the change is requested and runs once approved. Recorded as \
                 `audit.legal_hold`.",
            )
            .json::<holds::LegalHold>()
            .ok::<bool>("legalHold")
            .error(422, "`reason` is empty or longer than 500 characters"),
    ]
}

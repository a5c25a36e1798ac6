//! Suspicious-activity highlights for the security dashboard (seed 000 §5):
//! "at least N events within W minutes" for one subject, over a date range.
//!
//! | kind | events | subject | default |
//! | --- | --- | --- | --- |
//! | `failed_logins` | `auth.login` fail | the username tried | 5 in 15 min |
//! | `password_spraying` | `auth.login` fail, distinct usernames | the client address | 5 in 15 min |
//! | `mac_denials` | `mac.denied` | the user | 3 in 60 min |
//! | `rbac_denials` | `rbac.denied` | the user | 5 in 15 min |
//! | `bulk_downloads` | `file.download` success | the user | 50 in 10 min |
//!
//! Windows slide: each event starts a window `[t, t + W]`, and a subject is
//! highlighted by its fullest window. Each highlight cites its evidence: the
//! count, the window, the first and last time, and the filter (and API link)
//! that selects exactly those rows.

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use uuid::Uuid;

use super::query::LogFilter;
use crate::{
    authz::Permit,
    config::Threshold,
    http::{AppState, error::AppError},
};

/// What a rule groups its events by.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Subject {
    /// The acting user (`user_id`).
    User,
    /// The username a login attempt named.
    Username,
    /// The client address.
    Ip,
}

impl Subject {
    fn as_str(self) -> &'static str {
        match self {
            Subject::User => "user",
            Subject::Username => "username",
            Subject::Ip => "ip",
        }
    }
}

struct Rule {
    kind: &'static str,
    action: &'static str,
    result: &'static str,
    subject: Subject,
    /// Count distinct usernames instead of events (spraying).
    distinct_usernames: bool,
    threshold: Threshold,
}

fn rules(state: &AppState) -> [Rule; 5] {
    let t = &state.config.highlights;
    [
        Rule {
            kind: "failed_logins",
            action: "auth.login",
            result: "fail",
            subject: Subject::Username,
            distinct_usernames: false,
            threshold: t.failed_logins,
        },
        Rule {
            kind: "password_spraying",
            action: "auth.login",
            result: "fail",
            subject: Subject::Ip,
            distinct_usernames: true,
            threshold: t.password_spraying,
        },
        Rule {
            kind: "mac_denials",
            action: "mac.denied",
            result: "fail",
            subject: Subject::User,
            distinct_usernames: false,
            threshold: t.mac_denials,
        },
        Rule {
            kind: "rbac_denials",
            action: "rbac.denied",
            result: "fail",
            subject: Subject::User,
            distinct_usernames: false,
            threshold: t.rbac_denials,
        },
        Rule {
            kind: "bulk_downloads",
            action: "file.download",
            result: "success",
            subject: Subject::User,
            distinct_usernames: false,
            threshold: t.bulk_downloads,
        },
    ]
}

/// One highlight with its evidence.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Highlight {
    pub kind: &'static str,
    /// A username or an address.
    pub subject: String,
    pub user_id: Option<Uuid>,
    /// Events (or, for spraying, distinct usernames) in the fullest window.
    pub count: i64,
    pub threshold: i64,
    pub window_minutes: i32,
    #[serde(with = "time::serde::rfc3339")]
    pub first_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    pub last_at: OffsetDateTime,
    /// The filter that selects exactly the window's rows.
    pub filter: LogFilter,
    /// `GET /api/audit-logs` with that filter.
    pub logs: String,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Range {
    #[serde(default, with = "time::serde::rfc3339::option")]
    pub from: Option<OffsetDateTime>,
    #[serde(default, with = "time::serde::rfc3339::option")]
    pub to: Option<OffsetDateTime>,
}

#[derive(sqlx::FromRow)]
struct Found {
    k: String,
    n: i64,
    first_at: OffsetDateTime,
    last_at: OffsetDateTime,
    username: Option<String>,
}

/// Every highlight in `range` (default: the last 24 hours).
pub async fn find(state: &AppState, permit: &Permit, range: &Range) -> Result<Vec<Highlight>, AppError> {
    let mut tx = state.db.tenant_tx(permit.tenant_id(), Some(permit.user_id())).await?;
    // Audit rows are timestamped by the database, so "now" is the database's.
    let to = match range.to {
        Some(to) => to,
        None => state.db.now().await?,
    };
    let from = range.from.unwrap_or(to - time::Duration::days(1));
    if from >= to {
        return Err(AppError::invalid("from", "must be before to"));
    }
    let mut found = Vec::new();
    for rule in rules(state) {
        let rows: Vec<Found> = sqlx::query_as(
            "WITH ev AS ( \
               SELECT a.id, a.created_at, lower(a.details->>'username') AS uname, \
                      CASE $1 WHEN 'username' THEN lower(a.details->>'username') \
                              WHEN 'ip' THEN host(a.ip) ELSE a.user_id::text END AS k \
               FROM audit_logs a \
               WHERE a.action = $2 AND a.result = $3 AND a.created_at >= $4 AND a.created_at < $5 \
             ), windows AS ( \
               SELECT e.k, e.created_at AS first_at, max(o.created_at) AS last_at, \
                      CASE WHEN $6 THEN count(DISTINCT o.uname) ELSE count(*) END AS n \
               FROM ev e JOIN ev o ON o.k = e.k AND o.created_at >= e.created_at \
                                   AND o.created_at <= e.created_at + make_interval(mins => $7) \
               WHERE e.k IS NOT NULL \
               GROUP BY e.id, e.k, e.created_at \
             ) \
             SELECT DISTINCT ON (w.k) w.k, w.n, w.first_at, w.last_at, \
                    CASE WHEN $1 = 'user' THEN (SELECT username FROM users WHERE id = w.k::uuid) END AS username \
             FROM windows w WHERE w.n >= $8 \
             ORDER BY w.k, w.n DESC, w.first_at",
        )
        .bind(rule.subject.as_str())
        .bind(rule.action)
        .bind(rule.result)
        .bind(from)
        .bind(to)
        .bind(rule.distinct_usernames)
        .bind(rule.threshold.minutes)
        .bind(rule.threshold.count)
        .fetch_all(tx.conn())
        .await?;
        for row in rows {
            found.push(highlight(&rule, row));
        }
    }
    tx.commit().await?;
    found.sort_by_key(|h| std::cmp::Reverse(h.last_at));
    Ok(found)
}

fn highlight(rule: &Rule, row: Found) -> Highlight {
    let mut filter = LogFilter {
        from: Some(row.first_at),
        // `to` is exclusive: one microsecond past the last event.
        to: Some(row.last_at + time::Duration::microseconds(1)),
        action: Some(rule.action.to_string()),
        result: Some(rule.result.to_string()),
        ..LogFilter::default()
    };
    let (subject, user_id) = match rule.subject {
        Subject::User => {
            let name = row.username.clone().unwrap_or_else(|| row.k.clone());
            filter.user = Some(name.clone());
            (name, row.k.parse().ok())
        }
        Subject::Username => {
            filter.username = Some(row.k.clone());
            (row.k.clone(), None)
        }
        Subject::Ip => {
            filter.ip = Some(row.k.clone());
            (row.k.clone(), None)
        }
    };
    let logs = format!("/api/audit-logs?{}", filter.to_query());
    Highlight {
        kind: rule.kind,
        subject,
        user_id,
        count: row.n,
        threshold: rule.threshold.count,
        window_minutes: rule.threshold.minutes,
        first_at: row.first_at,
        last_at: row.last_at,
        filter,
        logs,
    }
}

//! Suspicious-activity highlights for the security dashboard (seed 000 §5):
//! "at least N events within W minutes" for one subject, over a date range.
//!
//! | kind | events | subject | default |
//! | --- | --- | --- | --- |
//! | `failed_logins` | `auth.login` fail | the account tried (by id), else the name typed | 5 in 15 min |
//! | `password_spraying` | `auth.login` fail, distinct usernames | the client address | 5 in 15 min |
//! | `mac_denials` | `mac.denied` | the user | 3 in 60 min |
//! | `rbac_denials` | `rbac.denied` | the user | 5 in 15 min |
//! | `bulk_downloads` | `file.download` success | the user | 50 in 10 min |
//! | `mfa_failures` | `auth.mfa.verify` fail (the login's second step) | the user | 5 in 15 min |
//!
//! Windows slide: each event starts a window `[t, t + W]`, and a subject is
//! highlighted by its fullest window. Every rule is one sort in PostgreSQL (by
//! subject and time, in memory: log reads get a larger `work_mem`) and one
//! streamed pass in Rust ([`DistinctSweep`], holding one window at a time:
//! events, or for spraying distinct usernames). That is linear in the events of
//! the range however densely they fall, so an attack of a hundred thousand
//! failures against one account costs a sort. (A window function with `max()`
//! over the frame re-scanned the frame for every row, quadratic in a dense
//! window; with `last_value` it was linear but its frame bookkeeping still cost
//! ten times this pass.)
//! Each highlight cites its evidence: the count, the window, the first and last
//! time, and the filter (and API link) that selects exactly those rows.
//!
//! Failed logins against an existing account are counted by its id, however
//! the attempts named it (username or email, any case); attempts naming no
//! account are counted by what was typed, which the log holds only as a keyed
//! hash (see `audit::names`).

use std::collections::{HashMap, VecDeque};

use futures::TryStreamExt;
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;

use super::query::LogFilter;
use crate::{
    config::Threshold,
    db::TenantTx,
    http::{AppState, error::AppError},
};

/// What a rule groups its events by.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Subject {
    /// The acting user (`user_id`).
    User,
    /// The account a login attempt was against: its id when it exists, else
    /// the name typed (`login_username`).
    Account,
    /// The client address.
    Ip,
}

impl Subject {
    fn as_str(self) -> &'static str {
        match self {
            Subject::User => "user",
            Subject::Account => "account",
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

fn rules(state: &AppState) -> [Rule; 6] {
    let t = &state.config.highlights;
    [
        Rule {
            kind: "failed_logins",
            action: "auth.login",
            result: "fail",
            subject: Subject::Account,
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
        Rule {
            kind: "mfa_failures",
            action: "auth.mfa.verify",
            result: "fail",
            subject: Subject::User,
            distinct_usernames: false,
            threshold: t.mfa_failures,
        },
    ]
}

/// The kinds of highlight (the rules above).
#[derive(ToSchema)]
#[schema(rename_all = "snake_case", description = "The rule a highlight comes from.")]
pub enum HighlightKind {
    FailedLogins,
    PasswordSpraying,
    MacDenials,
    RbacDenials,
    BulkDownloads,
    MfaFailures,
}

/// One highlight with its evidence.
#[derive(Debug, Clone, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Highlight {
    #[schema(value_type = HighlightKind)]
    pub kind: &'static str,
    /// A username, the name a login attempt typed, or an address.
    pub subject: String,
    /// The user, when the subject is an account.
    #[schema(required = true)]
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

/// The range highlights are looked for in: `from` must be before `to`.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct Range {
    /// From this instant (inclusive), RFC 3339. Default: a day before `to`.
    #[serde(default, with = "time::serde::rfc3339::option")]
    pub from: Option<OffsetDateTime>,
    /// Until this instant (exclusive), RFC 3339. Default: now.
    #[serde(default, with = "time::serde::rfc3339::option")]
    pub to: Option<OffsetDateTime>,
}

#[derive(Debug, sqlx::FromRow)]
struct Found {
    k: String,
    n: i64,
    first_at: OffsetDateTime,
    last_at: OffsetDateTime,
    username: Option<String>,
}

/// Every highlight in `range` (default: the last 24 hours).
pub async fn find(state: &AppState, tx: &mut TenantTx, range: &Range) -> Result<Vec<Highlight>, AppError> {
    // Audit rows are timestamped by the database, so "now" is the database's.
    let to = match range.to {
        Some(to) => to,
        None => tx.now().await?,
    };
    let from = range.from.unwrap_or(to - time::Duration::days(1));
    if from >= to {
        return Err(AppError::invalid("from", "must be before to"));
    }
    tx.for_log_reading(state.config.dashboard_timeout).await?;
    let mut found = Vec::new();
    for rule in rules(state) {
        let rows = if rule.distinct_usernames {
            distinct_windows(tx, &rule, from, to).await?
        } else {
            counted_windows(tx, &rule, from, to).await?
        };
        found.extend(rows.into_iter().filter(|row| row.n >= rule.threshold.count).map(|row| highlight(&rule, row)));
    }
    found.sort_by_key(|h| std::cmp::Reverse(h.last_at));
    Ok(found)
}

/// Each subject's fullest window, counting events: the rule's events stream in
/// by subject and time (one sort, in memory) through [`DistinctSweep`], each
/// event its own value, so one pass holding one window scores them all: linear
/// in the events however densely they fall. The usernames of user subjects are
/// looked up afterwards, for the subjects found only.
async fn counted_windows(
    tx: &mut TenantTx,
    rule: &Rule,
    from: OffsetDateTime,
    to: OffsetDateTime,
) -> Result<Vec<Found>, sqlx::Error> {
    let mut events = sqlx::query_as::<_, (String, String, OffsetDateTime)>(
        "SELECT k, id, created_at FROM ( \
           SELECT CASE $1 WHEN 'account' THEN COALESCE(a.user_id::text, a.login_username) \
                          WHEN 'ip' THEN host(a.ip) ELSE a.user_id::text END AS k, \
                  a.id::text AS id, a.created_at \
           FROM audit_logs a \
           WHERE a.action = $2 AND a.result = $3 AND a.created_at >= $4 AND a.created_at < $5) ev \
         WHERE k IS NOT NULL ORDER BY k COLLATE \"C\", created_at",
    )
    .bind(rule.subject.as_str())
    .bind(rule.action)
    .bind(rule.result)
    .bind(from)
    .bind(to)
    .fetch(tx.conn());
    let mut sweep = DistinctSweep::new(time::Duration::minutes(rule.threshold.minutes.into()));
    while let Some((key, id, at)) = events.try_next().await? {
        sweep.push(key, id, at);
    }
    drop(events);
    let mut found: Vec<Found> = sweep.finish().into_iter().filter(|f| f.n >= rule.threshold.count).collect();
    let users: Vec<Uuid> = found.iter().filter_map(|f| f.k.parse().ok()).collect();
    if !users.is_empty() {
        let names: Vec<(Uuid, String)> = sqlx::query_as("SELECT id, username FROM users WHERE id = ANY($1)")
            .bind(&users)
            .fetch_all(tx.conn())
            .await?;
        for f in &mut found {
            f.username = names.iter().find(|(id, _)| f.k.parse().ok() == Some(*id)).map(|(_, name)| name.clone());
        }
    }
    Ok(found)
}

/// Each address's fullest window, counting distinct usernames (SQL has no
/// distinct count over a sliding frame): the events stream in by address and
/// time through [`DistinctSweep`], which holds one window at a time.
async fn distinct_windows(
    tx: &mut TenantTx,
    rule: &Rule,
    from: OffsetDateTime,
    to: OffsetDateTime,
) -> Result<Vec<Found>, sqlx::Error> {
    let mut events = sqlx::query_as::<_, (String, String, OffsetDateTime)>(
        "SELECT host(a.ip), a.login_username, a.created_at FROM audit_logs a \
         WHERE a.action = $1 AND a.result = $2 AND a.created_at >= $3 AND a.created_at < $4 \
           AND a.ip IS NOT NULL AND a.login_username IS NOT NULL \
         ORDER BY host(a.ip) COLLATE \"C\", a.created_at",
    )
    .bind(rule.action)
    .bind(rule.result)
    .bind(from)
    .bind(to)
    .fetch(tx.conn());
    let mut sweep = DistinctSweep::new(time::Duration::minutes(rule.threshold.minutes.into()));
    while let Some((key, username, at)) = events.try_next().await? {
        sweep.push(key, username, at);
    }
    Ok(sweep.finish())
}

/// Sliding windows `[t, t + W]` over events sorted by subject and time, one
/// opened by each event, scored by the distinct values they hold. A window is
/// scored when the first event past its end arrives (or its subject ends), so
/// only one window's events are held. Keeps each subject's fullest window, the
/// earliest on a tie.
struct DistinctSweep {
    width: time::Duration,
    key: Option<String>,
    events: VecDeque<(OffsetDateTime, String)>,
    counts: HashMap<String, usize>,
    best: Option<Found>,
    found: Vec<Found>,
}

impl DistinctSweep {
    fn new(width: time::Duration) -> Self {
        DistinctSweep {
            width,
            key: None,
            events: VecDeque::new(),
            counts: HashMap::new(),
            best: None,
            found: Vec::new(),
        }
    }

    fn push(&mut self, key: String, value: String, at: OffsetDateTime) {
        if self.key.as_deref() != Some(key.as_str()) {
            self.end_subject();
            self.key = Some(key);
        }
        while self.events.front().is_some_and(|(start, _)| at > *start + self.width) {
            self.score_first();
        }
        *self.counts.entry(value.clone()).or_default() += 1;
        self.events.push_back((at, value));
    }

    /// Scores the window opened by the oldest held event, then lets it go.
    fn score_first(&mut self) {
        let (Some((first_at, value)), Some((last_at, _))) = (self.events.front(), self.events.back()) else {
            return;
        };
        let n = self.counts.len() as i64;
        if self.best.as_ref().is_none_or(|best| n > best.n) {
            let k = self.key.clone().unwrap_or_default();
            self.best = Some(Found { k, n, first_at: *first_at, last_at: *last_at, username: None });
        }
        let value = value.clone();
        self.events.pop_front();
        if let Some(count) = self.counts.get_mut(&value) {
            *count -= 1;
            if *count == 0 {
                self.counts.remove(&value);
            }
        }
    }

    fn end_subject(&mut self) {
        while !self.events.is_empty() {
            self.score_first();
        }
        self.found.extend(self.best.take());
    }

    fn finish(mut self) -> Vec<Found> {
        self.end_subject();
        self.found
    }
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
        // An account that exists: its failures by id, whatever name they typed.
        Subject::Account if row.username.is_some() => {
            let name = row.username.clone().unwrap_or_default();
            filter.user = Some(name.clone());
            (name, row.k.parse().ok())
        }
        Subject::Account => {
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

#[cfg(test)]
mod tests {
    use time::{Duration, macros::datetime};

    use super::DistinctSweep;

    fn sweep(width_minutes: i64, events: &[(&str, &str, i64)]) -> Vec<(String, i64, i64, i64)> {
        let start = datetime!(2026-11-22 10:00 UTC);
        let mut sweep = DistinctSweep::new(Duration::minutes(width_minutes));
        for (key, value, minute) in events {
            sweep.push(key.to_string(), value.to_string(), start + Duration::minutes(*minute));
        }
        sweep
            .finish()
            .into_iter()
            .map(|f| (f.k, f.n, (f.first_at - start).whole_minutes(), (f.last_at - start).whole_minutes()))
            .collect()
    }

    #[test]
    fn the_fullest_window_counts_distinct_values_and_its_end_is_inclusive() {
        let events = [("ip", "ann", 0), ("ip", "ann", 1), ("ip", "ben", 2), ("ip", "cal", 15), ("ip", "dan", 16)];
        // [1, 16] holds all four names (16 is inside); [0, 15] only three.
        assert_eq!(sweep(15, &events), vec![("ip".into(), 4, 1, 16)]);
        // [1, 15] and [2, 16] hold three each: the earlier one is kept.
        assert_eq!(sweep(14, &events), vec![("ip".into(), 3, 1, 15)]);
        // Two names at most; the repeated "ann" counts once.
        assert_eq!(sweep(13, &events), vec![("ip".into(), 2, 0, 2)]);
    }

    #[test]
    fn each_subject_is_scored_alone_and_the_earliest_window_wins_a_tie() {
        let events = [("a", "x", 0), ("a", "y", 1), ("a", "x", 30), ("a", "z", 31), ("b", "x", 0)];
        assert_eq!(sweep(5, &events), vec![("a".into(), 2, 0, 1), ("b".into(), 1, 0, 0)]);
    }

    #[test]
    fn events_at_the_same_instant_share_their_window() {
        let events = [("ip", "a", 0), ("ip", "b", 0), ("ip", "c", 0), ("ip", "d", 20)];
        assert_eq!(sweep(15, &events), vec![("ip".into(), 3, 0, 0)]);
    }
}

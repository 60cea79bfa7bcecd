//! Dead-letter operations: list, group by error fingerprint, replay, discard.
//!
//! A dead letter is written in the same transaction as the failure that spent an event's
//! last attempt. Replaying one brings its event back to `pending` with a fresh budget and
//! removes the letter; a letter without an event row (a malformed message) cannot be
//! replayed and is reported as skipped.

use chrono::{DateTime, Utc};
use omnibox_core::error::StoreError;
use omnibox_core::model::Headers;
use omnibox_core::store::DeadLetter;
use sqlx::postgres::PgRow;
use sqlx::{AssertSqlSafe, PgConnection, Row};
use uuid::Uuid;

use crate::error::ResultExt;
use crate::row::PgEvent;
use crate::store::PgEventStore;

/// Which dead letters an operation applies to.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum DeadLetterSelector {
    /// These dead-letter ids.
    Ids(Vec<Uuid>),
    /// Every letter with this error fingerprint (see [`DeadLetterGroup`]).
    Fingerprint(String),
    /// All of them.
    All,
}

/// Dead letters sharing an error fingerprint (the error with numbers and ids masked).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct DeadLetterGroup {
    /// The fingerprint (md5 hex).
    pub fingerprint: String,
    /// One error of the group, as written.
    pub sample_error: String,
    /// How many letters.
    pub count: u64,
    /// Oldest letter.
    pub first_at: DateTime<Utc>,
    /// Newest letter.
    pub last_at: DateTime<Utc>,
}

/// What a replay did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct ReplayReport {
    /// Events brought back to pending (their letters removed).
    pub replayed: u64,
    /// Letters left in place: no event row, or the event is no longer `failed`.
    pub skipped: u64,
}

fn selector_clause(sel: &DeadLetterSelector) -> (&'static str, Option<Vec<Uuid>>, Option<String>) {
    match sel {
        DeadLetterSelector::Ids(ids) => ("d.id = ANY($1::uuid[])", Some(ids.clone()), None),
        DeadLetterSelector::Fingerprint(f) => ("d.fingerprint = $1", None, Some(f.clone())),
        DeadLetterSelector::All => ("$1::text IS NULL", None, None),
    }
}

fn letter_from_row(row: &PgRow) -> Result<DeadLetter, StoreError> {
    let op = "list dead letters";
    let headers: Option<serde_json::Value> = row.try_get("headers").op(op)?;
    // Headers jsonb could not hold (a NUL) are kept as JSON text (migration v4).
    let headers_text: Option<String> = row.try_get("headers_text").op(op)?;
    let headers: Option<Headers> = match (headers, headers_text) {
        (Some(v), _) => serde_json::from_value(v).ok(),
        (None, Some(t)) => serde_json::from_str(&t).ok(),
        (None, None) => None,
    };
    let body_bytes: Option<Vec<u8>> = row.try_get("body_bytes").op(op)?;
    let attempts: i32 = row.try_get("attempts").op(op)?;
    let id: Uuid = row.try_get("id").op(op)?;
    let event_id: Option<Uuid> = row.try_get("event_id").op(op)?;
    let created_at: DateTime<Utc> = row.try_get("created_at").op(op)?;
    // `DeadLetter` is non-exhaustive: build it through its serde form.
    let value = serde_json::json!({
        "id": id,
        "event_id": event_id,
        "kind": row.try_get::<String, _>("kind").op(op)?,
        "event_type": row.try_get::<Option<String>, _>("event_type").op(op)?,
        "route": row.try_get::<Option<String>, _>("route").op(op)?,
        "message_id": row.try_get::<Option<String>, _>("message_id").op(op)?,
        "body": row.try_get::<String, _>("body").op(op)?,
        "body_bytes": body_bytes,
        "headers": headers.filter(|h| !h.is_empty()),
        "error": row.try_get::<String, _>("error").op(op)?,
        "attempts": u32::try_from(attempts).unwrap_or(0),
        "created_at": created_at,
    });
    let letter: DeadLetter = serde_json::from_value(value).map_err(|e| StoreError::Other {
        operation: op,
        message: format!("dead letter {id}: {e}"),
        source: None,
    })?;
    Ok(letter)
}

impl<E: PgEvent> PgEventStore<E> {
    fn dl(&self) -> &str {
        &self.names().dead_letters
    }

    /// Dead letters, newest first.
    pub async fn list_dead_letters(
        &self,
        conn: &mut PgConnection,
        limit: u32,
        offset: u64,
    ) -> Result<Vec<DeadLetter>, StoreError> {
        let sql = format!(
            "SELECT * FROM {} ORDER BY created_at DESC, id DESC LIMIT $1 OFFSET $2",
            self.dl()
        );
        let rows = sqlx::query(AssertSqlSafe(sql))
            .persistent(self.persistent())
            .bind(i64::from(limit))
            .bind(i64::try_from(offset).unwrap_or(i64::MAX))
            .fetch_all(&mut *conn)
            .await
            .op("list dead letters")?;
        rows.iter().map(letter_from_row).collect()
    }

    /// The dead letter with this id, if any.
    pub async fn dead_letter_by_id(
        &self,
        conn: &mut PgConnection,
        id: Uuid,
    ) -> Result<Option<DeadLetter>, StoreError> {
        let sql = format!("SELECT * FROM {} WHERE id = $1", self.dl());
        let row = sqlx::query(AssertSqlSafe(sql))
            .persistent(self.persistent())
            .bind(id)
            .fetch_optional(&mut *conn)
            .await
            .op("show dead letter")?;
        row.as_ref().map(letter_from_row).transpose()
    }

    /// Dead letters grouped by error fingerprint, largest group first.
    pub async fn dead_letter_groups(
        &self,
        conn: &mut PgConnection,
    ) -> Result<Vec<DeadLetterGroup>, StoreError> {
        let sql = format!(
            "SELECT fingerprint, min(error) AS sample_error, count(*) AS n, min(created_at) AS first_at, \
             max(created_at) AS last_at FROM {} GROUP BY fingerprint ORDER BY n DESC, fingerprint",
            self.dl()
        );
        let rows = sqlx::query(AssertSqlSafe(sql))
            .persistent(self.persistent())
            .fetch_all(&mut *conn)
            .await
            .op("group dead letters")?;
        rows.iter()
            .map(|r| {
                let op = "group dead letters";
                let n: i64 = r.try_get("n").op(op)?;
                Ok(DeadLetterGroup {
                    fingerprint: r.try_get("fingerprint").op(op)?,
                    sample_error: r.try_get("sample_error").op(op)?,
                    count: u64::try_from(n).unwrap_or(0),
                    first_at: r.try_get("first_at").op(op)?,
                    last_at: r.try_get("last_at").op(op)?,
                })
            })
            .collect()
    }

    /// Replay the selected dead letters: their `failed` events become `pending` with a fresh
    /// budget (`scheduled_at = now`, clamped to the schedule window) and the letters are
    /// removed, in one statement.
    pub async fn replay_dead_letters(
        &self,
        conn: &mut PgConnection,
        selector: &DeadLetterSelector,
    ) -> Result<ReplayReport, StoreError> {
        let (clause, ids, text) = selector_clause(selector);
        let q = &self.names().qualified;
        let sql = format!(
            "WITH sel AS (SELECT d.id, d.event_id FROM {dl} d WHERE {clause} FOR UPDATE), \
             ev AS (UPDATE {q} AS t SET status = 'pending', attempts_made = 0, last_error = NULL, \
               scheduled_at = LEAST(GREATEST(now(), t.created_at), t.created_at + $2::bigint * interval '1 microsecond'), \
               updated_at = timezone('UTC', now()) \
               WHERE t.id IN (SELECT event_id FROM sel WHERE event_id IS NOT NULL) AND t.status = 'failed' RETURNING t.id), \
             gone AS (DELETE FROM {dl} d USING sel WHERE d.id = sel.id AND sel.event_id IN (SELECT id FROM ev) RETURNING d.id) \
             SELECT (SELECT count(*) FROM gone) AS replayed, (SELECT count(*) FROM sel) AS selected",
            dl = self.dl(),
        );
        let max_future = self
            .limits()
            .schedule_max_future
            .num_microseconds()
            .unwrap_or(i64::MAX);
        let query = sqlx::query(AssertSqlSafe(sql)).persistent(self.persistent());
        let query = match (ids, text) {
            (Some(ids), _) => query.bind(ids),
            (None, Some(t)) => query.bind(t),
            (None, None) => query.bind(None::<String>),
        };
        let row = query
            .bind(max_future)
            .fetch_one(&mut *conn)
            .await
            .op("replay dead letters")?;
        let replayed: i64 = row.try_get("replayed").op("replay dead letters")?;
        let selected: i64 = row.try_get("selected").op("replay dead letters")?;
        Ok(ReplayReport {
            replayed: u64::try_from(replayed).unwrap_or(0),
            skipped: u64::try_from(selected - replayed).unwrap_or(0),
        })
    }

    /// Delete the selected dead letters (their events stay `failed`); returns the count.
    pub async fn discard_dead_letters(
        &self,
        conn: &mut PgConnection,
        selector: &DeadLetterSelector,
    ) -> Result<u64, StoreError> {
        let (clause, ids, text) = selector_clause(selector);
        let sql = format!("DELETE FROM {} d WHERE {clause}", self.dl());
        let query = sqlx::query(AssertSqlSafe(sql)).persistent(self.persistent());
        let query = match (ids, text) {
            (Some(ids), _) => query.bind(ids),
            (None, Some(t)) => query.bind(t),
            (None, None) => query.bind(None::<String>),
        };
        let r = query.execute(&mut *conn).await.op("discard dead letters")?;
        Ok(r.rows_affected())
    }
}

/// Requeue `failed` events by id and drop their dead letters; returns how many came back.
pub(crate) async fn requeue_events<E: PgEvent>(
    store: &PgEventStore<E>,
    conn: &mut PgConnection,
    ids: &[Uuid],
) -> Result<u64, StoreError> {
    let q = &store.names().qualified;
    let sql = format!(
        "WITH ev AS (UPDATE {q} AS t SET status = 'pending', attempts_made = 0, last_error = NULL, \
           scheduled_at = LEAST(GREATEST(now(), t.created_at), t.created_at + $2::bigint * interval '1 microsecond'), \
           updated_at = timezone('UTC', now()) WHERE t.id = ANY($1::uuid[]) AND t.status = 'failed' RETURNING t.id), \
         gone AS (DELETE FROM {dl} d WHERE d.event_id IN (SELECT id FROM ev)) \
         SELECT count(*) AS n FROM ev",
        dl = store.names().dead_letters,
    );
    let row = sqlx::query(AssertSqlSafe(sql))
        .persistent(store.persistent())
        .bind(ids.to_vec())
        .bind(
            store
                .limits()
                .schedule_max_future
                .num_microseconds()
                .unwrap_or(i64::MAX),
        )
        .fetch_one(&mut *conn)
        .await
        .op("requeue_failed")?;
    let n: i64 = row.try_get("n").op("requeue_failed")?;
    Ok(u64::try_from(n).unwrap_or(0))
}

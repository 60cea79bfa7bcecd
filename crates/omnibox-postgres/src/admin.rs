//! Operator commands: look an event up, table and per-route status, force-unlock, cancel.
//!
//! These back the `omnibox` CLI and suit admin endpoints. Each takes the caller's
//! connection; run the writes in a transaction of their own.

use chrono::TimeDelta;
use omnibox_core::error::StoreError;
use omnibox_core::model::EventKind;
use omnibox_core::store::Filters;
use sqlx::{AssertSqlSafe, PgConnection, Row};
use uuid::Uuid;

use crate::error::ResultExt;
use crate::row::PgEvent;
use crate::sql::dead_letter_from;
use crate::store::PgEventStore;

/// Counts of one table, or of one route (topic or source) of it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Status {
    /// The topic (outbox) or source (inbox); empty for a whole table.
    pub route: String,
    /// Pending events (leased or not, due or not).
    pub pending: u64,
    /// Pending, unleased, due now, with attempts left (the claim may still hold an event
    /// back behind an earlier one of its key).
    pub claimable: u64,
    /// Age of the oldest claimable event.
    pub oldest_claimable_age: Option<TimeDelta>,
    /// Leased events.
    pub leased: u64,
    /// Terminally failed events.
    pub failed: u64,
    /// Completed events still in the table.
    pub completed: u64,
    /// Dead letters (whole table only; 0 per route).
    pub dead_letters: u64,
}

/// What [`PgEventStore::cancel_pending`] did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct CancelReport {
    /// Events marked failed and dead-lettered.
    pub cancelled: u64,
    /// Matching events left alone because a worker holds their lease.
    pub leased: u64,
}

fn route_column(kind: EventKind) -> &'static str {
    match kind {
        EventKind::Outbox => "topic",
        EventKind::Inbox => "source",
    }
}

const COUNTS: &str = "count(*) FILTER (WHERE status = 'pending') AS pending, \
     count(*) FILTER (WHERE status = 'pending' AND locked_at IS NULL AND attempts_made < max_attempts \
         AND scheduled_at <= now()) AS claimable, \
     (extract(epoch FROM now() - min(scheduled_at) FILTER (WHERE status = 'pending' AND locked_at IS NULL \
         AND attempts_made < max_attempts AND scheduled_at <= now())) * 1000000)::bigint AS claimable_age_us, \
     count(*) FILTER (WHERE locked_at IS NOT NULL) AS leased, \
     count(*) FILTER (WHERE status = 'failed') AS failed, \
     count(*) FILTER (WHERE status = 'completed') AS completed";

fn status_from(row: &sqlx::postgres::PgRow, route: String) -> Result<Status, StoreError> {
    let op = "status";
    let n = |name: &str| -> Result<u64, StoreError> {
        let v: i64 = row.try_get(name).op(op)?;
        Ok(u64::try_from(v).unwrap_or(0))
    };
    let age: Option<i64> = row.try_get("claimable_age_us").op(op)?;
    Ok(Status {
        route,
        pending: n("pending")?,
        claimable: n("claimable")?,
        oldest_claimable_age: age.map(|us| TimeDelta::microseconds(us.max(0))),
        leased: n("leased")?,
        failed: n("failed")?,
        completed: n("completed")?,
        dead_letters: 0,
    })
}

/// `AND col = ANY($n)` for each non-empty filter of `kind`, and the arrays to bind.
fn filter_clause(kind: EventKind, f: &Filters, first: usize) -> (String, Vec<Vec<String>>) {
    let lists: Vec<(&str, &Vec<String>)> = match kind {
        EventKind::Outbox => vec![
            ("topic", &f.topics),
            ("aggregate_type", &f.aggregate_types),
            ("event_type", &f.event_types),
        ],
        EventKind::Inbox => vec![("source", &f.sources), ("event_type", &f.event_types)],
    };
    let mut sql = String::new();
    let mut binds = Vec::new();
    for (col, list) in lists {
        if !list.is_empty() {
            sql.push_str(&format!(
                " AND {col} = ANY(${}::text[])",
                first + binds.len()
            ));
            binds.push(list.clone());
        }
    }
    (sql, binds)
}

impl<E: PgEvent> PgEventStore<E> {
    /// The event with this id, if any.
    pub async fn event(&self, conn: &mut PgConnection, id: Uuid) -> Result<Option<E>, StoreError> {
        let sql = format!(
            "SELECT * FROM {} WHERE id = $1 LIMIT 1",
            self.names().qualified
        );
        let row = sqlx::query(AssertSqlSafe(sql))
            .persistent(self.persistent())
            .bind(id)
            .fetch_optional(&mut *conn)
            .await
            .op("show event")?;
        row.map(|r| E::from_row(&r, self.row_limits())).transpose()
    }

    /// Counts of the whole table (with its dead letters). One scan of the table: meant for
    /// operators, not for a tight health-check loop (use
    /// [`BacklogStats`](omnibox_core::store::BacklogStats) there).
    pub async fn status(&self, conn: &mut PgConnection) -> Result<Status, StoreError> {
        let t = self.names();
        let sql = format!(
            "SELECT {COUNTS}, (SELECT count(*) FROM {dl}) AS dead_letters FROM {q}",
            q = t.qualified,
            dl = t.dead_letters
        );
        let row = sqlx::query(AssertSqlSafe(sql))
            .persistent(self.persistent())
            .fetch_one(&mut *conn)
            .await
            .op("status")?;
        let mut s = status_from(&row, String::new())?;
        let dl: i64 = row.try_get("dead_letters").op("status")?;
        s.dead_letters = u64::try_from(dl).unwrap_or(0);
        Ok(s)
    }

    /// Counts per topic (outbox) or source (inbox), ordered by name.
    pub async fn status_by_route(
        &self,
        conn: &mut PgConnection,
    ) -> Result<Vec<Status>, StoreError> {
        let col = route_column(E::KIND);
        let sql = format!(
            "SELECT {col} AS route, {COUNTS} FROM {q} GROUP BY {col} ORDER BY {col}",
            q = self.names().qualified
        );
        let rows = sqlx::query(AssertSqlSafe(sql))
            .persistent(self.persistent())
            .fetch_all(&mut *conn)
            .await
            .op("status by route")?;
        rows.iter()
            .map(|r| {
                let route: String = r.try_get("route").op("status by route")?;
                status_from(r, route)
            })
            .collect()
    }

    /// Clear the lease of a pending event whoever holds it, recording `reason` in
    /// `last_error` (no attempt is spent). The holder's settle is then refused (its lease
    /// is gone), and the event is claimable again. `false` when the event is not pending
    /// and leased.
    pub async fn force_unlock(
        &self,
        conn: &mut PgConnection,
        id: Uuid,
        reason: &str,
    ) -> Result<bool, StoreError> {
        let reason = omnibox_core::model::validate::required("reason", reason, 255)
            .map_err(|e| StoreError::InvalidRequest(e.to_string()))?;
        let sql = format!(
            "UPDATE {} SET locked_at = NULL, locked_by = NULL, updated_at = now(), last_error = $2 \
             WHERE id = $1 AND status = 'pending' AND locked_at IS NOT NULL",
            self.names().qualified
        );
        let done = sqlx::query(AssertSqlSafe(sql))
            .persistent(self.persistent())
            .bind(id)
            .bind(format!("Administrative force unlock: {reason}"))
            .execute(&mut *conn)
            .await
            .op("force unlock")?;
        Ok(done.rows_affected() > 0)
    }

    /// Cancel the pending events that pass `filters`: each becomes `failed` with
    /// `cancelled by operator: <reason>` and gets a dead letter, in one statement, so
    /// [`replay_dead_letters`](Self::replay_dead_letters) (by the letters' fingerprint) or
    /// [`requeue_failed`](Self::requeue_failed) undoes it. Events a worker has leased are
    /// left alone and counted. Empty filters match every pending event.
    pub async fn cancel_pending(
        &self,
        conn: &mut PgConnection,
        filters: &Filters,
        reason: &str,
    ) -> Result<CancelReport, StoreError> {
        let reason = omnibox_core::model::validate::required("reason", reason, 255)
            .map_err(|e| StoreError::InvalidRequest(e.to_string()))?;
        let t = self.names();
        let (clause, binds) = filter_clause(E::KIND, filters, 2);
        let insert = dead_letter_from(t, E::KIND, route_column(E::KIND), "c");
        let sql = format!(
            "WITH c AS (UPDATE {q} SET status = 'failed', last_error = $1, updated_at = now() \
               WHERE status = 'pending' AND locked_at IS NULL{clause} RETURNING *), \
             d AS ({insert} RETURNING 1) \
             SELECT (SELECT count(*) FROM c) AS cancelled, \
               (SELECT count(*) FROM {q} WHERE status = 'pending' AND locked_at IS NOT NULL{clause}) AS leased",
            q = t.qualified,
        );
        let mut q = sqlx::query(AssertSqlSafe(sql))
            .persistent(self.persistent())
            .bind(format!("cancelled by operator: {reason}"));
        for b in binds {
            q = q.bind(b);
        }
        let row = q.fetch_one(&mut *conn).await.op("cancel pending")?;
        let n = |name: &str| -> Result<u64, StoreError> {
            let v: i64 = row.try_get(name).op("cancel pending")?;
            Ok(u64::try_from(v).unwrap_or(0))
        };
        Ok(CancelReport {
            cancelled: n("cancelled")?,
            leased: n("leased")?,
        })
    }
}

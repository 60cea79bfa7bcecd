//! Time bounds on the transactions [`PgDatabase`](crate::PgDatabase) begins.
//!
//! Every transaction of the relay (claim, settle, lease refresh, release), the inbox
//! runner (insert, handler, settle, dead letter) and the maintenance worker begins with
//! `SET LOCAL` bounds, sent in the same round trip as its `BEGIN`:
//!
//! - `statement_timeout` bounds each statement, including the time it waits for a lock
//!   another session holds (the server cancels it: SQLSTATE `57014`);
//! - `idle_in_transaction_session_timeout` bounds each pause between statements: a
//!   client that stalls inside a transaction (a process frozen by SIGSTOP, a handler stuck
//!   off the database) loses its session, so its row locks are released instead of blocking
//!   every other worker (SQLSTATE `25P03`);
//! - `lock_timeout` (off by default) bounds lock waits alone, tighter than the statement.
//!
//! Together they are the transaction's deadline: a library transaction runs a fixed,
//! small number of statements, so it ends (commits or rolls back) within their sum. Every
//! one of these failures is a transient [`StoreError`](omnibox_core::error::StoreError)
//! (`Timeout`, or `Contention` for `lock_timeout`): the transaction rolls back and the work
//! is retried without spending an attempt.
//!
//! The bounds are `SET LOCAL`: they end with the transaction and never leak into the
//! pool's other users, also behind PgBouncer in transaction pooling mode.

use std::time::Duration;

/// Default [`PgTimeouts::statement`]: 10 s.
pub const DEFAULT_STATEMENT_TIMEOUT: Duration = Duration::from_secs(10);
/// Default [`PgTimeouts::idle_in_transaction`]: 60 s — above the inbox runner's default
/// handler timeout (30 s), which runs inside the transaction.
pub const DEFAULT_IDLE_IN_TRANSACTION_TIMEOUT: Duration = Duration::from_secs(60);

/// The bounds a [`PgDatabase`](crate::PgDatabase) puts on each transaction it begins.
/// `None` leaves the server's (or role's) setting in force.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct PgTimeouts {
    /// `statement_timeout` (default [`DEFAULT_STATEMENT_TIMEOUT`]).
    pub statement: Option<Duration>,
    /// `idle_in_transaction_session_timeout` (default
    /// [`DEFAULT_IDLE_IN_TRANSACTION_TIMEOUT`]). Keep it above the inbox handler's timeout:
    /// an exactly-once handler runs inside the transaction and may wait off the database.
    pub idle_in_transaction: Option<Duration>,
    /// `lock_timeout` (default none: the statement timeout bounds lock waits).
    pub lock: Option<Duration>,
}

impl Default for PgTimeouts {
    fn default() -> Self {
        Self {
            statement: Some(DEFAULT_STATEMENT_TIMEOUT),
            idle_in_transaction: Some(DEFAULT_IDLE_IN_TRANSACTION_TIMEOUT),
            lock: None,
        }
    }
}

impl PgTimeouts {
    /// No bounds: the server's settings apply (the behaviour before bounds existed).
    pub fn none() -> Self {
        Self {
            statement: None,
            idle_in_transaction: None,
            lock: None,
        }
    }

    /// Set the statement bound.
    pub fn statement(mut self, timeout: Option<Duration>) -> Self {
        self.statement = timeout;
        self
    }

    /// Set the idle-in-transaction bound.
    pub fn idle_in_transaction(mut self, timeout: Option<Duration>) -> Self {
        self.idle_in_transaction = timeout;
        self
    }

    /// Set the lock-wait bound.
    pub fn lock(mut self, timeout: Option<Duration>) -> Self {
        self.lock = timeout;
        self
    }

    /// The `BEGIN …; SET LOCAL …` string (one simple-protocol round trip). Values are
    /// whole milliseconds rendered from numbers, never caller text; a zero duration is
    /// raised to 1 ms (0 would mean "no limit" to the server).
    pub(crate) fn begin_sql(&self) -> String {
        let mut sql = String::from(crate::isolation::BEGIN_READ_COMMITTED);
        for (name, value) in [
            ("statement_timeout", self.statement),
            (
                "idle_in_transaction_session_timeout",
                self.idle_in_transaction,
            ),
            ("lock_timeout", self.lock),
        ] {
            if let Some(d) = value {
                let ms = d.as_millis().clamp(1, i32::MAX as u128);
                sql.push_str(&format!("; SET LOCAL {name} = {ms}"));
            }
        }
        sql
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_render_into_the_begin_round_trip() {
        assert_eq!(
            PgTimeouts::default().begin_sql(),
            "BEGIN ISOLATION LEVEL READ COMMITTED; SET LOCAL statement_timeout = 10000; \
             SET LOCAL idle_in_transaction_session_timeout = 60000"
        );
        assert_eq!(
            PgTimeouts::none().begin_sql(),
            "BEGIN ISOLATION LEVEL READ COMMITTED"
        );
        assert_eq!(
            PgTimeouts::none()
                .lock(Some(Duration::ZERO))
                .statement(Some(Duration::from_micros(1500)))
                .begin_sql(),
            "BEGIN ISOLATION LEVEL READ COMMITTED; SET LOCAL statement_timeout = 1; \
             SET LOCAL lock_timeout = 1"
        );
    }
}

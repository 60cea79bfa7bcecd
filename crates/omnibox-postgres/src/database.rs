//! The caller's database handle as core [`Transactions`].

use std::sync::Arc;

use omnibox_core::error::StoreError;
use omnibox_core::store::Transactions;
use sqlx::{AssertSqlSafe, PgConnection, PgPool, Postgres, Transaction};

use crate::error::ResultExt;
use crate::timeouts::PgTimeouts;

/// A pool the application owns, seen as core [`Transactions`] (for the pipeline and the
/// services). Cloning is cheap.
///
/// Every transaction it begins runs at **READ COMMITTED**, whatever the pool's or role's
/// `default_transaction_isolation`: the claim, the settle and partitioned-table dedup are
/// written for it. And every one is time-bounded ([`PgTimeouts`], default: 10 s per
/// statement, 60 s idle inside a transaction), set in the `BEGIN` round trip; see
/// [`crate::timeouts`]. Begin your own business transactions with
/// [`PgDatabase::transaction`] to give them (and the `enqueue` in them) the same bounds.
///
/// # Pool settings for relays and inbox workers
///
/// By default sqlx pings every connection when it leaves the pool
/// (`test_before_acquire(true)`): one extra round trip per transaction. Relays and inbox
/// workers run one short transaction per batch or per message, so for the pool they use,
/// consider turning it off:
///
/// ```no_run
/// # async fn run() -> Result<(), sqlx::Error> {
/// use omnibox_postgres::PgDatabase;
/// use sqlx::postgres::PgPoolOptions;
///
/// let pool = PgPoolOptions::new()
///     .max_connections(8)
///     .test_before_acquire(false)
///     .connect("postgres://localhost/app")
///     .await?;
/// let db = PgDatabase::new(pool);
/// # Ok(()) }
/// ```
///
/// Measured here: about 10% more inbox throughput (one round trip less per message). The
/// trade-off: a connection that died while idle in the pool (server restart, failover, an
/// idle timeout in a proxy or firewall) is not detected at acquire time, so the first
/// statement on it fails with a connection error instead. The relays and the inbox runner
/// treat that as a transient storage error (the transaction rolls back, nothing is lost,
/// the work is retried on the next attempt, and sqlx drops the broken connection); expect
/// one such error per dead connection after an outage. Keep the default where a failed
/// first statement is costly, or bound connection age with `idle_timeout` /
/// `max_lifetime` below the network's idle cut-off.
#[derive(Debug, Clone)]
pub struct PgDatabase {
    pool: PgPool,
    timeouts: PgTimeouts,
    begin: Arc<str>,
}

impl PgDatabase {
    /// Wrap `pool`, with the default [`PgTimeouts`].
    pub fn new(pool: PgPool) -> Self {
        Self::with_timeouts(pool, PgTimeouts::default())
    }

    /// Wrap `pool`, bounding each transaction with `timeouts`.
    ///
    /// ```no_run
    /// use std::time::Duration;
    /// use omnibox_postgres::{PgDatabase, PgTimeouts};
    /// # fn run(pool: sqlx::PgPool) {
    /// let db = PgDatabase::with_timeouts(
    ///     pool,
    ///     PgTimeouts::default()
    ///         .statement(Some(Duration::from_secs(2)))
    ///         .lock(Some(Duration::from_millis(500))),
    /// );
    /// # }
    /// ```
    pub fn with_timeouts(pool: PgPool, timeouts: PgTimeouts) -> Self {
        Self {
            begin: timeouts.begin_sql().into(),
            pool,
            timeouts,
        }
    }

    /// The pool.
    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    /// The bounds put on each transaction.
    pub fn timeouts(&self) -> PgTimeouts {
        self.timeouts
    }

    /// Begin a transaction of the application's own (a business change and its
    /// `enqueue`) at READ COMMITTED with the same bounds as the library's transactions.
    ///
    /// ```no_run
    /// # async fn run(db: omnibox_postgres::PgDatabase) -> Result<(), sqlx::Error> {
    /// let mut tx = db.transaction().await?;
    /// sqlx::query("UPDATE orders SET status = 'paid' WHERE id = 1").execute(&mut *tx).await?;
    /// tx.commit().await
    /// # }
    /// ```
    pub async fn transaction(&self) -> Result<Transaction<'static, Postgres>, sqlx::Error> {
        self.pool
            .begin_with(AssertSqlSafe(self.begin.to_string()))
            .await
    }
}

impl Transactions for PgDatabase {
    type Conn = PgConnection;
    type Tx = Transaction<'static, Postgres>;

    async fn begin(&self) -> Result<Self::Tx, StoreError> {
        // Explicit, so a pool or role whose default is REPEATABLE READ or SERIALIZABLE does
        // not break partitioned-table dedup (see `isolation.rs`); bounded (`timeouts.rs`).
        self.transaction().await.op("begin")
    }

    async fn commit(&self, tx: Self::Tx) -> Result<(), StoreError> {
        tx.commit().await.op("commit")
    }

    async fn rollback(&self, tx: Self::Tx) -> Result<(), StoreError> {
        tx.rollback().await.op("rollback")
    }
}

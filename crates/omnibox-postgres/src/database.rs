//! The caller's database handle as core [`Transactions`].

use omnibox_core::error::StoreError;
use omnibox_core::store::Transactions;
use sqlx::{PgConnection, PgPool, Postgres, Transaction};

use crate::error::ResultExt;

/// A pool the application owns, seen as core [`Transactions`] (for the pipeline and the
/// services). Cloning is cheap.
///
/// Every transaction it begins runs at **READ COMMITTED**, whatever the pool's or role's
/// `default_transaction_isolation`: the claim, the settle and partitioned-table dedup are
/// written for it.
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
}

impl PgDatabase {
    /// Wrap `pool`.
    pub fn new(pool: PgPool) -> Self {
        Self { pool }
    }

    /// The pool.
    pub fn pool(&self) -> &PgPool {
        &self.pool
    }
}

impl Transactions for PgDatabase {
    type Conn = PgConnection;
    type Tx = Transaction<'static, Postgres>;

    async fn begin(&self) -> Result<Self::Tx, StoreError> {
        // Explicit, so a pool or role whose default is REPEATABLE READ or SERIALIZABLE does
        // not break partitioned-table dedup (see `isolation.rs`).
        self.pool
            .begin_with(crate::isolation::BEGIN_READ_COMMITTED)
            .await
            .op("begin")
    }

    async fn commit(&self, tx: Self::Tx) -> Result<(), StoreError> {
        tx.commit().await.op("commit")
    }

    async fn rollback(&self, tx: Self::Tx) -> Result<(), StoreError> {
        tx.rollback().await.op("rollback")
    }
}

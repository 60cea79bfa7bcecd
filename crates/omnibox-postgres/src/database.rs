//! The caller's database handle as core [`Transactions`].

use omnibox_core::error::StoreError;
use omnibox_core::store::Transactions;
use sqlx::{PgConnection, PgPool, Postgres, Transaction};

use crate::error::ResultExt;

/// A pool the application owns, seen as core [`Transactions`] (for the pipeline and the
/// services). Cloning is cheap.
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
        self.pool.begin().await.op("begin")
    }

    async fn commit(&self, tx: Self::Tx) -> Result<(), StoreError> {
        tx.commit().await.op("commit")
    }

    async fn rollback(&self, tx: Self::Tx) -> Result<(), StoreError> {
        tx.rollback().await.op("rollback")
    }
}

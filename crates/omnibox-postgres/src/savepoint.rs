//! [`Savepoints`] for the PostgreSQL stores: `SAVEPOINT omnibox_handler`,
//! `ROLLBACK TO SAVEPOINT omnibox_handler` and `RELEASE SAVEPOINT omnibox_handler` on the
//! caller's connection.
//!
//! The batch inbox pipeline takes the savepoint before each handler, so a handler whose SQL
//! fails (which aborts the whole transaction in PostgreSQL) or that fails after writing is
//! rolled back alone: its failure is recorded and the rest of the batch commits. The
//! statements go through the simple query protocol (`raw_sql`: no prepared statement, so
//! PgBouncer's transaction pooling is fine) and their errors through [`classify`]. Each
//! savepoint is a subtransaction; the pipeline releases it after every handler, so a batch
//! never holds more than one open (the inbox runner's batches renew it between handlers:
//! release and take the next in one round trip). Savepoints need an open transaction: on an autocommit
//! connection PostgreSQL refuses them (`25P01`, classified as `Other`).

use omnibox_core::error::StoreError;
use omnibox_core::store::Savepoints;
use sqlx::PgConnection;

use crate::error::classify;
use crate::row::PgEvent;
use crate::store::PgEventStore;

/// Take the savepoint (one fixed name: taking it again nests, see [`Savepoints`]).
const SAVEPOINT: &str = "SAVEPOINT omnibox_handler";
/// Undo everything since the newest savepoint of that name, keeping it.
const ROLLBACK_TO: &str = "ROLLBACK TO SAVEPOINT omnibox_handler";
/// Drop the newest savepoint of that name, keeping its writes.
const RELEASE: &str = "RELEASE SAVEPOINT omnibox_handler";
/// Release the newest and take the next one, in one round trip.
const RENEW: &str = "RELEASE SAVEPOINT omnibox_handler; SAVEPOINT omnibox_handler";

async fn run(
    conn: &mut PgConnection,
    operation: &'static str,
    sql: &'static str,
) -> Result<(), StoreError> {
    sqlx::raw_sql(sql)
        .execute(conn)
        .await
        .map(drop)
        .map_err(|e| classify(operation, e))
}

impl<E: PgEvent> Savepoints for PgEventStore<E> {
    async fn savepoint(&self, conn: &mut PgConnection) -> Result<(), StoreError> {
        run(conn, "savepoint", SAVEPOINT).await
    }

    async fn rollback_to_savepoint(&self, conn: &mut PgConnection) -> Result<(), StoreError> {
        run(conn, "rollback to savepoint", ROLLBACK_TO).await
    }

    async fn release_savepoint(&self, conn: &mut PgConnection) -> Result<(), StoreError> {
        run(conn, "release savepoint", RELEASE).await
    }

    async fn renew_savepoint(&self, conn: &mut PgConnection) -> Result<(), StoreError> {
        run(conn, "renew savepoint", RENEW).await
    }
}

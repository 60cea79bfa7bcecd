//! Isolation levels that are not the default (issue 9 §5). Partitioned tables dedup with an
//! advisory lock and `INSERT … WHERE NOT EXISTS`, correct only at READ COMMITTED; plain
//! tables with a unique index, correct at every level. Against a real PostgreSQL
//! (DATABASE_URL): a pool whose sessions default to REPEATABLE READ or SERIALIZABLE, and a
//! caller's transaction at each level, on plain and partitioned tables.
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests may panic

mod common;

use std::time::Duration;

use common::{TestDb, database_url, inbox, outbox};
use omnibox_core::error::StoreError;
use omnibox_core::model::{Event, OutboxEvent};
use omnibox_core::store::Transactions;
use omnibox_postgres::{PgDatabase, PgInboxStore, PgOutboxStore};
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{AssertSqlSafe, Executor, PgPool};

const LEVELS: [&str; 3] = ["READ COMMITTED", "REPEATABLE READ", "SERIALIZABLE"];

/// A pool on the test's schema whose sessions default to `level`, as a pool configured by
/// an application (or a role's `default_transaction_isolation`) would.
async fn pool_defaulting_to(db: &TestDb, level: &'static str) -> PgPool {
    let options: PgConnectOptions = database_url().await.parse().unwrap();
    PgPoolOptions::new()
        .max_connections(4)
        .after_connect(move |conn, _| {
            Box::pin(async move {
                conn.execute(AssertSqlSafe(format!(
                    "SET default_transaction_isolation = '{}'",
                    level.to_lowercase()
                )))
                .await?;
                Ok(())
            })
        })
        .connect_with(options.application_name(&db.schema))
        .await
        .unwrap()
}

async fn count(pool: &PgPool, sql: String) -> i64 {
    sqlx::query_scalar(AssertSqlSafe(sql))
        .fetch_one(pool)
        .await
        .unwrap()
}

/// Two deliveries of each of five messages race through the library's own transactions
/// ([`PgDatabase::begin`]): the first holds its transaction open while the second waits on
/// the dedup, then commits. Exactly one inbox row per message, whatever the pool's default.
async fn inbox_dedup_holds(partitioned: bool, level: &'static str) {
    let (db, cfg) = TestDb::migrated(partitioned).await;
    let store = PgInboxStore::new(&cfg).unwrap();
    let pg = PgDatabase::new(pool_defaulting_to(&db, level).await);
    for m in 0..5 {
        let event = inbox(&format!("m{m}"));
        let (first, second) = (event.clone(), event);
        let (store_a, store_b, pg_a, pg_b) = (store.clone(), store.clone(), pg.clone(), pg.clone());
        let (locked_tx, locked_rx) = tokio::sync::oneshot::channel();
        let a = tokio::spawn(async move {
            let mut tx = pg_a.begin().await.unwrap();
            store_a.enqueue(&mut tx, &first).await.unwrap();
            locked_tx.send(()).unwrap();
            tokio::time::sleep(Duration::from_millis(200)).await;
            pg_a.commit(tx).await.unwrap();
        });
        let b = tokio::spawn(async move {
            locked_rx.await.unwrap();
            let mut tx = pg_b.begin().await.unwrap();
            let r = store_b.enqueue(&mut tx, &second).await;
            pg_b.commit(tx).await.unwrap();
            r.map(|i| !i.is_duplicate())
        });
        a.await.unwrap();
        let second_new = b.await.unwrap();
        assert_eq!(
            second_new.ok(),
            Some(false),
            "the second delivery of m{m} must be a duplicate (pool default {level}, partitioned {partitioned})"
        );
    }
    let rows = count(
        &db.pool,
        format!(
            "SELECT count(*) FROM {} WHERE consumer_group = 'group-a'",
            store.names().qualified
        ),
    )
    .await;
    assert_eq!(rows, 5, "one inbox row per message (pool default {level})");
}

#[tokio::test]
async fn library_transactions_dedup_inbox_deliveries_whatever_the_pool_default() {
    for partitioned in [false, true] {
        for level in LEVELS {
            inbox_dedup_holds(partitioned, level).await;
        }
    }
}

#[tokio::test]
async fn pg_database_begins_at_read_committed() {
    let db = TestDb::new().await;
    for level in LEVELS {
        let pg = PgDatabase::new(pool_defaulting_to(&db, level).await);
        let mut tx = pg.begin().await.unwrap();
        let seen: String = sqlx::query_scalar("SELECT current_setting('transaction_isolation')")
            .fetch_one(&mut *tx)
            .await
            .unwrap();
        pg.rollback(tx).await.unwrap();
        assert_eq!(seen, "read committed", "pool default {level}");
    }
}

/// The outcome of the second of two racing enqueues of one idempotency key in a caller's
/// transaction at `level`.
enum Second {
    Duplicate,
    Refused(StoreError),
}

/// `enqueue` in the caller's own transaction (not the library's) at each level: a keyed
/// event is stored once, or the insert fails with a typed error — never twice.
async fn caller_tx_enqueue(partitioned: bool, level: &'static str) -> Vec<Second> {
    let (db, cfg) = TestDb::migrated(partitioned).await;
    let store = PgOutboxStore::new(&cfg).unwrap();
    let mut seconds = Vec::new();
    for k in 0..5 {
        let key = format!("order-{k}:placed");
        let keyed = |e: OutboxEvent| {
            OutboxEvent::builder("order", uuid::Uuid::now_v7(), "order.placed", "orders", "k")
                .payload(e.common().payload.clone())
                .idempotency_key(key.clone())
                .build()
                .unwrap()
        };
        let (first, second) = (keyed(outbox("orders", "k")), keyed(outbox("orders", "k")));
        let begin = format!("BEGIN ISOLATION LEVEL {level}");
        let (pool_a, pool_b) = (db.pool.clone(), db.pool.clone());
        let (store_a, store_b) = (store.clone(), store.clone());
        let (begin_a, begin_b) = (begin.clone(), begin);
        let (locked_tx, locked_rx) = tokio::sync::oneshot::channel();
        let a = tokio::spawn(async move {
            let mut tx = pool_a.begin_with(AssertSqlSafe(begin_a)).await.unwrap();
            let r = store_a.enqueue(&mut tx, &first).await;
            let _ = locked_tx.send(());
            tokio::time::sleep(Duration::from_millis(200)).await;
            tx.commit().await.unwrap();
            r.map(|i| !i.is_duplicate())
        });
        let b = tokio::spawn(async move {
            let _ = locked_rx.await;
            let mut tx = pool_b.begin_with(AssertSqlSafe(begin_b)).await.unwrap();
            // Take the snapshot before the first writer commits, as a transaction that
            // read something first would.
            sqlx::query("SELECT 1").execute(&mut *tx).await.unwrap();
            let r = store_b.enqueue(&mut tx, &second).await;
            let _ = tx.commit().await;
            r.map(|i| !i.is_duplicate())
        });
        let first_new = a.await.unwrap();
        let second = b.await.unwrap();
        match first_new {
            Ok(new) => assert!(new, "the first writer of {key} stores it"),
            Err(e) => {
                // Only the partitioned table at a level above READ COMMITTED refuses, and
                // then it refuses every keyed insert.
                assert!(
                    partitioned && level != "READ COMMITTED",
                    "{level}: unexpected error {e}"
                );
                assert!(
                    matches!(e, StoreError::UnsupportedIsolation { .. }),
                    "{e:?}"
                );
            }
        }
        seconds.push(match second {
            Ok(false) => Second::Duplicate,
            Ok(true) => panic!(
                "{key} stored twice at {level} (partitioned {partitioned}): a duplicate slipped through"
            ),
            Err(e) => Second::Refused(e),
        });
    }
    let rows = count(
        &db.pool,
        format!(
            "SELECT count(*) - count(DISTINCT idempotency_key) FROM {}",
            store.names().qualified
        ),
    )
    .await;
    assert_eq!(rows, 0, "no idempotency key stored twice ({level})");
    seconds
}

#[tokio::test]
async fn enqueue_in_the_callers_transaction_keeps_one_row_per_key_at_every_level() {
    for level in LEVELS {
        // Plain: the unique index decides; a second writer whose snapshot predates the
        // first commit gets a serialization failure (transient contention) at REPEATABLE
        // READ and above, a duplicate at READ COMMITTED.
        for second in caller_tx_enqueue(false, level).await {
            match second {
                Second::Duplicate => {}
                Second::Refused(e) => assert!(
                    level != "READ COMMITTED" && matches!(e, StoreError::Contention { .. }),
                    "plain, {level}: {e:?}"
                ),
            }
        }
        // Partitioned: correct at READ COMMITTED, a typed refusal above it.
        for second in caller_tx_enqueue(true, level).await {
            match (level, second) {
                ("READ COMMITTED", Second::Duplicate) => {}
                (_, Second::Refused(StoreError::UnsupportedIsolation { level: seen, .. }))
                    if level != "READ COMMITTED" =>
                {
                    assert_eq!(seen, level.to_lowercase());
                }
                (_, Second::Refused(e)) => panic!("partitioned, {level}: {e:?}"),
                (_, Second::Duplicate) => panic!("partitioned, {level}: accepted above RC"),
            }
        }
    }
}

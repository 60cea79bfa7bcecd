//! Time bounds on every transaction `PgDatabase` begins (claim, settle, inbox insert, the
//! caller's enqueue through `PgDatabase::transaction`), tested against locks another
//! session holds: each wait ends within its bound as a transient error, nothing is lost,
//! and the work goes through once the lock is gone. Without the bounds each of these waits
//! forever (every case runs under an outer limit that fails the test instead of hanging).
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests may panic

mod common;

use std::time::{Duration, Instant};

use common::{TestDb, outbox};
use omnibox_core::error::StoreError;
use omnibox_core::inbox::{AckStrategy, InboxRunner};
use omnibox_core::memory::MemoryBroker;
use omnibox_core::relay::OutboxRelay;
use omnibox_core::store::{
    ClaimEvents, ClaimRequest, Settle, SettleEvents, Settlement, Transactions,
};
use omnibox_core::{FailureKind, Publisher, Shutdown, WorkerId};
use omnibox_postgres::{PgDatabase, PgInboxStore, PgOutboxStore, PgTimeouts};
use sqlx::{AssertSqlSafe, Row};

/// The bound under test.
const BOUND: Duration = Duration::from_millis(300);
/// A wait that outlives this has not been bounded.
const OUTER: Duration = Duration::from_secs(10);

fn bounded_db(db: &TestDb) -> PgDatabase {
    PgDatabase::with_timeouts(
        db.pool.clone(),
        PgTimeouts::default().statement(Some(BOUND)),
    )
}

async fn within<T>(what: &str, f: impl Future<Output = T>) -> (T, Duration) {
    let started = Instant::now();
    let out = tokio::time::timeout(OUTER, f)
        .await
        .unwrap_or_else(|_| panic!("{what}: still waiting after {OUTER:?}: not bounded"));
    (out, started.elapsed())
}

fn transient_timeout(e: &StoreError) {
    assert!(matches!(e, StoreError::Timeout { .. }), "{e:?}");
    assert_eq!(e.kind(), FailureKind::Transient, "{e:?}");
}

/// Another session's transaction holding `lock` (`LOCK TABLE … IN … MODE` or a
/// `SELECT … FOR UPDATE`), until dropped or rolled back.
async fn hold(db: &TestDb, lock: String) -> sqlx::Transaction<'static, sqlx::Postgres> {
    let mut tx = db.pool.begin().await.unwrap();
    sqlx::query(AssertSqlSafe(lock))
        .execute(&mut *tx)
        .await
        .unwrap();
    tx
}

#[tokio::test]
async fn a_claim_behind_a_table_lock_times_out_as_transient_then_publishes() {
    let (db, cfg) = TestDb::migrated(false).await;
    let store = PgOutboxStore::new(&cfg).unwrap();
    let table = store.names().qualified.clone();
    let mut conn = db.pool.acquire().await.unwrap();
    store
        .enqueue(&mut conn, &outbox("orders", "k1"))
        .await
        .unwrap();
    drop(conn);
    let broker = MemoryBroker::new();
    let relay = OutboxRelay::builder(store, broker.clone()).build().unwrap();
    let pg = bounded_db(&db);
    let worker = WorkerId::new("relay-1").unwrap();

    let locker = hold(&db, format!("LOCK TABLE {table} IN ACCESS EXCLUSIVE MODE")).await;
    let (r, took) = within("claim", relay.publish_batch(&pg, &worker, &Shutdown::new())).await;
    transient_timeout(&r.unwrap_err());
    assert!(took < BOUND * 10, "{took:?}");
    assert!(broker.published("orders").is_empty());

    locker.rollback().await.unwrap();
    let (r, _) = within("claim", relay.publish_batch(&pg, &worker, &Shutdown::new())).await;
    assert_eq!(r.unwrap().completed.len(), 1);
    assert_eq!(broker.published("orders").len(), 1);
}

#[tokio::test]
async fn a_settle_behind_a_row_lock_times_out_and_keeps_the_lease_then_completes() {
    let (db, cfg) = TestDb::migrated(false).await;
    let store = PgOutboxStore::new(&cfg).unwrap();
    let table = store.names().qualified.clone();
    let event = outbox("orders", "k1");
    let mut conn = db.pool.acquire().await.unwrap();
    store.enqueue(&mut conn, &event).await.unwrap();
    drop(conn);
    let pg = bounded_db(&db);
    let worker = WorkerId::new("relay-1").unwrap();
    let mut tx = pg.begin().await.unwrap();
    let claimed = store
        .claim(&mut tx, &ClaimRequest::new(worker.clone(), 10))
        .await
        .unwrap();
    pg.commit(tx).await.unwrap();
    let settlement = Settlement {
        id: event.common.id,
        lease: claimed[0].common.locked_at.unwrap(),
        action: Settle::Complete,
    };

    let locker = hold(
        &db,
        format!(
            "SELECT 1 FROM {table} WHERE id = '{}' FOR UPDATE",
            event.common.id
        ),
    )
    .await;
    let (r, took) = within("settle", async {
        let mut tx = pg.begin().await?;
        let r = store
            .settle(&mut tx, &worker, std::slice::from_ref(&settlement))
            .await;
        drop(tx);
        r
    })
    .await;
    transient_timeout(&r.unwrap_err());
    assert!(took < BOUND * 10, "{took:?}");
    locker.rollback().await.unwrap();
    let row = sqlx::query(AssertSqlSafe(format!(
        "SELECT status, locked_by FROM {table} WHERE id = $1"
    )))
    .bind(event.common.id)
    .fetch_one(&db.pool)
    .await
    .unwrap();
    assert_eq!(row.get::<String, _>(0), "pending", "nothing settled");
    assert_eq!(
        row.get::<Option<String>, _>(1).as_deref(),
        Some("relay-1"),
        "lease kept"
    );

    let mut tx = pg.begin().await.unwrap();
    let report = store.settle(&mut tx, &worker, &[settlement]).await.unwrap();
    pg.commit(tx).await.unwrap();
    assert_eq!(report.completed, vec![event.common.id]);
}

struct Complete;

impl omnibox_core::Handler<omnibox_core::InboxEvent, sqlx::PgConnection> for Complete {
    async fn handle(
        &self,
        _event: &omnibox_core::InboxEvent,
        _conn: &mut sqlx::PgConnection,
    ) -> omnibox_core::HandlerResult {
        Ok(omnibox_core::HandlerOutcome::Completed)
    }
}

#[tokio::test]
async fn an_inbox_insert_behind_an_uncommitted_duplicate_is_handed_back_then_handled() {
    let (db, cfg) = TestDb::migrated(false).await;
    let inbox = PgInboxStore::new(&cfg).unwrap();
    let table = inbox.names().qualified.clone();
    let broker = MemoryBroker::new();
    let event = outbox("orders", "k1");
    broker.publish(&event).await.unwrap();
    let message_id = event.common.id.to_string();
    // Another session stores the same message for the same group and does not commit:
    // the runner's insert waits on the unique key.
    let mut other = db.pool.begin().await.unwrap();
    let row = omnibox_core::InboxEvent::builder(&message_id, "billing", "orders", "order.placed")
        .payload(serde_json::json!({ "n": 1 }))
        .build()
        .unwrap();
    {
        use omnibox_core::store::InsertEvents;
        inbox.insert(&mut other, &row).await.unwrap();
    }
    let mut runner = InboxRunner::builder(
        broker.consumer(["orders"], "billing"),
        bounded_db(&db),
        inbox.clone(),
        "billing",
    )
    .ack_strategy(AckStrategy::ExactlyOnceInbox)
    .redelivery_delay(Duration::ZERO)
    .handler(Complete)
    .build()
    .unwrap();
    let (r, took) = within("inbox insert", runner.process_one()).await;
    let e = r.unwrap_err();
    assert!(e.to_string().contains("57014"), "{e}");
    assert!(took < BOUND * 10, "{took:?}");
    assert_eq!(
        broker.nacked("orders", "billing"),
        1,
        "handed back, not lost"
    );
    assert_eq!(broker.acked("orders", "billing"), 0);

    other.rollback().await.unwrap();
    let (r, _) = within("inbox insert", runner.process_one()).await;
    let outcome = r.unwrap();
    assert!(outcome.acked && outcome.handled, "{outcome:?}");
    let n: i64 = sqlx::query_scalar(AssertSqlSafe(format!(
        "SELECT count(*) FROM {table} WHERE message_id = $1 AND status = 'completed'"
    )))
    .bind(&message_id)
    .fetch_one(&db.pool)
    .await
    .unwrap();
    assert_eq!(n, 1);
}

#[tokio::test]
async fn an_enqueue_in_a_bounded_business_transaction_times_out_behind_a_table_lock() {
    let (db, cfg) = TestDb::migrated(false).await;
    let store = PgOutboxStore::new(&cfg).unwrap();
    let table = store.names().qualified.clone();
    let pg = bounded_db(&db);
    let locker = hold(&db, format!("LOCK TABLE {table} IN EXCLUSIVE MODE")).await;
    let (r, took) = within("enqueue", async {
        let mut tx = pg.transaction().await.unwrap();
        store.enqueue(&mut tx, &outbox("orders", "k1")).await
    })
    .await;
    transient_timeout(&r.unwrap_err());
    assert!(took < BOUND * 10, "{took:?}");
    locker.rollback().await.unwrap();
    let mut tx = pg.transaction().await.unwrap();
    store
        .enqueue(&mut tx, &outbox("orders", "k1"))
        .await
        .unwrap();
    tx.commit().await.unwrap();
}

#[tokio::test]
async fn a_transaction_left_idle_loses_its_session_and_its_row_locks() {
    let (db, cfg) = TestDb::migrated(false).await;
    let store = PgOutboxStore::new(&cfg).unwrap();
    let table = store.names().qualified.clone();
    let event = outbox("orders", "k1");
    let mut conn = db.pool.acquire().await.unwrap();
    store.enqueue(&mut conn, &event).await.unwrap();
    drop(conn);
    let pg = PgDatabase::with_timeouts(
        db.pool.clone(),
        PgTimeouts::default().idle_in_transaction(Some(BOUND)),
    );
    // A worker locks the row, then stalls inside its transaction (as a frozen process
    // would).
    let mut stalled = pg.begin().await.unwrap();
    let lock = format!(
        "SELECT 1 FROM {table} WHERE id = '{}' FOR UPDATE",
        event.common.id
    );
    sqlx::query(AssertSqlSafe(lock.clone()))
        .execute(&mut *stalled)
        .await
        .unwrap();
    tokio::time::sleep(BOUND * 4).await;
    // The server ended the stalled session: the row can be locked at once.
    let mut other = db.pool.begin().await.unwrap();
    let (r, _) = within(
        "lock after the idle bound",
        sqlx::query(AssertSqlSafe(format!("{lock} NOWAIT"))).execute(&mut *other),
    )
    .await;
    r.unwrap();
    other.rollback().await.unwrap();
    // The stalled worker learns it on its next statement: a transient error.
    let e = pg.commit(stalled).await.unwrap_err();
    assert_eq!(e.kind(), FailureKind::Transient, "{e:?}");
}

#[tokio::test]
async fn default_bounds_are_set_per_transaction_and_do_not_leak_into_the_pool() {
    let db = TestDb::new().await;
    let pool = sqlx::postgres::PgPoolOptions::new()
        .max_connections(1)
        .connect(&common::database_url().await)
        .await
        .unwrap();
    let pg = PgDatabase::new(pool.clone());
    assert_eq!(pg.timeouts(), PgTimeouts::default());
    let show = async |conn: &mut sqlx::PgConnection| -> (String, String, String) {
        let row = sqlx::query(
            "SELECT current_setting('statement_timeout'), \
             current_setting('idle_in_transaction_session_timeout'), \
             current_setting('transaction_isolation')",
        )
        .fetch_one(conn)
        .await
        .unwrap();
        (row.get(0), row.get(1), row.get(2))
    };
    let mut tx = pg.transaction().await.unwrap();
    assert_eq!(
        show(&mut tx).await,
        ("10s".into(), "1min".into(), "read committed".into())
    );
    tx.commit().await.unwrap();
    // The same (only) connection outside the transaction: the server's defaults again.
    let mut conn = pool.acquire().await.unwrap();
    let (statement, idle, _) = show(&mut conn).await;
    assert_eq!((statement.as_str(), idle.as_str()), ("0", "0"));
    drop(conn);
    let none = PgDatabase::with_timeouts(pool.clone(), PgTimeouts::none());
    let mut tx = none.transaction().await.unwrap();
    assert_eq!(show(&mut tx).await.0, "0");
    tx.rollback().await.unwrap();
    pool.close().await;
    drop(db);
}

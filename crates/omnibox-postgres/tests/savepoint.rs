//! The batch inbox pipeline runs each handler inside a savepoint: a handler that fails —
//! even through an SQL error, which aborts the whole transaction in PostgreSQL — is rolled
//! back alone, its failure is recorded, and the rest of the batch commits.
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests and benches may panic

mod common;

use std::sync::Arc;

use chrono::{TimeDelta, Utc};
use common::TestDb;
use omnibox_core::model::Event;
use omnibox_core::pipeline::{BatchResult, Processor};
use omnibox_core::processors::{InboxOptions, inbox_processor};
use omnibox_core::publisher::BoxFuture;
use omnibox_core::store::{InsertEvents, Savepoints};
use omnibox_core::{
    Handler, HandlerError, HandlerOutcome, HandlerResult, InboxEvent, Shutdown, WorkerId,
    handler_fn,
};
use omnibox_postgres::{PgInboxStore, PgStoreConfig};
use sqlx::{AssertSqlSafe, PgConnection, Row};

/// A migrated schema with a business table `orders_billed (message_id text primary key)`.
async fn setup() -> (TestDb, PgStoreConfig, PgInboxStore) {
    let (db, cfg) = TestDb::migrated(false).await;
    sqlx::raw_sql(AssertSqlSafe(format!(
        "CREATE TABLE \"{}\".orders_billed (message_id text PRIMARY KEY)",
        db.schema
    )))
    .execute(&db.pool)
    .await
    .unwrap();
    let store = PgInboxStore::new(&cfg).unwrap();
    (db, cfg, store)
}

/// Inbox events `ids`, in claim order.
async fn insert(db: &TestDb, store: &PgInboxStore, ids: &[&str]) -> Vec<InboxEvent> {
    let base = Utc::now() - TimeDelta::seconds(10);
    let events: Vec<_> = ids
        .iter()
        .enumerate()
        .map(|(i, id)| {
            let at = base + TimeDelta::milliseconds(i as i64);
            InboxEvent::builder(*id, "billing", "orders", "order.placed")
                .payload(serde_json::json!({ "m": id }))
                .created_at(at)
                .scheduled_at(at)
                .build()
                .unwrap()
        })
        .collect();
    let mut tx = db.pool.begin().await.unwrap();
    store.insert_many(&mut tx, &events).await.unwrap();
    tx.commit().await.unwrap();
    events
}

/// Inserts the event's business row, then misbehaves as its message id says:
/// `bad-sql` inserts into a missing table and returns that error, `swallow` does the same
/// but reports success, `fail` returns an error, `slow` runs a 2 s statement, `boom` panics.
fn billing_handler(schema: &str) -> impl Handler<InboxEvent, PgConnection> + 'static {
    let schema: Arc<str> = schema.into();
    handler_fn(
        move |e: &InboxEvent, conn: &mut PgConnection| -> BoxFuture<'_, HandlerResult> {
            let schema = schema.clone();
            let id = e.message_id.clone();
            Box::pin(async move {
                sqlx::query(AssertSqlSafe(format!(
                    "INSERT INTO \"{schema}\".orders_billed (message_id) VALUES ($1)"
                )))
                .bind(&id)
                .execute(&mut *conn)
                .await
                .map_err(|e| HandlerError::permanent(e.to_string()))?;
                let bad = sqlx::raw_sql(AssertSqlSafe(format!(
                    "INSERT INTO \"{schema}\".missing_table VALUES (1)"
                )));
                match id.as_str() {
                    "bad-sql" => {
                        bad.execute(&mut *conn)
                            .await
                            .map_err(|e| HandlerError::permanent(e.to_string()))?;
                    }
                    "swallow" => {
                        let _ignored = bad.execute(&mut *conn).await;
                    }
                    "fail" => return Err(HandlerError::permanent("billing refused")),
                    "slow" => {
                        sqlx::raw_sql("SELECT pg_sleep(2)")
                            .execute(&mut *conn)
                            .await
                            .map_err(|e| HandlerError::permanent(e.to_string()))?;
                    }
                    "boom" => panic!("billing exploded"),
                    _ => {}
                }
                Ok(HandlerOutcome::Completed)
            })
        },
    )
}

/// One `process_batch` in one transaction, committed when the batch's results were written
/// (as the inbox worker does).
async fn run_batch(db: &TestDb, p: &Processor<PgInboxStore>) -> BatchResult {
    let worker = WorkerId::new("billing-1").unwrap();
    let mut tx = db.pool.begin().await.unwrap();
    let r = p
        .process_batch(&mut tx, &worker, 10, &Shutdown::new())
        .await
        .unwrap();
    if r.committed() {
        tx.commit().await.unwrap();
    } else {
        tx.rollback().await.unwrap();
    }
    r
}

async fn billed(db: &TestDb) -> Vec<String> {
    sqlx::query(AssertSqlSafe(format!(
        "SELECT message_id FROM \"{}\".orders_billed ORDER BY message_id",
        db.schema
    )))
    .fetch_all(&db.pool)
    .await
    .unwrap()
    .iter()
    .map(|r| r.get::<String, _>(0))
    .collect()
}

/// `(status, attempts_made, last_error)` of an inbox row.
async fn row(db: &TestDb, e: &InboxEvent) -> (String, i32, Option<String>) {
    let r = sqlx::query(AssertSqlSafe(format!(
        "SELECT status::text, attempts_made, last_error FROM \"{}\".inbox_events WHERE id = $1",
        db.schema
    )))
    .bind(e.id())
    .fetch_one(&db.pool)
    .await
    .unwrap();
    (r.get(0), r.get(1), r.get(2))
}

#[tokio::test]
async fn batch_handler_sql_error_rolls_back_its_own_writes_only_and_the_batch_commits() {
    let (db, _cfg, store) = setup().await;
    let events = insert(&db, &store, &["a-ok", "bad-sql", "c-ok"]).await;
    let p = inbox_processor(store, billing_handler(&db.schema), InboxOptions::new()).unwrap();

    let r = tokio::time::timeout(std::time::Duration::from_secs(60), run_batch(&db, &p))
        .await
        .expect("batch finished");
    assert!(r.committed(), "the transaction was not aborted: {r:?}");
    assert_eq!(r.completed, vec![events[0].id(), events[2].id()]);
    assert_eq!(r.failed_counted, vec![events[1].id()]);

    assert_eq!(
        billed(&db).await,
        ["a-ok", "c-ok"],
        "no business row of the bad handler"
    );
    for i in [0, 2] {
        assert_eq!(row(&db, &events[i]).await.0, "completed");
    }
    let (status, attempts, error) = row(&db, &events[1]).await;
    assert_eq!(status, "pending");
    assert_eq!(attempts, 1, "the attempt is counted: no wedge");
    let error = error.expect("last_error set");
    assert!(error.contains("missing_table"), "{error}");
}

#[tokio::test]
async fn batch_handler_error_after_an_insert_leaves_no_business_row() {
    let (db, _cfg, store) = setup().await;
    let events = insert(&db, &store, &["fail"]).await;
    let p = inbox_processor(store, billing_handler(&db.schema), InboxOptions::new()).unwrap();

    let r = tokio::time::timeout(std::time::Duration::from_secs(60), run_batch(&db, &p))
        .await
        .expect("batch finished");
    assert!(r.committed());
    assert_eq!(r.failed_counted, vec![events[0].id()]);
    assert!(
        billed(&db).await.is_empty(),
        "the handler's insert was rolled back"
    );
    let (status, attempts, error) = row(&db, &events[0]).await;
    assert_eq!(status, "pending");
    assert_eq!(attempts, 1);
    assert_eq!(error.as_deref(), Some("billing refused"));
}

#[tokio::test]
async fn batch_handler_swallowing_an_sql_error_is_a_counted_failure_not_a_wedge() {
    let (db, _cfg, store) = setup().await;
    let events = insert(&db, &store, &["swallow", "z-ok"]).await;
    let p = inbox_processor(store, billing_handler(&db.schema), InboxOptions::new()).unwrap();

    let r = tokio::time::timeout(std::time::Duration::from_secs(60), run_batch(&db, &p))
        .await
        .expect("batch finished");
    assert!(r.committed(), "{r:?}");
    assert_eq!(r.failed_counted, vec![events[0].id()]);
    assert_eq!(r.completed, vec![events[1].id()]);
    assert_eq!(billed(&db).await, ["z-ok"]);
    let (status, attempts, error) = row(&db, &events[0]).await;
    assert_eq!(status, "pending");
    assert_eq!(attempts, 1);
    let error = error.expect("last_error set");
    assert!(error.contains("release savepoint"), "{error}");
}

#[tokio::test]
async fn batch_handler_timeout_mid_statement_and_panic_roll_back_their_writes() {
    let (db, _cfg, store) = setup().await;
    let events = insert(&db, &store, &["a-ok", "slow", "boom", "z-ok"]).await;
    let p = inbox_processor(
        store,
        billing_handler(&db.schema),
        InboxOptions::new().handler_timeout(std::time::Duration::from_millis(500)),
    )
    .unwrap();

    let r = tokio::time::timeout(std::time::Duration::from_secs(60), run_batch(&db, &p))
        .await
        .expect("batch finished");
    assert!(r.committed(), "{r:?}");
    assert_eq!(r.completed, vec![events[0].id(), events[3].id()]);
    assert_eq!(r.failed_counted, vec![events[1].id(), events[2].id()]);
    assert_eq!(billed(&db).await, ["a-ok", "z-ok"]);
    let (_, attempts, error) = row(&db, &events[1]).await;
    assert_eq!(attempts, 1);
    assert_eq!(
        error.as_deref(),
        Some("Handler execution timed out after 0.5s")
    );
    let (_, attempts, error) = row(&db, &events[2]).await;
    assert_eq!(attempts, 1);
    assert_eq!(error.as_deref(), Some("handler panicked: billing exploded"));
}

#[tokio::test]
async fn savepoints_undo_writes_and_recover_an_aborted_transaction() {
    let (db, _cfg, store) = setup().await;
    let table = format!("\"{}\".orders_billed", db.schema);
    let insert_row = |id: &'static str| {
        sqlx::query(AssertSqlSafe(format!(
            "INSERT INTO {table} (message_id) VALUES ($1)"
        )))
        .bind(id)
    };
    let mut tx = db.pool.begin().await.unwrap();
    insert_row("kept").execute(&mut *tx).await.unwrap();
    store.savepoint(&mut tx).await.unwrap();
    insert_row("undone").execute(&mut *tx).await.unwrap();
    // A failing statement aborts the transaction ...
    assert!(insert_row("kept").execute(&mut *tx).await.is_err());
    // ... and rolling back to the savepoint makes it usable again.
    store.rollback_to_savepoint(&mut tx).await.unwrap();
    store.release_savepoint(&mut tx).await.unwrap();
    insert_row("after").execute(&mut *tx).await.unwrap();
    let err = store.release_savepoint(&mut tx).await.unwrap_err();
    assert!(err.to_string().contains("release savepoint"), "{err}");
    tx.rollback().await.unwrap();

    let mut tx = db.pool.begin().await.unwrap();
    insert_row("kept").execute(&mut *tx).await.unwrap();
    store.savepoint(&mut tx).await.unwrap();
    insert_row("undone").execute(&mut *tx).await.unwrap();
    store.rollback_to_savepoint(&mut tx).await.unwrap();
    store.release_savepoint(&mut tx).await.unwrap();
    insert_row("after").execute(&mut *tx).await.unwrap();
    tx.commit().await.unwrap();
    assert_eq!(billed(&db).await, ["after", "kept"]);

    // Outside a transaction PostgreSQL refuses savepoints.
    let mut conn = db.pool.acquire().await.unwrap();
    assert!(store.savepoint(&mut conn).await.is_err());
}

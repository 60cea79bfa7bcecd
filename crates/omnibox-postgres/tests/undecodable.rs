//! One outbox row the relay cannot decode must not stop the relay (issue 9 §2): the row is
//! failed and dead-lettered with the decode error in the claim's transaction, and every
//! other key — and the later events of its own key — keep flowing. Rows that merely exceed
//! the relay's *write-side* limits (a writer with wider limits) are published as they are.
//! Against a real PostgreSQL (DATABASE_URL), plain and partitioned tables.
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests may panic

mod common;

use std::collections::HashMap;

use common::{TestDb, outbox_at};
use omnibox_core::memory::MemoryBroker;
use omnibox_core::model::{Event, Limits, OutboxEvent};
use omnibox_core::pipeline::{FetchStrategy, Optimistic};
use omnibox_core::relay::OutboxRelay;
use omnibox_core::store::ClaimEvents;
use omnibox_core::store::ClaimRequest;
use omnibox_core::{Shutdown, WorkerId};
use omnibox_postgres::{PgDatabase, PgOutboxStore};
use sqlx::{AssertSqlSafe, Row};
use uuid::Uuid;

const TOPIC: &str = "orders";
const OTHER_KEYS: usize = 5;

/// A header value of 600 characters: over the default 512, written by a writer whose
/// limits allow 1000.
fn wide_event(n: i64) -> OutboxEvent {
    let mut wide = Limits::default();
    wide.header_value_max_len = 1000;
    let at =
        chrono::Utc::now() - chrono::TimeDelta::seconds(10) + chrono::TimeDelta::milliseconds(n);
    OutboxEvent::builder("order", Uuid::now_v7(), "order.placed", TOPIC, "wide")
        .payload(serde_json::json!({ "n": n }))
        .header("note", "x".repeat(600))
        .created_at(at)
        .scheduled_at(at)
        .build_with(&wide)
        .unwrap()
}

async fn one_bad_row_does_not_stop_the_relay(partitioned: bool) {
    let (db, cfg) = TestDb::migrated(partitioned).await;
    let store = PgOutboxStore::new(&cfg).unwrap();
    let table = store.names().qualified.clone();
    let mut wide_limits = Limits::default();
    wide_limits.header_value_max_len = 1000;
    let wide_writer = PgOutboxStore::new(&cfg.clone().limits(wide_limits)).unwrap();

    // The undecodable row heads the claim order, followed by a later event of its own key;
    // five other keys with two events each; one row written with wider limits.
    let bad = outbox_at(TOPIC, "bad", 0);
    let behind_bad = outbox_at(TOPIC, "bad", 100);
    let mut others = Vec::new();
    for k in 0..OTHER_KEYS {
        others.push(outbox_at(TOPIC, &format!("k{k}"), 10 + k as i64));
        others.push(outbox_at(TOPIC, &format!("k{k}"), 200 + k as i64));
    }
    let wide = wide_event(50);
    let mut conn = db.pool.acquire().await.unwrap();
    let mut all = vec![bad.clone(), behind_bad.clone()];
    all.extend(others.iter().cloned());
    store.enqueue_many(&mut conn, &all).await.unwrap();
    wide_writer.enqueue(&mut conn, &wide).await.unwrap();
    // Repaired by hand (or written by another tool): a header value that is not a string.
    sqlx::query(AssertSqlSafe(format!(
        "UPDATE {table} SET headers = '{{\"retries\": 3}}' WHERE id = $1"
    )))
    .bind(bad.id())
    .execute(&mut *conn)
    .await
    .unwrap();

    let broker = MemoryBroker::new();
    let relay = OutboxRelay::builder(store.clone(), broker.clone())
        .batch_size(50)
        .build()
        .unwrap();
    let pg = PgDatabase::new(db.pool.clone());
    let worker = WorkerId::new("relay-1").unwrap();
    let want = all.len(); // every event but the bad one, plus the wide one
    let mut errors = Vec::new();
    for _ in 0..10 {
        match relay.publish_batch(&pg, &worker, &Shutdown::new()).await {
            Ok(r) if r.claimed == 0 => break,
            Ok(_) => {}
            Err(e) => errors.push(e.to_string()),
        }
    }
    let published = broker.published(TOPIC);
    assert_eq!(
        published.len(),
        want,
        "{} of {want} events published; batch errors: {errors:?}",
        published.len()
    );
    assert!(errors.is_empty(), "{errors:?}");
    // Per key, in order; the bad row's successor was published, the bad row was not.
    let mut by_key: HashMap<String, Vec<i64>> = HashMap::new();
    for m in &published {
        let body = m.json().unwrap();
        let n = body["payload"]["n"]
            .as_i64()
            .unwrap_or_else(|| panic!("{body}"));
        by_key.entry(m.key.clone().unwrap()).or_default().push(n);
    }
    for k in 0..OTHER_KEYS {
        assert_eq!(
            by_key[&format!("k{k}")],
            vec![10 + k as i64, 200 + k as i64]
        );
    }
    assert_eq!(by_key["bad"], vec![100]);
    assert_eq!(by_key["wide"], vec![50]);
    let wide_msg = published
        .iter()
        .find(|m| m.key.as_deref() == Some("wide"))
        .unwrap();
    assert_eq!(wide_msg.headers.get("note").map(String::len), Some(600));

    // The bad row: failed, its budget spent, not leased, dead-lettered with the reason.
    let row = sqlx::query(AssertSqlSafe(format!(
        "SELECT status, attempts_made, max_attempts, last_error, locked_at IS NULL AS unlocked \
         FROM {table} WHERE id = $1"
    )))
    .bind(bad.id())
    .fetch_one(&mut *conn)
    .await
    .unwrap();
    assert_eq!(row.get::<String, _>("status"), "failed");
    assert_eq!(
        row.get::<i32, _>("attempts_made"),
        row.get::<i32, _>("max_attempts")
    );
    assert!(row.get::<bool, _>("unlocked"));
    let last_error: String = row.get("last_error");
    assert!(
        last_error.contains("header values must be strings"),
        "{last_error}"
    );
    let letters = store.list_dead_letters(&mut conn, 10, 0).await.unwrap();
    assert_eq!(letters.len(), 1, "{letters:#?}");
    assert_eq!(letters[0].event_id, Some(bad.id()));
    assert_eq!(letters[0].error, last_error);
    assert!(letters[0].body.contains("\"n\""), "{:?}", letters[0].body);
    // Nothing else is failed or leased, and the relay keeps going: a new event flows.
    let (failed, leased): (i64, i64) = sqlx::query_as(AssertSqlSafe(format!(
        "SELECT count(*) FILTER (WHERE status = 'failed'), count(*) FILTER (WHERE locked_at IS NOT NULL) \
         FROM {table}"
    )))
    .fetch_one(&mut *conn)
    .await
    .unwrap();
    assert_eq!((failed, leased), (1, 0));
    let late = outbox_at(TOPIC, "bad", 300);
    store.enqueue(&mut conn, &late).await.unwrap();
    let r = relay
        .publish_batch(&pg, &worker, &Shutdown::new())
        .await
        .unwrap();
    assert_eq!(r.completed, vec![late.id()]);
}

#[tokio::test]
async fn an_undecodable_row_is_dead_lettered_and_the_rest_flows_plain() {
    one_bad_row_does_not_stop_the_relay(false).await;
}

#[tokio::test]
async fn an_undecodable_row_is_dead_lettered_and_the_rest_flows_partitioned() {
    one_bad_row_does_not_stop_the_relay(true).await;
}

/// The claim itself (in the caller's transaction): an undecodable row is not returned, and
/// failing it is part of that transaction — rolled back with it, it is pending again.
#[tokio::test]
async fn failing_an_undecodable_row_joins_the_claims_transaction() {
    let (db, cfg) = TestDb::migrated(false).await;
    let store = PgOutboxStore::new(&cfg).unwrap();
    let good = outbox_at(TOPIC, "good", 1);
    let bad = outbox_at(TOPIC, "bad", 0);
    let mut conn = db.pool.acquire().await.unwrap();
    store
        .enqueue_many(&mut conn, &[bad.clone(), good.clone()])
        .await
        .unwrap();
    sqlx::query(AssertSqlSafe(format!(
        "UPDATE \"{}\".outbox_events SET payload = '[1, 2]' WHERE id = $1",
        db.schema
    )))
    .bind(bad.id())
    .execute(&mut *conn)
    .await
    .unwrap();
    drop(conn);
    let status = |id: Uuid| {
        let pool = db.pool.clone();
        let schema = db.schema.clone();
        async move {
            sqlx::query_scalar::<_, String>(AssertSqlSafe(format!(
                "SELECT status FROM \"{schema}\".outbox_events WHERE id = $1"
            )))
            .bind(id)
            .fetch_one(&pool)
            .await
            .unwrap()
        }
    };
    let req = ClaimRequest::new(WorkerId::new("w").unwrap(), 10);
    let mut tx = db.pool.begin().await.unwrap();
    let got = store.claim(&mut tx, &req).await.unwrap();
    assert_eq!(
        got.iter().map(Event::id).collect::<Vec<_>>(),
        vec![good.id()]
    );
    tx.rollback().await.unwrap();
    assert_eq!(status(bad.id()).await, "pending");
    let mut tx = db.pool.begin().await.unwrap();
    let got = store.claim(&mut tx, &req).await.unwrap();
    assert_eq!(got.len(), 1);
    tx.commit().await.unwrap();
    assert_eq!(status(bad.id()).await, "failed");
    let mut conn = db.pool.acquire().await.unwrap();
    let letters = store.list_dead_letters(&mut conn, 10, 0).await.unwrap();
    assert_eq!(letters.len(), 1);
    assert!(letters[0].error.contains("payload"), "{}", letters[0].error);
}

/// The optimistic fetch (`fetch_pending` then `try_lock`): an undecodable row at the head of
/// its key is failed and dead-lettered instead of failing every fetch, the other keys are
/// leased, and the bad key's next event becomes fetchable. Plain and partitioned tables.
async fn optimistic_fetch_skips_and_dead_letters_an_undecodable_head(partitioned: bool) {
    let (db, cfg) = TestDb::migrated(partitioned).await;
    let store = PgOutboxStore::new(&cfg).unwrap();
    let table = store.names().qualified.clone();
    let bad = outbox_at(TOPIC, "bad", 0);
    let behind_bad = outbox_at(TOPIC, "bad", 100);
    let good = outbox_at(TOPIC, "good", 1);
    let mut conn = db.pool.acquire().await.unwrap();
    store
        .enqueue_many(&mut conn, &[bad.clone(), behind_bad.clone(), good.clone()])
        .await
        .unwrap();
    sqlx::query(AssertSqlSafe(format!(
        "UPDATE {table} SET headers = '{{\"retries\": 3}}' WHERE id = $1"
    )))
    .bind(bad.id())
    .execute(&mut *conn)
    .await
    .unwrap();
    let req = ClaimRequest::new(WorkerId::new("w").unwrap(), 10);
    let ids = |v: &[OutboxEvent]| {
        let mut ids: Vec<Uuid> = v.iter().map(Event::id).collect();
        ids.sort();
        ids
    };

    let mut tx = db.pool.begin().await.unwrap();
    let first = Optimistic.fetch(&store, &mut tx, &req).await.unwrap();
    tx.commit().await.unwrap();
    assert_eq!(ids(&first), vec![good.id()]);
    let mut tx = db.pool.begin().await.unwrap();
    let second = Optimistic.fetch(&store, &mut tx, &req).await.unwrap();
    tx.commit().await.unwrap();
    assert_eq!(ids(&second), vec![behind_bad.id()]);

    let (status, last_error): (String, String) = sqlx::query_as(AssertSqlSafe(format!(
        "SELECT status, last_error FROM {table} WHERE id = $1"
    )))
    .bind(bad.id())
    .fetch_one(&mut *conn)
    .await
    .unwrap();
    assert_eq!(status, "failed");
    assert!(
        last_error.contains("header values must be strings"),
        "{last_error}"
    );
    let letters = store.list_dead_letters(&mut conn, 10, 0).await.unwrap();
    assert_eq!(letters.len(), 1, "{letters:#?}");
    assert_eq!(letters[0].event_id, Some(bad.id()));
}

#[tokio::test]
async fn optimistic_fetch_dead_letters_an_undecodable_head_plain() {
    optimistic_fetch_skips_and_dead_letters_an_undecodable_head(false).await;
}

#[tokio::test]
async fn optimistic_fetch_dead_letters_an_undecodable_head_partitioned() {
    optimistic_fetch_skips_and_dead_letters_an_undecodable_head(true).await;
}

/// A leased row is not the optimistic fetch's to fail: `fetch_pending` reads only unleased
/// rows, and the fence refuses a row leased in between (here: leased before the fetch).
#[tokio::test]
async fn optimistic_fetch_leaves_a_leased_undecodable_row_to_its_lease_holder() {
    let (db, cfg) = TestDb::migrated(false).await;
    let store = PgOutboxStore::new(&cfg).unwrap();
    let table = store.names().qualified.clone();
    let bad = outbox_at(TOPIC, "bad", 0);
    let mut conn = db.pool.acquire().await.unwrap();
    store.enqueue(&mut conn, &bad).await.unwrap();
    sqlx::query(AssertSqlSafe(format!(
        "UPDATE {table} SET payload = '[1]', locked_at = now(), locked_by = 'other' WHERE id = $1"
    )))
    .bind(bad.id())
    .execute(&mut *conn)
    .await
    .unwrap();
    let req = ClaimRequest::new(WorkerId::new("w").unwrap(), 10);
    let got = Optimistic.fetch(&store, &mut conn, &req).await.unwrap();
    assert!(got.is_empty());
    let status: String = sqlx::query_scalar(AssertSqlSafe(format!(
        "SELECT status FROM {table} WHERE id = $1"
    )))
    .bind(bad.id())
    .fetch_one(&mut *conn)
    .await
    .unwrap();
    assert_eq!(status, "pending");
}

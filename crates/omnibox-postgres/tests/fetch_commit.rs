//! The optimistic fetch (`fetch_pending` + `try_lock`) and the per-event commit strategy
//! with concurrent workers on PostgreSQL, plain and partitioned (issue 10): every event is
//! published and completed, per-key order holds at the broker, nothing is left leased.
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests may panic

mod common;

use std::collections::HashMap;

use common::{TestDb, outbox_at};
use omnibox_core::memory::MemoryBroker;
use omnibox_core::pipeline::{CommitStrategy, Optimistic};
use omnibox_core::processors::{OutboxOptions, outbox_processor_builder};
use omnibox_core::{Shutdown, WorkerId};
use omnibox_postgres::{PgDatabase, PgOutboxStore};
use sqlx::AssertSqlSafe;

const KEYS: usize = 10;
const PER_KEY: usize = 20;
const WORKERS: usize = 4;

async fn optimistic_per_event_workers(partitioned: bool) {
    let (db, cfg) = TestDb::migrated(partitioned).await;
    let store = PgOutboxStore::new(&cfg).unwrap();
    // Event n of key k is created at n * KEYS + k ms: per key, n is the creation order.
    let events: Vec<_> = (0..PER_KEY)
        .flat_map(|n| (0..KEYS).map(move |k| (n, k)))
        .map(|(n, k)| outbox_at("orders", &format!("k{k}"), (n * KEYS + k) as i64))
        .collect();
    let mut conn = db.pool.acquire().await.unwrap();
    store.enqueue_many(&mut conn, &events).await.unwrap();
    drop(conn);

    let broker = MemoryBroker::new();
    let processor = std::sync::Arc::new(
        outbox_processor_builder(
            store.clone(),
            broker.clone(),
            OutboxOptions::new().commit_strategy(CommitStrategy::PerEvent),
        )
        .unwrap()
        .fetch_strategy(Optimistic)
        .build()
        .unwrap(),
    );
    let pg = PgDatabase::new(db.pool.clone());
    let mut tasks = Vec::new();
    for w in 0..WORKERS {
        let (processor, pg) = (processor.clone(), pg.clone());
        tasks.push(tokio::spawn(async move {
            let worker = WorkerId::new(format!("w{w}")).unwrap();
            let mut idle = 0;
            while idle < 5 {
                let r = processor
                    .process_leased(&pg, &worker, 7, &Shutdown::new())
                    .await
                    .unwrap();
                if r.claimed == 0 {
                    idle += 1;
                    tokio::time::sleep(std::time::Duration::from_millis(20)).await;
                } else {
                    idle = 0;
                }
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }

    let published = broker.published("orders");
    let mut by_key: HashMap<String, Vec<i64>> = HashMap::new();
    for m in &published {
        let n = m.json().unwrap()["payload"]["n"].as_i64().unwrap();
        by_key.entry(m.key.clone().unwrap()).or_default().push(n);
    }
    for (key, ns) in &by_key {
        let mut dedup = ns.clone();
        dedup.dedup(); // at least once: an adjacent re-publish is allowed, a reorder is not
        assert!(
            dedup.windows(2).all(|w| w[0] < w[1]),
            "partitioned {partitioned}: key {key} published out of order: {ns:?}"
        );
        assert_eq!(dedup.len(), PER_KEY, "key {key}: {ns:?}");
    }
    assert_eq!(by_key.len(), KEYS);
    let (completed, leased): (i64, i64) = sqlx::query_as(AssertSqlSafe(format!(
        "SELECT count(*) FILTER (WHERE status = 'completed'), count(*) FILTER (WHERE locked_at IS NOT NULL) FROM {}",
        store.names().qualified
    )))
    .fetch_one(&db.pool)
    .await
    .unwrap();
    assert_eq!(
        (completed, leased),
        ((KEYS * PER_KEY) as i64, 0),
        "partitioned {partitioned}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn optimistic_fetch_and_per_event_commit_with_concurrent_workers_plain() {
    optimistic_per_event_workers(false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn optimistic_fetch_and_per_event_commit_with_concurrent_workers_partitioned() {
    optimistic_per_event_workers(true).await;
}

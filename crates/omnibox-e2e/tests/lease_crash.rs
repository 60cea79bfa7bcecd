//! With `PgStoreConfig::asynchronous_claims`, the relay commits its claims without waiting
//! for the disk (`synchronous_commit = off` for the claim's transaction only). This test
//! makes a server crash forget such a claim and checks what the store promises: the events
//! come back pending and are published again; none is lost, and each key's first
//! publishes keep its order.
//!
//! The server is a throwaway cluster. Its WAL writer is stopped (SIGSTOP) before the
//! claim, so the claim's commit record stays in shared memory; then the WAL writer is
//! killed (SIGKILL), and the postmaster, seeing a child die, resets every process and
//! its shared memory and recovers from the WAL on disk, as after a crash: the claim is
//! forgotten. The settle of a batch commits durably, so completed events would survive
//! the same crash.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{LIMIT, Pg, bounded, until};
use omnibox_core::model::EventStatus;
use omnibox_core::relay::OutboxRelay;
use omnibox_core::{OutboxEvent, PublishError, Publisher, Shutdown, WorkerId};
use omnibox_e2e::servers::{PgCluster, signal};
use omnibox_postgres::PgDatabase;
use sqlx::{Connection, Row};
use tokio::sync::{Notify, Semaphore};

/// Records every publish; each call waits for a permit of `gate` first and says so on
/// `entered`.
#[derive(Clone)]
struct Gated {
    log: Arc<Mutex<Vec<(String, String)>>>,
    gate: Arc<Semaphore>,
    entered: Arc<Notify>,
}

impl Publisher for Gated {
    async fn publish(&self, event: &OutboxEvent) -> Result<(), PublishError> {
        self.entered.notify_one();
        let permit = self.gate.acquire().await.expect("gate open");
        permit.forget();
        self.log
            .lock()
            .unwrap()
            .push((event.partition_key.clone(), event.common.id.to_string()));
        Ok(())
    }
}

const EVENTS: usize = 40;
const KEYS: usize = 8;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_claim_forgotten_in_a_server_crash_is_published_again_and_nothing_is_lost() {
    common::init_tracing();
    let cluster = tokio::task::spawn_blocking(PgCluster::create)
        .await
        .unwrap()
        .unwrap_or_else(|e| panic!("{e}"));
    let pg = Pg::with(&cluster.url(), "e2e_lease_crash", |c| {
        c.asynchronous_claims(true)
    })
    .await;
    pg.enqueue("orders", EVENTS, KEYS).await;
    // Creation order per key: what each key's publishes must follow.
    let order: Vec<(String, String)> = sqlx::query(sqlx::AssertSqlSafe(format!(
        "SELECT partition_key, id::text FROM {}.outbox_events ORDER BY created_at, id",
        pg.schema
    )))
    .fetch_all(&pg.pool)
    .await
    .unwrap()
    .iter()
    .map(|r| (r.get(0), r.get(1)))
    .collect();
    assert_eq!(order.len(), EVENTS);

    let walwriter: i32 =
        sqlx::query("SELECT pid FROM pg_stat_activity WHERE backend_type = 'walwriter'")
            .fetch_one(&pg.pool)
            .await
            .unwrap()
            .get(0);
    let walwriter = u32::try_from(walwriter).unwrap();
    signal(walwriter, "STOP").unwrap();

    let publisher = Gated {
        log: Arc::default(),
        gate: Arc::new(Semaphore::new(0)),
        entered: Arc::new(Notify::new()),
    };
    // One event per key per batch, published one at a time, with a lease far longer than
    // the test: only the crash can free these leases.
    let relay = OutboxRelay::builder(pg.outbox.clone(), publisher.clone())
        .batch_size(EVENTS as u32)
        .publish_concurrency(1)
        .lease_ttl(Duration::from_secs(600))
        .build()
        .unwrap();
    let db = PgDatabase::new(pg.pool.clone());
    let worker = WorkerId::new("crash-relay").unwrap();
    let shutdown = Shutdown::new();
    let relay = Arc::new(relay);
    let batch = tokio::spawn({
        let (relay, db, worker, shutdown) =
            (relay.clone(), db.clone(), worker.clone(), shutdown.clone());
        async move { relay.publish_batch(&db, &worker, &shutdown).await }
    });
    bounded("the first publish", LIMIT, publisher.entered.notified()).await;
    // The claim committed: its leases are visible to others.
    assert_eq!(pg.outbox_leased().await, KEYS as i64, "one lease per key");
    // A connection of the old server's life: the reset terminates it.
    let mut witness = sqlx::PgConnection::connect(&cluster.url()).await.unwrap();
    signal(walwriter, "KILL").unwrap();
    until("the server resets", LIMIT, async || {
        sqlx::query("SELECT 1").execute(&mut witness).await.is_err()
    })
    .await;

    // The crash forgot the claim: the events are pending and unleased again.
    until("the pool reconnects", LIMIT, async || {
        sqlx::query("SELECT 1").execute(&pg.pool).await.is_ok()
    })
    .await;
    assert_eq!(
        pg.outbox_leased().await,
        0,
        "the claim's leases did not survive the crash"
    );
    assert_eq!(pg.outbox_count(EventStatus::Pending).await, EVENTS as i64);

    // Let the first batch finish: its settle cannot apply (the leases are gone, or the
    // connection it had died), so nothing of it is completed.
    publisher.gate.add_permits(10_000);
    let result = bounded("the first batch", LIMIT, batch).await.unwrap();
    if let Ok(r) = &result {
        assert!(
            r.commit_error.is_some() || r.lease_lost.len() == KEYS,
            "the settle of a batch whose leases were forgotten applied: {r:?}"
        );
    }
    // A relay drains everything, the forgotten events included.
    bounded("drain", LIMIT, async {
        while pg.outbox_count(EventStatus::Completed).await < EVENTS as i64 {
            let _ = relay.publish_batch(&db, &worker, &shutdown).await;
        }
    })
    .await;

    let log = publisher.log.lock().unwrap().clone();
    let mut times: HashMap<&str, usize> = HashMap::new();
    for (_, id) in &log {
        *times.entry(id.as_str()).or_default() += 1;
    }
    assert_eq!(times.len(), EVENTS, "every event was published");
    let again = times.values().filter(|&&n| n == 2).count();
    assert_eq!(
        again, KEYS,
        "the first batch's events, and only they, went out twice"
    );
    assert!(times.values().all(|&n| n <= 2));
    // Per key, first publishes follow creation order.
    let mut firsts: HashMap<&str, Vec<&str>> = HashMap::new();
    let mut seen = std::collections::HashSet::new();
    for (key, id) in &log {
        if seen.insert(id.as_str()) {
            firsts.entry(key.as_str()).or_default().push(id.as_str());
        }
    }
    for (key, ids) in &firsts {
        let want: Vec<&str> = order
            .iter()
            .filter(|(k, _)| k == key)
            .map(|(_, id)| id.as_str())
            .collect();
        assert_eq!(ids, &want, "key {key} was published out of order");
    }
    assert_eq!(pg.outbox_count(EventStatus::Completed).await, EVENTS as i64);
    pg.drop_schema().await;
}

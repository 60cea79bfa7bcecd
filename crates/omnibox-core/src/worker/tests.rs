//! Workers on the in-memory database and broker.

use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use chrono::{TimeDelta, Utc};
use serde_json::json;
use tokio::sync::Notify;
use uuid::Uuid;

use super::*;
use crate::backoff::Jitter;
use crate::clock::ManualClock;
use crate::consumer::{Consumer, Delivery};
use crate::error::{ConsumeError, FailureKind, PublishError, StoreError};
use crate::handler::{HandlerOutcome, HandlerResult};
use crate::inbox::InboxRunner;
use crate::maintenance::Maintenance;
use crate::memory::{
    MemoryAck, MemoryBroker, MemoryConn, MemoryConsumer, MemoryDb, MemoryInboxStore,
    MemoryOutboxStore, MemoryTx, truncate_micros,
};
use crate::model::{EventStatus, InboxEvent, OutboxEvent, WorkerId};
use crate::publisher::Publisher;
use crate::relay::OutboxRelay;
use crate::shutdown::Shutdown;
use crate::store::{InsertEvents, Settle, SettleEvents, Settlement, Transactions};
use crate::wake::LocalWakeup;

const LIMIT: Duration = Duration::from_secs(10);

async fn bounded<T>(what: &str, f: impl Future<Output = T>) -> T {
    tokio::time::timeout(LIMIT, f)
        .await
        .unwrap_or_else(|_| panic!("timed out after {LIMIT:?}: {what}"))
}

/// Poll `cond` every 5 ms until it holds (bounded).
async fn until(what: &str, mut cond: impl AsyncFnMut() -> bool) {
    bounded(what, async {
        while !cond().await {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await;
}

fn event(key: &str, i: usize) -> OutboxEvent {
    OutboxEvent::builder("order", Uuid::now_v7(), "order.placed", "orders", key)
        .payload(json!({"i": i}))
        .build()
        .unwrap()
}

async fn insert(db: &MemoryDb, store: &MemoryOutboxStore, events: &[OutboxEvent]) {
    let mut tx = db.begin().await.unwrap();
    store.insert_many(&mut tx, events).await.unwrap();
    db.commit(tx).await.unwrap();
}

async fn rows(db: &MemoryDb, store: &MemoryOutboxStore) -> Vec<OutboxEvent> {
    store.all(&mut db.connection()).await
}

fn worker_id(name: &str) -> WorkerId {
    WorkerId::new(name).unwrap()
}

fn published_ids(broker: &MemoryBroker) -> Vec<String> {
    broker
        .published("orders")
        .into_iter()
        .map(|m| m.headers.get("event_id").cloned().unwrap())
        .collect()
}

/// A publisher that signals each call, then waits `delay` (forever with `None`).
#[derive(Clone)]
struct SlowPublisher {
    inner: MemoryBroker,
    delay: Option<Duration>,
    started: Arc<Notify>,
}

impl Publisher for SlowPublisher {
    async fn publish(&self, event: &OutboxEvent) -> Result<(), PublishError> {
        self.started.notify_one();
        match self.delay {
            Some(d) => tokio::time::sleep(d).await,
            None => std::future::pending::<()>().await,
        }
        self.inner.publish(event).await
    }
}

/// A database whose next `fail` transactions fail to begin.
#[derive(Clone)]
struct FlakyDb {
    inner: MemoryDb,
    fail: Arc<AtomicUsize>,
}

impl Transactions for FlakyDb {
    type Conn = MemoryConn;
    type Tx = MemoryTx;

    async fn begin(&self) -> Result<MemoryTx, StoreError> {
        let failing = self
            .fail
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok();
        if failing {
            return Err(StoreError::Connection {
                message: "injected: database down".into(),
                source: None,
            });
        }
        self.inner.begin().await
    }

    async fn commit(&self, tx: MemoryTx) -> Result<(), StoreError> {
        self.inner.commit(tx).await
    }

    async fn rollback(&self, tx: MemoryTx) -> Result<(), StoreError> {
        self.inner.rollback(tx).await
    }
}

fn relay<P: Publisher + 'static>(
    publisher: P,
) -> crate::relay::OutboxRelayBuilder<MemoryOutboxStore, P> {
    OutboxRelay::builder(MemoryOutboxStore::new(), publisher)
        .publish_timeout(Duration::from_secs(1))
}

#[tokio::test]
async fn relay_worker_drains_then_waits_for_a_notification() {
    let db = MemoryDb::new();
    let store = MemoryOutboxStore::new();
    let broker = MemoryBroker::new();
    let first: Vec<_> = (0..250).map(|i| event(&format!("k{i}"), i)).collect();
    insert(&db, &store, &first).await;
    let wake = LocalWakeup::new();
    let r = relay(broker.clone()).batch_size(100).build().unwrap();
    let mut worker = RelayWorker::builder(r, db.clone())
        .worker_id(worker_id("relay-1"))
        .wakeup(wake.clone())
        // Only a notification can end the idle wait within the test's bound.
        .poll_interval(Duration::from_secs(3600))
        .build()
        .unwrap();
    let shutdown = Shutdown::new();
    let run = tokio::spawn({
        let shutdown = shutdown.clone();
        async move { worker.run(&shutdown).await }
    });
    until("drain", async || broker.published("orders").len() == 250).await;
    // Idle now; a late event plus a notification is picked up at once.
    insert(&db, &store, &[event("late", 0)]).await;
    wake.notify();
    until("late event", async || {
        broker.published("orders").len() == 251
    })
    .await;
    shutdown.trigger();
    let summary = bounded("stop", run).await.unwrap();
    assert_eq!(summary.published, 251);
    assert_eq!(summary.stopped, Stopped::Graceful);
    assert_eq!(summary.store_errors, 0);
    assert!(summary.batches >= 4, "{summary:?}");
    let all = rows(&db, &store).await;
    assert!(
        all.iter()
            .all(|e| e.common.status == EventStatus::Completed && e.common.locked_at.is_none())
    );
    let unique: HashSet<_> = published_ids(&broker).into_iter().collect();
    assert_eq!(unique.len(), 251, "each event published once");
}

#[tokio::test]
async fn relay_worker_keeps_per_key_order_with_two_workers_sharing_the_table() {
    let db = MemoryDb::new();
    let store = MemoryOutboxStore::new();
    let broker = MemoryBroker::new();
    // 20 keys × 15 events, interleaved.
    let events: Vec<_> = (0..300)
        .map(|i| event(&format!("k{}", i % 20), i))
        .collect();
    insert(&db, &store, &events).await;
    let shared = Arc::new(
        relay(broker.clone())
            .batch_size(7)
            .publish_concurrency(4)
            .build()
            .unwrap(),
    );
    let shutdown = Shutdown::new();
    let mut runs = Vec::new();
    for name in ["relay-a", "relay-b"] {
        let mut w = RelayWorker::builder(shared.clone(), db.clone())
            .worker_id(worker_id(name))
            .poll_interval(Duration::from_millis(10))
            .build()
            .unwrap();
        let shutdown = shutdown.clone();
        runs.push(tokio::spawn(async move { w.run(&shutdown).await }));
    }
    until("drain", async || broker.published("orders").len() >= 300).await;
    shutdown.trigger();
    let mut published = 0;
    for r in runs {
        published += bounded("stop", r).await.unwrap().published;
    }
    assert_eq!(published, 300);
    let ids = published_ids(&broker);
    assert_eq!(
        ids.iter().collect::<HashSet<_>>().len(),
        300,
        "no duplicates"
    );
    let mut per_key: HashMap<String, Vec<i64>> = HashMap::new();
    for m in broker.published("orders") {
        let i = m.json().unwrap()["payload"]["i"].as_i64().unwrap();
        per_key.entry(m.key.unwrap()).or_default().push(i);
    }
    for (key, seq) in per_key {
        let mut sorted = seq.clone();
        sorted.sort_unstable();
        assert_eq!(seq, sorted, "order of key {key}");
    }
}

#[tokio::test]
async fn relay_worker_backs_off_while_the_broker_is_down_without_spending_attempts() {
    let db = MemoryDb::new();
    let store = MemoryOutboxStore::new();
    let broker = MemoryBroker::new();
    let events: Vec<_> = (0..5).map(|i| event(&format!("k{i}"), i)).collect();
    insert(&db, &store, &events).await;
    broker.fail_next_publishes(3, FailureKind::Transient);
    let r = relay(broker.clone()).batch_size(10).build().unwrap();
    let mut worker = RelayWorker::builder(r, db.clone())
        .worker_id(worker_id("relay-1"))
        .poll_interval(Duration::from_millis(20))
        .error_backoff(Duration::from_millis(10), Duration::from_millis(40))
        .error_jitter(Jitter::None)
        .build()
        .unwrap();
    let shutdown = Shutdown::new();
    let run = tokio::spawn({
        let shutdown = shutdown.clone();
        async move { worker.run(&shutdown).await }
    });
    until("recovery", async || broker.published("orders").len() == 5).await;
    shutdown.trigger();
    let summary = bounded("stop", run).await.unwrap();
    // One probe per batch while down: 3 transient failures, the rest released untouched.
    assert_eq!(summary.transient_failures, 3, "{summary:?}");
    assert_eq!(summary.failed, 0);
    assert_eq!(summary.published, 5);
    assert!(summary.released >= 4, "{summary:?}");
    for e in rows(&db, &store).await {
        assert_eq!(e.common.status, EventStatus::Completed);
        assert_eq!(e.common.attempts_made, 0, "no attempt spent on an outage");
    }
}

#[tokio::test]
async fn relay_worker_survives_database_errors() {
    let mem = MemoryDb::new();
    let store = MemoryOutboxStore::new();
    let broker = MemoryBroker::new();
    insert(&mem, &store, &[event("a", 0), event("b", 1)]).await;
    let db = FlakyDb {
        inner: mem.clone(),
        fail: Arc::new(AtomicUsize::new(4)),
    };
    let r = relay(broker.clone()).build().unwrap();
    let mut worker = RelayWorker::builder(r, db)
        .worker_id(worker_id("relay-1"))
        .poll_interval(Duration::from_millis(20))
        .error_backoff(Duration::from_millis(5), Duration::from_millis(20))
        .build()
        .unwrap();
    let shutdown = Shutdown::new();
    let run = tokio::spawn({
        let shutdown = shutdown.clone();
        async move { worker.run(&shutdown).await }
    });
    until("recovery", async || broker.published("orders").len() == 2).await;
    shutdown.trigger();
    let summary = bounded("stop", run).await.unwrap();
    assert_eq!(summary.store_errors, 4, "{summary:?}");
    assert_eq!(summary.published, 2);
}

#[tokio::test]
async fn relay_worker_graceful_stop_finishes_the_batch_and_releases_the_rest() {
    let db = MemoryDb::new();
    let store = MemoryOutboxStore::new();
    let broker = MemoryBroker::new();
    let events: Vec<_> = (0..10).map(|i| event(&format!("k{i}"), i)).collect();
    insert(&db, &store, &events).await;
    let started = Arc::new(Notify::new());
    let publisher = SlowPublisher {
        inner: broker.clone(),
        delay: Some(Duration::from_millis(50)),
        started: started.clone(),
    };
    // Sequential, so the stop lands between two publishes of the batch.
    let r = relay(publisher)
        .batch_size(10)
        .publish_concurrency(1)
        .build()
        .unwrap();
    let mut worker = RelayWorker::builder(r, db.clone())
        .worker_id(worker_id("relay-1"))
        .build()
        .unwrap();
    let shutdown = Shutdown::new();
    let run = tokio::spawn({
        let shutdown = shutdown.clone();
        async move { worker.run(&shutdown).await }
    });
    bounded("first publish", started.notified()).await;
    shutdown.trigger();
    let summary = bounded("stop", run).await.unwrap();
    assert_eq!(summary.stopped, Stopped::Graceful);
    let published = broker.published("orders").len() as u64;
    assert!((1..10).contains(&published), "{published}");
    assert_eq!(summary.published, published);
    assert_eq!(summary.released, 10 - published);
    let all = rows(&db, &store).await;
    assert!(
        all.iter().all(|e| e.common.locked_at.is_none()),
        "no lease left behind"
    );
    let completed = all
        .iter()
        .filter(|e| e.common.status == EventStatus::Completed)
        .count() as u64;
    assert_eq!(completed, published);
    assert!(all.iter().all(|e| e.common.attempts_made == 0));
}

#[tokio::test]
async fn relay_worker_abort_drops_the_batch_and_the_leases_are_recovered_with_an_attempt() {
    let clock = ManualClock::new(truncate_micros(Utc::now()));
    let db = MemoryDb::with_clock(Arc::new(clock.clone()));
    let store = MemoryOutboxStore::new();
    let broker = MemoryBroker::new();
    insert(&db, &store, &[event("a", 0), event("b", 1)]).await;
    clock.advance(TimeDelta::seconds(1)); // the events are due
    let started = Arc::new(Notify::new());
    let publisher = SlowPublisher {
        inner: broker.clone(),
        delay: None,
        started: started.clone(),
    };
    let r = relay(publisher)
        .publish_timeout(Duration::from_secs(10))
        .batch_size(2)
        .lease_ttl(Duration::from_secs(60))
        .build()
        .unwrap();
    let mut worker = RelayWorker::builder(r, db.clone())
        .worker_id(worker_id("relay-1"))
        .build()
        .unwrap();
    let shutdown = Shutdown::new();
    let run = tokio::spawn({
        let shutdown = shutdown.clone();
        async move { worker.run(&shutdown).await }
    });
    bounded("first publish", started.notified()).await;
    shutdown.trigger();
    shutdown.trigger();
    let summary = bounded("abort", run).await.unwrap();
    assert_eq!(summary.stopped, Stopped::Aborted);
    let all = rows(&db, &store).await;
    assert!(
        all.iter()
            .all(|e| e.common.locked_by.as_deref() == Some("relay-1")),
        "aborted batch keeps its leases until they expire"
    );
    clock.advance(TimeDelta::seconds(61));
    let stale = Maintenance::new(store.clone())
        .release_stale(&db, TimeDelta::seconds(60), 100)
        .await
        .unwrap();
    assert_eq!(stale.released, 2);
    for e in rows(&db, &store).await {
        assert_eq!(e.common.status, EventStatus::Pending);
        assert_eq!(
            e.common.attempts_made, 1,
            "the expired lease counted an attempt"
        );
        assert!(e.common.locked_at.is_none());
    }
}

#[test]
fn relay_worker_builds_with_default_relay_settings_and_refuses_bad_intervals() {
    // Leases are refreshed while a batch publishes, so the defaults (100 events, 30 s
    // publish timeout, 300 s lease) are valid.
    let r = OutboxRelay::builder(MemoryOutboxStore::new(), MemoryBroker::new())
        .build()
        .unwrap();
    RelayWorker::builder(r, MemoryDb::new())
        .worker_id(worker_id("relay-1"))
        .build()
        .unwrap();
    let r = relay(MemoryBroker::new()).build().unwrap();
    assert!(
        RelayWorker::builder(r, MemoryDb::new())
            .worker_id(worker_id("relay-1"))
            .poll_interval(Duration::ZERO)
            .build()
            .is_err()
    );
}

/// Publishes through a memory broker after a delay.
struct DelayedPublisher(MemoryBroker, Duration);

impl crate::Publisher for DelayedPublisher {
    async fn publish(&self, event: &OutboxEvent) -> Result<(), crate::PublishError> {
        tokio::time::sleep(self.1).await;
        self.0.publish(event).await
    }
}

#[tokio::test]
async fn bug13_slow_publish_keeps_its_lease_by_refreshing_it() {
    let db = MemoryDb::new();
    let store = MemoryOutboxStore::new();
    let event = OutboxEvent::builder("order", uuid::Uuid::now_v7(), "order.placed", "orders", "k")
        .payload(json!({"n": 1}))
        .build()
        .unwrap();
    let mut tx = db.begin().await.unwrap();
    store.insert(&mut tx, &event).await.unwrap();
    db.commit(tx).await.unwrap();

    // A 300 ms lease and a publish that takes 1 s: without refresh the lease would expire
    // and a second worker would take the event over (spending an attempt).
    let broker = MemoryBroker::new();
    let slow = OutboxRelay::builder(
        store.clone(),
        DelayedPublisher(broker.clone(), Duration::from_secs(1)),
    )
    .lease_ttl(Duration::from_millis(300))
    .publish_timeout(Duration::from_secs(5))
    .build()
    .unwrap();
    let rival = OutboxRelay::builder(store.clone(), broker.clone())
        .lease_ttl(Duration::from_millis(300))
        .build()
        .unwrap();
    let shutdown = Shutdown::new();
    let slow_worker = worker_id("slow-1");
    let rival_worker = worker_id("rival-1");
    let (slow_result, rival_claims) =
        tokio::join!(slow.publish_batch(&db, &slow_worker, &shutdown), async {
            let mut claimed = 0;
            for _ in 0..4 {
                tokio::time::sleep(Duration::from_millis(200)).await;
                claimed += rival
                    .publish_batch(&db, &rival_worker, &shutdown)
                    .await
                    .unwrap()
                    .claimed;
            }
            claimed
        });
    let slow_result = slow_result.unwrap();
    assert_eq!(
        rival_claims, 0,
        "the rival took over a lease that was being refreshed"
    );
    assert_eq!(slow_result.completed, vec![event.common.id]);
    assert!(slow_result.lease_lost.is_empty());
    let mut conn = db.connection();
    let stored = store.get(&mut conn, event.common.id).await.unwrap();
    assert_eq!(stored.common.status, crate::EventStatus::Completed);
    assert_eq!(stored.common.attempts_made, 0);
    assert_eq!(broker.published("orders").len(), 1);
}

/// Writes `effect:<message_id>` in the inbox transaction; signals each call; optionally
/// hangs forever.
#[derive(Clone)]
struct Effect {
    started: Arc<Notify>,
    hang: bool,
}

impl crate::Handler<InboxEvent, MemoryConn> for Effect {
    async fn handle(&self, event: &InboxEvent, conn: &mut MemoryConn) -> HandlerResult {
        self.started.notify_one();
        conn.put(format!("effect:{}", event.message_id), json!(1))
            .await;
        if self.hang {
            std::future::pending::<()>().await;
        }
        Ok(HandlerOutcome::Completed)
    }
}

/// A consumer whose first `fail` starts fail.
struct FlakyStart {
    inner: MemoryConsumer,
    fail: usize,
}

impl Consumer for FlakyStart {
    type Ack = MemoryAck;

    async fn start(&mut self) -> Result<(), ConsumeError> {
        if self.fail > 0 {
            self.fail -= 1;
            return Err(ConsumeError::transient("injected: broker unreachable"));
        }
        self.inner.start().await
    }

    async fn receive(&mut self) -> Result<Delivery<MemoryAck>, ConsumeError> {
        self.inner.receive().await
    }

    async fn stop(&mut self) -> Result<(), ConsumeError> {
        self.inner.stop().await
    }
}

async fn publish_orders(broker: &MemoryBroker, n: usize) -> Vec<OutboxEvent> {
    let events: Vec<_> = (0..n).map(|i| event(&format!("k{i}"), i)).collect();
    for e in &events {
        broker.publish(e).await.unwrap();
    }
    events
}

#[tokio::test]
async fn inbox_worker_restarts_its_consumer_and_stops_gracefully() {
    let broker = MemoryBroker::new();
    let events = publish_orders(&broker, 5).await;
    let db = MemoryDb::new();
    let consumer = FlakyStart {
        inner: broker.consumer(["orders"], "billing"),
        fail: 2,
    };
    let runner = InboxRunner::builder(consumer, db.clone(), MemoryInboxStore::new(), "billing")
        .handler(Effect {
            started: Arc::new(Notify::new()),
            hang: false,
        })
        .build()
        .unwrap();
    let mut worker = InboxWorker::builder(runner)
        .restart_backoff(Duration::from_millis(5), Duration::from_millis(10))
        .build()
        .unwrap();
    let shutdown = Shutdown::new();
    let run = tokio::spawn({
        let shutdown = shutdown.clone();
        async move {
            let stopped = worker.run(&shutdown).await;
            (stopped, worker)
        }
    });
    until("handled", async || broker.acked("orders", "billing") == 5).await;
    shutdown.trigger();
    let (stopped, _worker) = bounded("stop", run).await.unwrap();
    assert_eq!(stopped, Stopped::Graceful);
    for e in &events {
        assert_eq!(
            db.value(&format!("effect:{}", e.common.id)).await,
            Some(json!(1))
        );
    }
    assert_eq!(broker.in_flight("orders", "billing"), 0);
}

#[tokio::test]
async fn inbox_worker_abort_drops_the_message_in_flight_for_redelivery() {
    let broker = MemoryBroker::new();
    let events = publish_orders(&broker, 1).await;
    let db = MemoryDb::new();
    let store = MemoryInboxStore::new();
    let started = Arc::new(Notify::new());
    let runner = InboxRunner::builder(
        broker.consumer(["orders"], "billing"),
        db.clone(),
        store.clone(),
        "billing",
    )
    .handler(Effect {
        started: started.clone(),
        hang: true,
    })
    .process_timeout(Duration::from_secs(3600))
    .build()
    .unwrap();
    let mut worker = InboxWorker::builder(runner).build().unwrap();
    let shutdown = Shutdown::new();
    let run = tokio::spawn({
        let shutdown = shutdown.clone();
        async move {
            let stopped = worker.run(&shutdown).await;
            drop(worker); // the consumer goes with it: unacknowledged deliveries come back
            stopped
        }
    });
    bounded("handler started", started.notified()).await;
    // A graceful stop waits for the handler; the second request aborts it.
    shutdown.trigger();
    tokio::time::sleep(Duration::from_millis(20)).await;
    assert!(
        !run.is_finished(),
        "graceful stop waits for the message in flight"
    );
    shutdown.trigger();
    assert_eq!(bounded("abort", run).await.unwrap(), Stopped::Aborted);
    assert_eq!(broker.acked("orders", "billing"), 0, "never acknowledged");
    let key = format!("effect:{}", events[0].common.id);
    assert_eq!(db.value(&key).await, None, "the effect rolled back");
    assert!(
        store.all(&mut db.connection()).await.is_empty(),
        "the inbox row rolled back with it"
    );
    assert_eq!(broker.pending("orders", "billing"), 1, "redelivered later");
}

#[tokio::test]
async fn maintenance_worker_releases_stale_leases_and_cleans_up() {
    let clock = ManualClock::new(truncate_micros(Utc::now()));
    let db = MemoryDb::with_clock(Arc::new(clock.clone()));
    let store = MemoryOutboxStore::new();
    let (stale, done) = (event("a", 0), event("b", 1));
    insert(&db, &store, &[stale.clone(), done.clone()]).await;
    clock.advance(TimeDelta::seconds(1)); // the events are due
    // Lease both; complete one; the other's worker "dies".
    let mut tx = db.begin().await.unwrap();
    let claimed = crate::store::ClaimEvents::claim(
        &store,
        &mut tx,
        &crate::store::ClaimRequest::new(worker_id("dead"), 10),
    )
    .await
    .unwrap();
    let lease = claimed
        .iter()
        .find(|e| e.common.id == done.common.id)
        .and_then(|e| e.common.locked_at)
        .unwrap();
    store
        .settle(
            &mut tx,
            &worker_id("dead"),
            &[Settlement {
                id: done.common.id,
                lease,
                action: Settle::Complete,
            }],
        )
        .await
        .unwrap();
    db.commit(tx).await.unwrap();
    clock.advance(TimeDelta::days(2));
    let worker = MaintenanceWorker::builder(Maintenance::new(store.clone()), db.clone())
        .interval(Duration::from_millis(10))
        .stale_after(Duration::from_secs(10 * 60))
        .retention(Duration::from_secs(86400))
        .build()
        .unwrap();
    let shutdown = Shutdown::new();
    let run = tokio::spawn({
        let shutdown = shutdown.clone();
        async move { worker.run(&shutdown).await }
    });
    until("maintained", async || {
        let all = rows(&db, &store).await;
        all.len() == 1 && all[0].common.locked_at.is_none()
    })
    .await;
    shutdown.trigger();
    let summary = bounded("stop", run).await.unwrap();
    assert_eq!((summary.released, summary.deleted), (1, 1), "{summary:?}");
    assert_eq!(summary.errors, 0);
    assert!(summary.rounds >= 1);
    let left = rows(&db, &store).await;
    assert_eq!(left[0].common.id, stale.common.id);
    assert_eq!(left[0].common.attempts_made, 1);
    assert!(
        MaintenanceWorker::builder(Maintenance::new(store), db)
            .interval(Duration::ZERO)
            .build()
            .is_err()
    );
}

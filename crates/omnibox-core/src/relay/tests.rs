//! End-to-end: relay = processor + steps, on the in-memory database and broker.

use std::sync::Arc;

use chrono::{DateTime, TimeDelta, Utc};
use serde_json::json;
use uuid::Uuid;

use super::*;
use crate::clock::ManualClock;
use crate::error::FailureKind;
use crate::memory::{MemoryBroker, MemoryDb, MemoryOutboxStore, truncate_micros};
use crate::metrics::CircuitState;
use crate::model::{Event, EventStatus, OutboxEvent};
use crate::pipeline::steps::test_support::{Rec, RecordingMetrics};
use crate::pipeline::{BatchCtx, StepResult};
use crate::store::InsertEvents;

struct Env {
    db: MemoryDb,
    clock: ManualClock,
    store: MemoryOutboxStore,
    broker: MemoryBroker,
    metrics: Arc<RecordingMetrics>,
    worker: WorkerId,
}

impl Env {
    fn new() -> Self {
        let clock = ManualClock::new(truncate_micros(Utc::now()));
        Self {
            db: MemoryDb::with_clock(Arc::new(clock.clone())),
            clock,
            store: MemoryOutboxStore::new(),
            broker: MemoryBroker::new(),
            metrics: Arc::new(RecordingMetrics::default()),
            worker: WorkerId::new("relay-1").unwrap(),
        }
    }

    fn now(&self) -> DateTime<Utc> {
        self.db.now()
    }

    fn relay(&self) -> OutboxRelayBuilder<MemoryOutboxStore, MemoryBroker> {
        OutboxRelay::builder(self.store.clone(), self.broker.clone())
            .clock(Arc::new(self.clock.clone()))
            .metrics(self.metrics.clone())
    }

    /// Insert events `(key, n)` created 1 ms apart, in order.
    async fn insert(&self, keys: &[&str], max_attempts: u32) -> Vec<OutboxEvent> {
        let base = self.now() - TimeDelta::seconds(10);
        let events: Vec<_> = keys
            .iter()
            .enumerate()
            .map(|(i, k)| {
                OutboxEvent::builder("order", Uuid::now_v7(), "order.placed", "orders", *k)
                    .payload(json!({"i": i}))
                    .created_at(base + TimeDelta::milliseconds(i as i64))
                    .max_attempts(max_attempts)
                    .build()
                    .unwrap()
            })
            .collect();
        let mut tx = self.db.begin().await.unwrap();
        self.store.insert_many(&mut tx, &events).await.unwrap();
        self.db.commit(tx).await.unwrap();
        events
    }

    async fn row(&self, id: Uuid) -> OutboxEvent {
        let mut conn = self.db.connection();
        self.store.get(&mut conn, id).await.unwrap()
    }

    fn published_keys(&self) -> Vec<String> {
        self.broker
            .published("orders")
            .into_iter()
            .map(|m| m.key.unwrap_or_default())
            .collect()
    }
}

fn assert_untouched(e: &OutboxEvent, original: &OutboxEvent) {
    assert_eq!(e.common.status, EventStatus::Pending);
    assert_eq!(e.common.locked_at, None, "lease given back");
    assert_eq!(e.common.locked_by, None);
    assert_eq!(e.common.attempts_made, 0, "no attempt spent");
    assert_eq!(
        e.common.scheduled_at, original.common.scheduled_at,
        "schedule kept"
    );
}

#[tokio::test]
async fn publishes_and_completes_a_batch_without_holding_a_transaction() {
    let env = Env::new();
    let events = env.insert(&["a", "b", "c"], 6).await;
    let relay = env.relay().build().unwrap();
    let r = relay
        .publish_batch(&env.db, &env.worker, &Shutdown::new())
        .await
        .unwrap();
    assert_eq!((r.claimed, r.completed.len()), (3, 3));
    assert!(r.committed());
    for e in &events {
        let row = env.row(e.id()).await;
        assert_eq!(row.common.status, EventStatus::Completed);
        assert_eq!(row.common.locked_at, None);
    }
    assert_eq!(env.published_keys(), vec!["a", "b", "c"]);
    assert_eq!(env.metrics.count(|m| matches!(m, Rec::Completed { .. })), 3);
    assert_eq!(env.metrics.durations().len(), 3);
}

#[tokio::test]
async fn publish_batch_in_uses_the_callers_transaction() {
    let env = Env::new();
    let events = env.insert(&["a"], 6).await;
    let relay = env.relay().build().unwrap();
    let mut tx = env.db.begin().await.unwrap();
    let r = relay
        .publish_batch_in(&mut tx, &env.worker, &Shutdown::new())
        .await
        .unwrap();
    assert_eq!(r.completed, vec![events[0].id()]);
    env.db.commit(tx).await.unwrap();
    assert_eq!(
        env.row(events[0].id()).await.common.status,
        EventStatus::Completed
    );
}

#[tokio::test]
async fn per_key_ordering_one_in_flight_per_key() {
    let env = Env::new();
    env.insert(&["a", "a", "b", "a", "b"], 6).await;
    let relay = env.relay().publish_concurrency(8).build().unwrap();
    let mut claimed = Vec::new();
    for _ in 0..4 {
        let r = relay
            .publish_batch(&env.db, &env.worker, &Shutdown::new())
            .await
            .unwrap();
        claimed.push(r.claimed);
    }
    // One event per key per batch, even with concurrent publishing.
    assert_eq!(claimed, vec![2, 2, 1, 0]);
    let per_key = |k: &str| {
        env.broker
            .published("orders")
            .into_iter()
            .filter(|m| m.key.as_deref() == Some(k))
            .map(|m| m.json().unwrap()["payload"]["i"].as_i64().unwrap())
            .collect::<Vec<_>>()
    };
    assert_eq!(per_key("a"), vec![0, 1, 3]);
    assert_eq!(per_key("b"), vec![2, 4]);
}

#[tokio::test]
async fn broker_outage_spends_no_attempts_and_probes_once_per_batch() {
    let env = Env::new();
    let events = env.insert(&["a", "b", "c"], 6).await;
    let relay = env.relay().build().unwrap();
    env.broker.fail_next_publishes(1, FailureKind::Transient);
    let now = env.now();
    let r = relay
        .publish_batch(&env.db, &env.worker, &Shutdown::new())
        .await
        .unwrap();
    assert_eq!(r.failed_transient, vec![events[0].id()]);
    assert_eq!(r.released.len(), 2);
    assert!(r.failed_counted.is_empty());
    assert!(env.published_keys().is_empty());

    let probe = env.row(events[0].id()).await;
    assert_eq!(probe.common.attempts_made, 0);
    assert_eq!(probe.common.locked_at, None);
    assert_eq!(probe.common.scheduled_at, now + TimeDelta::seconds(1));
    assert!(
        probe
            .common
            .last_error
            .as_deref()
            .unwrap()
            .contains("injected transient failure")
    );
    for e in &events[1..] {
        assert_untouched(&env.row(e.id()).await, e);
    }
    assert!(env.metrics.all().contains(&Rec::Released(2)));

    // The broker is back: the deferred events go at once, the probe after its second.
    let r = relay
        .publish_batch(&env.db, &env.worker, &Shutdown::new())
        .await
        .unwrap();
    assert_eq!(r.completed.len(), 2);
    env.clock.advance(TimeDelta::seconds(1));
    let r = relay
        .publish_batch(&env.db, &env.worker, &Shutdown::new())
        .await
        .unwrap();
    assert_eq!(r.completed, vec![events[0].id()]);
    assert_eq!(env.published_keys(), vec!["b", "c", "a"]);
}

#[tokio::test]
async fn broker_rejection_counts_and_backs_off() {
    let env = Env::new();
    let events = env.insert(&["a", "b"], 2).await;
    let relay = env.relay().build().unwrap();
    env.broker.fail_next_publishes(1, FailureKind::Permanent);
    let now = env.now();
    let r = relay
        .publish_batch(&env.db, &env.worker, &Shutdown::new())
        .await
        .unwrap();
    assert_eq!(r.failed_counted, vec![events[0].id()]);
    assert_eq!(
        r.completed,
        vec![events[1].id()],
        "a rejection does not stop the batch"
    );
    let row = env.row(events[0].id()).await;
    assert_eq!(row.common.attempts_made, 1);
    assert_eq!(row.common.status, EventStatus::Pending);
    assert!(row.common.scheduled_at >= now + TimeDelta::seconds(5));
    assert!(row.common.scheduled_at <= now + TimeDelta::seconds(10));

    // The last attempt: failed and dead-lettered by the store, in the settle transaction.
    env.clock.advance(TimeDelta::seconds(10));
    env.broker.fail_next_publishes(1, FailureKind::Permanent);
    let r = relay
        .publish_batch(&env.db, &env.worker, &Shutdown::new())
        .await
        .unwrap();
    assert_eq!(r.dead_lettered, vec![events[0].id()]);
    let row = env.row(events[0].id()).await;
    assert_eq!(row.common.status, EventStatus::Failed);
    let mut conn = env.db.connection();
    assert_eq!(env.store.dead_letters(&mut conn).await.len(), 1);
}

#[tokio::test]
async fn bug1_and_bug2_breaker_stays_open_and_stopped_events_are_released() {
    let env = Env::new();
    let events = env.insert(&["a", "b", "c"], 6).await;
    let breaker = CircuitBreakerStep::new(1, Duration::from_secs(60))
        .unwrap()
        .with_clock(Arc::new(env.clock.clone()));
    let relay = env
        .relay()
        .circuit_breaker(breaker.clone())
        .build()
        .unwrap();
    env.broker.fail_next_publishes(1, FailureKind::Permanent);
    let r = relay
        .publish_batch(&env.db, &env.worker, &Shutdown::new())
        .await
        .unwrap();
    assert_eq!(r.failed_counted, vec![events[0].id()]);
    assert_eq!(r.released.len(), 2);
    for e in &events[1..] {
        assert_untouched(&env.row(e.id()).await, e);
    }
    assert_eq!(breaker.state(), CircuitState::Open);

    // Open across batches: nothing is sent, nothing is spent.
    env.clock.advance(TimeDelta::seconds(30));
    let r = relay
        .publish_batch(&env.db, &env.worker, &Shutdown::new())
        .await
        .unwrap();
    // (The rejected event is due again too: 5-10 s backoff.)
    assert_eq!((r.claimed, r.released.len()), (3, 3));
    assert!(env.published_keys().is_empty());

    env.clock.advance(TimeDelta::seconds(30));
    let r = relay
        .publish_batch(&env.db, &env.worker, &Shutdown::new())
        .await
        .unwrap();
    assert_eq!(
        r.completed.len(),
        3,
        "the probe closed the breaker; the batch went on"
    );
    assert_eq!(breaker.state(), CircuitState::Closed);
}

#[tokio::test]
async fn breaker_with_concurrent_publishing_sends_nothing_while_open() {
    let env = Env::new();
    env.insert(&["a", "b", "c", "d"], 6).await;
    let breaker = CircuitBreakerStep::new(1, Duration::from_secs(60))
        .unwrap()
        .with_clock(Arc::new(env.clock.clone()));
    let relay = env
        .relay()
        .publish_concurrency(4)
        .circuit_breaker(breaker.clone())
        .build()
        .unwrap();
    env.broker.fail_next_publishes(1, FailureKind::Permanent);
    let r = relay
        .publish_batch(&env.db, &env.worker, &Shutdown::new())
        .await
        .unwrap();
    // All four were in flight together; the results the broker gave are all recorded.
    assert_eq!((r.failed_counted.len(), r.completed.len()), (1, 3));
    assert_eq!(breaker.state(), CircuitState::Open);

    let more = env.insert(&["e", "f"], 6).await;
    let r = relay
        .publish_batch(&env.db, &env.worker, &Shutdown::new())
        .await
        .unwrap();
    assert_eq!(r.released.len(), 2);
    assert_eq!(
        env.broker.published("orders").len(),
        3,
        "no call while open"
    );
    for e in &more {
        assert_untouched(&env.row(e.id()).await, e);
    }
}

/// Triggers shutdown while the first event is being processed.
struct ShutdownAfterFirst(Shutdown);
impl Step<OutboxEvent, crate::memory::MemoryConn> for ShutdownAfterFirst {
    async fn execute(
        &self,
        _e: &OutboxEvent,
        _ctx: &mut BatchCtx<'_, OutboxEvent, crate::memory::MemoryConn>,
    ) -> StepResult {
        self.0.trigger();
        StepResult::Continue
    }
}

#[tokio::test]
async fn shutdown_releases_unprocessed_events() {
    let env = Env::new();
    let events = env.insert(&["a", "b", "c"], 6).await;
    let shutdown = Shutdown::new();
    let relay = env
        .relay()
        .step_before(ShutdownAfterFirst(shutdown.clone()))
        .build()
        .unwrap();
    let r = relay
        .publish_batch(&env.db, &env.worker, &shutdown)
        .await
        .unwrap();
    assert_eq!(
        r.completed,
        vec![events[0].id()],
        "the event in hand is finished"
    );
    assert_eq!(r.released.len(), 2);
    for e in &events[1..] {
        assert_untouched(&env.row(e.id()).await, e);
    }
    // Once shutdown was requested no new batch is claimed.
    let r = relay
        .publish_batch(&env.db, &env.worker, &shutdown)
        .await
        .unwrap();
    assert_eq!(r.claimed, 0);
}

/// The memory broker, slowed down, counting calls in flight across batches.
#[derive(Clone, Default)]
struct Slow {
    inner: MemoryBroker,
    in_flight: Arc<std::sync::atomic::AtomicUsize>,
    max: Arc<std::sync::atomic::AtomicUsize>,
}

impl Publisher for Slow {
    async fn publish(&self, event: &OutboxEvent) -> Result<(), crate::PublishError> {
        use std::sync::atomic::Ordering::SeqCst;
        let now = self.in_flight.fetch_add(1, SeqCst) + 1;
        self.max.fetch_max(now, SeqCst);
        tokio::time::sleep(Duration::from_millis(50)).await;
        self.in_flight.fetch_sub(1, SeqCst);
        self.inner.publish(event).await
    }
}

async fn max_concurrent_batches(limit: Option<usize>) -> usize {
    let env = Env::new();
    env.insert(&["a", "b", "c", "d"], 6).await;
    let slow = Slow::default();
    let mut b = OutboxRelay::builder(env.store.clone(), slow.clone())
        .clock(Arc::new(env.clock.clone()))
        .batch_size(1);
    if let Some(n) = limit {
        b = b.concurrency_limit(n);
    }
    let relay = Arc::new(b.build().unwrap());
    let mut tasks = Vec::new();
    for i in 0..4 {
        let relay = relay.clone();
        let db = env.db.clone();
        tasks.push(tokio::spawn(async move {
            let w = WorkerId::new(format!("w{i}")).unwrap();
            relay
                .publish_batch(&db, &w, &Shutdown::new())
                .await
                .unwrap()
                .completed
                .len()
        }));
    }
    let mut total = 0;
    for t in tasks {
        total += tokio::time::timeout(Duration::from_secs(10), t)
            .await
            .unwrap()
            .unwrap();
    }
    assert_eq!(total, 4);
    assert_eq!(slow.inner.published("orders").len(), 4);
    slow.max.load(std::sync::atomic::Ordering::SeqCst)
}

#[tokio::test(start_paused = true)]
async fn concurrency_limit_bounds_batches_in_flight() {
    assert_eq!(max_concurrent_batches(Some(1)).await, 1);
    assert_eq!(max_concurrent_batches(Some(2)).await, 2);
    // Without a limit the four batches publish at the same time.
    assert_eq!(max_concurrent_batches(None).await, 4);
}

#[test]
fn settings_are_validated() {
    let env = Env::new();
    let err = |b: OutboxRelayBuilder<MemoryOutboxStore, MemoryBroker>| b.build().unwrap_err();
    assert!(matches!(
        err(env.relay().batch_size(0)),
        Error::Validation(_)
    ));
    assert!(matches!(
        err(env.relay().concurrency_limit(0)),
        Error::Validation(_)
    ));
    assert!(matches!(
        err(env.relay().publish_concurrency(0)),
        Error::Validation(_)
    ));
    assert!(matches!(
        err(env.relay().publish_timeout(Duration::ZERO)),
        Error::Validation(_)
    ));
    assert!(matches!(
        err(env.relay().lease_ttl(Duration::ZERO)),
        Error::Config(_)
    ));
    assert!(matches!(err(env.relay().job_name(" ")), Error::Config(_)));
    assert!(matches!(
        err(env
            .relay()
            .lease_ttl(Duration::from_secs(1))
            .lease_margin(Duration::from_secs(1))),
        Error::Config(_)
    ));
    assert!(
        env.relay()
            .lease_ttl(Duration::from_secs(1))
            .lease_margin(Duration::from_millis(999))
            .build()
            .is_ok()
    );
}

/// A database whose commit of the `slow`-th transaction is applied at once but answers only
/// after `delay` (a commit reply still on the wire).
#[derive(Clone)]
struct SlowReplyDb {
    inner: MemoryDb,
    commits: Arc<std::sync::atomic::AtomicUsize>,
    slow: usize,
    delay: std::time::Duration,
}

impl crate::store::Transactions for SlowReplyDb {
    type Conn = crate::memory::MemoryConn;
    type Tx = crate::memory::MemoryTx;

    async fn begin(&self) -> Result<Self::Tx, crate::error::StoreError> {
        self.inner.begin().await
    }

    async fn commit(&self, tx: Self::Tx) -> Result<(), crate::error::StoreError> {
        self.inner.commit(tx).await?;
        let n = self
            .commits
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst)
            + 1;
        if n == self.slow {
            tokio::time::sleep(self.delay).await;
        }
        Ok(())
    }

    async fn rollback(&self, tx: Self::Tx) -> Result<(), crate::error::StoreError> {
        self.inner.rollback(tx).await
    }
}

/// Moves the database clock (so a refresh renews the lease with a new token), then takes
/// `delay` before the broker acknowledges.
struct ClockMovingPublisher {
    broker: MemoryBroker,
    clock: ManualClock,
    delay: std::time::Duration,
}

impl crate::Publisher for ClockMovingPublisher {
    async fn publish(&self, event: &OutboxEvent) -> Result<(), crate::PublishError> {
        self.clock.advance(TimeDelta::milliseconds(1));
        tokio::time::sleep(self.delay).await;
        self.broker.publish(event).await
    }
}

#[tokio::test(start_paused = true)]
async fn a_lease_refresh_in_flight_when_the_steps_end_is_finished_before_settling() {
    use std::time::Duration;
    let env = Env::new();
    let events = env.insert(&["a"], 2).await;
    // Lease 300 ms: refresh every 100 ms. The publish takes 150 ms; the first refresh
    // (commit #2, at 100 ms) is applied at once but its reply arrives at 200 ms, after
    // the steps ended. Cancelling it there would settle with the superseded token.
    let db = SlowReplyDb {
        inner: env.db.clone(),
        commits: Arc::default(),
        slow: 2,
        delay: Duration::from_millis(100),
    };
    let publisher = ClockMovingPublisher {
        broker: env.broker.clone(),
        clock: env.clock.clone(),
        delay: Duration::from_millis(150),
    };
    let relay = OutboxRelay::builder(env.store.clone(), publisher)
        .clock(Arc::new(env.clock.clone()))
        .lease_ttl(Duration::from_millis(300))
        .build()
        .unwrap();
    let r = relay
        .publish_batch(&db, &env.worker, &Shutdown::new())
        .await
        .unwrap();
    assert!(r.committed());
    assert!(r.lease_lost.is_empty(), "settled with a superseded lease");
    let row = env.row(events[0].id()).await;
    assert_eq!(row.common.status, EventStatus::Completed);
    assert_eq!(row.common.locked_at, None, "nothing stays leased");
    assert_eq!(env.published_keys(), vec!["a"]);
}

/// Before the broker call for key `b`: takes every lease away (as a takeover after expiry
/// or an operator's release would), then waits until the batch's lease watch says the
/// lease of `b` is gone, recording how long that took.
struct TakeLeasesBeforeB {
    db: MemoryDb,
    store: MemoryOutboxStore,
    clock: ManualClock,
    noticed_after: Arc<std::sync::Mutex<Option<std::time::Duration>>>,
}

impl Step<OutboxEvent, crate::memory::MemoryConn> for TakeLeasesBeforeB {
    async fn execute(
        &self,
        e: &OutboxEvent,
        ctx: &mut BatchCtx<'_, OutboxEvent, crate::memory::MemoryConn>,
    ) -> StepResult {
        use crate::store::ReleaseStale;
        if e.partition_key != "b" {
            return StepResult::Continue;
        }
        self.clock.advance(TimeDelta::milliseconds(1));
        let mut tx = self.db.begin().await.unwrap();
        self.store
            .release_stale(&mut tx, TimeDelta::zero(), 100)
            .await
            .unwrap();
        self.db.commit(tx).await.unwrap();
        let started = tokio::time::Instant::now();
        // Bounded well before the lease would expire by the local clock (2.4 s).
        while ctx.lease_held(e.id()) && started.elapsed() < std::time::Duration::from_secs(2) {
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        if !ctx.lease_held(e.id()) {
            *self.noticed_after.lock().unwrap() = Some(started.elapsed());
        }
        StepResult::Continue
    }
}

/// Issue 9 §4: a lease refresh that finds a lease gone cancels the event's unsent publish
/// (released, not sent), long before the lease would run out by the local clock.
#[tokio::test(start_paused = true)]
async fn a_refresh_that_finds_a_lease_lost_cancels_its_unsent_publish() {
    let env = Env::new();
    let events = env.insert(&["a", "b"], 6).await;
    let noticed_after = Arc::default();
    let relay = env
        .relay()
        // 3 s lease: refreshed every 1 s, provable for 2.4 s after each refresh.
        .lease_ttl(Duration::from_secs(3))
        .step_before(TakeLeasesBeforeB {
            db: env.db.clone(),
            store: env.store.clone(),
            clock: env.clock.clone(),
            noticed_after: Arc::clone(&noticed_after),
        })
        .build()
        .unwrap();
    let r = relay
        .publish_batch(&env.db, &env.worker, &Shutdown::new())
        .await
        .unwrap();
    assert_eq!(
        env.published_keys(),
        vec!["a"],
        "b's lease was lost: not sent"
    );
    let noticed = noticed_after
        .lock()
        .unwrap()
        .expect("the watch saw the loss");
    assert!(
        noticed < std::time::Duration::from_millis(1500),
        "noticed by the first refresh, not by expiry: {noticed:?}"
    );
    assert_eq!(r.released, vec![events[1].id()]);
    // Neither result applied: both leases were gone when the batch settled.
    assert_eq!(r.lease_lost.len(), 2, "{r:?}");
}

/// At the start of the batch (before a concurrent publish step sends it): takes every lease
/// away, then lets the first refresh run.
struct TakeLeasesAtBatchStart {
    db: MemoryDb,
    store: MemoryOutboxStore,
    clock: ManualClock,
}

impl Step<OutboxEvent, crate::memory::MemoryConn> for TakeLeasesAtBatchStart {
    async fn on_batch_start(
        &self,
        _events: &[OutboxEvent],
        _ctx: &mut BatchCtx<'_, OutboxEvent, crate::memory::MemoryConn>,
    ) {
        use crate::store::ReleaseStale;
        self.clock.advance(TimeDelta::milliseconds(1));
        let mut tx = self.db.begin().await.unwrap();
        self.store
            .release_stale(&mut tx, TimeDelta::zero(), 100)
            .await
            .unwrap();
        self.db.commit(tx).await.unwrap();
        // Past the first refresh (1 s), well before the leases run out locally (2.4 s).
        tokio::time::sleep(std::time::Duration::from_millis(1_200)).await;
    }

    async fn execute(
        &self,
        _e: &OutboxEvent,
        _ctx: &mut BatchCtx<'_, OutboxEvent, crate::memory::MemoryConn>,
    ) -> StepResult {
        StepResult::Continue
    }
}

/// The same with concurrent publishing: the lost leases' events are not sent at all.
#[tokio::test(start_paused = true)]
async fn concurrent_publishing_sends_nothing_whose_lease_a_refresh_found_lost() {
    let env = Env::new();
    let events = env.insert(&["a", "b", "c"], 6).await;
    let relay = env
        .relay()
        .lease_ttl(Duration::from_secs(3))
        .publish_concurrency(3)
        .step_before(TakeLeasesAtBatchStart {
            db: env.db.clone(),
            store: env.store.clone(),
            clock: env.clock.clone(),
        })
        .build()
        .unwrap();
    let r = relay
        .publish_batch(&env.db, &env.worker, &Shutdown::new())
        .await
        .unwrap();
    assert!(
        env.published_keys().is_empty(),
        "{:?}",
        env.published_keys()
    );
    let mut released = r.released.clone();
    released.sort();
    let mut ids: Vec<Uuid> = events.iter().map(Event::id).collect();
    ids.sort();
    assert_eq!(released, ids);
    assert_eq!(r.lease_lost.len(), 3, "{r:?}");
}

#[test]
fn publishing_is_concurrent_by_default_and_sequential_with_steps_that_must_run_first() {
    let env = Env::new();
    let plain = env.relay().build().unwrap();
    assert_eq!(
        plain.publish_concurrency(),
        crate::relay::DEFAULT_PUBLISH_CONCURRENCY
    );
    let with_step = env
        .relay()
        .step_before(ShutdownAfterFirst(Shutdown::new()))
        .build()
        .unwrap();
    assert_eq!(with_step.publish_concurrency(), 1, "a step before may veto");
    let breaker = CircuitBreakerStep::new(3, Duration::from_secs(60)).unwrap();
    let with_breaker = env.relay().circuit_breaker(breaker).build().unwrap();
    assert_eq!(
        with_breaker.publish_concurrency(),
        1,
        "the breaker opens at its threshold"
    );
    let explicit = env
        .relay()
        .circuit_breaker(CircuitBreakerStep::new(3, Duration::from_secs(60)).unwrap())
        .publish_concurrency(8)
        .build()
        .unwrap();
    assert_eq!(explicit.publish_concurrency(), 8, "an explicit value wins");
    assert!(env.relay().publish_concurrency(0).build().is_err());
}

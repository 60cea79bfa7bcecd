use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use serde_json::json;
use uuid::Uuid;

use super::*;
use crate::clock::ManualClock;
use crate::domain::lease_expired_error;
use crate::memory::{MemoryDb, MemoryOutboxStore, truncate_micros};
use crate::model::{Event, EventStatus, OutboxEvent, WorkerId};
use crate::pipeline::ProcessorBuilder;
use crate::pipeline::steps::test_support::{Rec, RecordingMetrics};
use crate::store::InsertEvents;

struct Env {
    db: MemoryDb,
    clock: ManualClock,
    store: MemoryOutboxStore,
    metrics: Arc<RecordingMetrics>,
}

impl Env {
    fn new() -> Self {
        let clock = ManualClock::new(truncate_micros(Utc::now()));
        Self {
            db: MemoryDb::with_clock(Arc::new(clock.clone())),
            clock,
            store: MemoryOutboxStore::new(),
            metrics: Arc::new(RecordingMetrics::default()),
        }
    }

    fn maintenance(&self) -> Maintenance<MemoryOutboxStore> {
        Maintenance::new(self.store.clone()).metrics(self.metrics.clone())
    }

    async fn insert(&self, n: usize, max_attempts: u32) -> Vec<OutboxEvent> {
        let events: Vec<_> = (0..n)
            .map(|i| {
                OutboxEvent::builder(
                    "order",
                    Uuid::now_v7(),
                    "order.placed",
                    "orders",
                    format!("k{i}"),
                )
                .payload(json!({"i": i}))
                .created_at(self.db.now() - TimeDelta::seconds(1))
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

    /// Claim everything due and "crash": the leases are committed, no result ever is.
    async fn claim_and_crash(&self, worker: &str) -> usize {
        let p = ProcessorBuilder::new(self.store.clone())
            .lease_ttl(Duration::from_secs(30))
            .build()
            .unwrap();
        let mut tx = self.db.begin().await.unwrap();
        let got = p
            .claim(&mut tx, &WorkerId::new(worker).unwrap(), 100)
            .await
            .unwrap();
        self.db.commit(tx).await.unwrap();
        got.len()
    }

    async fn row(&self, id: Uuid) -> OutboxEvent {
        let mut conn = self.db.connection();
        self.store.get(&mut conn, id).await.unwrap()
    }
}

#[tokio::test]
async fn bug15_crash_looping_event_ends_failed() {
    let env = Env::new();
    let events = env.insert(1, 2).await;
    let m = env.maintenance();

    assert_eq!(env.claim_and_crash("w1").await, 1);
    env.clock.advance(TimeDelta::seconds(31));
    let r = m
        .release_stale(&env.db, TimeDelta::seconds(30), 10)
        .await
        .unwrap();
    assert_eq!((r.released, r.failed), (1, 0));
    let row = env.row(events[0].id()).await;
    assert_eq!(
        row.common.attempts_made, 1,
        "a stale release spends an attempt"
    );
    assert_eq!(
        row.common.last_error.as_deref(),
        Some(lease_expired_error("w1").as_str())
    );
    assert_eq!(row.common.locked_at, None);

    assert_eq!(env.claim_and_crash("w2").await, 1);
    env.clock.advance(TimeDelta::seconds(31));
    let r = m
        .release_stale(&env.db, TimeDelta::seconds(30), 10)
        .await
        .unwrap();
    assert_eq!((r.released, r.failed), (0, 1));
    let row = env.row(events[0].id()).await;
    assert_eq!(row.common.status, EventStatus::Failed);
    let mut conn = env.db.connection();
    assert_eq!(env.store.dead_letters(&mut conn).await.len(), 1);
    assert_eq!(env.claim_and_crash("w3").await, 0, "it does not come back");
    assert_eq!(
        env.metrics.all(),
        vec![Rec::StaleReleased(1), Rec::StaleReleased(1)]
    );
}

#[tokio::test]
async fn release_stale_loops_in_batches_and_leaves_live_leases() {
    let env = Env::new();
    env.insert(7, 6).await;
    assert_eq!(env.claim_and_crash("w1").await, 7);
    let m = env.maintenance();
    // Still live: nothing to release.
    let r = m
        .release_stale(&env.db, TimeDelta::seconds(30), 3)
        .await
        .unwrap();
    assert_eq!(r.released, 0);
    env.clock.advance(TimeDelta::seconds(31));
    let r = m
        .release_stale(&env.db, TimeDelta::seconds(30), 3)
        .await
        .unwrap();
    assert_eq!(r.released, 7, "3 + 3 + 1");
    assert_eq!(env.metrics.all(), vec![Rec::StaleReleased(7)]);

    // The iteration cap stops early.
    env.insert(5, 6).await;
    env.claim_and_crash("w2").await;
    env.clock.advance(TimeDelta::seconds(31));
    let r = m
        .clone()
        .max_iterations(1)
        .release_stale(&env.db, TimeDelta::seconds(30), 2)
        .await
        .unwrap();
    assert_eq!(r.released, 2);
}

#[tokio::test]
async fn cleanup_deletes_old_completed_events_in_batches() {
    let env = Env::new();
    env.insert(5, 6).await;
    let relay =
        crate::relay::OutboxRelay::builder(env.store.clone(), crate::memory::MemoryBroker::new())
            .clock(Arc::new(env.clock.clone()))
            .build()
            .unwrap();
    let worker = WorkerId::new("relay").unwrap();
    let r = relay
        .publish_batch(&env.db, &worker, &crate::Shutdown::new())
        .await
        .unwrap();
    assert_eq!(r.completed.len(), 5);
    let kept = env.insert(1, 6).await;

    let m = env.maintenance();
    assert_eq!(
        m.cleanup(&env.db, TimeDelta::days(7), 2, 100)
            .await
            .unwrap(),
        0
    );
    env.clock.advance(TimeDelta::days(8));
    assert_eq!(
        m.cleanup(&env.db, TimeDelta::days(7), 2, 2).await.unwrap(),
        4,
        "capped at 2 batches"
    );
    assert_eq!(
        m.cleanup(&env.db, TimeDelta::days(7), 2, 100)
            .await
            .unwrap(),
        1
    );
    assert_eq!(
        env.row(kept[0].id()).await.common.status,
        EventStatus::Pending,
        "pending rows are kept"
    );
    assert_eq!(env.metrics.all(), vec![Rec::Cleaned(4), Rec::Cleaned(1)]);
}

#[tokio::test]
async fn arguments_are_validated() {
    let env = Env::new();
    let m = env.maintenance();
    let bad = |r: Result<StaleReport, Error>| {
        matches!(
            r,
            Err(Error::Validation(ValidationError::OutOfRange { .. }))
        )
    };
    assert!(bad(m.release_stale(&env.db, TimeDelta::zero(), 10).await));
    assert!(bad(m
        .release_stale(&env.db, TimeDelta::seconds(1), 0)
        .await));
    assert!(bad(m
        .clone()
        .max_iterations(0)
        .release_stale(&env.db, TimeDelta::seconds(1), 1)
        .await));
    let bad = |r: Result<u64, Error>| {
        matches!(
            r,
            Err(Error::Validation(ValidationError::OutOfRange { .. }))
        )
    };
    assert!(bad(m.cleanup(&env.db, TimeDelta::seconds(-1), 10, 1).await));
    assert!(bad(m.cleanup(&env.db, TimeDelta::days(1), 0, 1).await));
    assert!(bad(m.cleanup(&env.db, TimeDelta::days(1), 10, 0).await));
}

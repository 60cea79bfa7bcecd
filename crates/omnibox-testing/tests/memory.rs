//! Every conformance suite against the in-memory reference implementations.

use omnibox_core::memory::{MemoryBroker, MemoryDb, MemoryInboxStore, MemoryOutboxStore};
use omnibox_testing::{
    ConsumerChecks, RawMessage, consumer_conformance, inbox_store_conformance,
    outbox_store_conformance, publisher_conformance, unique_name,
};

#[tokio::test]
async fn memory_outbox_store_conforms() {
    outbox_store_conformance(|| async { (MemoryDb::new(), MemoryOutboxStore::new()) }).await;
}

#[tokio::test]
async fn memory_inbox_store_conforms() {
    inbox_store_conformance(|| async { (MemoryDb::new(), MemoryInboxStore::new()) }).await;
}

#[tokio::test]
async fn memory_broker_publisher_conforms() {
    let broker = MemoryBroker::new();
    let reader = broker.clone();
    let topic = unique_name("orders");
    publisher_conformance(&broker, &topic, move |topic: String, n: usize| {
        let reader = reader.clone();
        async move {
            reader
                .published(&topic)
                .into_iter()
                .take(n)
                .map(|m| RawMessage::new(m.body, m.headers))
                .collect()
        }
    })
    .await;
}

#[tokio::test]
async fn memory_broker_consumer_conforms() {
    let broker = MemoryBroker::new();
    let topic = unique_name("events");
    let (b1, b2, t1, t2) = (broker.clone(), broker.clone(), topic.clone(), topic.clone());
    consumer_conformance(
        move || {
            let (b, t) = (b1.clone(), t1.clone());
            async move { b.consumer([t], "group") }
        },
        move |m: RawMessage| {
            let (b, t) = (b2.clone(), t2.clone());
            async move {
                b.push_raw(&t, m.body, m.headers);
            }
        },
        ConsumerChecks::default(),
    )
    .await;
    assert_eq!(broker.pending(&topic, "group"), 0);
}

/// The suites must catch a broken store: one whose settle ignores the lease token and
/// owner fails the lease-fencing check, naming it.
#[tokio::test]
async fn suites_reject_a_store_that_ignores_lease_fencing() {
    let result = tokio::spawn(async {
        outbox_store_conformance(|| async { (MemoryDb::new(), broken::Unfenced::default()) }).await;
    })
    .await;
    let err = result.expect_err("the suite must fail for an unfenced store");
    let msg = err
        .into_panic()
        .downcast::<String>()
        .map(|s| *s)
        .unwrap_or_default();
    assert!(msg.contains("settle_is_fenced_by_the_lease"), "{msg}");
}

mod broken {
    //! A store that completes events for anyone holding any lease.
    use chrono::{DateTime, TimeDelta, Utc};
    use omnibox_core::StoreError;
    use omnibox_core::memory::{MemoryConn, MemoryOutboxStore};
    use omnibox_core::model::{OutboxEvent, WorkerId};
    use omnibox_core::store::*;
    use uuid::Uuid;

    #[derive(Default, Clone)]
    pub struct Unfenced(MemoryOutboxStore);

    impl EventStore for Unfenced {
        type Event = OutboxEvent;
        type Conn = MemoryConn;
    }
    impl ClaimEvents for Unfenced {
        async fn claim(
            &self,
            c: &mut MemoryConn,
            r: &ClaimRequest,
        ) -> Result<Vec<OutboxEvent>, StoreError> {
            self.0.claim(c, r).await
        }
    }
    impl FetchPending for Unfenced {
        async fn fetch_pending(
            &self,
            c: &mut MemoryConn,
            f: &Filters,
            l: u32,
        ) -> Result<Vec<OutboxEvent>, StoreError> {
            self.0.fetch_pending(c, f, l).await
        }
    }
    impl LockEvent for Unfenced {
        async fn try_lock(
            &self,
            c: &mut MemoryConn,
            id: Uuid,
            w: &WorkerId,
            t: TimeDelta,
            i: bool,
        ) -> Result<LockOutcome<OutboxEvent>, StoreError> {
            self.0.try_lock(c, id, w, t, i).await
        }
    }
    impl SettleEvents for Unfenced {
        async fn settle(
            &self,
            c: &mut MemoryConn,
            w: &WorkerId,
            s: &[Settlement],
        ) -> Result<SettleReport, StoreError> {
            // Broken on purpose: trusts the caller's token by re-reading the current one.
            let mut fixed = Vec::new();
            for x in s {
                let current = self.0.get(c, x.id).await.and_then(|e| e.common.locked_at);
                fixed.push(Settlement {
                    id: x.id,
                    lease: current.unwrap_or(x.lease),
                    action: x.action.clone(),
                });
            }
            let owner = match fixed.first() {
                Some(x) => self
                    .0
                    .get(c, x.id)
                    .await
                    .and_then(|e| e.common.locked_by.clone()),
                None => None,
            };
            let w = owner
                .and_then(|o| WorkerId::new(o).ok())
                .unwrap_or_else(|| w.clone());
            self.0.settle(c, &w, &fixed).await
        }
    }
    impl RefreshLeases for Unfenced {
        async fn refresh(
            &self,
            c: &mut MemoryConn,
            w: &WorkerId,
            l: &[(Uuid, DateTime<Utc>)],
        ) -> Result<Vec<(Uuid, DateTime<Utc>)>, StoreError> {
            self.0.refresh(c, w, l).await
        }
    }
    impl ReleaseStale for Unfenced {
        async fn release_stale(
            &self,
            c: &mut MemoryConn,
            t: TimeDelta,
            l: u32,
        ) -> Result<StaleReport, StoreError> {
            self.0.release_stale(c, t, l).await
        }
    }
    impl CleanupCompleted for Unfenced {
        async fn delete_completed(
            &self,
            c: &mut MemoryConn,
            o: TimeDelta,
            l: u32,
        ) -> Result<u64, StoreError> {
            self.0.delete_completed(c, o, l).await
        }
    }
    impl InsertEvents for Unfenced {
        async fn insert(
            &self,
            c: &mut MemoryConn,
            e: &OutboxEvent,
        ) -> Result<Inserted<OutboxEvent>, StoreError> {
            self.0.insert(c, e).await
        }
        async fn insert_many(
            &self,
            c: &mut MemoryConn,
            e: &[OutboxEvent],
        ) -> Result<Vec<Inserted<OutboxEvent>>, StoreError> {
            self.0.insert_many(c, e).await
        }
    }
    impl DeadLetterStore for Unfenced {
        async fn dead_letter(&self, c: &mut MemoryConn, l: &DeadLetter) -> Result<(), StoreError> {
            self.0.dead_letter(c, l).await
        }
    }
    impl BacklogStats for Unfenced {
        async fn backlog(&self, c: &mut MemoryConn) -> Result<Backlog, StoreError> {
            self.0.backlog(c).await
        }
    }
}

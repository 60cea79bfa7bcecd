//! A real relay batch on the in-memory adapters with [`FacadeMetrics`] installed: the
//! values the pipeline records, read back from `metrics-util`'s debugging recorder.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::{counter, histogram, key, snapshot};
use metrics_util::debugging::{DebugValue, DebuggingRecorder};
use omnibox_core::memory::{MemoryBroker, MemoryDb, MemoryOutboxStore};
use omnibox_core::model::{EventStatus, OutboxEvent, WorkerId};
use omnibox_core::relay::OutboxRelay;
use omnibox_core::store::{InsertEvents, Transactions};
use omnibox_core::{PublishError, Publisher, Shutdown};
use omnibox_metrics::FacadeMetrics;

const JOB: &str = "orders-relay";

/// The memory broker, except that the broker refuses every record for `poison`.
#[derive(Clone)]
struct RefusesPoison(MemoryBroker);

impl Publisher for RefusesPoison {
    async fn publish(&self, event: &OutboxEvent) -> Result<(), PublishError> {
        if event.topic == "poison" {
            return Err(PublishError::permanent("record refused by the broker"));
        }
        self.0.publish(event).await
    }
}

fn event(topic: &str, event_type: &str, key: &str, max_attempts: u32) -> OutboxEvent {
    OutboxEvent::builder("order", uuid::Uuid::now_v7(), event_type, topic, key)
        .payload(serde_json::json!({"key": key}))
        .max_attempts(max_attempts)
        .build()
        .unwrap()
}

#[test]
fn relay_batch_records_completed_batch_size_durations_and_dead_letters() {
    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    let db = MemoryDb::new();
    let store = MemoryOutboxStore::new();
    let broker = MemoryBroker::new();
    // Three deliverable events (one per key), and one the broker refuses permanently on
    // its last (only) attempt.
    let good: Vec<OutboxEvent> = (0..3)
        .map(|i| event("orders", "order.placed", &format!("k{i}"), 3))
        .collect();
    let poison = event("poison", "order.poison", "p", 1);

    // The local recorder is thread-local: run the relay on this thread.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let result = metrics::with_local_recorder(&recorder, || {
        rt.block_on(async {
            let mut tx = db.begin().await.unwrap();
            store.insert_many(&mut tx, &good).await.unwrap();
            store
                .insert_many(&mut tx, std::slice::from_ref(&poison))
                .await
                .unwrap();
            db.commit(tx).await.unwrap();
            let relay = OutboxRelay::builder(store.clone(), RefusesPoison(broker.clone()))
                .job_name(JOB)
                .metrics(Arc::new(FacadeMetrics::new()))
                .publish_timeout(Duration::from_secs(5))
                .build()
                .unwrap();
            tokio::time::timeout(
                Duration::from_secs(10),
                relay.publish_batch(&db, &WorkerId::new("relay-1").unwrap(), &Shutdown::new()),
            )
            .await
            .expect("relay batch timed out")
            .unwrap()
        })
    });

    // What the batch did, from the pipeline's own report and the store.
    assert_eq!(result.claimed, 4, "{result:?}");
    assert_eq!(result.completed.len(), 3, "{result:?}");
    assert_eq!(result.dead_lettered, vec![poison.common.id], "{result:?}");
    assert_eq!(broker.published("orders").len(), 3);
    let mut conn = db.connection();
    let row = rt.block_on(store.get(&mut conn, poison.common.id)).unwrap();
    assert_eq!(row.common.status, EventStatus::Failed);
    assert_eq!(rt.block_on(store.dead_letters(&mut conn)).len(), 1);

    // What FacadeMetrics recorded for it.
    let s = snapshot(&snapshotter);
    let job = [("omnibox_job", JOB)];
    assert_eq!(counter(&s, "omnibox_events_claimed_total", &job), 4);
    assert_eq!(histogram(&s, "omnibox_batch_size", &job), vec![4.0]);
    assert_eq!(
        counter(
            &s,
            "omnibox_events_completed_total",
            &[
                ("omnibox_job", JOB),
                ("event_type", "order.placed"),
                ("route", "orders")
            ]
        ),
        3
    );
    assert_eq!(
        counter(
            &s,
            "omnibox_events_failed_total",
            &[
                ("omnibox_job", JOB),
                ("event_type", "order.poison"),
                ("route", "poison"),
                ("kind", "permanent"),
            ]
        ),
        1
    );
    assert_eq!(
        counter(
            &s,
            "omnibox_events_dead_lettered_total",
            &[("omnibox_job", JOB), ("event_type", "order.poison")]
        ),
        1
    );
    // One broker-call duration per publish, under the event's type.
    let placed = histogram(
        &s,
        "omnibox_handler_duration_seconds",
        &[("omnibox_job", JOB), ("event_type", "order.placed")],
    );
    assert_eq!(placed.len(), 3, "{placed:?}");
    assert!(
        placed.iter().all(|d| d.is_finite() && *d >= 0.0),
        "{placed:?}"
    );
    let refused = histogram(
        &s,
        "omnibox_handler_duration_seconds",
        &[("omnibox_job", JOB), ("event_type", "order.poison")],
    );
    assert_eq!(refused.len(), 1, "{refused:?}");
    assert_eq!(
        histogram(&s, "omnibox_batch_duration_seconds", &job).len(),
        1
    );
    // Nothing was given back or lost.
    for name in ["omnibox_leases_released_total", "omnibox_leases_lost_total"] {
        match s.get(&key(name, &job)) {
            None | Some(DebugValue::Counter(0)) => {}
            other => panic!("{name}: {other:?}"),
        }
    }
}

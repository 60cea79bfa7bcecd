//! The run loop, lease takeover and configuration checks.

use std::time::Duration;

use chrono::TimeDelta;

use super::support::*;
use crate::inbox::AckStrategy;
use crate::model::EventStatus;
use crate::shutdown::Shutdown;

async fn until(mut done: impl FnMut() -> bool) {
    while !done() {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test(start_paused = true)]
async fn run_handles_messages_until_shutdown_then_stops_the_consumer() {
    let h = Harness::new();
    for i in 0..3 {
        h.push(&format!("m-{i}"));
    }
    let mut runner = h
        .builder(AckStrategy::ExactlyOnceInbox, "runner-1")
        .handler(Scripted::new(Script::Complete))
        .build()
        .unwrap();
    let shutdown = Shutdown::new();
    let stopper = async {
        until(|| h.acked() == 3).await;
        shutdown.trigger();
    };
    let (result, ()) =
        tokio::time::timeout(WAIT, async { tokio::join!(runner.run(&shutdown), stopper) })
            .await
            .unwrap();
    result.unwrap();
    assert_eq!((h.acked(), h.nacked(), h.pending()), (3, 0, 0));
    for i in 0..3 {
        let id = format!("m-{i}");
        assert_eq!(status(&h.row(&id).await), Some(EventStatus::Completed));
        assert_eq!(h.effect(&id).await, 1);
    }
    // Stopped: receiving again fails until started.
    assert!(runner.stop().await.is_ok());
}

#[tokio::test(start_paused = true)]
async fn run_backs_off_after_storage_errors_and_recovers() {
    let h = Harness::new();
    h.push("m-1");
    h.store.fail_next_inserts(3);
    let mut runner = h
        .builder(AckStrategy::ExactlyOnceInbox, "runner-1")
        .handler(Scripted::new(Script::Complete))
        .build()
        .unwrap();
    let shutdown = Shutdown::new();
    let stopper = async {
        until(|| h.acked() == 1).await;
        shutdown.trigger();
    };
    let (result, ()) =
        tokio::time::timeout(WAIT, async { tokio::join!(runner.run(&shutdown), stopper) })
            .await
            .unwrap();
    result.unwrap();
    assert_eq!((h.acked(), h.nacked(), h.pending()), (1, 3, 0));
    assert_eq!(h.effect("m-1").await, 1);
}

#[tokio::test(start_paused = true)]
async fn shutdown_interrupts_an_idle_wait() {
    let h = Harness::new();
    let mut runner = h
        .builder(AckStrategy::ExactlyOnceInbox, "runner-1")
        .build()
        .unwrap();
    let shutdown = Shutdown::new();
    let trigger = async {
        tokio::time::sleep(Duration::from_secs(1)).await;
        shutdown.trigger();
    };
    let (result, ()) =
        tokio::time::timeout(WAIT, async { tokio::join!(runner.run(&shutdown), trigger) })
            .await
            .unwrap();
    result.unwrap();
}

#[tokio::test(start_paused = true)]
async fn expired_lease_elsewhere_is_taken_over_and_counted() {
    let h = Harness::new();
    h.seed_leased("m-1").await;
    h.clock.advance(TimeDelta::seconds(301));
    h.push("m-1");
    let mut runner = h
        .builder(AckStrategy::ExactlyOnceInbox, "runner-1")
        .handler(Scripted::new(Script::Complete))
        .build()
        .unwrap();
    let out = tokio::time::timeout(WAIT, runner.process_one())
        .await
        .unwrap()
        .unwrap();
    assert!(out.acked && out.handled);
    let row = h.row("m-1").await.unwrap();
    assert_eq!(row.common.status, EventStatus::Completed);
    assert_eq!(
        row.common.attempts_made, 1,
        "the takeover spends one attempt"
    );
}

#[tokio::test(start_paused = true)]
async fn handler_failure_nack_asks_for_the_retry_delay() {
    let h = Harness::new();
    h.push("m-1");
    let mut runner = h
        .builder(AckStrategy::ExactlyOnceInbox, "runner-1")
        .backoff(
            crate::backoff::Backoff::new(
                Duration::from_secs(60),
                Duration::from_secs(60),
                crate::backoff::Jitter::None,
            )
            .unwrap(),
        )
        .handler(Scripted::new(Script::Fail))
        .build()
        .unwrap();
    let out = tokio::time::timeout(WAIT, runner.process_one())
        .await
        .unwrap()
        .unwrap();
    assert!(!out.acked);
    let row = h.row("m-1").await.unwrap();
    assert_eq!(
        row.common.scheduled_at - row.common.created_at,
        TimeDelta::seconds(60)
    );
    // Handed back with a 60 s delay: not redelivered before it (virtual time).
    let early = tokio::time::timeout(Duration::from_secs(59), runner.process_one()).await;
    assert!(early.is_err(), "redelivered before its retry time");
    let again = tokio::time::timeout(Duration::from_secs(5), runner.process_one())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(again.message_id.as_deref(), Some("m-1"));
}

#[test]
fn builder_rejects_invalid_configuration() {
    let h = Harness::new();
    let blank = crate::inbox::InboxRunner::builder(
        h.broker.consumer([TOPIC], GROUP),
        h.db.clone(),
        h.store.clone(),
        "  ",
    )
    .build();
    assert!(blank.is_err());
    let zero_timeout = h
        .builder(AckStrategy::ExactlyOnceInbox, "r")
        .process_timeout(Duration::ZERO)
        .build();
    assert!(zero_timeout.is_err());
    let zero_lease = h
        .builder(AckStrategy::ExactlyOnceInbox, "r")
        .lease_ttl(Duration::ZERO)
        .build();
    assert!(zero_lease.is_err());
    let bad_limits = h
        .builder(AckStrategy::ExactlyOnceInbox, "r")
        .limits(attempts(0))
        .build();
    assert!(bad_limits.is_err());
    let ok = h.builder(AckStrategy::default(), "r").build().unwrap();
    assert_eq!(ok.consumer_group(), GROUP);
    assert_eq!(ok.ack_strategy(), AckStrategy::ExactlyOnceInbox);
}

/// A consumer whose acknowledgements fail (nacks still work).
struct AckFails(crate::memory::MemoryConsumer);

struct FailingAck(crate::memory::MemoryAck);

impl crate::consumer::AckHandle for FailingAck {
    async fn ack(self) -> Result<(), crate::ConsumeError> {
        Err(crate::ConsumeError::transient("broker went away"))
    }

    async fn nack(
        self,
        redelivery: crate::consumer::Redelivery,
    ) -> Result<(), crate::ConsumeError> {
        self.0.nack(redelivery).await
    }
}

impl crate::consumer::Consumer for AckFails {
    type Ack = FailingAck;

    async fn start(&mut self) -> Result<(), crate::ConsumeError> {
        self.0.start().await
    }

    async fn receive(
        &mut self,
    ) -> Result<crate::consumer::Delivery<FailingAck>, crate::ConsumeError> {
        let d = self.0.receive().await?;
        Ok(d.map_ack(FailingAck))
    }

    async fn stop(&mut self) -> Result<(), crate::ConsumeError> {
        self.0.stop().await
    }
}

#[derive(Default)]
struct Recorder(std::sync::Mutex<Vec<String>>);

impl crate::metrics::MetricsSink for Recorder {
    fn record(&self, metric: &crate::metrics::Metric<'_>) {
        let name = format!("{metric:?}");
        let name = name.split([' ', '{']).next().unwrap_or_default().to_owned();
        self.0.lock().unwrap().push(name);
    }
}

#[tokio::test(start_paused = true)]
async fn ack_failures_are_counted_and_returned() {
    let h = Harness::new();
    h.push("m-1");
    let metrics = std::sync::Arc::new(Recorder::default());
    let mut runner = crate::inbox::InboxRunner::builder(
        AckFails(h.broker.consumer([TOPIC], GROUP)),
        h.db.clone(),
        h.store.clone(),
        GROUP,
    )
    .metrics(metrics.clone())
    .handler(Scripted::new(Script::Complete))
    .build()
    .unwrap();
    let result = tokio::time::timeout(WAIT, runner.process_one())
        .await
        .unwrap();
    assert!(
        matches!(result, Err(crate::Error::Consume(_))),
        "{result:?}"
    );
    // The row completed and committed; only the acknowledgement failed.
    assert_eq!(status(&h.row("m-1").await), Some(EventStatus::Completed));
    let seen = metrics.0.lock().unwrap().clone();
    assert_eq!(
        seen,
        ["Consumed", "HandlerDuration", "Completed", "AckFailed"],
        "{seen:?}"
    );
}

#[tokio::test(start_paused = true)]
async fn metrics_follow_each_message() {
    let h = Harness::new();
    h.push("m-1");
    h.push("m-1");
    h.broker.push_raw(TOPIC, "", Default::default());
    let metrics = std::sync::Arc::new(Recorder::default());
    let mut runner = h
        .builder(AckStrategy::ExactlyOnceInbox, "runner-1")
        .metrics(metrics.clone())
        .handler(Scripted::new(Script::Complete))
        .build()
        .unwrap();
    for _ in 0..3 {
        tokio::time::timeout(WAIT, runner.process_one())
            .await
            .unwrap()
            .unwrap();
    }
    let seen = metrics.0.lock().unwrap().clone();
    assert_eq!(
        seen,
        [
            "Consumed",
            "HandlerDuration",
            "Completed",
            "Acked",
            "Consumed",
            "Duplicate",
            "Acked",
            "Consumed",
            "DeadLettered",
            "Acked",
        ],
        "{seen:?}"
    );
}

/// A backoff far beyond what a `TimeDelta` holds used to overflow `now + delay` and panic
/// inside the runner; the retry time saturates (and the store clamps it into the schedule
/// window) instead.
#[tokio::test(start_paused = true)]
async fn a_huge_backoff_saturates_instead_of_panicking() {
    let h = Harness::new();
    h.push("m-1");
    let huge =
        crate::backoff::Backoff::new(Duration::MAX, Duration::MAX, crate::backoff::Jitter::None)
            .unwrap();
    let mut runner = h
        .builder(
            AckStrategy::AtLeastOnce(crate::inbox::CommitPolicy::OnPersist),
            "runner-1",
        )
        .backoff(huge)
        .handler(Scripted::new(Script::Fail))
        .build()
        .unwrap();
    let out = tokio::time::timeout(WAIT, runner.process_one())
        .await
        .unwrap()
        .unwrap();
    assert!(out.acked && !out.handled);
    let row = h.row("m-1").await.expect("the failed message is stored");
    assert_eq!(row.common.status, EventStatus::Pending);
    assert_eq!(row.common.attempts_made, 1);
    assert!(
        row.common.scheduled_at > row.common.created_at,
        "retry deferred"
    );
}

#[tokio::test(start_paused = true)]
async fn the_sibling_query_is_skipped_when_the_dedup_key_is_unique() {
    use crate::store::InboxLookup;
    assert!(crate::memory::MemoryInboxStore::default().dedup_key_is_unique());
    for unique in [false, true] {
        let h = Harness::new();
        h.store.set_dedup_key_unique(unique);
        for i in 0..3 {
            h.push(&format!("m-{i}"));
        }
        h.push("m-0"); // a redelivery: a duplicate insert never asks either way
        let mut runner = h
            .builder(AckStrategy::ExactlyOnceInbox, "runner-1")
            .handler(Scripted::new(Script::Complete))
            .build()
            .unwrap();
        for _ in 0..4 {
            tokio::time::timeout(WAIT, runner.process_one())
                .await
                .unwrap()
                .unwrap();
        }
        let asked = h
            .store
            .sibling_calls
            .load(std::sync::atomic::Ordering::SeqCst);
        assert_eq!(asked, if unique { 0 } else { 3 }, "unique={unique}");
        for i in 0..3 {
            let id = format!("m-{i}");
            assert_eq!(status(&h.row(&id).await), Some(EventStatus::Completed));
            assert_eq!(h.effect(&id).await, 1, "unique={unique}");
        }
        assert_eq!(h.acked(), 4);
    }
}

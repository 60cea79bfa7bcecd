use std::sync::atomic::AtomicUsize;
use std::sync::{Arc, Mutex};

use chrono::TimeDelta;

use super::*;
use crate::clock::Clock;
use crate::error::PublishError;
use crate::pipeline::Verdict;
use crate::pipeline::steps::test_support::{Fixture, drive, failed, outbox, with_attempts};

/// Behaves by event type: `ok`, `reject`, `down`, `hang`, `panic`; every call takes 10 ms.
#[derive(Default)]
struct Scripted {
    calls: Mutex<Vec<String>>,
    in_flight: AtomicUsize,
    max_in_flight: AtomicUsize,
}

impl Scripted {
    fn calls(&self) -> Vec<String> {
        self.calls.lock().unwrap().clone()
    }
}

impl Publisher for Scripted {
    async fn publish(&self, event: &OutboxEvent) -> Result<(), PublishError> {
        self.calls.lock().unwrap().push(event.partition_key.clone());
        let now = self.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
        self.max_in_flight.fetch_max(now, Ordering::SeqCst);
        tokio::time::sleep(Duration::from_millis(10)).await;
        self.in_flight.fetch_sub(1, Ordering::SeqCst);
        match event.common.event_type.as_str() {
            "reject" => Err(PublishError::permanent("record too large")),
            "down" => Err(PublishError::transient("broker unreachable")),
            "hang" => {
                tokio::time::sleep(Duration::from_secs(3600)).await;
                Ok(())
            }
            "panic" => panic!("serializer bug"),
            _ => Ok(()),
        }
    }
}

async fn run(
    step: &PublishStep<Arc<Scripted>>,
    events: &[OutboxEvent],
    fx: &Fixture,
) -> Vec<Verdict> {
    let mut ctx = fx.ctx::<OutboxEvent, ()>(None);
    drive(&[step], events, &mut ctx).await
}

#[tokio::test(start_paused = true)]
async fn acknowledged_events_complete_and_report_broker_time() {
    let fx = Fixture::new();
    let p = Arc::new(Scripted::default());
    let step = PublishStep::new(p.clone());
    let v = run(&step, &[outbox("ok", "a"), outbox("ok", "b")], &fx).await;
    assert_eq!(v, vec![Verdict::Completed, Verdict::Completed]);
    assert_eq!(p.calls(), vec!["a", "b"]);
    assert_eq!(
        fx.metrics.durations(),
        vec![Duration::from_millis(10), Duration::from_millis(10)]
    );
}

#[tokio::test(start_paused = true)]
async fn broker_rejection_counts_and_backs_off() {
    let fx = Fixture::new();
    let now = fx.clock.now();
    let p = Arc::new(Scripted::default());
    let step = PublishStep::new(p.clone());
    let rejected = with_attempts(&outbox("reject", "a"), 1, 6);
    let v = run(&step, &[rejected, outbox("ok", "b")], &fx).await;
    let (err, kind, at) = failed(&v[0]);
    assert!(err.contains("record too large"), "{err}");
    assert_eq!(kind, FailureKind::Permanent);
    // One attempt made before: ceiling 20 s, equal jitter.
    let at = at.unwrap();
    assert!(at >= now + TimeDelta::seconds(10) && at <= now + TimeDelta::seconds(20));
    // A rejection is about that record only: the batch goes on.
    assert_eq!(v[1], Verdict::Completed);
}

#[tokio::test(start_paused = true)]
async fn broker_outage_spends_no_attempts_and_probes_once_per_batch() {
    let fx = Fixture::new();
    let now = fx.clock.now();
    let p = Arc::new(Scripted::default());
    let step = PublishStep::new(p.clone());
    let events = [
        outbox("ok", "a"),
        outbox("down", "b"),
        outbox("ok", "c"),
        outbox("ok", "d"),
    ];
    let v = run(&step, &events, &fx).await;
    assert_eq!(v[0], Verdict::Completed);
    assert_eq!(
        failed(&v[1]),
        (
            "Transient publish failure: broker unreachable",
            FailureKind::Transient,
            Some(now + TimeDelta::seconds(1))
        )
    );
    assert_eq!(v[2], Verdict::Released);
    assert_eq!(v[3], Verdict::Released);
    assert_eq!(p.calls(), vec!["a", "b"], "no call after the failed probe");
}

#[tokio::test(start_paused = true)]
async fn publish_timeout_is_transient() {
    let fx = Fixture::new();
    let p = Arc::new(Scripted::default());
    let step = PublishStep::new(p.clone()).timeout(Duration::from_secs(5));
    let v = run(&step, &[outbox("hang", "a"), outbox("ok", "b")], &fx).await;
    let (err, kind, _) = failed(&v[0]);
    assert_eq!(err, "Publish timed out after 5s");
    assert_eq!(kind, FailureKind::Transient);
    assert_eq!(v[1], Verdict::Released);
}

#[tokio::test(start_paused = true)]
async fn a_panicking_publisher_counts_and_the_batch_goes_on() {
    let fx = Fixture::new();
    let p = Arc::new(Scripted::default());
    let step = PublishStep::new(p.clone());
    let v = run(&step, &[outbox("panic", "a"), outbox("ok", "b")], &fx).await;
    let (err, kind, _) = failed(&v[0]);
    assert_eq!(err, "publisher panicked: serializer bug");
    assert_eq!(kind, FailureKind::Permanent);
    assert_eq!(v[1], Verdict::Completed);
}

#[tokio::test(start_paused = true)]
async fn concurrent_mode_keeps_at_most_n_in_flight_and_records_every_result() {
    let fx = Fixture::new();
    let p = Arc::new(Scripted::default());
    let step = PublishStep::new(p.clone()).concurrency(3);
    let mut events: Vec<_> = (0..8).map(|i| outbox("ok", &format!("k{i}"))).collect();
    events[5] = outbox("reject", "k5");
    let v = run(&step, &events, &fx).await;
    assert_eq!(p.max_in_flight.load(Ordering::SeqCst), 3);
    assert_eq!(p.calls().len(), 8);
    for (i, v) in v.iter().enumerate() {
        if i == 5 {
            assert_eq!(failed(v).1, FailureKind::Permanent);
        } else {
            assert_eq!(*v, Verdict::Completed, "event {i}");
        }
    }
    assert_eq!(fx.metrics.durations().len(), 8);
}

#[tokio::test(start_paused = true)]
async fn concurrent_mode_stops_starting_calls_after_an_outage() {
    let fx = Fixture::new();
    let p = Arc::new(Scripted::default());
    let step = PublishStep::new(p.clone()).concurrency(2);
    let events = [
        outbox("down", "a"),
        outbox("ok", "b"),
        outbox("ok", "c"),
        outbox("ok", "d"),
    ];
    let v = run(&step, &events, &fx).await;
    assert_eq!(failed(&v[0]).1, FailureKind::Transient);
    // `b` was already in flight with the probe and was acknowledged: it is recorded.
    assert_eq!(v[1], Verdict::Completed);
    assert_eq!(v[2], Verdict::Released);
    assert_eq!(v[3], Verdict::Released);
    assert_eq!(p.calls(), vec!["a", "b"]);
}

#[tokio::test(start_paused = true)]
async fn concurrent_mode_honours_the_batch_allowance() {
    struct Gate;
    impl Step<OutboxEvent, ()> for Gate {
        async fn on_batch_start(
            &self,
            _e: &[OutboxEvent],
            ctx: &mut BatchCtx<'_, OutboxEvent, ()>,
        ) {
            ctx.insert_extension(BatchAllowance::at_most(0));
        }
        async fn execute(
            &self,
            _e: &OutboxEvent,
            _c: &mut BatchCtx<'_, OutboxEvent, ()>,
        ) -> StepResult {
            StepResult::StopBatch
        }
    }
    let fx = Fixture::new();
    let p = Arc::new(Scripted::default());
    let step = PublishStep::new(p.clone()).concurrency(4);
    let mut ctx = fx.ctx::<OutboxEvent, ()>(None);
    let v = drive(
        &[&Gate, &step],
        &[outbox("ok", "a"), outbox("ok", "b")],
        &mut ctx,
    )
    .await;
    assert_eq!(v, vec![Verdict::Released, Verdict::Released]);
    assert!(p.calls().is_empty());
}

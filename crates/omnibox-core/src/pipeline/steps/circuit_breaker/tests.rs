use std::sync::atomic::{AtomicUsize, Ordering};

use super::*;
use crate::clock::Clock;
use crate::clock::ManualClock;
use crate::error::FailureKind;
use crate::model::OutboxEvent;
use crate::pipeline::steps::test_support::{Fixture, drive, outbox};

/// Completes `ok` events, fails `bad` ones (uncounted), counting calls.
#[derive(Default)]
struct Downstream(AtomicUsize);

impl Step<OutboxEvent, ()> for Downstream {
    async fn execute(
        &self,
        e: &OutboxEvent,
        ctx: &mut BatchCtx<'_, OutboxEvent, ()>,
    ) -> StepResult {
        self.0.fetch_add(1, Ordering::SeqCst);
        if e.common.event_type == "bad" {
            ctx.fail(e.id(), "down", FailureKind::Transient, None);
        } else {
            ctx.complete(e.id());
        }
        StepResult::Continue
    }
}

fn breaker(threshold: u32, clock: &ManualClock) -> CircuitBreakerStep {
    CircuitBreakerStep::new(threshold, Duration::from_secs(60))
        .unwrap()
        .with_clock(Arc::new(clock.clone()))
}

async fn batch(
    fx: &Fixture,
    cb: &CircuitBreakerStep,
    down: &Downstream,
    kinds: &[&str],
) -> Vec<Verdict> {
    let events: Vec<_> = kinds.iter().map(|k| outbox(k, "key")).collect();
    let mut ctx = fx.ctx::<OutboxEvent, ()>(None);
    drive(&[cb, down], &events, &mut ctx).await
}

#[test]
fn settings_are_validated() {
    assert!(CircuitBreakerStep::new(0, Duration::from_secs(1)).is_err());
    assert!(CircuitBreakerStep::new(1, Duration::ZERO).is_ok());
    assert_eq!(CircuitBreakerStep::default().state(), CircuitState::Closed);
}

#[tokio::test]
async fn bug1_breaker_stays_open_for_recovery_time() {
    let fx = Fixture::new();
    let clock = ManualClock::new(fx.clock.now());
    let cb = breaker(2, &clock);
    let down = Downstream::default();

    let v = batch(&fx, &cb, &down, &["bad", "bad", "ok", "ok"]).await;
    assert!(matches!(v[0], Verdict::Failed { .. }));
    assert!(matches!(v[1], Verdict::Failed { .. }));
    assert_eq!(v[2..], [Verdict::Released, Verdict::Released]);
    assert_eq!(down.0.load(Ordering::SeqCst), 2);
    // The event it stopped did not close it (the reference's bug 1).
    assert_eq!(cb.state(), CircuitState::Open);

    // Still open 59 s later, across batches: nothing reaches the downstream.
    for step in [20, 20, 19] {
        clock.advance(TimeDelta::seconds(step));
        let v = batch(&fx, &cb, &down, &["ok", "ok"]).await;
        assert_eq!(v, vec![Verdict::Released, Verdict::Released]);
        assert_eq!(cb.state(), CircuitState::Open);
    }
    assert_eq!(down.0.load(Ordering::SeqCst), 2);

    // After the recovery time one probe passes; its success closes the breaker.
    clock.advance(TimeDelta::seconds(1));
    let v = batch(&fx, &cb, &down, &["ok", "ok"]).await;
    assert_eq!(v, vec![Verdict::Completed, Verdict::Completed]);
    assert_eq!(cb.state(), CircuitState::Closed);
    assert_eq!(
        fx.metrics.circuit(),
        vec![
            CircuitState::Open,
            CircuitState::HalfOpen,
            CircuitState::Closed
        ]
    );
}

#[tokio::test]
async fn a_failed_probe_reopens_with_a_fresh_timer() {
    let fx = Fixture::new();
    let clock = ManualClock::new(fx.clock.now());
    let cb = breaker(1, &clock);
    let down = Downstream::default();
    batch(&fx, &cb, &down, &["bad"]).await;
    assert_eq!(cb.state(), CircuitState::Open);

    clock.advance(TimeDelta::seconds(60));
    let v = batch(&fx, &cb, &down, &["bad", "ok"]).await;
    assert!(matches!(v[0], Verdict::Failed { .. }), "the probe ran");
    assert_eq!(v[1], Verdict::Released, "only one probe");
    assert_eq!(cb.state(), CircuitState::Open);

    clock.advance(TimeDelta::seconds(59));
    let v = batch(&fx, &cb, &down, &["ok"]).await;
    assert_eq!(
        v,
        vec![Verdict::Released],
        "the timer restarted at the failed probe"
    );
    clock.advance(TimeDelta::seconds(1));
    let v = batch(&fx, &cb, &down, &["ok"]).await;
    assert_eq!(v, vec![Verdict::Completed]);
    assert_eq!(cb.state(), CircuitState::Closed);
}

#[tokio::test]
async fn only_consecutive_failures_open_it() {
    let fx = Fixture::new();
    let clock = ManualClock::new(fx.clock.now());
    let cb = breaker(2, &clock);
    let down = Downstream::default();
    let v = batch(&fx, &cb, &down, &["bad", "ok", "bad", "ok", "bad"]).await;
    assert!(v.iter().all(|v| *v != Verdict::Released));
    assert_eq!(cb.state(), CircuitState::Closed);
    assert_eq!(cb.consecutive_failures(), 1);
}

#[tokio::test]
async fn bug2_stopped_events_are_released() {
    let fx = Fixture::new();
    let clock = ManualClock::new(fx.clock.now());
    let cb = breaker(1, &clock);
    let down = Downstream::default();
    let v = batch(&fx, &cb, &down, &["bad", "ok", "ok"]).await;
    // Every event has a defined outcome; the stopped ones are released (no attempt spent).
    assert!(matches!(v[0], Verdict::Failed { .. }));
    assert_eq!(v[1..], [Verdict::Released, Verdict::Released]);
}

#[tokio::test]
async fn clones_share_state_and_the_allowance_reflects_it() {
    let fx = Fixture::new();
    let clock = ManualClock::new(fx.clock.now());
    let cb = breaker(1, &clock);
    let other = cb.clone();
    let down = Downstream::default();
    batch(&fx, &cb, &down, &["bad"]).await;
    assert_eq!(other.state(), CircuitState::Open);

    let mut ctx = fx.ctx::<OutboxEvent, ()>(None);
    Step::<OutboxEvent, ()>::on_batch_start(&other, &[], &mut ctx).await;
    assert_eq!(
        ctx.extension::<BatchAllowance>(),
        Some(&BatchAllowance::at_most(0))
    );
    clock.advance(TimeDelta::seconds(60));
    Step::<OutboxEvent, ()>::on_batch_start(&other, &[], &mut ctx).await;
    assert_eq!(
        ctx.extension::<BatchAllowance>(),
        Some(&BatchAllowance::at_most(0)),
        "never loosened within a batch"
    );
    let mut ctx = fx.ctx::<OutboxEvent, ()>(None);
    Step::<OutboxEvent, ()>::on_batch_start(&other, &[], &mut ctx).await;
    assert_eq!(
        ctx.extension::<BatchAllowance>(),
        Some(&BatchAllowance::at_most(1))
    );
}

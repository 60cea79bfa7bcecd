//! [`PublishStep`]: hands outbox events to the broker.

use std::collections::HashMap;
use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use futures_util::{FutureExt, StreamExt};
use uuid::Uuid;

use super::{
    BatchAllowance, DEFAULT_PUBLISH_TIMEOUT, backoff_at, panic_message, secs, transient_at,
};
use crate::backoff::Backoff;
use crate::error::FailureKind;
use crate::metrics::Metric;
use crate::model::{Event, OutboxEvent};
use crate::pipeline::{BatchCtx, LeaseWatch, Step, StepResult};
use crate::publisher::{BoxFuture, Publisher};
use crate::shutdown::Shutdown;

/// What one broker call gave.
#[derive(Debug, Clone)]
enum Published {
    /// The broker acknowledged.
    Acked,
    /// The broker refused or failed.
    Failed { kind: FailureKind, error: String },
    /// Not sent: the broker was found down earlier in this batch, shutdown was requested,
    /// or the lease could no longer be proven.
    NotAttempted,
}

/// Results of the concurrent mode, computed in `on_batch_start` (per batch, so concurrent
/// batches sharing the step never mix).
#[derive(Debug, Default)]
struct ConcurrentResults(HashMap<Uuid, Published>);

/// Publishes each outbox event to a [`Publisher`] and waits for the broker's
/// acknowledgement, under a timeout (default 30 s).
///
/// | broker | verdict |
/// |---|---|
/// | acknowledged | completed |
/// | permanent [`PublishError`](crate::PublishError) (record rejected) | failed, counted, backoff |
/// | transient error, or the timeout | failed, **uncounted**, retry at now + 1 s; every *later* event of the batch is released without calling the broker |
/// | publisher panicked | failed, counted, backoff |
///
/// So while the broker is down, each batch probes it once and spends no attempt; the
/// released rows keep their schedule. Delivery is at least once: the broker call happens
/// before the result is written.
///
/// **Leases.** In lease mode, before each broker call the step asks the batch's
/// [`LeaseWatch`] (through [`BatchCtx::lease_held`]) whether the event's lease can still be
/// proven by the local monotonic clock; if not (the process was frozen past it, or a
/// refresh found it taken over) the event is released unsent. A new owner may be
/// publishing it and its successors, so sending it now could put it behind them. What
/// remains is a stall *inside* the call, after the check: a message already handed to the
/// client can still reach the broker late.
///
/// **Concurrency.** With [`concurrency(n)`](Self::concurrency) `n > 1`, the whole batch is
/// published in `on_batch_start` with at most `n` calls in flight and the results are
/// recorded at once (so a batch stopped later still records what the broker accepted); a
/// transient failure stops *starting* new calls (up to `n` probes). Per-key order still
/// holds because a claimed batch has at most one event per `(topic, partition_key)`. The
/// [`BatchAllowance`] left by an earlier step's `on_batch_start` (an open
/// [`CircuitBreakerStep`](super::CircuitBreakerStep)) caps what is sent. In this mode other
/// steps placed before this one run *after* the broker call and cannot veto it.
///
/// Reports [`Metric::HandlerDuration`] measured around the broker call.
#[derive(Debug, Clone)]
pub struct PublishStep<P> {
    publisher: P,
    timeout: Duration,
    backoff: Backoff,
    concurrency: usize,
}

impl<P> PublishStep<P> {
    /// A sequential step with a 30 s timeout and the default backoff.
    pub fn new(publisher: P) -> Self {
        Self {
            publisher,
            timeout: DEFAULT_PUBLISH_TIMEOUT,
            backoff: Backoff::default(),
            concurrency: 1,
        }
    }

    /// How long a publish may take until the broker acknowledged.
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// Backoff for counted failures.
    pub fn backoff(mut self, backoff: Backoff) -> Self {
        self.backoff = backoff;
        self
    }

    /// Publish up to `n` events of a batch at once (`0` is treated as `1`).
    pub fn concurrency(mut self, n: usize) -> Self {
        self.concurrency = n.max(1);
        self
    }

    /// The publisher.
    pub fn publisher(&self) -> &P {
        &self.publisher
    }
}

/// Log an event left unpublished because its lease could not be proven.
fn lease_unproven(event: &OutboxEvent) {
    tracing::warn!(event_id = %event.id(), topic = %event.topic,
        "lease no longer provable (expired by the local clock or lost): not publishing; released");
}

impl<P: Publisher> PublishStep<P> {
    async fn publish_one(&self, event: &OutboxEvent) -> (Published, Duration) {
        let started = tokio::time::Instant::now();
        let ran = tokio::time::timeout(
            self.timeout,
            AssertUnwindSafe(self.publisher.publish(event)).catch_unwind(),
        )
        .await;
        let outcome = match ran {
            Ok(Ok(Ok(()))) => Published::Acked,
            Ok(Ok(Err(e))) => Published::Failed {
                kind: e.kind,
                error: e.to_string(),
            },
            Ok(Err(panic)) => Published::Failed {
                kind: FailureKind::Permanent,
                error: format!("publisher panicked: {}", panic_message(panic.as_ref())),
            },
            Err(_elapsed) => Published::Failed {
                kind: FailureKind::Transient,
                error: format!("Publish timed out after {}", secs(self.timeout)),
            },
        };
        (outcome, started.elapsed())
    }

    /// One call of the concurrent mode: skipped once the broker was found down or shutdown
    /// was requested.
    async fn guarded_publish(
        &self,
        event: &OutboxEvent,
        broker_down: &AtomicBool,
        shutdown: &Shutdown,
        leases: Option<&LeaseWatch>,
    ) -> (Published, Option<Duration>) {
        if broker_down.load(Ordering::SeqCst) || shutdown.is_requested() {
            return (Published::NotAttempted, None);
        }
        if leases.is_some_and(|w| !w.held(event.id())) {
            lease_unproven(event);
            return (Published::NotAttempted, None);
        }
        let (outcome, took) = self.publish_one(event).await;
        if matches!(
            outcome,
            Published::Failed {
                kind: FailureKind::Transient,
                ..
            }
        ) {
            broker_down.store(true, Ordering::SeqCst);
        }
        (outcome, Some(took))
    }

    /// Record `outcome` as the event's verdict; returns `true` for a transient failure.
    fn apply<C>(
        &self,
        event: &OutboxEvent,
        ctx: &mut BatchCtx<'_, OutboxEvent, C>,
        outcome: Published,
    ) -> bool {
        let id = event.id();
        let now = ctx.now();
        match outcome {
            Published::Acked => {
                ctx.complete(id);
                false
            }
            Published::Failed {
                kind: FailureKind::Permanent,
                error,
            } => {
                tracing::warn!(job = %ctx.job(), event_id = %id, topic = %event.topic, %error, "broker refused the event");
                let at = backoff_at(now, &self.backoff, event.common.attempts_made);
                ctx.fail(id, error, FailureKind::Permanent, Some(at));
                false
            }
            Published::Failed {
                kind: FailureKind::Transient,
                error,
            } => {
                tracing::warn!(job = %ctx.job(), event_id = %id, topic = %event.topic, %error, "broker unavailable; deferring the rest of the batch");
                ctx.fail(id, error, FailureKind::Transient, Some(transient_at(now)));
                true
            }
            Published::NotAttempted => {
                ctx.release(id);
                false
            }
        }
    }

    fn record_duration<C>(
        ctx: &BatchCtx<'_, OutboxEvent, C>,
        event: &OutboxEvent,
        duration: Duration,
    ) {
        ctx.metrics().record(&Metric::HandlerDuration {
            job: ctx.job(),
            event_type: &event.common.event_type,
            duration,
        });
    }
}

impl<P, C> Step<OutboxEvent, C> for PublishStep<P>
where
    P: Publisher,
    C: Send,
{
    async fn on_batch_start(&self, events: &[OutboxEvent], ctx: &mut BatchCtx<'_, OutboxEvent, C>) {
        if self.concurrency <= 1 {
            return;
        }
        let allowed = ctx
            .extension::<BatchAllowance>()
            .and_then(|a| a.max_events)
            .unwrap_or(events.len())
            .min(events.len());
        let candidates = events.get(..allowed).unwrap_or(events);
        let broker_down = AtomicBool::new(false);
        let shutdown = ctx.shutdown().clone();
        let leases = ctx.lease_watch().cloned();
        // Boxed up front (nothing runs until polled): `buffered` starts them in order, at most
        // `concurrency` at a time, and each checks the outage flag when it starts.
        let calls: Vec<BoxFuture<'_, (Published, Option<Duration>)>> = candidates
            .iter()
            .map(|event| {
                Box::pin(self.guarded_publish(event, &broker_down, &shutdown, leases.as_ref()))
                    as BoxFuture<'_, (Published, Option<Duration>)>
            })
            .collect();
        let results: Vec<(Published, Option<Duration>)> = futures_util::stream::iter(calls)
            .buffered(self.concurrency)
            .collect()
            .await;
        let mut recorded = ConcurrentResults::default();
        for (event, (outcome, took)) in candidates.iter().zip(results) {
            if let Some(took) = took {
                Self::record_duration(ctx, event, took);
            }
            if !matches!(outcome, Published::NotAttempted) {
                self.apply(event, ctx, outcome.clone());
            }
            recorded.0.insert(event.id(), outcome);
        }
        ctx.insert_extension(recorded);
    }

    async fn execute(
        &self,
        event: &OutboxEvent,
        ctx: &mut BatchCtx<'_, OutboxEvent, C>,
    ) -> StepResult {
        if self.concurrency > 1 {
            let done = ctx
                .extension::<ConcurrentResults>()
                .and_then(|r| r.0.get(&event.id()).cloned());
            match done {
                Some(Published::NotAttempted) => {
                    ctx.release(event.id());
                    return StepResult::SkipEvent;
                }
                // Verdict recorded in `on_batch_start`.
                Some(_) => return StepResult::Continue,
                // Not sent ahead (beyond the allowance): publish it now, sequentially.
                None => {}
            }
        }
        if !ctx.lease_held(event.id()) {
            lease_unproven(event);
            ctx.release(event.id());
            return StepResult::SkipEvent;
        }
        let (outcome, took) = self.publish_one(event).await;
        Self::record_duration(ctx, event, took);
        if self.apply(event, ctx, outcome) {
            // One probe per batch while the broker is down: the processor releases every
            // later event without a verdict (no attempt spent, schedule unchanged).
            return StepResult::StopBatch;
        }
        StepResult::Continue
    }

    async fn on_batch_end(&self, _events: &[OutboxEvent], ctx: &mut BatchCtx<'_, OutboxEvent, C>) {
        ctx.remove_extension::<ConcurrentResults>();
    }
}

#[cfg(test)]
mod tests;

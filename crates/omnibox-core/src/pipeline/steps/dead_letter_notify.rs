//! [`DeadLetterNotifyStep`]: extra side effects (alerts, a DLQ topic) when an event spends its
//! last attempt. The dead-letter row itself is written by the store, in the transaction that
//! records the last failure; this step only notifies.

use std::future::Future;
use std::time::Duration;

use crate::error::{BoxError, FailureKind};
use crate::model::Event;
use crate::pipeline::{BatchCtx, Step, StepResult, Verdict};
use crate::publisher::BoxFuture;

/// Told about events that just failed for the last time (publish to a DLQ topic, page
/// someone). Errors are logged and never fail the batch.
///
/// ```
/// use omnibox_core::pipeline::steps::DeadLetterHandler;
/// use omnibox_core::{BoxError, OutboxEvent};
///
/// struct Alert;
/// impl DeadLetterHandler<OutboxEvent> for Alert {
///     async fn dead_letter(&self, event: &OutboxEvent, error: &str) -> Result<(), BoxError> {
///         eprintln!("giving up on {}: {error}", event.common.id);
///         Ok(())
///     }
/// }
/// ```
pub trait DeadLetterHandler<E>: Send + Sync {
    /// React to `event` having failed terminally with `error`.
    fn dead_letter(
        &self,
        event: &E,
        error: &str,
    ) -> impl Future<Output = Result<(), BoxError>> + Send;
}

/// Object-safe twin of [`DeadLetterHandler`].
pub trait DynDeadLetterHandler<E>: Send + Sync {
    /// See [`DeadLetterHandler::dead_letter`].
    fn dead_letter_boxed<'a>(
        &'a self,
        event: &'a E,
        error: &'a str,
    ) -> BoxFuture<'a, Result<(), BoxError>>;
}

impl<E, D: DeadLetterHandler<E>> DynDeadLetterHandler<E> for D {
    fn dead_letter_boxed<'a>(
        &'a self,
        event: &'a E,
        error: &'a str,
    ) -> BoxFuture<'a, Result<(), BoxError>> {
        Box::pin(self.dead_letter(event, error))
    }
}

impl<E: Sync> DeadLetterHandler<E> for Box<dyn DynDeadLetterHandler<E>> {
    async fn dead_letter(&self, event: &E, error: &str) -> Result<(), BoxError> {
        self.as_ref().dead_letter_boxed(event, error).await
    }
}

impl<E: Sync> DeadLetterHandler<E> for std::sync::Arc<dyn DynDeadLetterHandler<E>> {
    async fn dead_letter(&self, event: &E, error: &str) -> Result<(), BoxError> {
        self.as_ref().dead_letter_boxed(event, error).await
    }
}

impl<E: Sync, D: DeadLetterHandler<E>> DeadLetterHandler<E> for &D {
    fn dead_letter(
        &self,
        event: &E,
        error: &str,
    ) -> impl Future<Output = Result<(), BoxError>> + Send {
        (**self).dead_letter(event, error)
    }
}

/// Calls a [`DeadLetterHandler`] when an event's verdict is a counted failure that spends
/// its last attempt (`attempts_made + 1 >= max_attempts`). Uncounted failures never
/// dead-letter.
///
/// This step is only for *extra* side effects: the store's own dead-letter row is written by
/// `settle` in the same transaction as the `failed` status, whether or not this step is
/// present. The handler runs at the end of the event, before the batch is settled: if
/// settling then fails (or the lease was lost meanwhile), the event is retried although the
/// handler already ran, so the side effect is at-least-once. Calls are bounded by a timeout
/// (default 30 s).
#[derive(Debug, Clone)]
pub struct DeadLetterNotifyStep<D> {
    handler: D,
    timeout: Duration,
}

impl<D> DeadLetterNotifyStep<D> {
    /// A step calling `handler`.
    pub fn new(handler: D) -> Self {
        Self {
            handler,
            timeout: Duration::from_secs(30),
        }
    }

    /// How long the handler may take.
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }
}

impl<E, C, D> Step<E, C> for DeadLetterNotifyStep<D>
where
    E: Event,
    C: Send,
    D: DeadLetterHandler<E>,
{
    async fn execute(&self, _event: &E, _ctx: &mut BatchCtx<'_, E, C>) -> StepResult {
        StepResult::Continue
    }

    async fn on_event_end(&self, event: &E, ctx: &mut BatchCtx<'_, E, C>) {
        let Some(Verdict::Failed {
            error,
            kind: FailureKind::Permanent,
            ..
        }) = ctx.verdict(event.id())
        else {
            return;
        };
        let c = event.common();
        if c.attempts_made.saturating_add(1) < c.max_attempts {
            return;
        }
        let error = error.clone();
        match tokio::time::timeout(self.timeout, self.handler.dead_letter(event, &error)).await {
            Ok(Ok(())) => {
                tracing::info!(job = %ctx.job(), event_id = %c.id, "dead-letter handler notified");
            }
            Ok(Err(e)) => {
                tracing::error!(job = %ctx.job(), event_id = %c.id, error = %e, "dead-letter handler failed");
            }
            Err(_) => {
                tracing::error!(job = %ctx.job(), event_id = %c.id, "dead-letter handler timed out");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use super::*;
    use crate::model::OutboxEvent;
    use crate::pipeline::steps::test_support::{Fixture, drive, outbox, with_attempts};

    #[derive(Default)]
    struct Collect(Mutex<Vec<(String, String)>>, bool);
    impl DeadLetterHandler<OutboxEvent> for Collect {
        async fn dead_letter(&self, e: &OutboxEvent, error: &str) -> Result<(), BoxError> {
            self.0
                .lock()
                .unwrap()
                .push((e.partition_key.clone(), error.to_owned()));
            if self.1 {
                return Err("dlq topic missing".into());
            }
            Ok(())
        }
    }

    struct FailAll(FailureKind);
    impl Step<OutboxEvent, ()> for FailAll {
        async fn execute(
            &self,
            e: &OutboxEvent,
            ctx: &mut BatchCtx<'_, OutboxEvent, ()>,
        ) -> StepResult {
            ctx.fail(e.id(), "rejected", self.0, None);
            StepResult::Continue
        }
    }

    #[tokio::test]
    async fn only_a_counted_failure_on_the_last_attempt_dead_letters() {
        let fx = Fixture::new();
        let sink = Collect::default();
        let step = DeadLetterNotifyStep::new(&sink);
        let events = [
            with_attempts(&outbox("t", "last"), 5, 6),
            with_attempts(&outbox("t", "early"), 4, 6),
            with_attempts(&outbox("t", "single"), 0, 1),
        ];
        let mut ctx = fx.ctx::<OutboxEvent, ()>(None);
        drive(
            &[&FailAll(FailureKind::Permanent), &step],
            &events,
            &mut ctx,
        )
        .await;
        assert_eq!(
            *sink.0.lock().unwrap(),
            vec![
                ("last".to_string(), "rejected".to_string()),
                ("single".to_string(), "rejected".to_string())
            ]
        );

        let sink = Collect::default();
        let step = DeadLetterNotifyStep::new(&sink);
        let mut ctx = fx.ctx::<OutboxEvent, ()>(None);
        drive(
            &[&FailAll(FailureKind::Transient), &step],
            &events,
            &mut ctx,
        )
        .await;
        assert!(
            sink.0.lock().unwrap().is_empty(),
            "uncounted failures never dead-letter"
        );
    }

    #[tokio::test]
    async fn handler_errors_do_not_change_the_verdict() {
        let fx = Fixture::new();
        let sink = Collect(Mutex::default(), true);
        let step = DeadLetterNotifyStep::new(&sink);
        let events = [with_attempts(&outbox("t", "last"), 5, 6)];
        let mut ctx = fx.ctx::<OutboxEvent, ()>(None);
        let v = drive(
            &[&FailAll(FailureKind::Permanent), &step],
            &events,
            &mut ctx,
        )
        .await;
        assert!(matches!(
            v[0],
            Verdict::Failed {
                kind: FailureKind::Permanent,
                ..
            }
        ));
        assert_eq!(sink.0.lock().unwrap().len(), 1);
    }
}

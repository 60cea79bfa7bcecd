//! [`HandlerStep`]: runs user code for each event.

use std::panic::AssertUnwindSafe;
use std::time::Duration;

use futures_util::FutureExt;

use super::{DEFAULT_HANDLER_TIMEOUT, backoff_at, panic_message, secs, transient_at};
use crate::backoff::Backoff;
use crate::error::FailureKind;
use crate::handler::{Handler, HandlerOutcome};
use crate::metrics::Metric;
use crate::model::Event;
use crate::pipeline::{BatchCtx, Step, StepResult};

/// The error recorded when a handler step runs in a batch without a connection.
pub(crate) const NO_CONNECTION: &str = "the handler needs the batch's connection: run this processor with \
     `process_batch` inside a transaction, not with `process_leased`";

/// Runs a [`Handler`] for each event with the batch's connection (so the handler's writes
/// commit with the event's completion), under a timeout, and turns what happened into the
/// event's verdict:
///
/// | handler | verdict |
/// |---|---|
/// | `Ok(Completed)` | completed |
/// | `Ok(Skipped { .. })` | completed as skipped (never handed out again) |
/// | `Ok(Retry { counted, retry_at, .. })` | failed; counted or not; at `retry_at`, else backoff (counted) or now + 1 s (uncounted) |
/// | `Err(e)`, `e.kind` transient | failed, uncounted, retry at now + 1 s |
/// | `Err(e)`, `e.kind` permanent | failed, counted, backoff |
/// | ran longer than the timeout | failed, counted, backoff: `"Handler execution timed out after 30s"` |
/// | panicked | failed, counted, backoff: `"handler panicked: ..."`; the batch goes on |
/// | no connection in the batch | failed, counted: the processor must run with `process_batch` |
///
/// The backoff ([`Backoff::default`]: base 10 s, cap 1 h, equal jitter) is computed from the
/// attempts made *before* this failure. The step reports
/// [`Metric::HandlerDuration`] measured around the handler call only. It always returns
/// [`StepResult::Continue`].
///
/// A handler that panicked may leave its connection mid-statement; the processor's
/// settlement then fails and the caller rolls back, which is safe (leases expire).
///
/// ```
/// use omnibox_core::pipeline::steps::HandlerStep;
/// use omnibox_core::{handler_fn, HandlerOutcome, InboxEvent};
///
/// let step = HandlerStep::new(handler_fn(|_e: &InboxEvent, _c: &mut ()| {
///     Box::pin(async { Ok(HandlerOutcome::Completed) })
/// }))
/// .timeout(std::time::Duration::from_secs(5));
/// # let _ = step;
/// ```
#[derive(Debug, Clone)]
pub struct HandlerStep<H> {
    handler: H,
    timeout: Duration,
    backoff: Backoff,
}

impl<H> HandlerStep<H> {
    /// A step with a 30 s timeout and the default backoff.
    pub fn new(handler: H) -> Self {
        Self {
            handler,
            timeout: DEFAULT_HANDLER_TIMEOUT,
            backoff: Backoff::default(),
        }
    }

    /// How long the handler may run.
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// Backoff for counted failures without an explicit retry time.
    pub fn backoff(mut self, backoff: Backoff) -> Self {
        self.backoff = backoff;
        self
    }

    /// The handler.
    pub fn handler(&self) -> &H {
        &self.handler
    }
}

impl<E, C, H> Step<E, C> for HandlerStep<H>
where
    E: Event,
    C: Send,
    H: Handler<E, C>,
{
    async fn execute(&self, event: &E, ctx: &mut BatchCtx<'_, E, C>) -> StepResult {
        let id = event.id();
        let attempts = event.common().attempts_made;
        let Some(conn) = ctx.conn() else {
            let at = backoff_at(ctx.now(), &self.backoff, attempts);
            tracing::error!(job = %ctx.job(), event_id = %id, "{NO_CONNECTION}");
            ctx.fail(id, NO_CONNECTION, FailureKind::Permanent, Some(at));
            return StepResult::Continue;
        };
        let started = tokio::time::Instant::now();
        let ran = tokio::time::timeout(
            self.timeout,
            AssertUnwindSafe(self.handler.handle(event, conn)).catch_unwind(),
        )
        .await;
        let duration = started.elapsed();
        ctx.metrics().record(&Metric::HandlerDuration {
            job: ctx.job(),
            event_type: &event.common().event_type,
            duration,
        });
        let now = ctx.now();
        match ran {
            Ok(Ok(Ok(HandlerOutcome::Completed))) => ctx.complete(id),
            Ok(Ok(Ok(HandlerOutcome::Skipped { reason }))) => ctx.skip(id, reason),
            Ok(Ok(Ok(HandlerOutcome::Retry {
                error,
                counted,
                retry_at,
            }))) => {
                let (kind, default_at) = if counted {
                    (
                        FailureKind::Permanent,
                        backoff_at(now, &self.backoff, attempts),
                    )
                } else {
                    (FailureKind::Transient, transient_at(now))
                };
                ctx.fail(id, error, kind, Some(retry_at.unwrap_or(default_at)));
            }
            Ok(Ok(Err(e))) => {
                tracing::warn!(job = %ctx.job(), event_id = %id, kind = e.kind.as_str(), error = %e.message, "handler failed");
                let at = match e.kind {
                    FailureKind::Transient => transient_at(now),
                    FailureKind::Permanent => backoff_at(now, &self.backoff, attempts),
                };
                ctx.fail(id, e.message, e.kind, Some(at));
            }
            Ok(Err(panic)) => {
                let msg = format!("handler panicked: {}", panic_message(panic.as_ref()));
                tracing::error!(job = %ctx.job(), event_id = %id, "{msg}");
                let at = backoff_at(now, &self.backoff, attempts);
                ctx.fail(id, msg, FailureKind::Permanent, Some(at));
            }
            Err(_elapsed) => {
                let msg = format!("Handler execution timed out after {}", secs(self.timeout));
                tracing::warn!(job = %ctx.job(), event_id = %id, "{msg}");
                let at = backoff_at(now, &self.backoff, attempts);
                ctx.fail(id, msg, FailureKind::Permanent, Some(at));
            }
        }
        StepResult::Continue
    }
}

#[cfg(test)]
mod tests;

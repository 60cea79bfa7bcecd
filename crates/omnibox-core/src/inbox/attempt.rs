//! One handler call: bounded by the process timeout, panics caught, the answer classified.

use std::panic::AssertUnwindSafe;
use std::time::Duration;

use chrono::{DateTime, Utc};
use futures_util::FutureExt;

use crate::error::FailureKind;
use crate::handler::{Handler, HandlerOutcome};
use crate::model::InboxEvent;
use crate::pipeline::steps::panic_message;

/// How a handler call ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Attempt {
    /// The row completes (handled, or skipped when `skipped`).
    Done {
        /// The handler skipped the event.
        skipped: bool,
    },
    /// The transaction rolls back and the failure is recorded on the row.
    Failed(Failure),
}

/// A failure to record on the row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Failure {
    /// Stored as `last_error`.
    pub(crate) error: String,
    /// Spend an attempt.
    pub(crate) counted: bool,
    /// The handler's own retry time, if it gave one.
    pub(crate) retry_at: Option<DateTime<Utc>>,
}

impl Failure {
    pub(crate) fn kind(&self) -> FailureKind {
        if self.counted {
            FailureKind::Permanent
        } else {
            FailureKind::Transient
        }
    }
}

/// Run `handler` on `event` with `conn`, under `timeout`. A panic is a counted failure, a
/// timeout one of `timeout_kind`; a transient [`crate::HandlerError`] is an uncounted one.
pub(crate) async fn run_handler<H, C>(
    handler: &H,
    event: &InboxEvent,
    conn: &mut C,
    timeout: Duration,
    timeout_kind: FailureKind,
) -> Attempt
where
    H: Handler<InboxEvent, C>,
    C: Send,
{
    let call = AssertUnwindSafe(handler.handle(event, conn)).catch_unwind();
    match tokio::time::timeout(timeout, call).await {
        Err(_elapsed) => Attempt::Failed(Failure {
            error: format!("handler timed out after {timeout:?}"),
            counted: timeout_kind.counts_attempt(),
            retry_at: None,
        }),
        Ok(Err(panic)) => Attempt::Failed(Failure {
            error: format!("handler panicked: {}", panic_message(panic.as_ref())),
            counted: true,
            retry_at: None,
        }),
        Ok(Ok(Err(e))) => Attempt::Failed(Failure {
            error: e.message,
            counted: e.kind.counts_attempt(),
            retry_at: None,
        }),
        Ok(Ok(Ok(outcome))) => match outcome {
            HandlerOutcome::Completed => Attempt::Done { skipped: false },
            HandlerOutcome::Skipped { reason } => {
                tracing::debug!(event_id = %event.common.id, %reason, "handler skipped the message");
                Attempt::Done { skipped: true }
            }
            HandlerOutcome::Retry {
                error,
                counted,
                retry_at,
            } => Attempt::Failed(Failure {
                error,
                counted,
                retry_at,
            }),
        },
    }
}

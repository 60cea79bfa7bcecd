//! Built-in steps.
//!
//! | step | for | what it does |
//! |---|---|---|
//! | [`HandlerStep`] | inbox (any event) | runs a [`Handler`](crate::Handler) with the batch's connection, under a timeout; maps its outcome to a verdict; a panic becomes a counted failure; with [`HandlerStep::savepoints`] each handler runs in a savepoint, rolled back on any failure |
//! | [`PublishStep`] | outbox | publishes to a [`Publisher`](crate::Publisher) under a timeout; a broker outage defers the rest of the batch without spending attempts (one probe per batch) |
//! | [`SiblingDedupStep`] | inbox | completes an event as a duplicate when a sibling with the same `(message_id, consumer_group)` already completed |
//! | [`CircuitBreakerStep`] | any | stops batches while the downstream keeps failing; place it **before** the handler/publish step |
//! | [`MetricsStep`] | any | reports each event's verdict (completed / failed / skipped) |
//! | [`DeadLetterNotifyStep`] | any | extra side effect (DLQ topic, alert) when an event spends its last attempt |
//!
//! Every step leaves each event it decides in a defined state (completed, failed, or
//! released by the processor); none leaves a lease behind.

mod circuit_breaker;
mod dead_letter_notify;
mod handler;
mod metrics;
mod publish;
mod sibling_dedup;

#[cfg(test)]
pub(crate) mod test_support;

use std::time::Duration;

use chrono::{DateTime, TimeDelta, Utc};

pub use circuit_breaker::{
    CircuitBreakerStep, DEFAULT_FAILURE_THRESHOLD, DEFAULT_RECOVERY_TIMEOUT,
};
pub use dead_letter_notify::{DeadLetterHandler, DeadLetterNotifyStep, DynDeadLetterHandler};
pub use handler::{HandlerSavepoints, HandlerStep, NoSavepoints};
pub use metrics::MetricsStep;
pub use publish::PublishStep;
pub use sibling_dedup::SiblingDedupStep;

use crate::backoff::Backoff;

/// Default time a handler may run (omni-box's: 30 s).
pub const DEFAULT_HANDLER_TIMEOUT: Duration = Duration::from_secs(30);
/// Default time a publish may take until the broker acknowledged (omni-box's: 30 s).
pub const DEFAULT_PUBLISH_TIMEOUT: Duration = Duration::from_secs(30);
/// Delay before an uncounted (transient) failure is retried (omni-box's: 1 s).
pub const TRANSIENT_RETRY_DELAY: Duration = Duration::from_secs(1);
/// Skip reason recorded for a duplicate sibling (omni-box's).
pub const REASON_DUPLICATE_SIBLING: &str = "duplicate_sibling";

/// How many events of the current batch upstream steps will let through, stored in the
/// batch context by a step such as [`CircuitBreakerStep`] in `on_batch_start`. Steps that do
/// work ahead of `execute` (the concurrent mode of [`PublishStep`]) honour it, so an open
/// breaker also keeps a concurrent publisher from calling the broker.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub struct BatchAllowance {
    /// At most this many events (from the start of the batch); `None` means no limit.
    pub max_events: Option<usize>,
}

impl BatchAllowance {
    /// An allowance of at most `n` events.
    pub fn at_most(n: usize) -> Self {
        Self {
            max_events: Some(n),
        }
    }

    /// The stricter of two allowances.
    pub fn min(self, other: Self) -> Self {
        match (self.max_events, other.max_events) {
            (Some(a), Some(b)) => Self::at_most(a.min(b)),
            (Some(a), None) | (None, Some(a)) => Self::at_most(a),
            (None, None) => Self::default(),
        }
    }
}

/// `now + d`, saturating.
pub(crate) fn after(now: DateTime<Utc>, d: Duration) -> DateTime<Utc> {
    let d = TimeDelta::from_std(d).unwrap_or(TimeDelta::MAX);
    now.checked_add_signed(d)
        .unwrap_or(DateTime::<Utc>::MAX_UTC)
}

/// Retry time of a counted failure: backoff from the attempts made *before* this failure.
pub(crate) fn backoff_at(
    now: DateTime<Utc>,
    backoff: &Backoff,
    attempts_made: u32,
) -> DateTime<Utc> {
    after(now, backoff.delay(attempts_made))
}

/// Retry time of an uncounted failure.
pub(crate) fn transient_at(now: DateTime<Utc>) -> DateTime<Utc> {
    after(now, TRANSIENT_RETRY_DELAY)
}

/// Seconds for messages: `30s`, `0.5s`.
pub(crate) fn secs(d: Duration) -> String {
    format!("{}s", d.as_secs_f64())
}

/// The message of a caught panic.
pub(crate) fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        (*s).to_owned()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "non-string panic payload".to_owned()
    }
}

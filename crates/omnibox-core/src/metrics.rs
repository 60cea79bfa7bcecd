//! Metrics sinks. Library code reports through [`MetricsSink`]; the `omnibox-metrics` crate
//! maps these onto the `metrics` facade. Labels stay bounded: job names, event types,
//! topics/sources and enums — never ids or error strings.

use std::time::Duration;

use crate::error::FailureKind;
use crate::store::Backlog;

/// Circuit breaker state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CircuitState {
    /// Passing events.
    Closed,
    /// Refusing events until the recovery time passed.
    Open,
    /// Letting one probe through.
    HalfOpen,
}

impl CircuitState {
    /// A stable label.
    pub fn as_str(self) -> &'static str {
        match self {
            CircuitState::Closed => "closed",
            CircuitState::Open => "open",
            CircuitState::HalfOpen => "half_open",
        }
    }
}

/// Why an event was completed without being handled.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SkipReason {
    /// The handler skipped it.
    Handler,
    /// A sibling with the same key already completed.
    Duplicate,
}

/// One measurement.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum Metric<'a> {
    /// A batch was claimed.
    BatchClaimed {
        /// Job name.
        job: &'a str,
        /// Events claimed.
        size: usize,
    },
    /// A batch finished (claim to settle).
    BatchFinished {
        /// Job name.
        job: &'a str,
        /// Wall time.
        duration: Duration,
    },
    /// An event was completed (published / handled).
    Completed {
        /// Job name.
        job: &'a str,
        /// Event type.
        event_type: &'a str,
        /// Topic or source.
        route: &'a str,
    },
    /// An event failed.
    Failed {
        /// Job name.
        job: &'a str,
        /// Event type.
        event_type: &'a str,
        /// Topic or source.
        route: &'a str,
        /// Counted or transient.
        kind: FailureKind,
    },
    /// An event was completed without handling.
    Skipped {
        /// Job name.
        job: &'a str,
        /// Event type.
        event_type: &'a str,
        /// Why.
        reason: SkipReason,
    },
    /// An event or message was dead-lettered.
    DeadLettered {
        /// Job name.
        job: &'a str,
        /// Event type (`"malformed"` for unparsable messages).
        event_type: &'a str,
    },
    /// Leases given back untouched (shutdown, breaker, stop).
    Released {
        /// Job name.
        job: &'a str,
        /// How many.
        count: u64,
    },
    /// Results not applied because the lease was lost.
    LeaseLost {
        /// Job name.
        job: &'a str,
        /// How many.
        count: u64,
    },
    /// Time spent in the handler or the broker call (measured around that call only).
    HandlerDuration {
        /// Job name.
        job: &'a str,
        /// Event type.
        event_type: &'a str,
        /// Duration.
        duration: Duration,
    },
    /// A broker message was received.
    Consumed {
        /// Job name.
        job: &'a str,
    },
    /// A broker message was a duplicate (already handled by this group).
    Duplicate {
        /// Job name.
        job: &'a str,
        /// Event type.
        event_type: &'a str,
    },
    /// A broker message was acknowledged.
    Acked {
        /// Job name.
        job: &'a str,
    },
    /// A broker message was handed back for redelivery.
    Nacked {
        /// Job name.
        job: &'a str,
    },
    /// Acknowledging failed.
    AckFailed {
        /// Job name.
        job: &'a str,
    },
    /// Circuit breaker state changed.
    Circuit {
        /// Job name.
        job: &'a str,
        /// New state.
        state: CircuitState,
    },
    /// Stale leases released by maintenance.
    StaleReleased {
        /// Job name.
        job: &'a str,
        /// How many.
        count: u64,
    },
    /// Completed rows deleted by retention cleanup.
    Cleaned {
        /// Job name.
        job: &'a str,
        /// How many.
        count: u64,
    },
    /// Backlog figures of a table.
    Backlog {
        /// Table (configured name).
        table: &'a str,
        /// Figures.
        backlog: &'a Backlog,
    },
}

/// Receives measurements. Implementations must be cheap and never block.
pub trait MetricsSink: Send + Sync {
    /// Record one measurement.
    fn record(&self, metric: &Metric<'_>);
}

/// Discards everything.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoopMetrics;

impl MetricsSink for NoopMetrics {
    fn record(&self, _metric: &Metric<'_>) {}
}

impl<T: MetricsSink + ?Sized> MetricsSink for std::sync::Arc<T> {
    fn record(&self, metric: &Metric<'_>) {
        (**self).record(metric)
    }
}

impl<T: MetricsSink + ?Sized> MetricsSink for Box<T> {
    fn record(&self, metric: &Metric<'_>) {
        (**self).record(metric)
    }
}

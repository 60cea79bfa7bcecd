//! [`CircuitBreakerStep`]: stop hammering a downstream that keeps failing.

use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use chrono::{DateTime, TimeDelta, Utc};
use uuid::Uuid;

use super::BatchAllowance;
use crate::clock::{Clock, SystemClock};
use crate::error::ValidationError;
use crate::metrics::{CircuitState, Metric};
use crate::model::Event;
use crate::pipeline::{BatchCtx, Step, StepResult, Verdict};

/// Default consecutive failures that open the breaker.
pub const DEFAULT_FAILURE_THRESHOLD: u32 = 5;
/// Default time the breaker stays open.
pub const DEFAULT_RECOVERY_TIMEOUT: Duration = Duration::from_secs(60);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Closed {
        failures: u32,
    },
    Open {
        since: DateTime<Utc>,
    },
    /// One probe event may pass; `None` until an event takes the probe slot.
    HalfOpen {
        probe: Option<Uuid>,
    },
}

#[derive(Debug)]
struct Inner {
    threshold: u32,
    recovery: TimeDelta,
    clock: Arc<dyn Clock>,
    state: Mutex<State>,
}

/// A circuit breaker over the events of a processor.
///
/// - **Closed**: events pass. `failure_threshold` (default 5) consecutive *failed* events
///   (counted or not) open it.
/// - **Open**: for `recovery_timeout` (default 60 s) `execute` returns
///   [`StepResult::StopBatch`]: the stopped event and the rest of the batch are released
///   (no attempt spent, schedule unchanged). The breaker really stays open across batches.
/// - **Half-open**: after the timeout exactly one probe event passes; its success closes
///   the breaker, its failure re-opens it with a fresh timer.
///
/// Only verdicts move the counter: an event the breaker itself stopped (no verdict) neither
/// resets nor counts (omni-box reset its breaker on the very event it stopped).
/// A skipped event counts as a success.
///
/// The state is shared across batches and workers of this process: clones share it.
/// **Place it before the handler/publish step** (the processors do): placed after, it would
/// only stop the batch after that event was already handled. In `on_batch_start` it leaves a
/// [`BatchAllowance`] (0 while open, 1 when a probe is due) that the concurrent mode of
/// [`PublishStep`](super::PublishStep) honours. Emits [`Metric::Circuit`] on every change.
#[derive(Debug, Clone)]
pub struct CircuitBreakerStep {
    inner: Arc<Inner>,
}

impl Default for CircuitBreakerStep {
    fn default() -> Self {
        Self::build(
            DEFAULT_FAILURE_THRESHOLD,
            TimeDelta::from_std(DEFAULT_RECOVERY_TIMEOUT).unwrap_or(TimeDelta::seconds(60)),
            Arc::new(SystemClock),
        )
    }
}

impl CircuitBreakerStep {
    /// A breaker with the given threshold (≥ 1) and recovery timeout, on the system clock.
    pub fn new(
        failure_threshold: u32,
        recovery_timeout: Duration,
    ) -> Result<Self, ValidationError> {
        if failure_threshold == 0 {
            return Err(ValidationError::OutOfRange {
                field: "failure_threshold",
                reason: "must be at least 1".into(),
            });
        }
        let recovery =
            TimeDelta::from_std(recovery_timeout).map_err(|_| ValidationError::OutOfRange {
                field: "recovery_timeout",
                reason: "too large".into(),
            })?;
        Ok(Self::build(
            failure_threshold,
            recovery,
            Arc::new(SystemClock),
        ))
    }

    fn build(threshold: u32, recovery: TimeDelta, clock: Arc<dyn Clock>) -> Self {
        Self {
            inner: Arc::new(Inner {
                threshold,
                recovery,
                clock,
                state: Mutex::new(State::Closed { failures: 0 }),
            }),
        }
    }

    /// The same settings on another clock (tests). Returns a new, closed breaker that does
    /// not share state with `self`.
    #[must_use]
    pub fn with_clock(self, clock: Arc<dyn Clock>) -> Self {
        Self::build(self.inner.threshold, self.inner.recovery, clock)
    }

    /// The current state.
    pub fn state(&self) -> CircuitState {
        match *self.lock() {
            State::Closed { .. } => CircuitState::Closed,
            State::Open { .. } => CircuitState::Open,
            State::HalfOpen { .. } => CircuitState::HalfOpen,
        }
    }

    /// Consecutive failures counted while closed.
    pub fn consecutive_failures(&self) -> u32 {
        match *self.lock() {
            State::Closed { failures } => failures,
            _ => self.inner.threshold,
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.inner.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn recovered(&self, since: DateTime<Utc>, now: DateTime<Utc>) -> bool {
        now - since >= self.inner.recovery
    }
}

fn emit<E, C>(ctx: &BatchCtx<'_, E, C>, state: CircuitState) {
    tracing::info!(job = %ctx.job(), state = state.as_str(), "circuit breaker state changed");
    ctx.metrics().record(&Metric::Circuit {
        job: ctx.job(),
        state,
    });
}

impl<E: Event, C: Send> Step<E, C> for CircuitBreakerStep {
    async fn on_batch_start(&self, _events: &[E], ctx: &mut BatchCtx<'_, E, C>) {
        let now = self.inner.clock.now();
        let allowance = match *self.lock() {
            State::Closed { .. } => BatchAllowance::default(),
            State::Open { since } if self.recovered(since, now) => BatchAllowance::at_most(1),
            State::Open { .. } => BatchAllowance::at_most(0),
            State::HalfOpen { probe: None } => BatchAllowance::at_most(1),
            State::HalfOpen { probe: Some(_) } => BatchAllowance::at_most(0),
        };
        let merged = match ctx.extension::<BatchAllowance>() {
            Some(a) => a.min(allowance),
            None => allowance,
        };
        ctx.insert_extension(merged);
    }

    async fn execute(&self, event: &E, ctx: &mut BatchCtx<'_, E, C>) -> StepResult {
        let now = self.inner.clock.now();
        let (result, changed) = {
            let mut state = self.lock();
            match *state {
                State::Closed { .. } => (StepResult::Continue, None),
                State::Open { since } if self.recovered(since, now) => {
                    *state = State::HalfOpen {
                        probe: Some(event.id()),
                    };
                    (StepResult::Continue, Some(CircuitState::HalfOpen))
                }
                State::Open { .. } => (StepResult::StopBatch, None),
                State::HalfOpen { probe: None } => {
                    *state = State::HalfOpen {
                        probe: Some(event.id()),
                    };
                    (StepResult::Continue, None)
                }
                State::HalfOpen { probe: Some(p) } if p == event.id() => {
                    (StepResult::Continue, None)
                }
                State::HalfOpen { probe: Some(_) } => (StepResult::StopBatch, None),
            }
        };
        if let Some(s) = changed {
            emit(ctx, s);
        }
        if result == StepResult::StopBatch {
            tracing::debug!(job = %ctx.job(), event_id = %event.id(), "circuit open: releasing the rest of the batch");
        }
        result
    }

    async fn on_event_end(&self, event: &E, ctx: &mut BatchCtx<'_, E, C>) {
        #[derive(PartialEq)]
        enum Seen {
            Failure,
            Success,
            Nothing,
        }
        let seen = match ctx.verdict(event.id()) {
            Some(Verdict::Failed { .. }) => Seen::Failure,
            Some(Verdict::Completed | Verdict::Skipped { .. }) => Seen::Success,
            Some(Verdict::Released) | None => Seen::Nothing,
        };
        let now = self.inner.clock.now();
        let changed = {
            let mut state = self.lock();
            match (*state, seen) {
                (_, Seen::Nothing) => {
                    // Stopped or released: neither a success nor a failure. A probe that was
                    // released gives its slot to the next event.
                    if *state
                        == (State::HalfOpen {
                            probe: Some(event.id()),
                        })
                    {
                        *state = State::HalfOpen { probe: None };
                    }
                    None
                }
                (State::Closed { failures }, Seen::Failure) => {
                    let failures = failures.saturating_add(1);
                    if failures >= self.inner.threshold {
                        *state = State::Open { since: now };
                        Some(CircuitState::Open)
                    } else {
                        *state = State::Closed { failures };
                        None
                    }
                }
                (State::Closed { .. }, Seen::Success) => {
                    *state = State::Closed { failures: 0 };
                    None
                }
                (State::HalfOpen { probe: Some(p) }, seen) if p == event.id() => {
                    if seen == Seen::Success {
                        *state = State::Closed { failures: 0 };
                        Some(CircuitState::Closed)
                    } else {
                        *state = State::Open { since: now };
                        Some(CircuitState::Open)
                    }
                }
                // Results of events that were in flight elsewhere when the state changed.
                _ => None,
            }
        };
        if let Some(s) = changed {
            emit(ctx, s);
        }
    }
}

#[cfg(test)]
mod tests;

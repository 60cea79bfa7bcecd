//! Helpers for step tests: a recording metrics sink, sample events and a batch driver that
//! follows the processor's hook order.

use std::sync::Mutex;
use std::time::Duration;

use chrono::{DateTime, TimeZone, Utc};
use uuid::Uuid;

use crate::clock::ManualClock;
use crate::error::FailureKind;
use crate::metrics::{CircuitState, Metric, MetricsSink, SkipReason};
use crate::model::{Event, InboxEvent, Limits, OutboxEvent, WorkerId};
use crate::pipeline::{BatchCtx, DynStep, StepResult, Verdict};
use crate::shutdown::Shutdown;

/// An owned copy of the metrics the tests look at.
#[derive(Debug, Clone, PartialEq)]
pub enum Rec {
    Completed {
        event_type: String,
        route: String,
    },
    Failed {
        event_type: String,
        kind: FailureKind,
    },
    Skipped {
        event_type: String,
        reason: SkipReason,
    },
    Duration {
        event_type: String,
        duration: Duration,
    },
    Circuit(CircuitState),
    StaleReleased(u64),
    Cleaned(u64),
    Released(u64),
    Other(String),
}

/// Records every metric.
#[derive(Debug, Default)]
pub struct RecordingMetrics(Mutex<Vec<Rec>>);

impl RecordingMetrics {
    pub fn all(&self) -> Vec<Rec> {
        self.0.lock().unwrap().clone()
    }

    pub fn count(&self, f: impl Fn(&Rec) -> bool) -> usize {
        self.all().iter().filter(|r| f(r)).count()
    }

    pub fn circuit(&self) -> Vec<CircuitState> {
        self.all()
            .into_iter()
            .filter_map(|r| match r {
                Rec::Circuit(s) => Some(s),
                _ => None,
            })
            .collect()
    }

    pub fn durations(&self) -> Vec<Duration> {
        self.all()
            .into_iter()
            .filter_map(|r| match r {
                Rec::Duration { duration, .. } => Some(duration),
                _ => None,
            })
            .collect()
    }
}

impl MetricsSink for RecordingMetrics {
    fn record(&self, metric: &Metric<'_>) {
        let rec = match metric {
            Metric::Completed {
                event_type, route, ..
            } => Rec::Completed {
                event_type: (*event_type).into(),
                route: (*route).into(),
            },
            Metric::Failed {
                event_type, kind, ..
            } => Rec::Failed {
                event_type: (*event_type).into(),
                kind: *kind,
            },
            Metric::Skipped {
                event_type, reason, ..
            } => Rec::Skipped {
                event_type: (*event_type).into(),
                reason: *reason,
            },
            Metric::HandlerDuration {
                event_type,
                duration,
                ..
            } => Rec::Duration {
                event_type: (*event_type).into(),
                duration: *duration,
            },
            Metric::Circuit { state, .. } => Rec::Circuit(*state),
            Metric::StaleReleased { count, .. } => Rec::StaleReleased(*count),
            Metric::Cleaned { count, .. } => Rec::Cleaned(*count),
            Metric::Released { count, .. } => Rec::Released(*count),
            other => Rec::Other(format!("{other:?}")),
        };
        self.0.lock().unwrap().push(rec);
    }
}

pub fn t0() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2030, 1, 1, 0, 0, 0).unwrap()
}

/// Everything a `BatchCtx` borrows.
pub struct Fixture {
    pub worker: WorkerId,
    pub metrics: RecordingMetrics,
    pub clock: ManualClock,
    pub shutdown: Shutdown,
}

impl Fixture {
    pub fn new() -> Self {
        Self {
            worker: WorkerId::new("worker-1").unwrap(),
            metrics: RecordingMetrics::default(),
            clock: ManualClock::new(t0()),
            shutdown: Shutdown::new(),
        }
    }

    pub fn ctx<'a, E, C>(&'a self, conn: Option<&'a mut C>) -> BatchCtx<'a, E, C> {
        BatchCtx::new(
            conn,
            &self.worker,
            "test_job",
            &self.metrics,
            &self.clock,
            &self.shutdown,
        )
    }
}

pub fn outbox(event_type: &str, key: &str) -> OutboxEvent {
    OutboxEvent::builder("order", Uuid::now_v7(), event_type, "orders", key)
        .payload(serde_json::json!({"n": 1}))
        .created_at(t0())
        .scheduled_at(t0())
        .build()
        .unwrap()
}

pub fn inbox(message_id: &str) -> InboxEvent {
    InboxEvent::builder(message_id, "billing", "orders", "order.placed")
        .payload(serde_json::json!({"n": 1}))
        .created_at(t0())
        .scheduled_at(t0())
        .build()
        .unwrap()
}

/// A copy of `e` that has already spent `attempts` of `max` attempts.
pub fn with_attempts<E: Event>(e: &E, attempts: u32, max: u32) -> E {
    let mut c = e.common().clone();
    c.attempts_made = attempts;
    c.max_attempts = max;
    e.with_common(c, &Limits::default()).unwrap()
}

/// Run `steps` over `events` with the processor's hook order; events left without a verdict
/// become `Released` (as the processor does).
pub async fn drive<E: Event, C: Send>(
    steps: &[&dyn DynStep<E, C>],
    events: &[E],
    ctx: &mut BatchCtx<'_, E, C>,
) -> Vec<Verdict> {
    for s in steps {
        s.on_batch_start_boxed(events, ctx).await;
    }
    let mut stopped = false;
    for event in events {
        if stopped || ctx.shutdown_requested() {
            if ctx.verdict(event.id()).is_none() {
                ctx.release(event.id());
            }
            continue;
        }
        for s in steps {
            s.on_event_start_boxed(event, ctx).await;
        }
        for s in steps {
            match s.execute_boxed(event, ctx).await {
                StepResult::Continue => {}
                StepResult::SkipEvent => break,
                StepResult::StopBatch => {
                    stopped = true;
                    break;
                }
            }
        }
        for s in steps {
            s.on_event_end_boxed(event, ctx).await;
        }
    }
    for s in steps {
        s.on_batch_end_boxed(events, ctx).await;
    }
    events
        .iter()
        .map(|e| ctx.verdict(e.id()).cloned().unwrap_or(Verdict::Released))
        .collect()
}

/// `Failed` parts of a verdict, or a panic.
pub fn failed(v: &Verdict) -> (&str, FailureKind, Option<DateTime<Utc>>) {
    match v {
        Verdict::Failed {
            error,
            kind,
            retry_at,
        } => (error.as_str(), *kind, *retry_at),
        other => panic!("expected a failure, got {other:?}"),
    }
}

//! [`MetricsStep`]: one outcome metric per event.

use super::REASON_DUPLICATE_SIBLING;
use crate::metrics::{Metric, SkipReason};
use crate::model::Event;
use crate::pipeline::{BatchCtx, Step, StepResult, Verdict};

/// Reports each handled event's verdict to the processor's [`MetricsSink`](crate::metrics::MetricsSink)
/// when the event ends: [`Metric::Completed`], [`Metric::Failed`] (with its kind) or
/// [`Metric::Skipped`] (reason [`SkipReason::Duplicate`] for a duplicate sibling, else
/// [`SkipReason::Handler`]), labelled with the job, the event type and the topic/source.
///
/// Released events (batch stopped, shutdown) report nothing per event: the processor
/// reports their count as [`Metric::Released`]. Its position in the pipeline does not matter
/// (it only uses the end-of-event hook); durations come from the handler and publish steps,
/// measured around the call itself.
#[derive(Debug, Clone, Copy, Default)]
pub struct MetricsStep;

impl MetricsStep {
    /// The step.
    pub fn new() -> Self {
        Self
    }
}

impl<E: Event, C: Send> Step<E, C> for MetricsStep {
    async fn execute(&self, _event: &E, _ctx: &mut BatchCtx<'_, E, C>) -> StepResult {
        StepResult::Continue
    }

    async fn on_event_end(&self, event: &E, ctx: &mut BatchCtx<'_, E, C>) {
        let job = ctx.job();
        let event_type = event.common().event_type.as_str();
        let route = event.route();
        let metric = match ctx.verdict(event.id()) {
            Some(Verdict::Completed) => Metric::Completed {
                job,
                event_type,
                route,
            },
            Some(Verdict::Failed { kind, .. }) => Metric::Failed {
                job,
                event_type,
                route,
                kind: *kind,
            },
            Some(Verdict::Skipped { reason }) => Metric::Skipped {
                job,
                event_type,
                reason: if reason == REASON_DUPLICATE_SIBLING {
                    SkipReason::Duplicate
                } else {
                    SkipReason::Handler
                },
            },
            Some(Verdict::Released) | None => return,
        };
        ctx.metrics().record(&metric);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::FailureKind;
    use crate::model::OutboxEvent;
    use crate::pipeline::steps::test_support::{Fixture, Rec, drive, outbox};

    struct Decide;
    impl Step<OutboxEvent, ()> for Decide {
        async fn execute(
            &self,
            e: &OutboxEvent,
            ctx: &mut BatchCtx<'_, OutboxEvent, ()>,
        ) -> StepResult {
            let id = e.id();
            match e.common.event_type.as_str() {
                "ok" => ctx.complete(id),
                "dup" => ctx.skip(id, REASON_DUPLICATE_SIBLING),
                "skip" => ctx.skip(id, "not ours"),
                "retry" => ctx.fail(id, "x", FailureKind::Transient, None),
                "bad" => ctx.fail(id, "x", FailureKind::Permanent, None),
                _ => return StepResult::StopBatch,
            }
            StepResult::Continue
        }
    }

    #[tokio::test]
    async fn one_metric_per_decided_event_none_for_released() {
        let fx = Fixture::new();
        let events: Vec<_> = ["ok", "dup", "skip", "retry", "bad", "stop", "ok"]
            .iter()
            .map(|k| outbox(k, "a"))
            .collect();
        let mut ctx = fx.ctx::<OutboxEvent, ()>(None);
        drive(&[&Decide, &MetricsStep], &events, &mut ctx).await;
        let s = |t: &str| t.to_string();
        assert_eq!(
            fx.metrics.all(),
            vec![
                Rec::Completed {
                    event_type: s("ok"),
                    route: s("orders")
                },
                Rec::Skipped {
                    event_type: s("dup"),
                    reason: SkipReason::Duplicate
                },
                Rec::Skipped {
                    event_type: s("skip"),
                    reason: SkipReason::Handler
                },
                Rec::Failed {
                    event_type: s("retry"),
                    kind: FailureKind::Transient
                },
                Rec::Failed {
                    event_type: s("bad"),
                    kind: FailureKind::Permanent
                },
            ]
        );
    }
}

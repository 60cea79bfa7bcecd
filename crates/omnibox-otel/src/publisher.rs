//! [`TracedPublisher`]: publishing inside the event's span, with its context in the message
//! headers.

use std::sync::Arc;

use omnibox_core::model::{Event, Limits, OutboxEvent};
use omnibox_core::{PublishError, Publisher};
use opentelemetry::Context;
use opentelemetry::global::BoxedTracer;
use opentelemetry::trace::{FutureExt, TraceContextExt, Tracer};

use crate::messaging::OMNIBOX_OUTCOME;
use crate::propagation::{HEADER_TRACESTATE, context_headers};
use crate::spans::{Spans, record_failure};

/// Wraps a [`Publisher`]: the broker call runs with the event's `send` span as the current
/// context, and the message carries that span's `traceparent` (replacing the one stored
/// with the event, which is the span's parent), so the consumer's span becomes a child of
/// the send span, in the producer's trace.
///
/// Built by [`crate::OtelStep::publisher`], it uses the step's open span for the event;
/// used alone ([`TracedPublisher::new`]) or for an event the step did not open, it opens
/// and ends a `send <topic>` span of its own. A failed publish is recorded on the span.
pub struct TracedPublisher<P, T = BoxedTracer> {
    inner: P,
    spans: Arc<Spans<T>>,
}

impl<P: std::fmt::Debug, T> std::fmt::Debug for TracedPublisher<P, T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TracedPublisher")
            .field("inner", &self.inner)
            .finish_non_exhaustive()
    }
}

impl<P, T> TracedPublisher<P, T>
where
    T: Tracer + Send + Sync + 'static,
    T::Span: Send + Sync + 'static,
{
    /// Wrap `inner`, opening spans with `tracer`.
    pub fn new(inner: P, tracer: T) -> Self {
        Self::from_spans(
            inner,
            Arc::new(Spans::new(
                tracer,
                crate::step::DEFAULT_MESSAGING_SYSTEM.to_owned(),
            )),
        )
    }

    pub(crate) fn from_spans(inner: P, spans: Arc<Spans<T>>) -> Self {
        Self { inner, spans }
    }

    /// The wrapped publisher.
    pub fn inner(&self) -> &P {
        &self.inner
    }
}

/// A copy of `event` whose headers carry `cx` (`None` when `cx` has no valid span or the
/// copy cannot be made).
fn with_trace_headers(event: &OutboxEvent, cx: &Context) -> Option<OutboxEvent> {
    let trace = context_headers(cx);
    if trace.is_empty() {
        return None;
    }
    let mut common = event.common().clone();
    let headers = common.headers.get_or_insert_with(Default::default);
    headers.remove(HEADER_TRACESTATE);
    headers.extend(trace);
    match event.with_common(common, &Limits::default()) {
        Ok(e) => Some(e),
        Err(e) => {
            tracing::debug!(event_id = %event.common.id, error = %e, "trace headers not injected");
            None
        }
    }
}

impl<P, T> Publisher for TracedPublisher<P, T>
where
    P: Publisher,
    T: Tracer + Send + Sync + 'static,
    T::Span: Send + Sync + 'static,
{
    async fn publish(&self, event: &OutboxEvent) -> Result<(), PublishError> {
        let (cx, own) = match self.spans.event(event.id()) {
            Some(cx) => (cx, false),
            None => (self.spans.start_event(event, &Context::current()), true),
        };
        let traced = with_trace_headers(event, &cx);
        let result = self
            .inner
            .publish(traced.as_ref().unwrap_or(event))
            .with_context(cx.clone())
            .await;
        if let Err(e) = &result {
            record_failure(&cx, &e.message, e.kind);
        }
        if own {
            let outcome = if result.is_ok() {
                "completed"
            } else {
                "failed"
            };
            cx.span()
                .set_attribute(opentelemetry::KeyValue::new(OMNIBOX_OUTCOME, outcome));
            cx.span().end();
        }
        result
    }
}

//! [`TracedHandler`]: the handler runs with the event's span as the current context.

use std::sync::Arc;

use omnibox_core::{FailureKind, Handler, HandlerOutcome, HandlerResult};
use opentelemetry::global::BoxedTracer;
use opentelemetry::trace::{FutureExt, TraceContextExt, Tracer};
use opentelemetry::{Context, KeyValue};

use crate::messaging::{MessagingEvent, OMNIBOX_OUTCOME};
use crate::spans::{Spans, record_failure};

/// Wraps a [`Handler`]: it runs with the event's span as the current OpenTelemetry context
/// (`Context::current()` inside the handler), so spans it opens continue the producer's
/// trace.
///
/// Built by [`crate::OtelStep::handler`], it uses the step's open span for the event; used
/// alone ([`TracedHandler::new`]) or for an event the step did not open, it opens and ends
/// a `process <source>` span of its own, parented on the event's stored `traceparent`.
/// Errors and retries are recorded on the span.
pub struct TracedHandler<H, T = BoxedTracer> {
    inner: H,
    spans: Arc<Spans<T>>,
}

impl<H: std::fmt::Debug, T> std::fmt::Debug for TracedHandler<H, T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TracedHandler")
            .field("inner", &self.inner)
            .finish_non_exhaustive()
    }
}

impl<H, T> TracedHandler<H, T>
where
    T: Tracer + Send + Sync + 'static,
    T::Span: Send + Sync + 'static,
{
    /// Wrap `inner`, opening spans with `tracer`.
    pub fn new(inner: H, tracer: T) -> Self {
        Self::from_spans(
            inner,
            Arc::new(Spans::new(
                tracer,
                crate::step::DEFAULT_MESSAGING_SYSTEM.to_owned(),
            )),
        )
    }

    pub(crate) fn from_spans(inner: H, spans: Arc<Spans<T>>) -> Self {
        Self { inner, spans }
    }

    /// The wrapped handler.
    pub fn inner(&self) -> &H {
        &self.inner
    }
}

impl<E, C, H, T> Handler<E, C> for TracedHandler<H, T>
where
    E: MessagingEvent,
    C: Send,
    H: Handler<E, C>,
    T: Tracer + Send + Sync + 'static,
    T::Span: Send + Sync + 'static,
{
    async fn handle(&self, event: &E, conn: &mut C) -> HandlerResult {
        let (cx, own) = match self.spans.event(event.id()) {
            Some(cx) => (cx, false),
            None => (self.spans.start_event(event, &Context::current()), true),
        };
        let result = self
            .inner
            .handle(event, conn)
            .with_context(cx.clone())
            .await;
        let outcome = match &result {
            Err(e) => {
                record_failure(&cx, &e.message, e.kind);
                "failed"
            }
            Ok(HandlerOutcome::Retry { error, counted, .. }) => {
                let kind = if *counted {
                    FailureKind::Permanent
                } else {
                    FailureKind::Transient
                };
                record_failure(&cx, error, kind);
                "failed"
            }
            Ok(HandlerOutcome::Skipped { .. }) => "skipped",
            Ok(_) => "completed",
        };
        if own {
            cx.span()
                .set_attribute(KeyValue::new(OMNIBOX_OUTCOME, outcome));
            cx.span().end();
        }
        result
    }
}

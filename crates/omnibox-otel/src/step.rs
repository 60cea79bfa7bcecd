//! [`OtelStep`]: a span per batch and per event.

use std::sync::Arc;

use omnibox_core::pipeline::{BatchCtx, Step, StepResult, Verdict};
use opentelemetry::global::{self, BoxedTracer};
use opentelemetry::trace::{Link, SpanBuilder, SpanKind, TraceContextExt, Tracer};
use opentelemetry::{Context, InstrumentationScope, KeyValue};

use crate::handler::TracedHandler;
use crate::messaging::{
    MESSAGING_BATCH_MESSAGE_COUNT, MESSAGING_OPERATION_TYPE, MESSAGING_SYSTEM, MessagingEvent,
    OMNIBOX_JOB,
};
use crate::publisher::TracedPublisher;
use crate::spans::{Spans, record_verdict};

/// The default `messaging.system` attribute (set the broker's name with
/// [`OtelStep::messaging_system`]: `kafka`, `rabbitmq`, `nats`).
pub const DEFAULT_MESSAGING_SYSTEM: &str = "omnibox";

/// A pipeline step that opens a span per batch and per event, for outbox events (producer
/// `send <topic>` spans) and inbox events (consumer `process <source>` spans).
///
/// - The batch span (`<operation> batch`) is a child of the context current when the batch
///   starts and links to the producer context of every event that carries one.
/// - An event span continues the producer's trace: its parent is the `traceparent` stored
///   with the event (see [`crate::inject_current`]), and it links to the batch span; an
///   event without one is a child of the batch span.
/// - When the event ends, the span records the verdict (`omnibox.outcome`); a failure sets
///   status error with the message and `error.type` = `permanent` / `transient`.
///
/// Add it first, so its event span encloses the other steps. Wrap the publisher with
/// [`OtelStep::publisher`] (the broker message then carries the `send` span's context) and
/// the handler with [`OtelStep::handler`] (spans the handler opens join the event's trace).
///
/// Spans are kept in the step, keyed by event id, because step hooks cannot hold a span
/// guard across awaits; cloning the step shares them.
pub struct OtelStep<T = BoxedTracer> {
    spans: Arc<Spans<T>>,
}

impl<T> Clone for OtelStep<T> {
    fn clone(&self) -> Self {
        Self {
            spans: Arc::clone(&self.spans),
        }
    }
}

impl<T> std::fmt::Debug for OtelStep<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OtelStep")
            .field("messaging_system", &self.spans.system)
            .finish_non_exhaustive()
    }
}

impl Default for OtelStep<BoxedTracer> {
    fn default() -> Self {
        Self::new()
    }
}

impl OtelStep<BoxedTracer> {
    /// A step using the global tracer provider (scope `omnibox`).
    pub fn new() -> Self {
        let scope = InstrumentationScope::builder("omnibox")
            .with_version(env!("CARGO_PKG_VERSION"))
            .build();
        Self::with_tracer(global::tracer_with_scope(scope))
    }
}

impl<T> OtelStep<T>
where
    T: Tracer + Send + Sync + 'static,
    T::Span: Send + Sync + 'static,
{
    /// A step using `tracer`.
    pub fn with_tracer(tracer: T) -> Self {
        Self {
            spans: Arc::new(Spans::new(tracer, DEFAULT_MESSAGING_SYSTEM.to_owned())),
        }
    }

    /// Set `messaging.system` (`kafka`, `rabbitmq`, `nats`...). Call before cloning.
    #[must_use]
    pub fn messaging_system(self, system: impl Into<String>) -> Self {
        let system = system.into();
        match Arc::try_unwrap(self.spans) {
            Ok(spans) => Self {
                spans: Arc::new(Spans::new(spans.tracer, system)),
            },
            Err(shared) => {
                tracing::warn!("OtelStep::messaging_system called on a shared step; ignored");
                Self { spans: shared }
            }
        }
    }

    /// Wrap a publisher: publishes run inside the event's span, and the message headers
    /// carry that span's `traceparent`.
    pub fn publisher<P>(&self, publisher: P) -> TracedPublisher<P, T> {
        TracedPublisher::from_spans(publisher, Arc::clone(&self.spans))
    }

    /// Wrap a handler: it runs with the event's span as the current OpenTelemetry context.
    pub fn handler<H>(&self, handler: H) -> TracedHandler<H, T> {
        TracedHandler::from_spans(handler, Arc::clone(&self.spans))
    }

    /// The context of an event's open span (between `on_event_start` and `on_event_end`).
    pub fn event_context(&self, id: uuid::Uuid) -> Option<Context> {
        self.spans.event(id)
    }
}

impl<E, C, T> Step<E, C> for OtelStep<T>
where
    E: MessagingEvent,
    C: Send,
    T: Tracer + Send + Sync + 'static,
    T::Span: Send + Sync + 'static,
{
    async fn on_batch_start(&self, events: &[E], ctx: &mut BatchCtx<'_, E, C>) {
        let Some(first) = events.first() else { return };
        let links: Vec<Link> = events
            .iter()
            .filter_map(|e| {
                let remote = e.remote_parent();
                remote
                    .has_active_span()
                    .then(|| Link::with_context(remote.span().span_context().clone()))
            })
            .collect();
        let builder = SpanBuilder::from_name(format!("{} batch", first.operation()))
            .with_kind(SpanKind::Internal)
            .with_attributes([
                KeyValue::new(MESSAGING_SYSTEM, self.spans.system.clone()),
                KeyValue::new(MESSAGING_OPERATION_TYPE, first.operation()),
                KeyValue::new(MESSAGING_BATCH_MESSAGE_COUNT, events.len() as i64),
                KeyValue::new(OMNIBOX_JOB, ctx.job().to_owned()),
            ])
            .with_links(links);
        let parent = Context::current();
        let span = self.spans.tracer.build_with_context(builder, &parent);
        self.spans
            .open_batch(events.iter().map(|e| e.id()), &parent.with_span(span));
    }

    async fn on_event_start(&self, event: &E, _ctx: &mut BatchCtx<'_, E, C>) {
        let fallback = self
            .spans
            .batch(event.id())
            .unwrap_or_else(Context::current);
        let cx = self.spans.start_event(event, &fallback);
        self.spans.open_event(event.id(), cx);
    }

    async fn execute(&self, _event: &E, _ctx: &mut BatchCtx<'_, E, C>) -> StepResult {
        StepResult::Continue
    }

    async fn on_event_end(&self, event: &E, ctx: &mut BatchCtx<'_, E, C>) {
        if let Some(cx) = self.spans.close_event(event.id()) {
            record_verdict(&cx, ctx.verdict(event.id()));
            cx.span().end();
        }
    }

    async fn on_batch_end(&self, events: &[E], ctx: &mut BatchCtx<'_, E, C>) {
        // Events never started (batch stopped, shutdown) have no span of their own.
        for e in events {
            if let Some(cx) = self.spans.close_event(e.id()) {
                record_verdict(&cx, ctx.verdict(e.id()));
                cx.span().end();
            }
        }
        if let Some(cx) = self.spans.close_batch(events.iter().map(|e| e.id())) {
            let mut counts = [0i64; 4];
            for e in events {
                let i = match ctx.verdict(e.id()) {
                    Some(Verdict::Completed | Verdict::Skipped { .. }) => 0,
                    Some(Verdict::Failed { .. }) => 1,
                    Some(Verdict::Released) | None => 2,
                };
                counts[i] += 1;
            }
            let span = cx.span();
            span.set_attribute(KeyValue::new("omnibox.batch.completed", counts[0]));
            span.set_attribute(KeyValue::new("omnibox.batch.failed", counts[1]));
            span.set_attribute(KeyValue::new("omnibox.batch.released", counts[2]));
            span.end();
        }
    }
}

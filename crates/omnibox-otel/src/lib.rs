//! # omnibox-otel
//!
//! OpenTelemetry for omnibox: spans per batch and per event following the messaging
//! semantic conventions, and W3C trace-context propagation end to end — through the
//! PostgreSQL row and the broker message — so a consumer's span continues the trace of the
//! request that enqueued the event.
//!
//! 1. **Enqueue**: build the outbox event with [`inject_current`] while the request's span is
//!    active; the `traceparent` (and `tracestate`) of that span are stored as event headers,
//!    in the same transaction as the business change.
//! 2. **Relay**: add [`OtelStep`] to the relay's pipeline and wrap its publisher with
//!    [`OtelStep::publisher`]: a producer span `send <topic>` continues the stored trace, and
//!    the message headers carry the send span's `traceparent`.
//! 3. **Consume**: the consumer stores the message headers with the inbox event; add an
//!    [`OtelStep`] to the inbox pipeline and wrap the handler with [`OtelStep::handler`]: a
//!    consumer span `process <source>` is a child of the send span, and spans the handler
//!    opens are children of it.
//!
//! Library code depends on the `opentelemetry` API only; install an SDK and exporter in the
//! application (`opentelemetry_sdk`, `opentelemetry-otlp`). Without one, every span is a
//! no-op. The propagation format is implemented here on the API's types
//! ([`W3cTraceContext`], also usable as the global propagator).
//!
//! Spans carry event ids, types, destinations and error messages — never payloads or
//! header values.
#![forbid(unsafe_code)]
#![deny(missing_docs)]

mod handler;
pub mod messaging;
pub mod propagation;
mod publisher;
mod spans;
mod step;

pub use handler::TracedHandler;
pub use messaging::MessagingEvent;
pub use propagation::{
    HEADER_TRACESTATE, HeaderExtractor, HeaderInjector, W3cTraceContext, context_headers, extract,
    extract_optional, inject_context, inject_current, inject_into_builder, with_propagator,
};
pub use publisher::TracedPublisher;
pub use step::{DEFAULT_MESSAGING_SYSTEM, OtelStep};

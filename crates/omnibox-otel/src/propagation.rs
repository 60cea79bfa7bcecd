//! W3C Trace Context (`traceparent`, `tracestate`) through event and message headers.
//!
//! Written against the `opentelemetry` API alone (the SDK's `TraceContextPropagator` would
//! pull the SDK into library code): [`W3cTraceContext`] implements the API's
//! [`TextMapPropagator`], so it can also be installed as the global propagator.

use std::str::FromStr;
use std::sync::OnceLock;

use omnibox_core::envelope::HEADER_TRACEPARENT;
use omnibox_core::model::{Headers, OutboxEventBuilder};
use opentelemetry::Context;
use opentelemetry::propagation::text_map_propagator::FieldIter;
use opentelemetry::propagation::{Extractor, Injector, TextMapPropagator};
use opentelemetry::trace::{SpanContext, SpanId, TraceContextExt, TraceFlags, TraceId, TraceState};

/// The W3C `tracestate` header.
pub const HEADER_TRACESTATE: &str = "tracestate";

const SUPPORTED_VERSION: u8 = 0;

/// The W3C Trace Context propagator (version `00`), implemented on the API's types.
#[derive(Debug, Clone, Copy, Default)]
pub struct W3cTraceContext;

fn fields() -> &'static [String; 2] {
    static FIELDS: OnceLock<[String; 2]> = OnceLock::new();
    FIELDS.get_or_init(|| [HEADER_TRACEPARENT.to_owned(), HEADER_TRACESTATE.to_owned()])
}

/// The `traceparent` value of a span context, or `None` when it is not valid.
pub fn format_traceparent(sc: &SpanContext) -> Option<String> {
    sc.is_valid().then(|| {
        format!(
            "{:02x}-{}-{}-{:02x}",
            SUPPORTED_VERSION,
            sc.trace_id(),
            sc.span_id(),
            sc.trace_flags().to_u8() & TraceFlags::SAMPLED.to_u8()
        )
    })
}

fn is_lower_hex(s: &str) -> bool {
    s.bytes()
        .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// Parse a `traceparent` value into a remote span context; `None` when it is malformed,
/// uses the forbidden version `ff`, or carries an all-zero id.
pub fn parse_traceparent(value: &str, tracestate: Option<&str>) -> Option<SpanContext> {
    let parts: Vec<&str> = value.trim().split('-').collect();
    let [version, trace_id, span_id, flags, rest @ ..] = parts.as_slice() else {
        return None;
    };
    if version.len() != 2 || !is_lower_hex(version) || *version == "ff" {
        return None;
    }
    let version = u8::from_str_radix(version, 16).ok()?;
    // Version 00 has exactly four fields; later versions may append more.
    if version == SUPPORTED_VERSION && !rest.is_empty() {
        return None;
    }
    if trace_id.len() != 32 || span_id.len() != 16 || flags.len() != 2 {
        return None;
    }
    if !is_lower_hex(trace_id) || !is_lower_hex(span_id) || !is_lower_hex(flags) {
        return None;
    }
    let trace_id = TraceId::from_hex(trace_id).ok()?;
    let span_id = SpanId::from_hex(span_id).ok()?;
    let flags = u8::from_str_radix(flags, 16).ok()?;
    let state = tracestate
        .and_then(|s| TraceState::from_str(s).ok())
        .unwrap_or_default();
    let sc = SpanContext::new(
        trace_id,
        span_id,
        TraceFlags::new(flags & TraceFlags::SAMPLED.to_u8()),
        true,
        state,
    );
    sc.is_valid().then_some(sc)
}

impl TextMapPropagator for W3cTraceContext {
    fn inject_context(&self, cx: &Context, injector: &mut dyn Injector) {
        let span = cx.span();
        let sc = span.span_context();
        if let Some(tp) = format_traceparent(sc) {
            injector.set(HEADER_TRACEPARENT, tp);
            let state = sc.trace_state().header();
            if !state.is_empty() {
                injector.set(HEADER_TRACESTATE, state);
            }
        }
    }

    fn extract_with_context(&self, cx: &Context, extractor: &dyn Extractor) -> Context {
        match extractor
            .get(HEADER_TRACEPARENT)
            .and_then(|tp| parse_traceparent(tp, extractor.get(HEADER_TRACESTATE)))
        {
            Some(sc) => cx.with_remote_span_context(sc),
            None => cx.clone(),
        }
    }

    fn fields(&self) -> FieldIter<'_> {
        FieldIter::new(fields())
    }
}

/// Writes propagation fields into omnibox [`Headers`] (for any [`TextMapPropagator`],
/// e.g. the global one: `global::get_text_map_propagator(|p| p.inject_context(&cx, &mut HeaderInjector(&mut h)))`).
#[derive(Debug)]
pub struct HeaderInjector<'a>(pub &'a mut Headers);

impl Injector for HeaderInjector<'_> {
    fn set(&mut self, key: &str, value: String) {
        self.0.insert(key.to_owned(), value);
    }
}

/// Reads propagation fields from omnibox [`Headers`].
#[derive(Debug)]
pub struct HeaderExtractor<'a>(pub &'a Headers);

impl Extractor for HeaderExtractor<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).map(String::as_str)
    }

    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(String::as_str).collect()
    }
}

/// Run `f` with the propagator in effect: the application's global propagator
/// (`opentelemetry::global::set_text_map_propagator`: W3C with baggage, B3, Jaeger, …) when
/// one was installed, else [`W3cTraceContext`]. The API's default global propagator is a
/// no-op (it names no fields); falling back keeps traces connected in an application that
/// never configured one.
pub fn with_propagator<T>(mut f: impl FnMut(&dyn TextMapPropagator) -> T) -> T {
    opentelemetry::global::get_text_map_propagator(|p| {
        if p.fields().next().is_some() {
            f(p)
        } else {
            f(&W3cTraceContext)
        }
    })
}

/// Write `cx`'s span into `headers` with the propagator in effect ([`with_propagator`]):
/// by default `traceparent` (and `tracestate` when non-empty). A context without a valid
/// span leaves `headers` unchanged.
pub fn inject_context(cx: &Context, headers: &mut Headers) {
    with_propagator(|p| p.inject_context(cx, &mut HeaderInjector(headers)));
}

/// The headers `traceparent`/`tracestate` of `cx` (empty without a valid span).
pub fn context_headers(cx: &Context) -> Headers {
    let mut h = Headers::new();
    inject_context(cx, &mut h);
    h
}

/// The remote context carried by `headers`, read with the propagator in effect
/// ([`with_propagator`]); an empty context when they carry none (spans started from it
/// become new roots).
pub fn extract(headers: &Headers) -> Context {
    with_propagator(|p| p.extract_with_context(&Context::new(), &HeaderExtractor(headers)))
}

/// The remote context carried by optional headers (an event's `common.headers`).
pub fn extract_optional(headers: Option<&Headers>) -> Context {
    headers.map_or_else(Context::new, extract)
}

/// Store the span active now (OpenTelemetry's current context) with the event being built:
/// adds `traceparent` (and `tracestate`) headers. Call it while the enqueuing span is
/// active; the relay then publishes those headers and the consumer continues the trace.
///
/// ```
/// use omnibox_core::model::OutboxEvent;
/// use opentelemetry::trace::{SpanContext, SpanId, TraceContextExt, TraceFlags, TraceId, TraceState};
/// use opentelemetry::Context;
///
/// let sc = SpanContext::new(
///     TraceId::from_hex("4bf92f3577b34da6a3ce929d0e0e4736").unwrap(),
///     SpanId::from_hex("00f067aa0ba902b7").unwrap(),
///     TraceFlags::SAMPLED, false, TraceState::default(),
/// );
/// let _guard = Context::current().with_remote_span_context(sc).attach();
/// let event = omnibox_otel::inject_current(
///     OutboxEvent::builder("order", uuid::Uuid::now_v7(), "order.placed", "orders", "o-1")
///         .payload(serde_json::json!({"total": 42})),
/// )
/// .build()
/// .unwrap();
/// assert_eq!(
///     event.common.headers.as_ref().unwrap()["traceparent"],
///     "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
/// );
/// ```
pub fn inject_current(builder: OutboxEventBuilder) -> OutboxEventBuilder {
    inject_into_builder(&Context::current(), builder)
}

/// Like [`inject_current`], with an explicit context.
pub fn inject_into_builder(cx: &Context, builder: OutboxEventBuilder) -> OutboxEventBuilder {
    let h = context_headers(cx);
    if h.is_empty() {
        builder
    } else {
        builder.headers(h)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TP: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

    #[test]
    fn round_trips_traceparent_and_tracestate() {
        let sc = parse_traceparent(TP, Some("vendor=a,other=b")).unwrap();
        assert!(sc.is_remote() && sc.is_sampled());
        assert_eq!(
            sc.trace_id().to_string(),
            "4bf92f3577b34da6a3ce929d0e0e4736"
        );
        let cx = Context::new().with_remote_span_context(sc);
        let h = context_headers(&cx);
        assert_eq!(h[HEADER_TRACEPARENT], TP);
        assert_eq!(h[HEADER_TRACESTATE], "vendor=a,other=b");
        let back = extract(&h);
        assert_eq!(
            back.span().span_context().span_id().to_string(),
            "00f067aa0ba902b7"
        );
    }

    #[test]
    fn refuses_malformed_values() {
        for bad in [
            "",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7",
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e473-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",
            "0x-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        ] {
            assert!(parse_traceparent(bad, None).is_none(), "{bad:?} accepted");
        }
        // a later version may append fields
        assert!(
            parse_traceparent(
                "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-x",
                None
            )
            .is_some()
        );
        // an invalid tracestate is dropped, the parent kept
        let sc = parse_traceparent(TP, Some("not a state")).unwrap();
        assert_eq!(sc.trace_state().header(), "");
    }

    #[test]
    fn no_span_means_no_headers_and_empty_context() {
        assert!(context_headers(&Context::new()).is_empty());
        let mut h = Headers::new();
        h.insert(HEADER_TRACEPARENT.into(), "garbage".into());
        assert!(!extract(&h).has_active_span());
        assert!(!extract_optional(None).has_active_span());
    }

    #[test]
    fn unsampled_flag_survives() {
        let tp = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00";
        let cx = extract(&Headers::from([(
            HEADER_TRACEPARENT.to_owned(),
            tp.to_owned(),
        )]));
        assert!(!cx.span().span_context().is_sampled());
        assert_eq!(context_headers(&cx)[HEADER_TRACEPARENT], tp);
    }
}

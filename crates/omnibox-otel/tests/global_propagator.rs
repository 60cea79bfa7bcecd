//! The application's global propagator is honoured (issue 12): with one installed, omnibox
//! injects and extracts through it; with none (the API's no-op default), W3C Trace Context.
//! Each test binary is its own process under nextest, so the global state is this test's.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use omnibox_core::model::Headers;
use opentelemetry::Context;
use opentelemetry::propagation::text_map_propagator::FieldIter;
use opentelemetry::propagation::{Extractor, Injector, TextMapPropagator};
use opentelemetry::trace::{SpanContext, SpanId, TraceContextExt, TraceFlags, TraceId, TraceState};

/// A propagator of the application's own: one header, `x-app-trace: <trace id>`.
#[derive(Debug)]
struct AppPropagator(Vec<String>);

impl TextMapPropagator for AppPropagator {
    fn inject_context(&self, cx: &Context, injector: &mut dyn Injector) {
        let span = cx.span();
        let sc = span.span_context();
        if sc.is_valid() {
            injector.set("x-app-trace", format!("{}:{}", sc.trace_id(), sc.span_id()));
        }
    }

    fn extract_with_context(&self, cx: &Context, extractor: &dyn Extractor) -> Context {
        let Some((t, s)) = extractor.get("x-app-trace").and_then(|v| v.split_once(':')) else {
            return cx.clone();
        };
        let sc = SpanContext::new(
            TraceId::from_hex(t).unwrap(),
            SpanId::from_hex(s).unwrap(),
            TraceFlags::SAMPLED,
            true,
            TraceState::default(),
        );
        cx.with_remote_span_context(sc)
    }

    fn fields(&self) -> FieldIter<'_> {
        FieldIter::new(&self.0)
    }
}

fn context() -> Context {
    Context::new().with_remote_span_context(SpanContext::new(
        TraceId::from_hex("4bf92f3577b34da6a3ce929d0e0e4736").unwrap(),
        SpanId::from_hex("00f067aa0ba902b7").unwrap(),
        TraceFlags::SAMPLED,
        false,
        TraceState::default(),
    ))
}

#[test]
fn w3c_without_a_global_propagator_then_the_applications_own() {
    // Nothing installed: W3C.
    let mut h = Headers::new();
    omnibox_otel::inject_context(&context(), &mut h);
    assert_eq!(
        h.get("traceparent").map(String::as_str),
        Some("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01")
    );

    // The application installs its own: omnibox follows it both ways.
    opentelemetry::global::set_text_map_propagator(AppPropagator(vec!["x-app-trace".into()]));
    let mut h = Headers::new();
    omnibox_otel::inject_context(&context(), &mut h);
    assert_eq!(h.len(), 1, "{h:?}");
    assert_eq!(
        h.get("x-app-trace").map(String::as_str),
        Some("4bf92f3577b34da6a3ce929d0e0e4736:00f067aa0ba902b7")
    );
    let cx = omnibox_otel::extract(&h);
    assert_eq!(
        cx.span().span_context().trace_id(),
        TraceId::from_hex("4bf92f3577b34da6a3ce929d0e0e4736").unwrap()
    );
}

//! Spans and trace propagation, read back from the SDK's in-memory exporter: one trace id
//! from the span that enqueued an event to the span the consumer's handler opens.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::{Arc, Mutex};

use omnibox_core::clock::SystemClock;
use omnibox_core::envelope::{
    Converter, EnvelopeConverter, MessageOrigin, metadata_headers, parse_message,
};
use omnibox_core::metrics::NoopMetrics;
use omnibox_core::model::{Headers, InboxEvent, OutboxEvent, WorkerId};
use omnibox_core::pipeline::{BatchCtx, Step};
use omnibox_core::{
    FailureKind, Handler, HandlerError, HandlerOutcome, HandlerResult, PublishError, Publisher,
    Shutdown,
};
use omnibox_otel::{OtelStep, TracedHandler, inject_current};
use opentelemetry::trace::{
    SpanContext, SpanId, SpanKind, Status, TraceContextExt, TraceId, Tracer, TracerProvider,
};
use opentelemetry::{Context, KeyValue, Value};
use opentelemetry_sdk::trace::{InMemorySpanExporter, SdkTracer, SdkTracerProvider, SpanData};

fn setup() -> (SdkTracerProvider, SdkTracer, InMemorySpanExporter) {
    let exporter = InMemorySpanExporter::default();
    let provider = SdkTracerProvider::builder()
        .with_simple_exporter(exporter.clone())
        .build();
    let tracer = provider.tracer("omnibox-otel-tests");
    (provider, tracer, exporter)
}

fn span<'a>(spans: &'a [SpanData], name: &str) -> &'a SpanData {
    spans.iter().find(|s| s.name == name).unwrap_or_else(|| {
        panic!(
            "no span {name:?} in {:?}",
            spans.iter().map(|s| &s.name).collect::<Vec<_>>()
        )
    })
}

fn attr<'a>(s: &'a SpanData, key: &str) -> Option<&'a Value> {
    s.attributes
        .iter()
        .find(|kv| kv.key.as_str() == key)
        .map(|kv| &kv.value)
}

/// A message as a broker adapter sends it (body, headers) and the span active in the call.
type Sent = (Vec<u8>, Headers, SpanContext);

/// What a broker adapter sends: the converter's body and `metadata_headers`.
#[derive(Default, Clone)]
struct CapturingBroker(Arc<Mutex<Vec<Sent>>>);

impl Publisher for CapturingBroker {
    async fn publish(&self, event: &OutboxEvent) -> Result<(), PublishError> {
        // the broker call runs inside the send span
        let active = Context::current().span().span_context().clone();
        self.0.lock().unwrap().push((
            EnvelopeConverter::default().encode(event),
            metadata_headers(event),
            active,
        ));
        Ok(())
    }
}

/// A handler that opens a span of its own from the current context.
struct ChargeCard {
    tracer: SdkTracer,
    fail: bool,
}

impl<C: Send> Handler<InboxEvent, C> for ChargeCard {
    async fn handle(&self, _event: &InboxEvent, _conn: &mut C) -> HandlerResult {
        let span = self
            .tracer
            .start_with_context("charge card", &Context::current());
        drop(span); // ends it
        if self.fail {
            return Err(HandlerError::permanent("card declined"));
        }
        Ok(HandlerOutcome::Completed)
    }
}

async fn run_outbox_batch(
    step: &OtelStep<SdkTracer>,
    publisher: &impl Publisher,
    events: &[OutboxEvent],
) {
    let worker = WorkerId::new("relay-1").unwrap();
    let shutdown = Shutdown::new();
    let mut ctx: BatchCtx<'_, OutboxEvent, ()> = BatchCtx::new(
        None,
        &worker,
        "relay",
        &NoopMetrics,
        &SystemClock,
        &shutdown,
    );
    step.on_batch_start(events, &mut ctx).await;
    for e in events {
        step.on_event_start(e, &mut ctx).await;
        step.execute(e, &mut ctx).await;
        match publisher.publish(e).await {
            Ok(()) => ctx.complete(e.common.id),
            Err(err) => ctx.fail(e.common.id, err.message.clone(), err.kind, None),
        }
        step.on_event_end(e, &mut ctx).await;
    }
    step.on_batch_end(events, &mut ctx).await;
}

async fn run_inbox_batch<H: Handler<InboxEvent, ()>>(
    step: &OtelStep<SdkTracer>,
    handler: &H,
    events: &[InboxEvent],
) {
    let worker = WorkerId::new("inbox-1").unwrap();
    let shutdown = Shutdown::new();
    let mut ctx: BatchCtx<'_, InboxEvent, ()> = BatchCtx::new(
        None,
        &worker,
        "billing-inbox",
        &NoopMetrics,
        &SystemClock,
        &shutdown,
    );
    step.on_batch_start(events, &mut ctx).await;
    for e in events {
        step.on_event_start(e, &mut ctx).await;
        step.execute(e, &mut ctx).await;
        match handler.handle(e, &mut ()).await {
            Ok(_) => ctx.complete(e.common.id),
            Err(err) => ctx.fail(e.common.id, err.message.clone(), err.kind, None),
        }
        step.on_event_end(e, &mut ctx).await;
    }
    step.on_batch_end(events, &mut ctx).await;
}

fn inbox_event_from(body: &[u8], headers: Headers, group: &str) -> InboxEvent {
    let msg = parse_message(
        body,
        headers,
        MessageOrigin {
            source: "orders".into(),
            fallback_id: "orders:0:0".into(),
        },
    )
    .unwrap();
    InboxEvent::builder(
        msg.message_id.clone(),
        group,
        msg.source.clone(),
        msg.event_type.clone(),
    )
    .payload(serde_json::Value::Object(msg.payload.clone()))
    .headers(msg.headers.clone())
    .build()
    .unwrap()
}

#[tokio::test]
async fn one_trace_id_from_the_enqueuing_span_to_the_handler_span() {
    let (_provider, tracer, exporter) = setup();

    // 1. The request enqueues an event while its span is active.
    let request = tracer.start("POST /orders");
    let request_cx = Context::current_with_span(request);
    let event = {
        let _active = request_cx.clone().attach();
        inject_current(
            OutboxEvent::builder(
                "order",
                uuid::Uuid::now_v7(),
                "order.placed",
                "orders",
                "o-1",
            )
            .payload(serde_json::json!({"total": 42})),
        )
        .build()
        .unwrap()
    };
    request_cx.span().end();
    let stored = event.common.headers.clone().unwrap();
    assert!(stored.contains_key("traceparent"));

    // 2. The relay publishes it (the event went through PostgreSQL as a row with headers).
    let relay = OtelStep::with_tracer(tracer.clone()).messaging_system("kafka");
    let broker = CapturingBroker::default();
    run_outbox_batch(
        &relay,
        &relay.publisher(broker.clone()),
        std::slice::from_ref(&event),
    )
    .await;
    let (body, headers, active_in_broker_call) = broker.0.lock().unwrap().pop().unwrap();

    // 3. The consumer stores the message and handles it.
    let inbox = OtelStep::with_tracer(tracer.clone()).messaging_system("kafka");
    let received = inbox_event_from(&body, headers.clone(), "billing");
    let handler = inbox.handler(ChargeCard {
        tracer: tracer.clone(),
        fail: false,
    });
    run_inbox_batch(&inbox, &handler, std::slice::from_ref(&received)).await;

    let spans = exporter.get_finished_spans().unwrap();
    let req = span(&spans, "POST /orders");
    let send = span(&spans, "send orders");
    let process = span(&spans, "process orders");
    let charge = span(&spans, "charge card");
    let trace_id = req.span_context.trace_id();
    assert_ne!(trace_id, TraceId::INVALID);
    for s in [send, process, charge] {
        assert_eq!(
            s.span_context.trace_id(),
            trace_id,
            "{} left the trace",
            s.name
        );
    }
    // parentage: request -> send -> (broker message) -> process -> handler's span
    assert_eq!(send.parent_span_id, req.span_context.span_id());
    assert!(
        send.parent_span_is_remote,
        "send continues the stored traceparent"
    );
    assert_eq!(process.parent_span_id, send.span_context.span_id());
    assert_eq!(charge.parent_span_id, process.span_context.span_id());
    // the broker call ran inside the send span, and the message carried that span
    assert_eq!(active_in_broker_call.span_id(), send.span_context.span_id());
    assert_eq!(
        headers["traceparent"],
        format!("00-{}-{}-01", trace_id, send.span_context.span_id())
    );

    // messaging semantic conventions
    assert_eq!(send.span_kind, SpanKind::Producer);
    assert_eq!(process.span_kind, SpanKind::Consumer);
    assert_eq!(attr(send, "messaging.system"), Some(&Value::from("kafka")));
    assert_eq!(
        attr(send, "messaging.operation.type"),
        Some(&Value::from("send"))
    );
    assert_eq!(
        attr(send, "messaging.destination.name"),
        Some(&Value::from("orders"))
    );
    assert_eq!(
        attr(send, "messaging.message.id"),
        Some(&Value::from(event.common.id.to_string()))
    );
    assert_eq!(
        attr(process, "messaging.operation.type"),
        Some(&Value::from("process"))
    );
    assert_eq!(
        attr(process, "messaging.consumer.group.name"),
        Some(&Value::from("billing"))
    );
    assert_eq!(
        attr(process, "messaging.message.id"),
        Some(&Value::from(event.common.id.to_string())),
        "the consumer sees the event id as message id"
    );
    assert_eq!(
        attr(process, "omnibox.event.type"),
        Some(&Value::from("order.placed"))
    );
    assert_eq!(
        attr(process, "omnibox.outcome"),
        Some(&Value::from("completed"))
    );
    assert_eq!(process.status, Status::Unset);

    // batch spans: one per side, linked from the event spans, linking to the producers
    let batches: Vec<&SpanData> = spans
        .iter()
        .filter(|s| s.name.ends_with(" batch"))
        .collect();
    assert_eq!(batches.len(), 2);
    let send_batch = span(&spans, "send batch");
    assert_eq!(
        attr(send_batch, "messaging.batch.message_count"),
        Some(&Value::I64(1))
    );
    assert_eq!(attr(send_batch, "omnibox.job"), Some(&Value::from("relay")));
    assert_eq!(
        attr(send_batch, "omnibox.batch.completed"),
        Some(&Value::I64(1))
    );
    assert!(
        send.links
            .iter()
            .any(|l| l.span_context.span_id() == send_batch.span_context.span_id())
    );
    assert!(
        send_batch
            .links
            .iter()
            .any(|l| l.span_context.span_id() == req.span_context.span_id())
    );

    // payloads and header values never appear on spans
    for s in &spans {
        for kv in &s.attributes {
            let v = kv.value.to_string();
            assert!(!v.contains("\"total\""), "{}={v}", kv.key);
            assert!(
                v != headers["traceparent"] && v != stored["traceparent"],
                "{}={v}",
                kv.key
            );
        }
    }
}

#[tokio::test]
async fn a_failed_event_records_the_error_and_untraced_events_join_the_batch_trace() {
    let (_provider, tracer, exporter) = setup();
    // no traceparent stored: the event span is a child of the batch span
    let event = InboxEvent::builder("m-9", "billing", "payments", "payment.captured")
        .payload(serde_json::json!({"amount": 5}))
        .build()
        .unwrap();
    let step = OtelStep::with_tracer(tracer.clone());
    let handler = step.handler(ChargeCard {
        tracer: tracer.clone(),
        fail: true,
    });
    run_inbox_batch(&step, &handler, std::slice::from_ref(&event)).await;

    let spans = exporter.get_finished_spans().unwrap();
    let batch = span(&spans, "process batch");
    let process = span(&spans, "process payments");
    assert_eq!(process.parent_span_id, batch.span_context.span_id());
    assert_eq!(
        process.span_context.trace_id(),
        batch.span_context.trace_id()
    );
    assert!(process.links.is_empty());
    assert_eq!(process.status, Status::error("card declined"));
    assert_eq!(attr(process, "error.type"), Some(&Value::from("permanent")));
    assert_eq!(
        attr(process, "omnibox.outcome"),
        Some(&Value::from("failed"))
    );
    assert_eq!(
        attr(process, "messaging.system"),
        Some(&Value::from("omnibox"))
    );
    assert!(process.events.iter().any(|e| {
        e.name == "exception"
            && e.attributes
                .contains(&KeyValue::new("exception.message", "card declined"))
    }));
    assert_eq!(attr(batch, "omnibox.batch.failed"), Some(&Value::I64(1)));
}

#[tokio::test]
async fn events_left_without_a_verdict_are_released_and_every_span_ends() {
    let (_provider, tracer, exporter) = setup();
    let events: Vec<InboxEvent> = (0..3)
        .map(|i| {
            InboxEvent::builder(format!("m-{i}"), "g", "orders", "order.placed")
                .payload(serde_json::json!({"n": i}))
                .build()
                .unwrap()
        })
        .collect();
    let step = OtelStep::with_tracer(tracer.clone());
    let worker = WorkerId::new("w").unwrap();
    let shutdown = Shutdown::new();
    let mut ctx: BatchCtx<'_, InboxEvent, ()> =
        BatchCtx::new(None, &worker, "job", &NoopMetrics, &SystemClock, &shutdown);
    step.on_batch_start(&events, &mut ctx).await;
    // first event completed; the second started but decided nothing (stopped); the third never started
    step.on_event_start(&events[0], &mut ctx).await;
    ctx.complete(events[0].common.id);
    step.on_event_end(&events[0], &mut ctx).await;
    step.on_event_start(&events[1], &mut ctx).await;
    assert!(step.event_context(events[1].common.id).is_some());
    step.on_batch_end(&events, &mut ctx).await;
    assert!(
        step.event_context(events[1].common.id).is_none(),
        "no span left open"
    );

    let spans = exporter.get_finished_spans().unwrap();
    assert_eq!(spans.len(), 3, "batch + two started events");
    let outcomes: Vec<_> = spans
        .iter()
        .filter_map(|s| attr(s, "omnibox.outcome").map(|v| v.to_string()))
        .collect();
    assert_eq!(
        outcomes,
        vec!["completed".to_owned(), "released".to_owned()]
    );
    let batch = span(&spans, "process batch");
    assert_eq!(attr(batch, "omnibox.batch.released"), Some(&Value::I64(2)));
}

#[tokio::test]
async fn a_standalone_traced_handler_continues_the_stored_trace() {
    let (_provider, tracer, exporter) = setup();
    let parent = SpanContext::new(
        TraceId::from_hex("4bf92f3577b34da6a3ce929d0e0e4736").unwrap(),
        SpanId::from_hex("00f067aa0ba902b7").unwrap(),
        opentelemetry::trace::TraceFlags::SAMPLED,
        true,
        Default::default(),
    );
    let event = InboxEvent::builder("m-1", "g", "orders", "order.placed")
        .payload(serde_json::json!({"n": 1}))
        .header(
            "traceparent",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        )
        .build()
        .unwrap();
    let handler = TracedHandler::new(
        ChargeCard {
            tracer: tracer.clone(),
            fail: false,
        },
        tracer.clone(),
    );
    let outcome = handler.handle(&event, &mut ()).await.unwrap();
    assert_eq!(outcome, HandlerOutcome::Completed);

    let spans = exporter.get_finished_spans().unwrap();
    let process = span(&spans, "process orders");
    let charge = span(&spans, "charge card");
    assert_eq!(process.span_context.trace_id(), parent.trace_id());
    assert_eq!(process.parent_span_id, parent.span_id());
    assert_eq!(charge.parent_span_id, process.span_context.span_id());
    assert_eq!(
        attr(process, "omnibox.outcome"),
        Some(&Value::from("completed"))
    );
}

#[tokio::test]
async fn a_failed_publish_is_recorded_on_the_send_span() {
    struct Down;
    impl Publisher for Down {
        async fn publish(&self, _event: &OutboxEvent) -> Result<(), PublishError> {
            Err(PublishError {
                kind: FailureKind::Transient,
                message: "broker unreachable".into(),
                source: None,
            })
        }
    }
    let (_provider, tracer, exporter) = setup();
    let event = OutboxEvent::builder(
        "order",
        uuid::Uuid::now_v7(),
        "order.placed",
        "orders",
        "o-1",
    )
    .payload(serde_json::json!({"total": 1}))
    .build()
    .unwrap();
    let step = OtelStep::with_tracer(tracer.clone());
    run_outbox_batch(&step, &step.publisher(Down), std::slice::from_ref(&event)).await;
    let spans = exporter.get_finished_spans().unwrap();
    let send = span(&spans, "send orders");
    assert_eq!(send.status, Status::error("broker unreachable"));
    assert_eq!(attr(send, "error.type"), Some(&Value::from("transient")));
    assert_eq!(attr(send, "omnibox.outcome"), Some(&Value::from("failed")));
}

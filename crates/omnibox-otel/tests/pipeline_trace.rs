//! One trace through the real pipeline on the in-memory adapters: a request enqueues an
//! outbox event in its transaction, the [`OutboxRelay`] (with [`OtelStep`] and the traced
//! publisher) sends it to the broker, and an [`InboxRunner`] whose handler is a
//! [`TracedHandler`] consumes it. Read back from the SDK's in-memory exporter.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::future::Future;
use std::time::Duration;

use omnibox_core::inbox::InboxRunner;
use omnibox_core::memory::{MemoryBroker, MemoryDb, MemoryInboxStore, MemoryOutboxStore};
use omnibox_core::model::{EventStatus, InboxEvent, OutboxEvent, WorkerId};
use omnibox_core::relay::OutboxRelay;
use omnibox_core::store::{InsertEvents, Transactions};
use omnibox_core::{Handler, HandlerOutcome, HandlerResult, Shutdown};
use omnibox_otel::{OtelStep, TracedHandler, inject_current};
use opentelemetry::Context;
use opentelemetry::trace::{SpanKind, TraceContextExt, TraceId, Tracer, TracerProvider};
use opentelemetry_sdk::trace::{InMemorySpanExporter, SdkTracer, SdkTracerProvider, SpanData};

const LIMIT: Duration = Duration::from_secs(10);

async fn bounded<T>(what: &str, f: impl Future<Output = T>) -> T {
    tokio::time::timeout(LIMIT, f)
        .await
        .unwrap_or_else(|_| panic!("timed out after {LIMIT:?}: {what}"))
}

fn span<'a>(spans: &'a [SpanData], name: &str) -> &'a SpanData {
    spans.iter().find(|s| s.name == name).unwrap_or_else(|| {
        panic!(
            "no span {name:?} in {:?}",
            spans.iter().map(|s| &s.name).collect::<Vec<_>>()
        )
    })
}

/// A handler that opens a span of its own from the current context and records the
/// handled event's id in the caller's transaction.
struct ChargeCard {
    tracer: SdkTracer,
}

impl Handler<InboxEvent, omnibox_core::memory::MemoryConn> for ChargeCard {
    async fn handle(
        &self,
        event: &InboxEvent,
        conn: &mut omnibox_core::memory::MemoryConn,
    ) -> HandlerResult {
        drop(
            self.tracer
                .start_with_context("charge card", &Context::current()),
        );
        conn.put(
            format!("charged:{}", event.common.id),
            serde_json::json!(true),
        )
        .await;
        Ok(HandlerOutcome::Completed)
    }
}

#[tokio::test]
async fn handler_span_shares_the_enqueuing_spans_trace_through_relay_broker_and_inbox() {
    let exporter = InMemorySpanExporter::default();
    let provider = SdkTracerProvider::builder()
        .with_simple_exporter(exporter.clone())
        .build();
    let tracer = provider.tracer("omnibox-otel-pipeline-test");

    let db = MemoryDb::new();
    let outbox = MemoryOutboxStore::new();
    let broker = MemoryBroker::new();

    // 1. A request enqueues an event inside its own transaction while its span is active.
    let request_cx = Context::current_with_span(tracer.start("POST /orders"));
    let event = {
        let _active = request_cx.clone().attach();
        inject_current(
            OutboxEvent::builder(
                "order",
                uuid::Uuid::now_v7(),
                "order.placed",
                "orders",
                "customer-7",
            )
            .payload(serde_json::json!({"total": 42})),
        )
        .build()
        .unwrap()
    };
    let mut tx = db.begin().await.unwrap();
    outbox.insert(&mut tx, &event).await.unwrap();
    db.commit(tx).await.unwrap();
    request_cx.span().end();

    // 2. The relay claims and publishes it through the traced publisher.
    let relay_step = OtelStep::with_tracer(tracer.clone()).messaging_system("memory");
    let relay = OutboxRelay::builder(outbox.clone(), relay_step.publisher(broker.clone()))
        .step_before(relay_step.clone())
        .publish_timeout(Duration::from_secs(5))
        .build()
        .unwrap();
    let shutdown = Shutdown::new();
    let result = bounded(
        "relay batch",
        relay.publish_batch(&db, &WorkerId::new("relay-1").unwrap(), &shutdown),
    )
    .await
    .unwrap();
    assert_eq!(result.claimed, 1, "{result:?}");
    assert_eq!(broker.published("orders").len(), 1);
    let row = outbox
        .get(&mut db.connection(), event.common.id)
        .await
        .unwrap();
    assert_eq!(row.common.status, EventStatus::Completed);

    // 3. The inbox runner consumes it; its handler is wrapped in a TracedHandler.
    let inbox = MemoryInboxStore::new();
    let mut runner = InboxRunner::builder(
        broker.consumer(["orders"], "billing"),
        db.clone(),
        inbox.clone(),
        "billing",
    )
    .handler(TracedHandler::new(
        ChargeCard {
            tracer: tracer.clone(),
        },
        tracer.clone(),
    ))
    .build()
    .unwrap();
    let outcome = bounded("consume", runner.process_one()).await.unwrap();
    assert!(outcome.acked && outcome.handled, "{outcome:?}");
    assert_eq!(
        outcome.message_id.as_deref(),
        Some(event.common.id.to_string().as_str())
    );
    assert_eq!(
        db.value(&format!("charged:{}", outcome.event_id.unwrap()))
            .await,
        Some(serde_json::json!(true)),
        "the handler ran in the inbox transaction"
    );
    bounded("stop", runner.stop()).await.unwrap();

    let spans = exporter.get_finished_spans().unwrap();
    let request = span(&spans, "POST /orders");
    let send = span(&spans, "send orders");
    let process = span(&spans, "process orders");
    let charge = span(&spans, "charge card");
    let trace_id = request.span_context.trace_id();
    assert_ne!(trace_id, TraceId::INVALID);
    assert_eq!(
        process.span_context.trace_id(),
        trace_id,
        "the handler's span continues the enqueuing span's trace"
    );
    assert_eq!(charge.span_context.trace_id(), trace_id);
    assert_eq!(send.span_context.trace_id(), trace_id);
    // request -> send (relay) -> broker message -> process (inbox handler) -> charge card
    assert_eq!(send.parent_span_id, request.span_context.span_id());
    assert_eq!(send.span_kind, SpanKind::Producer);
    assert_eq!(process.parent_span_id, send.span_context.span_id());
    assert!(process.parent_span_is_remote);
    assert_eq!(process.span_kind, SpanKind::Consumer);
    assert_eq!(charge.parent_span_id, process.span_context.span_id());
    // The relay's batch span ended too.
    span(&spans, "send batch");
}

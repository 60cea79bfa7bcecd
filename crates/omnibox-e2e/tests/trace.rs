//! One trace from the enqueuing span to the handler's span through PostgreSQL and a real
//! broker (RabbitMQ, NATS JetStream, Kafka): the request's span is injected into the
//! event, stored in the outbox row, carried by the relay's publish (W3C `traceparent` on
//! the wire), stored in the inbox row and continued by the traced handler, which runs in
//! the inbox transaction.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use common::{LIMIT, Pg, bounded, rabbit};
use omnibox_core::consumer::Consumer;
use omnibox_core::inbox::{AckStrategy, InboxRunner};
use omnibox_core::model::EventStatus;
use omnibox_core::relay::OutboxRelay;
use omnibox_core::{
    Handler, HandlerError, HandlerOutcome, HandlerResult, InboxEvent, OutboxEvent, Publisher,
    Shutdown, WorkerId,
};
use omnibox_otel::{OtelStep, TracedHandler, inject_current};
use omnibox_postgres::PgDatabase;
use opentelemetry::Context;
use opentelemetry::trace::{SpanKind, TraceContextExt, TraceId, Tracer, TracerProvider};
use opentelemetry_sdk::trace::{InMemorySpanExporter, SdkTracer, SdkTracerProvider, SpanData};
use sqlx::PgConnection;

fn span<'a>(spans: &'a [SpanData], name: &str) -> &'a SpanData {
    spans.iter().find(|s| s.name == name).unwrap_or_else(|| {
        panic!(
            "no span {name:?} in {:?}",
            spans.iter().map(|s| &s.name).collect::<Vec<_>>()
        )
    })
}

/// Opens a span of its own from the current context and writes the business effect in
/// the inbox transaction.
struct ChargeCard {
    tracer: SdkTracer,
    schema: String,
}

impl Handler<InboxEvent, PgConnection> for ChargeCard {
    async fn handle(&self, event: &InboxEvent, conn: &mut PgConnection) -> HandlerResult {
        drop(
            self.tracer
                .start_with_context("charge card", &Context::current()),
        );
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "INSERT INTO {}.effects (message_id, n) VALUES ($1, 1)",
            self.schema
        )))
        .bind(&event.message_id)
        .execute(conn)
        .await
        .map_err(|e| HandlerError::from(omnibox_postgres::classify("charge", e)))?;
        Ok(HandlerOutcome::Completed)
    }
}

/// Enqueue under a request span, relay once through `publisher`, consume once from
/// `consumer`; assert one trace from the request to the handler's own span. Returns the
/// runner (a Kafka consumer is closed off the runtime).
async fn one_trace<P, C>(
    pg: &Pg,
    topic: &str,
    system: &str,
    publisher: P,
    consumer: C,
) -> Box<dyn Send>
where
    P: Publisher + 'static,
    C: Consumer + Sync + 'static,
{
    let exporter = InMemorySpanExporter::default();
    let provider = SdkTracerProvider::builder()
        .with_simple_exporter(exporter.clone())
        .build();
    let tracer = provider.tracer("omnibox-e2e-trace");
    let db = PgDatabase::new(pg.pool.clone());

    let request = Context::current_with_span(tracer.start("POST /orders"));
    let event = {
        let _active = request.clone().attach();
        inject_current(
            OutboxEvent::builder("order", uuid::Uuid::now_v7(), "order.placed", topic, "c-7")
                .payload(serde_json::json!({ "total": 42 })),
        )
        .build()
        .unwrap()
    };
    let mut tx = pg.pool.begin().await.unwrap();
    pg.outbox.enqueue(&mut tx, &event).await.unwrap();
    tx.commit().await.unwrap();
    request.span().end();

    let step = OtelStep::with_tracer(tracer.clone()).messaging_system(system);
    let relay = OutboxRelay::builder(pg.outbox.clone(), step.publisher(publisher))
        .step_before(step.clone())
        .publish_timeout(Duration::from_secs(10))
        .build()
        .unwrap();
    let result = bounded(
        "relay batch",
        LIMIT,
        relay.publish_batch(
            &db,
            &WorkerId::new("relay-trace").unwrap(),
            &Shutdown::new(),
        ),
    )
    .await
    .unwrap();
    assert_eq!(
        (result.claimed, result.completed.len()),
        (1, 1),
        "{result:?}"
    );
    assert_eq!(pg.outbox_count(EventStatus::Completed).await, 1);

    let mut runner = InboxRunner::builder(consumer, db, pg.inbox.clone(), "billing")
        .ack_strategy(AckStrategy::ExactlyOnceInbox)
        .handler(TracedHandler::new(
            ChargeCard {
                tracer: tracer.clone(),
                schema: pg.schema.clone(),
            },
            tracer.clone(),
        ))
        .build()
        .unwrap();
    let outcome = bounded("consume", LIMIT, runner.process_one())
        .await
        .unwrap();
    assert!(outcome.acked && outcome.handled, "{outcome:?}");
    assert_eq!(pg.effects().await, (1, 0, 1), "the effect committed once");
    assert_eq!(pg.inbox_count(EventStatus::Completed).await, 1);
    let stored: Option<String> = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
        "SELECT headers::text FROM {}.inbox_events",
        pg.schema
    )))
    .fetch_one(&pg.pool)
    .await
    .unwrap();

    let spans = exporter.get_finished_spans().unwrap();
    let request = span(&spans, "POST /orders");
    let send = span(&spans, &format!("send {topic}"));
    let process = span(&spans, &format!("process {topic}"));
    let charge = span(&spans, "charge card");
    let trace_id = request.span_context.trace_id();
    assert_ne!(trace_id, TraceId::INVALID);
    assert!(
        stored
            .as_deref()
            .is_some_and(|t| t.contains(&trace_id.to_string())),
        "the inbox row keeps the traceparent: {stored:?}"
    );
    for s in [send, process, charge] {
        assert_eq!(s.span_context.trace_id(), trace_id, "{}", s.name);
    }
    assert_eq!(send.parent_span_id, request.span_context.span_id());
    assert_eq!(send.span_kind, SpanKind::Producer);
    assert_eq!(process.parent_span_id, send.span_context.span_id());
    assert!(
        process.parent_span_is_remote,
        "the context crossed the broker"
    );
    assert_eq!(process.span_kind, SpanKind::Consumer);
    assert_eq!(charge.parent_span_id, process.span_context.span_id());
    assert!(
        send.attributes
            .iter()
            .any(|kv| kv.key.as_str() == "messaging.system" && kv.value.as_str() == system),
        "{:?}",
        send.attributes
    );
    Box::new(runner)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_trace_through_postgres_and_rabbitmq() {
    common::init_tracing();
    let url = rabbit::url().await;
    let pg = Pg::new(&common::database_url().await, "trace_rabbit").await;
    let conn = rabbit::connect(&url).await;
    let queue = omnibox_testing::unique_name("trace_rabbit");
    rabbit::declare(&conn, &queue).await;
    let publisher = omnibox_rabbitmq::RabbitPublisher::new(rabbit::connect(&url).await);
    let consumer = omnibox_rabbitmq::RabbitConsumer::new(rabbit::connect(&url).await, &queue);
    drop(one_trace(&pg, &queue, "rabbitmq", publisher, consumer).await);
    rabbit::delete(&conn, &queue).await;
    pg.drop_schema().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_trace_through_postgres_and_nats() {
    use omnibox_nats::async_nats::{self, jetstream};
    common::init_tracing();
    let url = omnibox_testing::nats_url()
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let pg = Pg::new(&common::database_url().await, "trace_nats").await;
    let js = jetstream::new(async_nats::connect(url.as_str()).await.unwrap());
    let stream = omnibox_testing::unique_name("trace_nats");
    let subject = format!("{stream}.orders");
    js.create_stream(jetstream::stream::Config {
        name: stream.clone(),
        subjects: vec![subject.clone()],
        ..Default::default()
    })
    .await
    .unwrap();
    let publisher = omnibox_nats::NatsPublisher::new(js.clone());
    let consumer = omnibox_nats::NatsConsumer::new(js.clone(), stream.clone(), "billing");
    drop(one_trace(&pg, &subject, "nats", publisher, consumer).await);
    js.delete_stream(&stream).await.unwrap();
    pg.drop_schema().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_trace_through_postgres_and_kafka() {
    use omnibox_kafka::rdkafka::ClientConfig;
    common::init_tracing();
    let kafka = common::kafka::Kafka::resolve().await;
    let topic = kafka.topic("trace_kafka");
    let pg = Pg::new(&common::database_url().await, "trace_kafka").await;
    let publisher = omnibox_kafka::KafkaPublisher::from_config(
        ClientConfig::new().set("bootstrap.servers", &kafka.bootstrap),
    )
    .unwrap();
    let consumer = kafka.consumer(&topic);
    let runner = one_trace(&pg, &topic, "kafka", publisher, consumer).await;
    common::kafka::close(runner).await;
    pg.drop_schema().await;
}

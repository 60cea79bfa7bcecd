//! Against a live RabbitMQ (AMQP_URL).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::Arc;
use std::time::Duration;

use omnibox_core::consumer::{AckHandle, Consumer, Redelivery};
use omnibox_core::model::{Limits, OutboxEvent};
use omnibox_core::{FailureKind, PublishError, Publisher};
use omnibox_rabbitmq::lapin::options::*;
use omnibox_rabbitmq::lapin::types::{AMQPValue, FieldTable};
use omnibox_rabbitmq::lapin::{
    BasicProperties, Channel, Connection, ConnectionProperties, ExchangeKind,
};
use omnibox_rabbitmq::{
    ConsumerOptions, PublisherOptions, RabbitConsumer, RabbitPublisher, RoutingMode,
};
use serde_json::json;

const WAIT: Duration = Duration::from_secs(20);

async fn amqp_url() -> String {
    // AMQP_URL, else a testcontainers RabbitMQ, else a loud error naming AMQP_URL.
    omnibox_testing::amqp_url()
        .await
        .unwrap_or_else(|e| panic!("{e}"))
}

async fn within<T>(fut: impl std::future::Future<Output = T>) -> T {
    tokio::time::timeout(WAIT, fut).await.expect("timed out")
}

fn unique(prefix: &str) -> String {
    format!("omnibox-test-{prefix}-{}", uuid::Uuid::new_v4().simple())
}

async fn connect() -> Arc<Connection> {
    Arc::new(
        within(Connection::connect(
            &amqp_url().await,
            ConnectionProperties::default(),
        ))
        .await
        .expect("connect to AMQP_URL"),
    )
}

/// A fresh queue (deleted by `Fixture::cleanup`).
struct Fixture {
    conn: Arc<Connection>,
    admin: Channel,
    queues: Vec<String>,
    exchanges: Vec<String>,
}

impl Fixture {
    async fn new() -> Self {
        let conn = connect().await;
        let admin = conn.create_channel().await.unwrap();
        Self {
            conn,
            admin,
            queues: vec![],
            exchanges: vec![],
        }
    }

    async fn queue(&mut self, prefix: &str, args: FieldTable) -> String {
        let name = unique(prefix);
        self.admin
            .queue_declare(name.as_str().into(), QueueDeclareOptions::default(), args)
            .await
            .unwrap();
        self.queues.push(name.clone());
        name
    }

    async fn exchange(&mut self, prefix: &str) -> String {
        let name = unique(prefix);
        self.admin
            .exchange_declare(
                name.as_str().into(),
                ExchangeKind::Direct,
                ExchangeDeclareOptions::default(),
                FieldTable::default(),
            )
            .await
            .unwrap();
        self.exchanges.push(name.clone());
        name
    }

    async fn get(&self, queue: &str) -> Option<omnibox_rabbitmq::lapin::message::BasicGetMessage> {
        self.admin
            .basic_get(queue.into(), BasicGetOptions { no_ack: true })
            .await
            .unwrap()
    }

    async fn count(&self, queue: &str) -> u32 {
        let ch = self.conn.create_channel().await.unwrap();
        let q = ch
            .queue_declare(
                queue.into(),
                QueueDeclareOptions {
                    passive: true,
                    ..Default::default()
                },
                FieldTable::default(),
            )
            .await
            .unwrap();
        q.message_count()
    }

    async fn raw(&self, queue: &str, body: &[u8]) {
        self.raw_with(queue, body, BasicProperties::default()).await;
    }

    async fn raw_with(&self, queue: &str, body: &[u8], properties: BasicProperties) {
        self.admin
            .basic_publish(
                "".into(),
                queue.into(),
                BasicPublishOptions::default(),
                body,
                properties,
            )
            .await
            .unwrap();
    }

    async fn cleanup(self) {
        let ch = self.conn.create_channel().await.unwrap();
        for q in &self.queues {
            ch.queue_delete(q.as_str().into(), QueueDeleteOptions::default())
                .await
                .unwrap();
        }
        for e in &self.exchanges {
            ch.exchange_delete(e.as_str().into(), ExchangeDeleteOptions::default())
                .await
                .unwrap();
        }
        let _ = self.conn.close(200, "OK".into()).await;
    }

    fn to_queue(&self) -> RabbitPublisher {
        RabbitPublisher::new(self.conn.clone()).with_options(
            PublisherOptions::default().routing(RoutingMode::FixedExchange(String::new())),
        )
    }
}

fn event(topic: &str, key: &str) -> OutboxEvent {
    OutboxEvent::builder("order", uuid::Uuid::now_v7(), "order.placed", topic, key)
        .payload(json!({"total": 42}))
        .trace_id("trace-1")
        .correlation_id("corr-1")
        .header(
            "traceparent",
            "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
        )
        .build()
        .unwrap()
}

fn header<'a>(props: &'a BasicProperties, key: &str) -> Option<&'a AMQPValue> {
    props.headers().as_ref().and_then(|h| h.inner().get(key))
}

fn long_string(v: Option<&AMQPValue>) -> String {
    match v {
        Some(AMQPValue::LongString(s)) => String::from_utf8(s.as_bytes().to_vec()).unwrap(),
        other => panic!("expected a long string, got {other:?}"),
    }
}

#[tokio::test]
async fn publish_returns_after_confirm_with_properties_headers_and_envelope() {
    let mut fx = Fixture::new().await;
    let q = fx.queue("props", FieldTable::default()).await;
    let e = event(&q, "k");
    within(fx.to_queue().publish(&e)).await.unwrap();

    // The confirm came back, so the message is in the queue already.
    let msg = fx.get(&q).await.expect("message in queue");
    let p = &msg.delivery.properties;
    assert_eq!(
        p.message_id().as_ref().map(|s| s.as_str().to_owned()),
        Some(e.common.id.to_string())
    );
    assert_eq!(*p.delivery_mode(), Some(2));
    assert_eq!(long_string(header(p, "event_id")), e.common.id.to_string());
    assert_eq!(long_string(header(p, "event_type")), "order.placed");
    assert_eq!(long_string(header(p, "trace_id")), "trace-1");
    assert_eq!(long_string(header(p, "correlation_id")), "corr-1");
    assert!(long_string(header(p, "traceparent")).starts_with("00-0af7"));
    let body: serde_json::Value = serde_json::from_slice(&msg.delivery.data).unwrap();
    assert_eq!(body["payload"], json!({"total": 42}));
    assert_eq!(body["event_type"], "order.placed");
    fx.cleanup().await;
}

#[tokio::test]
async fn topic_as_exchange_routes_by_partition_key() {
    let mut fx = Fixture::new().await;
    let ex = fx.exchange("ex").await;
    let q = fx.queue("bound", FieldTable::default()).await;
    fx.admin
        .queue_bind(
            q.as_str().into(),
            ex.as_str().into(),
            "customer-7".into(),
            QueueBindOptions::default(),
            FieldTable::default(),
        )
        .await
        .unwrap();
    let publisher = RabbitPublisher::new(fx.conn.clone())
        .with_options(PublisherOptions::default().routing(RoutingMode::TopicAsExchange));
    within(publisher.publish(&event(&ex, "customer-7")))
        .await
        .unwrap();
    let msg = fx.get(&q).await.expect("routed by partition key");
    assert_eq!(msg.delivery.routing_key.as_str(), "customer-7");

    // Another key has no binding: mandatory makes it a permanent error, not a silent drop.
    let err = within(publisher.publish(&event(&ex, "nobody")))
        .await
        .unwrap_err();
    assert_eq!(err.kind, FailureKind::Permanent, "{err}");
    assert!(err.message.contains("312"), "{err}");
    fx.cleanup().await;
}

/// The default routing needs nothing but a queue named like the topic (RabbitMQ's default
/// exchange): a first-time user's setup publishes on the first try.
#[tokio::test]
async fn the_default_routing_reaches_a_queue_named_by_the_topic() {
    let mut fx = Fixture::new().await;
    let q = fx.queue("plain", FieldTable::default()).await;
    let publisher = RabbitPublisher::new(fx.conn.clone());
    within(publisher.publish(&event(&q, "customer-7")))
        .await
        .unwrap();
    let msg = fx
        .get(&q)
        .await
        .expect("routed to the queue named by the topic");
    assert_eq!(msg.delivery.routing_key.as_str(), q);
    assert_eq!(msg.delivery.exchange.as_str(), "");
    fx.cleanup().await;
}

#[tokio::test]
async fn unknown_exchange_is_permanent_and_the_publisher_recovers() {
    let mut fx = Fixture::new().await;
    let q = fx.queue("after", FieldTable::default()).await;
    let publisher = RabbitPublisher::new(fx.conn.clone())
        .with_options(PublisherOptions::default().routing(RoutingMode::TopicAsExchange));
    let err = within(publisher.publish(&event(&unique("missing"), "k")))
        .await
        .unwrap_err();
    assert_eq!(err.kind, FailureKind::Permanent, "{err}");
    assert!(
        err.message.contains("404") || err.message.contains("NOT_FOUND"),
        "{err}"
    );

    // The broker closed the channel; the next publish opens a new one.
    let to_queue = publisher.with_options(
        PublisherOptions::default().routing(RoutingMode::FixedExchange(String::new())),
    );
    within(to_queue.publish(&event(&q, "k"))).await.unwrap();
    assert_eq!(fx.count(&q).await, 1);
    fx.cleanup().await;
}

#[tokio::test]
async fn batch_reports_one_outcome_per_event_and_spares_neighbours() {
    let mut fx = Fixture::new().await;
    let ex = fx.exchange("batch").await;
    let q = fx.queue("batch", FieldTable::default()).await;
    fx.admin
        .queue_bind(
            q.as_str().into(),
            ex.as_str().into(),
            "k".into(),
            QueueBindOptions::default(),
            FieldTable::default(),
        )
        .await
        .unwrap();
    let publisher = RabbitPublisher::new(fx.conn.clone())
        .with_options(PublisherOptions::default().routing(RoutingMode::TopicAsExchange));
    let missing = unique("missing");
    let events = vec![
        event(&ex, "k"),
        event(&missing, "k"),
        event(&ex, "k"),
        event(&ex, "unbound"),
        event(&ex, "k"),
    ];
    let results: Vec<Result<(), PublishError>> = within(publisher.publish_batch(&events)).await;
    let kinds: Vec<_> = results
        .iter()
        .map(|r| r.as_ref().err().map(|e| e.kind))
        .collect();
    assert_eq!(
        kinds,
        vec![
            None,
            Some(FailureKind::Permanent),
            None,
            Some(FailureKind::Permanent),
            None
        ],
        "{results:?}"
    );
    // Neighbours of the channel-closing message may be stored twice (at least once).
    assert!(fx.count(&q).await >= 3);
    fx.cleanup().await;
}

#[tokio::test]
async fn message_above_the_broker_max_size_is_permanent() {
    let mut fx = Fixture::new().await;
    let q = fx.queue("big", FieldTable::default()).await;
    // RabbitMQ's default max_message_size is 128 MiB.
    let mut limits = Limits::default();
    limits.payload_max_bytes = 200 * 1024 * 1024;
    let big = OutboxEvent::builder(
        "order",
        uuid::Uuid::now_v7(),
        "order.placed",
        q.as_str(),
        "k",
    )
    .payload(json!({"blob": "x".repeat(128 * 1024 * 1024 + 1)}))
    .build_with(&limits)
    .unwrap();
    let publisher = fx.to_queue();
    let err = tokio::time::timeout(Duration::from_secs(120), publisher.publish(&big))
        .await
        .expect("timed out")
        .unwrap_err();
    assert_eq!(err.kind, FailureKind::Permanent, "{err}");
    assert!(
        err.message.contains("406") || err.message.contains("PRECONDITION"),
        "{err}"
    );
    drop(big);
    within(publisher.publish(&event(&q, "k"))).await.unwrap();
    fx.cleanup().await;
}

#[tokio::test]
async fn unreachable_broker_and_closed_connection_are_transient() {
    // A client pointed at a closed port: the connect error classifies as transient.
    let err = within(Connection::connect(
        "amqp://guest:guest@127.0.0.1:1/%2f",
        ConnectionProperties::default(),
    ))
    .await
    .unwrap_err();
    let classified = omnibox_rabbitmq::error::publish_error("connect", err);
    assert_eq!(classified.kind, FailureKind::Transient, "{classified}");

    // A publisher whose connection was closed.
    let conn = connect().await;
    conn.close(200, "OK".into()).await.unwrap();
    let publisher = RabbitPublisher::new(conn);
    let err = within(publisher.publish(&event("anything", "k")))
        .await
        .unwrap_err();
    assert_eq!(err.kind, FailureKind::Transient, "{err}");
}

#[tokio::test]
async fn consumer_parses_and_acks() {
    let mut fx = Fixture::new().await;
    let q = fx.queue("consume", FieldTable::default()).await;
    let e = event(&q, "k");
    within(fx.to_queue().publish(&e)).await.unwrap();

    let mut consumer = RabbitConsumer::new(fx.conn.clone(), q.clone());
    within(consumer.start()).await.unwrap();
    let d = within(consumer.receive()).await.unwrap();
    let m = d.message.as_ref().unwrap();
    assert_eq!(m.message_id, e.common.id.to_string());
    assert_eq!(m.source, q);
    assert_eq!(m.event_type, "order.placed");
    assert_eq!(m.payload, json!({"total": 42}).as_object().unwrap().clone());
    assert_eq!(m.trace_id.as_deref(), Some("trace-1"));
    assert_eq!(m.correlation_id.as_deref(), Some("corr-1"));
    assert_eq!(m.schema_version.as_deref(), Some("1.0.0"));
    assert!(!d.ack.redelivered());
    within(d.ack.ack()).await.unwrap();
    within(consumer.stop()).await.unwrap();
    assert_eq!(fx.count(&q).await, 0);
    fx.cleanup().await;
}

#[tokio::test]
async fn nack_requeues_now_or_after_a_delay_and_flags_redelivery() {
    let mut fx = Fixture::new().await;
    let q = fx.queue("nack", FieldTable::default()).await;
    let e = event(&q, "k");
    within(fx.to_queue().publish(&e)).await.unwrap();
    let mut consumer = RabbitConsumer::new(fx.conn.clone(), q.clone());

    let d = within(consumer.receive()).await.unwrap();
    within(d.ack.nack(Redelivery::Immediate)).await.unwrap();
    let d = within(consumer.receive()).await.unwrap();
    assert_eq!(
        d.message.as_ref().unwrap().message_id,
        e.common.id.to_string()
    );
    assert!(d.ack.redelivered());

    within(d.ack.nack(Redelivery::After(Duration::from_millis(300))))
        .await
        .unwrap();
    let d = within(consumer.receive()).await.unwrap();
    assert_eq!(
        d.message.as_ref().unwrap().message_id,
        e.common.id.to_string()
    );
    assert!(d.ack.redelivered());
    within(d.ack.ack()).await.unwrap();
    within(consumer.stop()).await.unwrap();
    assert_eq!(fx.count(&q).await, 0);
    fx.cleanup().await;
}

#[tokio::test]
async fn reject_without_requeue_dead_letters() {
    let mut fx = Fixture::new().await;
    let dlq = fx.queue("dlq", FieldTable::default()).await;
    let mut args = FieldTable::default();
    args.insert(
        "x-dead-letter-exchange".into(),
        AMQPValue::LongString("".into()),
    );
    args.insert(
        "x-dead-letter-routing-key".into(),
        AMQPValue::LongString(dlq.as_str().into()),
    );
    let q = fx.queue("rejecting", args).await;
    within(fx.to_queue().publish(&event(&q, "k")))
        .await
        .unwrap();
    let mut consumer = RabbitConsumer::new(fx.conn.clone(), q.clone());
    let d = within(consumer.receive()).await.unwrap();
    within(d.ack.reject()).await.unwrap();
    within(async {
        while fx.count(&dlq).await == 0 {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await;
    within(consumer.stop()).await.unwrap();
    assert_eq!(fx.count(&q).await, 0);
    fx.cleanup().await;
}

#[tokio::test]
async fn malformed_messages_arrive_as_errors_with_a_working_ack() {
    let mut fx = Fixture::new().await;
    let q = fx.queue("malformed", FieldTable::default()).await;
    for (i, body) in [&b""[..], b"not json", b"[1,2]"].into_iter().enumerate() {
        let props = BasicProperties::default().with_message_id(format!("m-{i}").into());
        fx.raw_with(&q, body, props).await;
    }
    let mut consumer = RabbitConsumer::new(fx.conn.clone(), q.clone());
    let mut seen = vec![];
    for _ in 0..3 {
        let d = within(consumer.receive()).await.unwrap();
        let bad = d.message.expect_err("malformed");
        assert_eq!(bad.source, q);
        assert!(bad.message_id.is_some());
        seen.push(bad.body);
        within(d.ack.ack()).await.unwrap();
    }
    assert_eq!(
        seen,
        vec![b"".to_vec(), b"not json".to_vec(), b"[1,2]".to_vec()]
    );
    within(consumer.stop()).await.unwrap();
    assert_eq!(fx.count(&q).await, 0);
    fx.cleanup().await;
}

/// Delivery tags restart on every channel, so they cannot identify a message: a message with
/// no `message_id` property and no id header is malformed (dead-lettered by the runner), not
/// deduplicated by a tag another message may reuse.
#[tokio::test]
async fn message_without_a_stable_id_is_malformed() {
    let mut fx = Fixture::new().await;
    let q = fx.queue("no-id", FieldTable::default()).await;
    fx.raw(&q, br#"{"total": 1}"#).await;
    let mut headers = FieldTable::default();
    headers.insert("event_id".into(), AMQPValue::LongString("e-1".into()));
    fx.raw_with(
        &q,
        br#"{"total": 2}"#,
        BasicProperties::default().with_headers(headers),
    )
    .await;
    let mut consumer = RabbitConsumer::new(fx.conn.clone(), q.clone());
    let d = within(consumer.receive()).await.unwrap();
    let bad = d.message.expect_err("no stable id");
    assert_eq!(bad.error, omnibox_core::EnvelopeError::MissingMessageId);
    assert_eq!(bad.message_id, None);
    assert_eq!(bad.body, br#"{"total": 1}"#.to_vec());
    within(d.ack.ack()).await.unwrap();
    let d = within(consumer.receive()).await.unwrap();
    assert_eq!(d.message.as_ref().unwrap().message_id, "e-1");
    within(d.ack.ack()).await.unwrap();
    within(consumer.stop()).await.unwrap();
    assert_eq!(fx.count(&q).await, 0);
    fx.cleanup().await;
}

#[tokio::test]
async fn prefetch_bounds_unacked_deliveries_and_stop_requeues() {
    let mut fx = Fixture::new().await;
    let q = fx.queue("prefetch", FieldTable::default()).await;
    let publisher = fx.to_queue();
    for _ in 0..3 {
        within(publisher.publish(&event(&q, "k"))).await.unwrap();
    }
    let mut consumer = RabbitConsumer::new(fx.conn.clone(), q.clone())
        .with_options(ConsumerOptions::default().prefetch(2));
    let first = within(consumer.receive()).await.unwrap();
    let _second = within(consumer.receive()).await.unwrap();
    // Two unacknowledged: the broker holds the third back...
    assert!(
        tokio::time::timeout(Duration::from_millis(500), consumer.receive())
            .await
            .is_err()
    );
    // ...until one is acknowledged.
    within(first.ack.ack()).await.unwrap();
    let _third = within(consumer.receive()).await.unwrap();

    // Stopping requeues what was not acknowledged.
    within(consumer.stop()).await.unwrap();
    let mut again = RabbitConsumer::new(fx.conn.clone(), q.clone());
    for _ in 0..2 {
        let d = within(again.receive()).await.unwrap();
        assert!(d.ack.redelivered());
        within(d.ack.ack()).await.unwrap();
    }
    within(again.stop()).await.unwrap();
    assert_eq!(fx.count(&q).await, 0);
    fx.cleanup().await;
}

#[tokio::test]
async fn missing_queue_is_a_permanent_consume_error() {
    let conn = connect().await;
    let mut consumer = RabbitConsumer::new(conn.clone(), unique("missing"));
    let err = within(consumer.start()).await.unwrap_err();
    assert_eq!(err.kind, FailureKind::Permanent, "{err}");
    let _ = conn.close(200, "OK".into()).await;
}

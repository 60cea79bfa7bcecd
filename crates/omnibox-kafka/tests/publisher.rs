//! KafkaPublisher against a real Kafka protocol endpoint (mock cluster or
//! `KAFKA_BOOTSTRAP_SERVERS`).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use common::{Kafka, bounded};
use omnibox_core::envelope::{
    Converter, EnvelopeConverter, RawConverter, SchemaVersionedConverter, metadata_headers,
};
use omnibox_core::{FailureKind, OutboxEvent, Publisher};
use omnibox_kafka::KafkaPublisher;
use omnibox_kafka::rdkafka::producer::FutureProducer;
use serde_json::json;

fn event(topic: &str, key: &str) -> OutboxEvent {
    OutboxEvent::builder("order", uuid::Uuid::now_v7(), "order.placed", topic, key)
        .payload(json!({"total": 42, "items": ["a", "b"]}))
        .schema_version("2.1.0")
        .trace_id("trace-1")
        .correlation_id("corr-1")
        .causation_id("cause-1")
        .header("tenant", "acme")
        .header(
            "traceparent",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        )
        .build()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publish_then_read_back_body_key_and_headers_exactly() {
    let kafka = Kafka::resolve().await;
    let topic = kafka.topic("pub-readback", 1).await;
    let publisher = KafkaPublisher::new(kafka.producer());
    let e = event(&topic, "customer-7");
    bounded("publish", publisher.publish(&e)).await.unwrap();

    let records = kafka.read_back(&topic, 1).await;
    let r = &records[0];
    assert_eq!(r.key.as_deref(), Some(b"customer-7".as_slice()));
    assert_eq!(
        r.value.as_deref(),
        Some(EnvelopeConverter::default().encode(&e).as_slice())
    );
    let headers = r.string_headers();
    assert_eq!(headers, metadata_headers(&e));
    assert_eq!(headers["event_id"], e.common.id.to_string());
    assert_eq!(headers["event_type"], "order.placed");
    assert_eq!(headers["schema_version"], "2.1.0");
    assert_eq!(headers["trace_id"], "trace-1");
    assert_eq!(
        headers["traceparent"],
        "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
    );
    assert_eq!(headers["tenant"], "acme");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn raw_and_schema_versioned_bodies_are_selectable() {
    let kafka = Kafka::resolve().await;
    let topic = kafka.topic("pub-converters", 1).await;
    let e = event(&topic, "k");
    let raw = KafkaPublisher::new(kafka.producer()).with_converter(RawConverter);
    let versioned = KafkaPublisher::new(kafka.producer()).with_converter(SchemaVersionedConverter);
    bounded("publish raw", raw.publish(&e)).await.unwrap();
    bounded("publish versioned", versioned.publish(&e))
        .await
        .unwrap();
    let records = kafka.read_back(&topic, 2).await;
    assert_eq!(
        records[0].value.as_deref(),
        Some(br#"{"total":42,"items":["a","b"]}"#.as_slice())
    );
    assert_eq!(
        records[1].value.as_deref(),
        Some(SchemaVersionedConverter.encode(&e).as_slice())
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batch_with_one_oversized_event_fails_only_that_one_permanently() {
    let kafka = Kafka::resolve().await;
    let topic = kafka.topic("pub-batch", 1).await;
    let producer: FutureProducer = kafka
        .producer_config()
        .set("message.max.bytes", "2000")
        .create()
        .unwrap();
    let publisher = KafkaPublisher::new(producer);
    let big = OutboxEvent::builder("order", uuid::Uuid::now_v7(), "order.big", &topic, "k")
        .payload(json!({"blob": "x".repeat(5000)}))
        .build()
        .unwrap();
    let events = vec![event(&topic, "a"), big, event(&topic, "b")];
    let results = bounded("publish batch", publisher.publish_batch(&events)).await;
    assert_eq!(results.len(), 3);
    assert!(results[0].is_ok(), "{:?}", results[0]);
    let err = results[1].as_ref().unwrap_err();
    assert_eq!(err.kind, FailureKind::Permanent, "{err}");
    assert!(results[2].is_ok(), "{:?}", results[2]);
    let records = kafka.read_back(&topic, 2).await;
    assert_eq!(records[0].key.as_deref(), Some(b"a".as_slice()));
    assert_eq!(records[1].key.as_deref(), Some(b"b".as_slice()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bug16_unreachable_broker_fails_transient_within_message_timeout() {
    // Reference bug 16: infra-retry sleeps (up to ~70 s) outlived the publish timeout. Here
    // the publisher never sleeps; librdkafka gives up after `message.timeout.ms`.
    // A port nothing listens on: bind, read the port, close.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let producer: FutureProducer = omnibox_kafka::rdkafka::ClientConfig::new()
        .set("bootstrap.servers", format!("127.0.0.1:{port}"))
        .set("message.timeout.ms", "1500")
        .create()
        .unwrap();
    let publisher = KafkaPublisher::new(producer);
    let err = bounded("publish", publisher.publish(&event("nowhere", "k")))
        .await
        .unwrap_err();
    assert_eq!(err.kind, FailureKind::Transient, "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broker_down_is_transient_and_recovers() {
    // Broker fault injection needs the mock API, so this test always runs against its own
    // in-process mock cluster, whatever KAFKA_BOOTSTRAP_SERVERS says. (The unreachable
    // real-broker case is bug16_unreachable_broker_fails_transient_within_message_timeout.)
    let kafka = Kafka::mock_cluster();
    let mock = kafka.mock().expect("Kafka::mock_cluster always has a mock");
    let topic = kafka.topic("pub-down", 1).await;
    let producer: FutureProducer = kafka
        .producer_config()
        .set("message.timeout.ms", "1500")
        .create()
        .unwrap();
    let publisher = KafkaPublisher::new(producer);
    bounded("warm up", publisher.publish(&event(&topic, "k")))
        .await
        .unwrap();
    mock.broker_down(1).unwrap();
    let err = bounded("publish while down", publisher.publish(&event(&topic, "k")))
        .await
        .unwrap_err();
    assert_eq!(err.kind, FailureKind::Transient, "{err}");
    mock.broker_up(1).unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        match bounded("publish after up", publisher.publish(&event(&topic, "k"))).await {
            Ok(()) => break,
            Err(e) if tokio::time::Instant::now() < deadline => {
                assert_eq!(e.kind, FailureKind::Transient, "{e}");
            }
            Err(e) => panic!("broker back up, publish still fails: {e}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_topic_is_permanent() {
    let kafka = Kafka::resolve().await;
    let topic = common::unique("pub-unknown");
    let producer: FutureProducer = kafka
        .producer_config()
        .set("allow.auto.create.topics", "false")
        .set("topic.metadata.propagation.max.ms", "1000")
        .set("message.timeout.ms", "5000")
        .create()
        .unwrap();
    let publisher = KafkaPublisher::new(producer);
    let err = bounded("publish", publisher.publish(&event(&topic, "k")))
        .await
        .unwrap_err();
    eprintln!("unknown topic: {err}");
    assert_eq!(err.kind, FailureKind::Permanent, "{err}");
}

//! Poison that PostgreSQL refuses, through each real broker (issue 9 §1): a JSON string with
//! `\u0000` (jsonb refuses it), a binary body with NUL bytes (text refuses its dead letter),
//! a header value with a NUL; then a good message on the same queue / stream / partition.
//! Each poison is dead-lettered with its reason and acknowledged; the good one is handled.
//! Before the fix the first poison was handed back forever and the good one never handled.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::{Duration, Instant};

use common::{LIMIT, Pg, RecordEffect, bounded, rabbit};
use omnibox_core::consumer::Consumer;
use omnibox_core::inbox::{AckStrategy, InboxRunner};
use omnibox_core::model::EventStatus;
use omnibox_core::{OutboxEvent, Publisher};
use omnibox_postgres::{PgDatabase, PgInboxStore};

/// The good message's payload, the JSON-poison's payload and the raw poison bodies.
const GOOD_BODY: &[u8] = br#"{"amount": 7}"#;
const BINARY: &[u8] = &[0x00, 0xde, 0xad, 0x00, 0xbe, 0xef];

fn nul_json_event(topic: &str) -> OutboxEvent {
    OutboxEvent::builder("order", uuid::Uuid::now_v7(), "order.placed", topic, "k")
        .payload(serde_json::json!({ "note": "a\u{0}b" }))
        .build()
        .unwrap()
}

fn good_event(topic: &str) -> OutboxEvent {
    OutboxEvent::builder("order", uuid::Uuid::now_v7(), "order.placed", topic, "k")
        .payload(serde_json::from_slice::<serde_json::Value>(GOOD_BODY).unwrap())
        .build()
        .unwrap()
}

/// Run an inbox runner over `consumer` until the three poison messages are dead letters and
/// the good one is handled; assert what each dead letter kept.
async fn drain_and_check<C: Consumer + Sync>(
    pg: &Pg,
    consumer: C,
    label: &str,
) -> InboxRunner<C, PgDatabase, PgInboxStore, RecordEffect> {
    let mut runner = InboxRunner::builder(
        consumer,
        PgDatabase::new(pg.pool.clone()),
        pg.inbox.clone(),
        "billing",
    )
    .ack_strategy(AckStrategy::ExactlyOnceInbox)
    .handler(RecordEffect {
        schema: pg.schema.clone(),
    })
    .build()
    .unwrap();
    let started = Instant::now();
    let mut errors = Vec::new();
    let mut deliveries = 0;
    loop {
        let mut conn = pg.pool.acquire().await.unwrap();
        let letters = pg.inbox.list_dead_letters(&mut conn, 10, 0).await.unwrap();
        drop(conn);
        let handled = pg.inbox_count(EventStatus::Completed).await;
        if letters.len() >= 3 && handled >= 1 {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(30) && deliveries < 40,
            "{label}: after {deliveries} deliveries, {} dead letters and {handled} handled; errors: {errors:?}",
            letters.len()
        );
        match bounded("receive", LIMIT, runner.process_one()).await {
            Ok(_) => {}
            Err(e) => errors.push(e.to_string()),
        }
        deliveries += 1;
    }
    assert_eq!(
        deliveries, 4,
        "{label}: one delivery per message; errors {errors:?}"
    );
    let mut conn = pg.pool.acquire().await.unwrap();
    let letters = pg.inbox.list_dead_letters(&mut conn, 10, 0).await.unwrap();
    assert_eq!(letters.len(), 3, "{label}: {letters:#?}");
    assert!(
        letters.iter().any(|l| l.original_body() == BINARY),
        "{label}: the binary body is kept byte for byte: {letters:#?}"
    );
    assert!(
        letters.iter().any(|l| l.error.contains("22P05")),
        "{label}: the jsonb refusal is the reason: {letters:#?}"
    );
    assert!(
        letters.iter().any(|l| l
            .headers
            .as_ref()
            .is_some_and(|h| h.get("x-note").map(String::as_str) == Some("a\u{0}b"))),
        "{label}: the NUL header is kept: {letters:#?}"
    );
    assert_eq!(pg.inbox_count(EventStatus::Completed).await, 1, "{label}");
    runner
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rabbitmq_poison_postgres_refuses_is_dead_lettered_and_the_next_message_handled() {
    use omnibox_rabbitmq::lapin::options::BasicPublishOptions;
    use omnibox_rabbitmq::lapin::types::{AMQPValue, FieldTable};
    use omnibox_rabbitmq::lapin::{BasicProperties, Confirmation};
    let url = rabbit::url().await;
    let pg = Pg::new(&common::database_url().await, "e2e_poison_rmq").await;
    let conn = rabbit::connect(&url).await;
    let queue = omnibox_testing::unique_name("e2e_poison");
    rabbit::declare(&conn, &queue).await;
    let publisher = omnibox_rabbitmq::RabbitPublisher::new(rabbit::connect(&url).await);
    publisher.publish(&nul_json_event(&queue)).await.unwrap();
    let ch = conn.create_channel().await.unwrap();
    ch.confirm_select(Default::default()).await.unwrap();
    for (id, body, note) in [
        ("m-binary", BINARY, None),
        ("m-header", GOOD_BODY, Some("a\0b")),
    ] {
        let mut headers = FieldTable::default();
        if let Some(n) = note {
            headers.insert("x-note".into(), AMQPValue::LongString(n.into()));
        }
        let props = BasicProperties::default()
            .with_message_id(id.into())
            .with_headers(headers);
        let confirm = ch
            .basic_publish(
                "".into(),
                queue.as_str().into(),
                BasicPublishOptions::default(),
                body,
                props,
            )
            .await
            .unwrap()
            .await
            .unwrap();
        assert!(matches!(confirm, Confirmation::Ack(_)), "{confirm:?}");
    }
    publisher.publish(&good_event(&queue)).await.unwrap();
    let consumer =
        omnibox_rabbitmq::RabbitConsumer::new(rabbit::connect(&url).await, queue.clone());
    drop(drain_and_check(&pg, consumer, "rabbitmq").await);
    rabbit::delete(&conn, &queue).await;
    pg.drop_schema().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nats_poison_postgres_refuses_is_dead_lettered_and_the_next_message_handled() {
    use omnibox_nats::async_nats::{self, HeaderMap, jetstream};
    let url = omnibox_testing::nats_url()
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let pg = Pg::new(&common::database_url().await, "e2e_poison_nats").await;
    let js = jetstream::new(async_nats::connect(url.as_str()).await.unwrap());
    let stream = omnibox_testing::unique_name("e2e_poison");
    let subject = format!("{stream}.orders");
    js.create_stream(jetstream::stream::Config {
        name: stream.clone(),
        subjects: vec![subject.clone()],
        ..Default::default()
    })
    .await
    .unwrap();
    let publisher = omnibox_nats::NatsPublisher::new(js.clone());
    publisher.publish(&nul_json_event(&subject)).await.unwrap();
    for (id, body, note) in [
        ("m-binary", BINARY, None),
        ("m-header", GOOD_BODY, Some("a\0b")),
    ] {
        let mut headers = HeaderMap::new();
        headers.insert("message_id", id);
        if let Some(n) = note {
            headers.insert("x-note", n);
        }
        js.publish_with_headers(subject.clone(), headers, body.to_vec().into())
            .await
            .unwrap()
            .await
            .unwrap();
    }
    publisher.publish(&good_event(&subject)).await.unwrap();
    let consumer = omnibox_nats::NatsConsumer::new(js.clone(), stream.clone(), "billing");
    drop(drain_and_check(&pg, consumer, "nats").await);
    js.delete_stream(&stream).await.unwrap();
    pg.drop_schema().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kafka_poison_postgres_refuses_is_dead_lettered_and_the_next_record_handled() {
    use omnibox_kafka::rdkafka::ClientConfig;
    use omnibox_kafka::rdkafka::message::{Header, OwnedHeaders};
    use omnibox_kafka::rdkafka::producer::{FutureProducer, FutureRecord};
    let kafka = common::kafka::Kafka::resolve().await;
    let (bootstrap, topic) = (kafka.bootstrap.clone(), kafka.topic("e2e_poison"));
    let pg = Pg::new(&common::database_url().await, "e2e_poison_kafka").await;
    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", &bootstrap)
        .set("message.timeout.ms", "4000")
        .create()
        .unwrap();
    let publisher = omnibox_kafka::KafkaPublisher::new(producer.clone());
    publisher.publish(&nul_json_event(&topic)).await.unwrap();
    for (id, body, note) in [
        ("m-binary", BINARY, None),
        ("m-header", GOOD_BODY, Some("a\0b")),
    ] {
        let mut headers = OwnedHeaders::new().insert(Header {
            key: "message_id",
            value: Some(id),
        });
        if let Some(n) = note {
            headers = headers.insert(Header {
                key: "x-note",
                value: Some(n),
            });
        }
        producer
            .send(
                FutureRecord::to(&topic)
                    .key("k")
                    .payload(body)
                    .headers(headers),
                Duration::from_secs(5),
            )
            .await
            .map_err(|(e, _)| e)
            .unwrap();
    }
    publisher.publish(&good_event(&topic)).await.unwrap();
    let consumer = kafka.consumer(&topic);
    let consumer = drain_and_check(&pg, consumer, "kafka").await;
    common::kafka::close(consumer).await;
    pg.drop_schema().await;
}

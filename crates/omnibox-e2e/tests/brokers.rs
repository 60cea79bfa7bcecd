//! Per broker: events enqueued in PostgreSQL inside business transactions are relayed by a
//! `RelayWorker`, consumed by an `InboxWorker` into the PostgreSQL inbox and handled once
//! each — with a redelivery of every message injected on the way.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::{Duration, Instant};

use common::{LIMIT, NackOnce, Pg, RecordEffect, Twice, bounded, rabbit, until};
use omnibox_core::consumer::Consumer;
use omnibox_core::inbox::{AckStrategy, InboxRunner};
use omnibox_core::model::EventStatus;
use omnibox_core::relay::OutboxRelay;
use omnibox_core::worker::{InboxWorker, RelayWorker, Stopped};
use omnibox_core::{Publisher, Shutdown, WorkerId};
use omnibox_postgres::{PgDatabase, PgInboxStore};

const EVENTS: usize = 300;

/// Relay `EVENTS` events through `publisher`, consume them with `consumer`, and check that
/// every business effect happened exactly once and every outbox row completed. Returns the
/// inbox worker (so the caller can dispose of its consumer) and the drain rate.
async fn round_trip<P, C>(
    pg: &Pg,
    topic: &str,
    publisher: P,
    consumer: C,
    listen: bool,
) -> InboxWorker<C, PgDatabase, PgInboxStore, RecordEffect>
where
    P: Publisher + 'static,
    C: Consumer + Sync + 'static,
{
    let ids = pg.enqueue(topic, EVENTS, 25).await;
    let relay = OutboxRelay::builder(pg.outbox.clone(), publisher)
        .batch_size(100)
        .publish_concurrency(16)
        .publish_timeout(Duration::from_secs(5))
        .lease_ttl(Duration::from_secs(60))
        .build()
        .unwrap();
    let db = PgDatabase::new(pg.pool.clone());
    let shutdown = Shutdown::new();
    let relay_run = {
        let builder = RelayWorker::builder(relay, db.clone())
            .worker_id(WorkerId::new("e2e-relay").unwrap())
            .poll_interval(Duration::from_millis(200));
        let shutdown = shutdown.clone();
        if listen {
            let wake = omnibox_postgres::PgWakeup::connect(&pg.pool, &pg.config)
                .await
                .unwrap();
            assert!(wake.is_listening());
            let mut w = builder.wakeup(wake).build().unwrap();
            tokio::spawn(async move { w.run(&shutdown).await })
        } else {
            let mut w = builder.build().unwrap();
            tokio::spawn(async move { w.run(&shutdown).await })
        }
    };
    let runner = InboxRunner::builder(consumer, db, pg.inbox.clone(), "billing")
        .ack_strategy(AckStrategy::ExactlyOnceInbox)
        .handler(RecordEffect {
            schema: pg.schema.clone(),
        })
        .idle_backoff(Duration::from_millis(10), Duration::from_millis(200))
        .build()
        .unwrap();
    let mut inbox = InboxWorker::builder(runner).build().unwrap();
    let inbox_run = {
        let shutdown = shutdown.clone();
        tokio::spawn(async move {
            let stopped = inbox.run(&shutdown).await;
            (stopped, inbox)
        })
    };
    let started = Instant::now();
    until("every effect", LIMIT, async || {
        pg.effects().await.0 == EVENTS as i64
            && pg.outbox_count(EventStatus::Completed).await == EVENTS as i64
    })
    .await;
    let took = started.elapsed();
    // Give duplicates in flight a moment to arrive (they must not add effects).
    tokio::time::sleep(Duration::from_millis(300)).await;
    shutdown.trigger();
    let summary = bounded("relay stop", LIMIT, relay_run).await.unwrap();
    let (stopped, inbox) = bounded("inbox stop", LIMIT, inbox_run).await.unwrap();
    assert_eq!(stopped, Stopped::Graceful);
    assert_eq!(summary.stopped, Stopped::Graceful);
    assert_eq!(summary.published, EVENTS as u64, "{summary:?}");

    let (rows, not_once, total) = pg.effects().await;
    assert_eq!((rows, not_once, total), (EVENTS as i64, 0, EVENTS as i64));
    assert_eq!(pg.effect_ids().await, ids.into_iter().collect());
    assert_eq!(pg.outbox_count(EventStatus::Completed).await, EVENTS as i64);
    assert_eq!(pg.outbox_count(EventStatus::Pending).await, 0);
    assert_eq!(pg.inbox_count(EventStatus::Completed).await, EVENTS as i64);
    eprintln!(
        "{topic}: {EVENTS} events end to end in {took:?} ({:.0} events/s)",
        EVENTS as f64 / took.as_secs_f64()
    );
    inbox
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rabbitmq_end_to_end_with_every_message_delivered_twice() {
    common::init_tracing();
    let url = rabbit::url().await;
    let pg = Pg::with(&common::database_url().await, "e2e_rabbit", |c| {
        c.notify_channel("e2e_wake")
    })
    .await;
    let conn = rabbit::connect(&url).await;
    let queue = omnibox_testing::unique_name("e2e_rabbit");
    rabbit::declare(&conn, &queue).await;
    let publisher = Twice(
        omnibox_rabbitmq::RabbitPublisher::new(rabbit::connect(&url).await).with_options(
            omnibox_rabbitmq::PublisherOptions::default()
                .routing(omnibox_rabbitmq::RoutingMode::FixedExchange(String::new())),
        ),
    );
    let consumer = NackOnce::new(omnibox_rabbitmq::RabbitConsumer::new(
        rabbit::connect(&url).await,
        queue.clone(),
    ));
    let inbox = round_trip(&pg, &queue, publisher, consumer, true).await;
    drop(inbox);
    rabbit::delete(&conn, &queue).await;
    pg.drop_schema().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nats_end_to_end_with_every_message_nacked_once() {
    use omnibox_nats::async_nats::{self, jetstream};
    common::init_tracing();
    let url = omnibox_testing::nats_url()
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let pg = Pg::new(&common::database_url().await, "e2e_nats").await;
    let js = jetstream::new(async_nats::connect(url.as_str()).await.unwrap());
    let stream = omnibox_testing::unique_name("e2e_nats");
    let subject = format!("{stream}.orders");
    js.create_stream(jetstream::stream::Config {
        name: stream.clone(),
        subjects: vec![subject.clone()],
        duplicate_window: Duration::from_secs(120),
        ..Default::default()
    })
    .await
    .unwrap();
    // The stream's duplicate window drops the second copy of a re-publish, so the
    // redelivery is injected on the consumer side: every message is nacked once.
    let publisher = Twice(omnibox_nats::NatsPublisher::new(js.clone()));
    let consumer = NackOnce::new(
        omnibox_nats::NatsConsumer::new(js.clone(), stream.clone(), "billing").with_options(
            omnibox_nats::ConsumerOptions::default().ack_wait(Duration::from_secs(10)),
        ),
    );
    let inbox = round_trip(&pg, &subject, publisher, consumer, false).await;
    drop(inbox);
    js.delete_stream(&stream).await.unwrap();
    pg.drop_schema().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kafka_end_to_end_with_every_record_published_twice() {
    use omnibox_kafka::rdkafka::ClientConfig;
    use omnibox_kafka::rdkafka::producer::FutureProducer;
    common::init_tracing();
    // KAFKA_BOOTSTRAP_SERVERS, else (no Docker here) librdkafka's in-process mock cluster.
    let kafka = common::kafka::Kafka::resolve().await;
    let (bootstrap, topic) = (kafka.bootstrap.clone(), kafka.topic("e2e_kafka"));
    let pg = Pg::new(&common::database_url().await, "e2e_kafka").await;
    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", &bootstrap)
        .set("enable.idempotence", "true")
        .set("acks", "all")
        .set("message.timeout.ms", "4000")
        .create()
        .unwrap();
    let publisher = Twice(omnibox_kafka::KafkaPublisher::new(producer));
    let consumer = kafka.consumer(&topic);
    let inbox = round_trip(&pg, &topic, publisher, consumer, false).await;
    common::kafka::close(inbox).await;
    pg.drop_schema().await;
}

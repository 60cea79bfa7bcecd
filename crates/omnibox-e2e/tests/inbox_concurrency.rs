//! Per broker: an inbox runner with a concurrency of 8 handles messages of different keys
//! at the same time (handlers overlap in PostgreSQL) and those of one key one after
//! another, in the order they were published; each message exactly once.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::HashSet;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{LIMIT, Pg, bounded, rabbit, until};
use omnibox_core::consumer::Consumer;
use omnibox_core::inbox::{AckStrategy, InboxRunner};
use omnibox_core::model::OutboxEvent;
use omnibox_core::{
    Handler, HandlerError, HandlerOutcome, HandlerResult, InboxEvent, Publisher, Shutdown,
};
use omnibox_postgres::PgDatabase;
use sqlx::{PgConnection, Row};

const KEYS: usize = 8;
const PER_KEY: usize = 25;
const CONCURRENCY: usize = 8;

/// Records `(key, i)` in the order handlers ran (a sequence), sleeping inside the inbox
/// transaction so handlers of different keys overlap; counts the most running at once.
/// With `fail_once_at`, the first call of each key's message `i` fails.
#[derive(Clone)]
struct Sequenced {
    schema: String,
    running: Arc<AtomicUsize>,
    peak: Arc<AtomicUsize>,
    fail_once_at: Option<i64>,
    failed: Arc<Mutex<HashSet<String>>>,
}

impl Handler<InboxEvent, PgConnection> for Sequenced {
    async fn handle(&self, event: &InboxEvent, conn: &mut PgConnection) -> HandlerResult {
        let now = self.running.fetch_add(1, Ordering::SeqCst) + 1;
        self.peak.fetch_max(now, Ordering::SeqCst);
        let payload = &event.common.payload;
        let key = payload
            .get("key")
            .and_then(|k| k.as_str())
            .unwrap_or_default()
            .to_owned();
        let i = payload.get("i").and_then(|i| i.as_i64()).unwrap_or(-1);
        if self.fail_once_at == Some(i) && self.failed.lock().unwrap().insert(key.clone()) {
            self.running.fetch_sub(1, Ordering::SeqCst);
            return Err(HandlerError::permanent(
                "the first try of this message fails",
            ));
        }
        let written = async {
            sqlx::query("SELECT pg_sleep(0.02)")
                .execute(&mut *conn)
                .await?;
            sqlx::query(sqlx::AssertSqlSafe(format!(
                "INSERT INTO {}.handled (key, i) VALUES ($1, $2)",
                self.schema
            )))
            .bind(key)
            .bind(i)
            .execute(&mut *conn)
            .await
        }
        .await;
        self.running.fetch_sub(1, Ordering::SeqCst);
        written.map_err(|e| HandlerError::from(omnibox_postgres::classify("handler write", e)))?;
        Ok(HandlerOutcome::Completed)
    }
}

/// `KEYS × PER_KEY` events, keys shuffled (no pattern a lane choice could follow by
/// chance), each on `topic_of(key)` with the key as partition key; payload `{key, i}` with
/// `i` rising within a key.
fn events(topic_of: impl Fn(&str) -> String) -> Vec<OutboxEvent> {
    let mut keys: Vec<usize> = (0..KEYS * PER_KEY).map(|n| n % KEYS).collect();
    fastrand::Rng::with_seed(7).shuffle(&mut keys);
    let mut next = [0usize; KEYS];
    keys.into_iter()
        .map(|k| {
            let key = format!("k{k}");
            let i = next[k];
            next[k] += 1;
            OutboxEvent::builder(
                "order",
                uuid::Uuid::now_v7(),
                "order.placed",
                topic_of(&key),
                key.clone(),
            )
            .payload(serde_json::json!({ "key": key, "i": i }))
            .build()
            .unwrap()
        })
        .collect()
}

/// Publish `events` one after another, run the inbox with a concurrency of 8 until every
/// message is handled, and check: each exactly once, each key's messages in publish order,
/// handlers of different keys overlapping. With `fail_once_at`, each key's message of that
/// `i` fails once (and is retried at once). Returns the runner (to dispose of its consumer).
async fn handled_in_key_order<P: Publisher, C: Consumer + Send + 'static>(
    pg: &Pg,
    publisher: P,
    events: Vec<OutboxEvent>,
    consumer: C,
    fail_once_at: Option<i64>,
) -> InboxRunner<C, PgDatabase, omnibox_postgres::PgInboxStore, Sequenced> {
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "CREATE TABLE {}.handled (seq bigserial PRIMARY KEY, key text NOT NULL, i int NOT NULL)",
        pg.schema
    )))
    .execute(&pg.pool)
    .await
    .unwrap();
    for event in &events {
        bounded("publish", LIMIT, publisher.publish(event))
            .await
            .unwrap();
    }
    let handler = Sequenced {
        schema: pg.schema.clone(),
        running: Arc::default(),
        peak: Arc::default(),
        fail_once_at,
        failed: Arc::default(),
    };
    let mut runner = InboxRunner::builder(
        consumer,
        PgDatabase::new(pg.pool.clone()),
        pg.inbox.clone(),
        "billing",
    )
    .ack_strategy(AckStrategy::ExactlyOnceInbox)
    .concurrency(CONCURRENCY)
    .backoff(omnibox_core::backoff::Backoff::immediate())
    .handler(handler.clone())
    .idle_backoff(Duration::from_millis(10), Duration::from_millis(200))
    .build()
    .unwrap();
    let shutdown = Shutdown::new();
    let total = (KEYS * PER_KEY) as i64;
    let count = format!("SELECT count(*) FROM {}.handled", pg.schema);
    let stopper = async {
        until("every message handled", LIMIT, async || {
            sqlx::query_scalar::<_, i64>(sqlx::AssertSqlSafe(count.clone()))
                .fetch_one(&pg.pool)
                .await
                .unwrap()
                == total
        })
        .await;
        // Give redeliveries in flight a moment (they must not be handled again).
        tokio::time::sleep(Duration::from_millis(300)).await;
        shutdown.trigger();
    };
    let (ran, ()) = bounded("inbox run", LIMIT * 2, async {
        tokio::join!(runner.run(&shutdown), stopper)
    })
    .await;
    ran.unwrap();

    let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
        "SELECT key, i FROM {}.handled ORDER BY seq",
        pg.schema
    )))
    .fetch_all(&pg.pool)
    .await
    .unwrap();
    assert_eq!(
        rows.len() as i64,
        total,
        "each message handled exactly once"
    );
    let mut seen: Vec<Vec<i32>> = vec![Vec::new(); KEYS];
    for row in rows {
        let key: String = row.get(0);
        let k: usize = key[1..].parse().unwrap();
        seen[k].push(row.get(1));
    }
    let expected: Vec<i32> = (0..PER_KEY as i32).collect();
    for (k, got) in seen.iter().enumerate() {
        assert_eq!(got, &expected, "key k{k} handled in publish order");
    }
    let peak = handler.peak.load(Ordering::SeqCst);
    assert!(
        (2..=CONCURRENCY).contains(&peak),
        "handlers of different keys overlapped, at most {CONCURRENCY} at once: peak {peak}"
    );
    if fail_once_at.is_some() {
        assert_eq!(
            handler.failed.lock().unwrap().len(),
            KEYS,
            "one failure per key"
        );
    }
    eprintln!("peak handlers at once: {peak}");
    runner
}

/// A fresh schema, with connections for every lane and the test's own queries.
async fn pg(prefix: &str) -> Pg {
    Pg::with_pool(
        &common::database_url().await,
        prefix,
        sqlx::postgres::PgPoolOptions::new().max_connections(CONCURRENCY as u32 + 4),
        |c| c,
    )
    .await
}

/// Kafka, one partition per key: see [`handled_in_key_order`].
async fn kafka_lanes(prefix: &str, fail_once_at: Option<i64>) {
    use omnibox_kafka::rdkafka::ClientConfig;
    use omnibox_kafka::rdkafka::producer::FutureProducer;
    common::init_tracing();
    let kafka = common::kafka::Kafka::resolve().await;
    let topic = kafka.topic_with_partitions(prefix, KEYS as i32).await;
    let pg = pg(prefix).await;
    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", &kafka.bootstrap)
        .set("enable.idempotence", "true")
        .set("acks", "all")
        .set("message.timeout.ms", "4000")
        .create()
        .unwrap();
    let publisher = omnibox_kafka::KafkaPublisher::new(producer);
    let runner = handled_in_key_order(
        &pg,
        publisher,
        events(|_| topic.clone()),
        kafka.consumer(&topic),
        fail_once_at,
    )
    .await;
    common::kafka::close(runner).await;
    pg.drop_schema().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kafka_partitions_are_handled_side_by_side_each_in_order() {
    kafka_lanes("lanes_kafka", None).await;
}

/// A failed message rewinds its partition; what its lane already held behind it goes back
/// unhandled, so nothing of the partition overtakes the retry.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kafka_a_failed_message_is_not_overtaken_within_its_partition() {
    kafka_lanes("lanes_kafka_fail", Some(3)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rabbitmq_routing_keys_are_handled_side_by_side_each_in_order() {
    use omnibox_rabbitmq::lapin::options::{
        ExchangeDeclareOptions, ExchangeDeleteOptions, QueueBindOptions,
    };
    use omnibox_rabbitmq::lapin::types::FieldTable;
    use omnibox_rabbitmq::{PublisherOptions, RabbitConsumer, RabbitPublisher, RoutingMode};
    common::init_tracing();
    let url = rabbit::url().await;
    let pg = pg("lanes_rabbit").await;
    let conn = rabbit::connect(&url).await;
    let queue = omnibox_testing::unique_name("lanes_rabbit");
    let exchange = format!("{queue}_ex");
    rabbit::declare(&conn, &queue).await;
    let ch = conn.create_channel().await.unwrap();
    ch.exchange_declare(
        exchange.as_str().into(),
        omnibox_rabbitmq::lapin::ExchangeKind::Topic,
        ExchangeDeclareOptions::default(),
        FieldTable::default(),
    )
    .await
    .unwrap();
    ch.queue_bind(
        queue.as_str().into(),
        exchange.as_str().into(),
        "#".into(),
        QueueBindOptions::default(),
        FieldTable::default(),
    )
    .await
    .unwrap();
    // The exchange is the topic; the partition key is the routing key (the order key).
    let publisher = RabbitPublisher::new(rabbit::connect(&url).await)
        .with_options(PublisherOptions::default().routing(RoutingMode::TopicAsExchange));
    let consumer = RabbitConsumer::new(rabbit::connect(&url).await, queue.clone());
    let runner =
        handled_in_key_order(&pg, publisher, events(|_| exchange.clone()), consumer, None).await;
    drop(runner);
    rabbit::delete(&conn, &queue).await;
    let _ = ch
        .exchange_delete(exchange.as_str().into(), ExchangeDeleteOptions::default())
        .await;
    pg.drop_schema().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nats_subjects_are_handled_side_by_side_each_in_order() {
    use omnibox_nats::async_nats::{self, jetstream};
    common::init_tracing();
    let url = omnibox_testing::nats_url()
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let pg = pg("lanes_nats").await;
    let js = jetstream::new(async_nats::connect(url.as_str()).await.unwrap());
    let stream = omnibox_testing::unique_name("lanes_nats");
    js.create_stream(jetstream::stream::Config {
        name: stream.clone(),
        subjects: vec![format!("{stream}.>")],
        ..Default::default()
    })
    .await
    .unwrap();
    // One subject per key: the subject is the order key.
    let publisher = omnibox_nats::NatsPublisher::new(js.clone());
    let consumer = omnibox_nats::NatsConsumer::new(js.clone(), stream.clone(), "billing");
    let runner = handled_in_key_order(
        &pg,
        publisher,
        events(|key| format!("{stream}.orders.{key}")),
        consumer,
        None,
    )
    .await;
    drop(runner);
    js.delete_stream(&stream).await.unwrap();
    pg.drop_schema().await;
}

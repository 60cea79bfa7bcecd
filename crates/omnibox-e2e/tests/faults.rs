//! Fault tests against the real services: a relay process killed with SIGKILL mid-drain,
//! a broker outage, poison messages, a redelivery storm. Each asserts that nothing is lost
//! and that every business effect happens exactly once.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::process::Stdio;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use common::{LIMIT, Pg, RecordEffect, bounded, rabbit, until, until_every};
use omnibox_core::backoff::{Backoff, Jitter};
use omnibox_core::consumer::{Consumer, Delivery};
use omnibox_core::inbox::{AckStrategy, InboxRunner};
use omnibox_core::model::{EventStatus, Limits};
use omnibox_core::relay::OutboxRelay;
use omnibox_core::worker::{InboxWorker, RelayWorker, Stopped};
use omnibox_core::{ConsumeError, OutboxEvent, Publisher, Shutdown, WorkerId};
use omnibox_postgres::PgDatabase;
use omnibox_rabbitmq::lapin::BasicProperties;
use omnibox_rabbitmq::lapin::options::BasicPublishOptions;
use omnibox_rabbitmq::{
    ConsumerOptions, PublisherOptions, RabbitConsumer, RabbitPublisher, RoutingMode,
};
use sqlx::postgres::PgPoolOptions;
use tokio::task::JoinHandle;

type Handle = JoinHandle<Stopped>;

fn rabbit_publisher(conn: omnibox_rabbitmq::lapin::Connection) -> RabbitPublisher {
    RabbitPublisher::new(conn).with_options(
        PublisherOptions::default().routing(RoutingMode::FixedExchange(String::new())),
    )
}

/// Start `n` competing inbox workers (same group, own worker ids, each with its own AMQP
/// connection and a prefetch of `prefetch`) on `queue`.
async fn inbox_workers(
    pg: &Pg,
    amqp: &str,
    queue: &str,
    n: usize,
    prefetch: u16,
    limits: Limits,
    shutdown: &Shutdown,
) -> Vec<Handle> {
    let mut out = Vec::new();
    for i in 0..n {
        let consumer = RabbitConsumer::new(rabbit::connect(amqp).await, queue)
            .with_options(ConsumerOptions::default().prefetch(prefetch));
        let runner = InboxRunner::builder(
            consumer,
            PgDatabase::new(pg.pool.clone()),
            pg.inbox.clone(),
            "billing",
        )
        .worker_id(WorkerId::new(format!("inbox-{i}")).unwrap())
        .ack_strategy(AckStrategy::ExactlyOnceInbox)
        .limits(limits.clone())
        .backoff(
            Backoff::new(
                Duration::from_millis(20),
                Duration::from_millis(100),
                Jitter::None,
            )
            .unwrap(),
        )
        .redelivery_delay(Duration::from_millis(50))
        .idle_backoff(Duration::from_millis(10), Duration::from_millis(200))
        .handler(RecordEffect {
            schema: pg.schema.clone(),
        })
        .build()
        .unwrap();
        let mut worker = InboxWorker::builder(runner).build().unwrap();
        let shutdown = shutdown.clone();
        out.push(tokio::spawn(async move { worker.run(&shutdown).await }));
    }
    out
}

async fn join_all(handles: Vec<Handle>) {
    for h in handles {
        assert_eq!(
            bounded("worker stop", LIMIT, h).await.unwrap(),
            Stopped::Graceful
        );
    }
}

struct RelayProcess(tokio::process::Child);

impl RelayProcess {
    fn spawn(db_url: &str, amqp: &str, schema: &str, worker: &str) -> Self {
        let child = tokio::process::Command::new(env!("CARGO_BIN_EXE_omnibox-e2e-relay"))
            .args([schema, worker])
            .args(RELAY_SETTINGS)
            .env("DATABASE_URL", db_url)
            .env("AMQP_URL", amqp)
            .env("RUST_LOG", "error")
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .expect("start the relay process");
        Self(child)
    }

    fn assert_running(&mut self) {
        if let Some(status) = self.0.try_wait().unwrap() {
            panic!("the relay process exited on its own: {status:?}");
        }
    }

    async fn sigkill(&mut self) {
        // `start_kill` sends SIGKILL on Unix: no shutdown code runs in the child.
        self.0.start_kill().unwrap();
        let status = bounded("relay exit", LIMIT, self.0.wait()).await.unwrap();
        assert!(!status.success(), "killed, not exited: {status:?}");
    }
}

/// How the SIGKILL test's relay process runs, as a production relay would be configured for
/// throughput: large batches (a claim holds at most one event per `(topic, partition_key)`,
/// so with 500 keys a batch of 250 is full), published 125 at a time on the confirm channel,
/// and a lease (8 s) well above the worst case publish time of a batch (2 s × 250 / 125).
const RELAY_SETTINGS: [&str; 3] = ["250", "125", "8"];

/// Kill the relay process with SIGKILL in the middle of a drain, restart it: every event
/// reaches the broker at least once and the inbox handles each exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn relay_killed_mid_drain_loses_nothing_and_effects_happen_once() {
    const N: usize = 20_000;
    const KEYS: usize = 500;
    // Competing inbox workers (same consumer group, one queue).
    const INBOX_WORKERS: usize = 8;
    common::init_tracing();
    let db_url = common::database_url().await;
    let amqp = rabbit::url().await;
    // One connection per inbox worker plus the test's own; no ping round trip before each
    // transaction (`test_before_acquire`), as a throughput-minded deployment configures it.
    let pool = PgPoolOptions::new()
        .max_connections(INBOX_WORKERS as u32 + 4)
        .test_before_acquire(false);
    let pg = Pg::with_pool(&db_url, "e2e_kill", pool, |c| c).await;
    let admin = rabbit::connect(&amqp).await;
    let queue = omnibox_testing::unique_name("e2e_kill");
    rabbit::declare(&admin, &queue).await;
    let setup = Instant::now();
    // Bulk enqueue: 2 000 events (and their business rows) per transaction and round trip.
    let ids = pg
        .enqueue_chunked(&queue, N, KEYS, "order.placed", 2_000)
        .await;
    pg.analyze_outbox().await;
    let enqueued = setup.elapsed();
    let shutdown = Shutdown::new();
    let inboxes = inbox_workers(
        &pg,
        &amqp,
        &queue,
        INBOX_WORKERS,
        64,
        Limits::default(),
        &shutdown,
    )
    .await;

    let started = Instant::now();
    let mut relay = RelayProcess::spawn(&db_url, &amqp, &pg.schema, "relay-a");
    until("a quarter drained", LIMIT, async || {
        relay.assert_running();
        pg.outbox_count(EventStatus::Completed).await >= (N / 4) as i64
    })
    .await;
    relay.sigkill().await;
    let first_leg = started.elapsed();
    let at_kill = pg.outbox_count(EventStatus::Completed).await;
    assert!(
        at_kill >= (N / 4) as i64 && at_kill < N as i64,
        "killed mid-drain: {at_kill} of {N} done"
    );
    // What the killed relay left leased: it stays so until its lease expires, and with it
    // every later event of the same keys (per-key order).
    let stranded = pg.outbox_leased().await;

    let restarted = Instant::now();
    let mut relay = RelayProcess::spawn(&db_url, &amqp, &pg.schema, "relay-b");
    // Bounds against a hang, generous for a loaded machine (here the restarted relay takes
    // 12-17 s, the inbox 25-38 s); polled every 250 ms so that counting stays cheap.
    let (bound, every) = (Duration::from_secs(120), Duration::from_millis(250));
    until_every("drained after restart", bound, every, async || {
        relay.assert_running();
        pg.outbox_count(EventStatus::Completed).await == N as i64
    })
    .await;
    let drained = started.elapsed();
    let second_leg = restarted.elapsed();
    until_every("every effect", bound, every, async || {
        pg.effects().await.0 == N as i64
    })
    .await;
    let end_to_end = started.elapsed();
    relay.sigkill().await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    shutdown.trigger();
    join_all(inboxes).await;

    let (rows, not_once, total) = pg.effects().await;
    assert_eq!(
        (rows, not_once, total),
        (N as i64, 0, N as i64),
        "each effect exactly once"
    );
    // Every event reached the broker (at least once): each one's effect is there.
    assert_eq!(pg.effect_ids().await, ids.into_iter().collect());
    assert_eq!(pg.inbox_count(EventStatus::Completed).await, N as i64);
    assert_eq!(pg.outbox_count(EventStatus::Completed).await, N as i64);
    assert_eq!(pg.outbox_count(EventStatus::Failed).await, 0);
    assert_eq!(pg.outbox_leased().await, 0);
    eprintln!(
        "SIGKILL test: {N} events enqueued in {enqueued:?}; relay killed after {at_kill} \
         completed in {first_leg:?} ({:.0} events/s), {stranded} left leased; the restarted \
         relay finished in {second_leg:?} (incl. waiting out those {}s leases); relay drain \
         {:.0} events/s overall; end to end (incl. {INBOX_WORKERS} inbox workers) \
         {:.0} events/s in {end_to_end:?}",
        at_kill as f64 / first_leg.as_secs_f64(),
        RELAY_SETTINGS[2],
        N as f64 / drained.as_secs_f64(),
        N as f64 / end_to_end.as_secs_f64(),
    );
    rabbit::delete(&admin, &queue).await;
    pg.drop_schema().await;
}

/// Malformed envelopes and a handler that always fails end as dead letters with their
/// error; the messages around them keep flowing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn poison_messages_are_dead_lettered_and_the_queue_keeps_flowing() {
    common::init_tracing();
    let amqp = rabbit::url().await;
    let pg = Pg::new(&common::database_url().await, "e2e_poison").await;
    let admin = rabbit::connect(&amqp).await;
    let queue = omnibox_testing::unique_name("e2e_poison");
    rabbit::declare(&admin, &queue).await;
    // Malformed envelopes first, then poison events, then good ones, on the same queue.
    let ch = admin.create_channel().await.unwrap();
    for body in [b"not json".as_slice(), b"[1, 2, 3]".as_slice()] {
        ch.basic_publish(
            "".into(),
            queue.as_str().into(),
            BasicPublishOptions::default(),
            body,
            BasicProperties::default(),
        )
        .await
        .unwrap()
        .await
        .unwrap();
    }
    pg.enqueue_typed(&queue, 3, 3, "poison").await;
    let good = pg.enqueue(&queue, 30, 5).await;

    let relay = OutboxRelay::builder(
        pg.outbox.clone(),
        rabbit_publisher(rabbit::connect(&amqp).await),
    )
    .publish_timeout(Duration::from_secs(5))
    .publish_concurrency(10)
    .build()
    .unwrap();
    let shutdown = Shutdown::new();
    let mut relay_worker = RelayWorker::builder(relay, PgDatabase::new(pg.pool.clone()))
        .worker_id(WorkerId::new("relay").unwrap())
        .poll_interval(Duration::from_millis(100))
        .build()
        .unwrap();
    let relay_run = {
        let shutdown = shutdown.clone();
        tokio::spawn(async move { relay_worker.run(&shutdown).await })
    };
    let limits = Limits::default().max_attempts(3);
    let inboxes = inbox_workers(&pg, &amqp, &queue, 1, 32, limits, &shutdown).await;
    until("good handled, poison dead-lettered", LIMIT, async || {
        pg.effects().await.0 == 30 && pg.inbox_count(EventStatus::Failed).await == 3
    })
    .await;
    shutdown.trigger();
    bounded("relay stop", LIMIT, relay_run).await.unwrap();
    join_all(inboxes).await;

    assert_eq!(pg.effects().await, (30, 0, 30));
    assert_eq!(pg.effect_ids().await, good.into_iter().collect());
    let mut conn = pg.pool.acquire().await.unwrap();
    let letters = pg.inbox.list_dead_letters(&mut conn, 100, 0).await.unwrap();
    let poison = letters
        .iter()
        .filter(|l| l.error.contains("poison: this handler always fails"))
        .count();
    assert_eq!(poison, 3, "{letters:#?}");
    let malformed: Vec<_> = letters.iter().filter(|l| l.event_id.is_none()).collect();
    assert_eq!(malformed.len(), 2, "{letters:#?}");
    assert!(malformed.iter().all(|l| !l.error.is_empty()));
    assert_eq!(pg.outbox_count(EventStatus::Completed).await, 33);
    drop(conn);
    rabbit::delete(&admin, &queue).await;
    pg.drop_schema().await;
}

/// Counts deliveries.
struct Counting<C> {
    inner: C,
    seen: Arc<AtomicUsize>,
}

impl<C: Consumer> Consumer for Counting<C> {
    type Ack = C::Ack;
    async fn start(&mut self) -> Result<(), ConsumeError> {
        self.inner.start().await
    }
    async fn receive(&mut self) -> Result<Delivery<C::Ack>, ConsumeError> {
        let d = self.inner.receive().await?;
        self.seen.fetch_add(1, Ordering::SeqCst);
        Ok(d)
    }
    async fn stop(&mut self) -> Result<(), ConsumeError> {
        self.inner.stop().await
    }
}

/// Every message delivered three times, out of order, to two competing inbox workers:
/// each business effect happens exactly once with the exactly-once-inbox strategy.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redelivery_storm_produces_each_effect_once() {
    const N: usize = 200;
    common::init_tracing();
    let amqp = rabbit::url().await;
    let pg = Pg::new(&common::database_url().await, "e2e_storm").await;
    let admin = rabbit::connect(&amqp).await;
    let queue = omnibox_testing::unique_name("e2e_storm");
    rabbit::declare(&admin, &queue).await;
    let events: Vec<OutboxEvent> = (0..N)
        .map(|i| {
            OutboxEvent::builder(
                "order",
                uuid::Uuid::now_v7(),
                "order.placed",
                queue.as_str(),
                format!("k{}", i % 7),
            )
            .payload(serde_json::json!({ "i": i }))
            .build()
            .unwrap()
        })
        .collect();
    let mut storm: Vec<&OutboxEvent> = events.iter().chain(&events).chain(&events).collect();
    fastrand::shuffle(&mut storm);
    let publisher = rabbit_publisher(rabbit::connect(&amqp).await);
    for e in &storm {
        bounded("publish", LIMIT, publisher.publish(e))
            .await
            .unwrap();
    }

    let shutdown = Shutdown::new();
    let seen = Arc::new(AtomicUsize::new(0));
    let mut handles = Vec::new();
    for i in 0..2 {
        let consumer = Counting {
            inner: RabbitConsumer::new(rabbit::connect(&amqp).await, queue.as_str())
                .with_options(ConsumerOptions::default().prefetch(8)),
            seen: seen.clone(),
        };
        let runner = InboxRunner::builder(
            consumer,
            PgDatabase::new(pg.pool.clone()),
            pg.inbox.clone(),
            "billing",
        )
        .worker_id(WorkerId::new(format!("storm-{i}")).unwrap())
        .ack_strategy(AckStrategy::ExactlyOnceInbox)
        .redelivery_delay(Duration::from_millis(20))
        .idle_backoff(Duration::from_millis(5), Duration::from_millis(50))
        .handler(RecordEffect {
            schema: pg.schema.clone(),
        })
        .build()
        .unwrap();
        let mut worker = InboxWorker::builder(runner).build().unwrap();
        let shutdown = shutdown.clone();
        handles.push(tokio::spawn(async move { worker.run(&shutdown).await }));
    }
    until("storm consumed", LIMIT, async || {
        seen.load(Ordering::SeqCst) >= 3 * N && pg.effects().await.0 == N as i64
    })
    .await;
    // Let the last deliveries settle, then stop gracefully (the one in flight finishes).
    tokio::time::sleep(Duration::from_millis(500)).await;
    shutdown.trigger();
    join_all(handles).await;
    assert_eq!(
        pg.effects().await,
        (N as i64, 0, N as i64),
        "each effect exactly once"
    );
    assert_eq!(pg.inbox_count(EventStatus::Completed).await, N as i64);
    eprintln!(
        "redelivery storm: {} deliveries for {N} messages",
        seen.load(Ordering::SeqCst)
    );
    rabbit::delete(&admin, &queue).await;
    pg.drop_schema().await;
}

/// The broker is down for a while: the relay spends no attempts (one probe per cycle,
/// backing off) and publishes everything once the broker is back. Kafka's mock cluster
/// (in-process) is the broker here, so the outage touches no shared service.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broker_outage_spends_no_attempts_and_publishes_once_back() {
    use omnibox_kafka::rdkafka::ClientConfig;
    use omnibox_kafka::rdkafka::mocking::MockCluster;
    use omnibox_kafka::rdkafka::producer::FutureProducer;
    const N: usize = 100;
    common::init_tracing();
    let mock = MockCluster::new(1).unwrap();
    let bootstrap = mock.bootstrap_servers();
    let topic = omnibox_testing::unique_name("e2e_outage");
    mock.create_topic(&topic, 1, 1).unwrap();
    let pg = Pg::new(&common::database_url().await, "e2e_outage").await;
    let ids = pg.enqueue(&topic, N, 10).await;
    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", &bootstrap)
        .set("enable.idempotence", "true")
        .set("acks", "all")
        .set("message.timeout.ms", "1000")
        .create()
        .unwrap();
    mock.broker_down(1).unwrap();
    let relay = OutboxRelay::builder(
        pg.outbox.clone(),
        omnibox_kafka::KafkaPublisher::new(producer),
    )
    .batch_size(50)
    .publish_concurrency(10)
    .publish_timeout(Duration::from_secs(3))
    .lease_ttl(Duration::from_secs(30))
    .build()
    .unwrap();
    let shutdown = Shutdown::new();
    let mut worker = RelayWorker::builder(relay, PgDatabase::new(pg.pool.clone()))
        .worker_id(WorkerId::new("relay").unwrap())
        .poll_interval(Duration::from_millis(100))
        .error_backoff(Duration::from_millis(100), Duration::from_millis(500))
        .build()
        .unwrap();
    let run = {
        let shutdown = shutdown.clone();
        tokio::spawn(async move { worker.run(&shutdown).await })
    };
    // Down for ~4 s: several probe cycles, nothing published, no attempt spent.
    tokio::time::sleep(Duration::from_secs(4)).await;
    assert_eq!(pg.outbox_count(EventStatus::Completed).await, 0);
    assert_eq!(
        pg.outbox_attempts().await,
        0,
        "an outage spends no attempts"
    );
    mock.broker_up(1).unwrap();
    until("published after the outage", LIMIT, async || {
        pg.outbox_count(EventStatus::Completed).await == N as i64
    })
    .await;
    shutdown.trigger();
    let summary = bounded("relay stop", LIMIT, run).await.unwrap();
    assert!(summary.transient_failures >= 1, "{summary:?}");
    assert_eq!(summary.failed, 0, "{summary:?}");
    assert_eq!(
        pg.outbox_attempts().await,
        0,
        "an outage spends no attempts"
    );

    // Everything is on the topic: read it back through an inbox.
    let consumer = omnibox_kafka::KafkaConsumer::from_config(
        ClientConfig::new()
            .set("bootstrap.servers", &bootstrap)
            .set("group.id", omnibox_testing::unique_name("billing"))
            .set("auto.offset.reset", "earliest")
            .set("session.timeout.ms", "6000")
            .set("heartbeat.interval.ms", "500"),
        [topic.clone()],
    )
    .unwrap();
    let runner = InboxRunner::builder(
        consumer,
        PgDatabase::new(pg.pool.clone()),
        pg.inbox.clone(),
        "billing",
    )
    .handler(RecordEffect {
        schema: pg.schema.clone(),
    })
    .build()
    .unwrap();
    let mut inbox = InboxWorker::builder(runner).build().unwrap();
    let shutdown = Shutdown::new();
    let run = {
        let shutdown = shutdown.clone();
        tokio::spawn(async move {
            let s = inbox.run(&shutdown).await;
            (s, inbox)
        })
    };
    until("consumed", LIMIT, async || pg.effects().await.0 == N as i64).await;
    shutdown.trigger();
    let (_, inbox) = bounded("inbox stop", LIMIT, run).await.unwrap();
    let (tx, rx) = tokio::sync::oneshot::channel();
    std::thread::spawn(move || {
        drop(inbox);
        let _ = tx.send(());
    });
    bounded("kafka consumer close", LIMIT, rx).await.unwrap();
    assert_eq!(pg.effects().await, (N as i64, 0, N as i64));
    assert_eq!(pg.effect_ids().await, ids.into_iter().collect());
    pg.drop_schema().await;
}

//! Broker connection faults under running relay and inbox workers: the RabbitMQ
//! connection closed by the broker, a RabbitMQ node restarted (a throwaway node of this
//! test's own), a NATS server restarted (a throwaway `nats-server` of this test's own).
//! Each asserts that the adapters recover by themselves, every event is delivered and each
//! business effect (counted in PostgreSQL) happens once.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use common::{LIMIT, Pg, RecordEffect, bounded, rabbit, until};
use omnibox_core::backoff::{Backoff, Jitter};
use omnibox_core::consumer::Consumer;
use omnibox_core::inbox::{AckStrategy, InboxRunner};
use omnibox_core::model::EventStatus;
use omnibox_core::relay::OutboxRelay;
use omnibox_core::worker::{InboxWorker, RelaySummary, RelayWorker, Stopped};
use omnibox_core::{Publisher, Shutdown, WorkerId};
use omnibox_e2e::servers::{NatsServer, RabbitNode, close_connections};
use omnibox_postgres::PgDatabase;
use omnibox_rabbitmq::lapin;
use omnibox_rabbitmq::{
    ConnectionEvent, PublisherOptions, RabbitConnector, RabbitConsumer, RabbitPublisher,
    RoutingMode,
};
use tokio::task::JoinHandle;

/// Events per phase (before the fault, after it).
const PHASE: usize = 100;
const KEYS: usize = 10;
/// How long recovering from a fault may take (well under nextest's slow timeout).
const RECOVERY: Duration = Duration::from_secs(40);

/// A relay worker and an inbox worker running until `stop`.
struct Workers {
    shutdown: Shutdown,
    relay: JoinHandle<RelaySummary>,
    inbox: JoinHandle<Stopped>,
}

impl Workers {
    fn start<P, C>(pg: &Pg, publisher: P, consumer: C) -> Self
    where
        P: Publisher + 'static,
        C: Consumer + Sync + 'static,
    {
        let db = PgDatabase::new(pg.pool.clone());
        let shutdown = Shutdown::new();
        let relay = OutboxRelay::builder(pg.outbox.clone(), publisher)
            .batch_size(50)
            .publish_concurrency(8)
            .publish_timeout(Duration::from_secs(5))
            .lease_ttl(Duration::from_secs(60))
            .build()
            .unwrap();
        let mut relay = RelayWorker::builder(relay, db.clone())
            .worker_id(WorkerId::new("relay").unwrap())
            .poll_interval(Duration::from_millis(100))
            .build()
            .unwrap();
        let runner = InboxRunner::builder(consumer, db, pg.inbox.clone(), "billing")
            .ack_strategy(AckStrategy::ExactlyOnceInbox)
            .backoff(
                Backoff::new(
                    Duration::from_millis(20),
                    Duration::from_millis(200),
                    Jitter::None,
                )
                .unwrap(),
            )
            .idle_backoff(Duration::from_millis(10), Duration::from_millis(200))
            .handler(RecordEffect {
                schema: pg.schema.clone(),
            })
            .build()
            .unwrap();
        let mut inbox = InboxWorker::builder(runner).build().unwrap();
        let relay = {
            let shutdown = shutdown.clone();
            tokio::spawn(async move { relay.run(&shutdown).await })
        };
        let inbox = {
            let shutdown = shutdown.clone();
            tokio::spawn(async move { inbox.run(&shutdown).await })
        };
        Self {
            shutdown,
            relay,
            inbox,
        }
    }

    async fn stop(self) -> RelaySummary {
        self.shutdown.trigger();
        let summary = bounded("relay stop", LIMIT, self.relay).await.unwrap();
        let stopped = bounded("inbox stop", LIMIT, self.inbox).await.unwrap();
        assert_eq!(stopped, Stopped::Graceful);
        assert_eq!(summary.stopped, Stopped::Graceful);
        summary
    }
}

/// Wait until `n` effects are recorded and every outbox row is completed.
async fn all_handled(pg: &Pg, n: usize, what: &str) {
    let deadline = tokio::time::Instant::now() + RECOVERY;
    loop {
        let effects = pg.effects().await.0;
        let completed = pg.outbox_count(EventStatus::Completed).await;
        if effects == n as i64 && completed == n as i64 {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out after {RECOVERY:?}: {what}: {effects} of {n} effects, {completed} of {n} outbox rows completed"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Every event delivered, each effect once, every row completed, every inbox row completed.
async fn assert_exactly_once(pg: &Pg, ids: &[String]) {
    // Give duplicates in flight a moment to arrive (they must not add effects).
    tokio::time::sleep(Duration::from_millis(300)).await;
    let n = ids.len() as i64;
    assert_eq!(
        pg.effects().await,
        (n, 0, n),
        "(rows, rows with n != 1, total n)"
    );
    assert_eq!(pg.effect_ids().await, ids.iter().cloned().collect());
    assert_eq!(pg.outbox_count(EventStatus::Completed).await, n);
    assert_eq!(pg.outbox_count(EventStatus::Failed).await, 0);
    assert_eq!(pg.inbox_count(EventStatus::Completed).await, n);
}

/// A blocking helper of `omnibox_e2e::servers`, run off the runtime.
async fn blocking<T: Send + 'static>(f: impl FnOnce() -> Result<T, String> + Send + 'static) -> T {
    tokio::task::spawn_blocking(f)
        .await
        .unwrap()
        .unwrap_or_else(|e| panic!("{e}"))
}

fn properties(connection_name: &str) -> lapin::ConnectionProperties {
    lapin::ConnectionProperties::default().with_connection_name(connection_name.into())
}

/// A reconnecting connector whose connections carry `connection_name`, reporting
/// reconnects into `reconnects`.
fn connector(url: &str, connection_name: &str, reconnects: &Arc<AtomicU64>) -> RabbitConnector {
    let reconnects = reconnects.clone();
    RabbitConnector::from_uri(url, properties(connection_name)).on_event(move |event| {
        if let ConnectionEvent::Reconnected { .. } = event {
            reconnects.fetch_add(1, Ordering::Relaxed);
        }
    })
}

fn publisher(connector: RabbitConnector) -> RabbitPublisher {
    RabbitPublisher::new(connector).with_options(
        PublisherOptions::default().routing(RoutingMode::FixedExchange(String::new())),
    )
}

fn consumer(connector: RabbitConnector, queue: &str) -> RabbitConsumer {
    RabbitConsumer::new(connector, queue)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rabbitmq_connections_closed_by_the_broker_are_replaced_under_running_workers() {
    common::init_tracing();
    let url = rabbit::url().await;
    let pg = Pg::new(&common::database_url().await, "reconnect_close").await;
    let admin = rabbit::connect(&url).await;
    let queue = omnibox_testing::unique_name("reconnect_close");
    rabbit::declare(&admin, &queue).await;
    let name = omnibox_testing::unique_name("omnibox-reconnect");
    let reconnects = Arc::new(AtomicU64::new(0));
    let (pub_conn, sub_conn) = (
        connector(&url, &name, &reconnects),
        connector(&url, &name, &reconnects),
    );
    let workers = Workers::start(
        &pg,
        publisher(pub_conn.clone()),
        consumer(sub_conn.clone(), &queue),
    );

    let mut ids = pg.enqueue(&queue, PHASE, KEYS).await;
    all_handled(&pg, PHASE, "phase 1 (before the close)").await;

    // Close both connections (publisher and consumer) broker side, with events in flight.
    ids.extend(pg.enqueue(&queue, PHASE, KEYS).await);
    assert_eq!(
        {
            let name = name.clone();
            blocking(move || close_connections(None, &name)).await
        },
        2,
        "publisher and consumer connections"
    );
    ids.extend(pg.enqueue(&queue, PHASE, KEYS).await);
    let recovering = std::time::Instant::now();
    all_handled(&pg, 3 * PHASE, "every event after the close").await;
    eprintln!(
        "close_connection: drained {} events in {:?}",
        2 * PHASE,
        recovering.elapsed()
    );
    assert_exactly_once(&pg, &ids).await;
    workers.stop().await;
    assert_eq!((pub_conn.reconnects(), sub_conn.reconnects()), (1, 1));
    assert_eq!(
        reconnects.load(Ordering::Relaxed),
        2,
        "hook saw both reconnects"
    );

    rabbit::delete(&admin, &queue).await;
    pg.drop_schema().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rabbitmq_node_restart_under_running_workers_loses_nothing() {
    common::init_tracing();
    let node = Arc::new(blocking(RabbitNode::start).await);
    let url = node.url();
    let pg = Pg::new(&common::database_url().await, "reconnect_restart").await;
    let queue = omnibox_testing::unique_name("reconnect_restart");
    {
        // Durable queue, persistent messages: both survive the restart.
        let admin = rabbit::connect(&url).await;
        rabbit::declare(&admin, &queue).await;
        let _ = admin.close(200, "OK".into()).await;
    }
    let name = omnibox_testing::unique_name("omnibox-restart");
    let reconnects = Arc::new(AtomicU64::new(0));
    let (pub_conn, sub_conn) = (
        connector(&url, &name, &reconnects),
        connector(&url, &name, &reconnects),
    );
    let workers = Workers::start(
        &pg,
        publisher(pub_conn.clone()),
        consumer(sub_conn.clone(), &queue),
    );

    let mut ids = pg.enqueue(&queue, PHASE, KEYS).await;
    all_handled(&pg, PHASE, "phase 1 (before the restart)").await;

    // Events in flight when the node goes down, events written while it is down.
    ids.extend(pg.enqueue(&queue, PHASE, KEYS).await);
    let n = node.clone();
    blocking(move || n.ctl(&["stop_app"])).await;
    ids.extend(pg.enqueue(&queue, PHASE, KEYS).await);
    // The listener is down: reconnect tries are refused until `start_app`.
    let addr = format!("127.0.0.1:{}", node.port());
    until("AMQP listener down", LIMIT, async || {
        tokio::net::TcpStream::connect(&addr).await.is_err()
    })
    .await;
    let n = node.clone();
    blocking(move || n.ctl(&["start_app"])).await;
    let recovering = std::time::Instant::now();
    all_handled(&pg, 3 * PHASE, "every event after the restart").await;
    eprintln!(
        "start_app: drained {} events in {:?}",
        2 * PHASE,
        recovering.elapsed()
    );
    assert_exactly_once(&pg, &ids).await;
    workers.stop().await;
    assert_eq!((pub_conn.reconnects(), sub_conn.reconnects()), (1, 1));
    assert_eq!(reconnects.load(Ordering::Relaxed), 2);

    pg.drop_schema().await;
    drop(node);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nats_server_restart_under_running_workers_loses_nothing() {
    use omnibox_nats::async_nats::{self, jetstream};
    common::init_tracing();
    let mut server = blocking(NatsServer::start).await;
    let pg = Pg::new(&common::database_url().await, "reconnect_nats").await;
    let client = async_nats::ConnectOptions::new()
        .retry_on_initial_connect()
        .connect(server.url())
        .await
        .unwrap();
    let js = jetstream::new(client.clone());
    let stream = omnibox_testing::unique_name("reconnect_nats");
    let subject = format!("{stream}.orders");
    js.create_stream(jetstream::stream::Config {
        name: stream.clone(),
        subjects: vec![subject.clone()],
        storage: jetstream::stream::StorageType::File,
        duplicate_window: Duration::from_secs(120),
        ..Default::default()
    })
    .await
    .unwrap();
    let workers = Workers::start(
        &pg,
        omnibox_nats::NatsPublisher::new(js.clone()),
        omnibox_nats::NatsConsumer::new(js.clone(), stream.clone(), "billing").with_options(
            omnibox_nats::ConsumerOptions::default().ack_wait(Duration::from_secs(5)),
        ),
    );

    let mut ids = pg.enqueue(&subject, PHASE, KEYS).await;
    all_handled(&pg, PHASE, "phase 1 (before the restart)").await;

    // Events in flight when the server dies, events written while it is down.
    ids.extend(pg.enqueue(&subject, PHASE, KEYS).await);
    server.kill();
    ids.extend(pg.enqueue(&subject, PHASE, KEYS).await);
    until("the client saw the outage", LIMIT, async || {
        client.connection_state() != async_nats::connection::State::Connected
    })
    .await;
    tokio::task::block_in_place(|| server.restart()).unwrap_or_else(|e| panic!("{e}"));
    let recovering = std::time::Instant::now();
    all_handled(&pg, 3 * PHASE, "every event after the restart").await;
    eprintln!(
        "nats restart: drained {} events in {:?}",
        2 * PHASE,
        recovering.elapsed()
    );
    assert_exactly_once(&pg, &ids).await;
    workers.stop().await;

    let _ = js.delete_stream(&stream).await;
    pg.drop_schema().await;
    drop(server);
}

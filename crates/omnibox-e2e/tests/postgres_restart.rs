//! PostgreSQL restarts under a running relay worker and inbox worker: both recover without
//! a restart of their own and lose nothing. The database is a throwaway cluster (`initdb`
//! into a temporary directory as the `postgres` user, on its own port), so the shared
//! server other tests use is never touched.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use common::{LIMIT, Pg, RecordEffect, bounded, rabbit, until};
use omnibox_core::inbox::InboxRunner;
use omnibox_core::model::EventStatus;
use omnibox_core::relay::OutboxRelay;
use omnibox_core::worker::{InboxWorker, RelayWorker, Stopped};
use omnibox_core::{Shutdown, WorkerId};
use omnibox_e2e::servers::PgCluster;
use omnibox_postgres::PgDatabase;
use omnibox_rabbitmq::{PublisherOptions, RabbitConsumer, RabbitPublisher, RoutingMode};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn relay_and_inbox_survive_a_postgres_restart() {
    const FIRST: usize = 1000;
    const SECOND: usize = 500;
    common::init_tracing();
    let amqp = rabbit::url().await;
    let cluster = tokio::task::spawn_blocking(PgCluster::create)
        .await
        .unwrap()
        .unwrap_or_else(|e| panic!("{e}"));
    let pg = Pg::with(&cluster.url(), "e2e_restart", |c| {
        c.notify_channel("e2e_wake")
    })
    .await;
    let admin = rabbit::connect(&amqp).await;
    let queue = omnibox_testing::unique_name("e2e_restart");
    rabbit::declare(&admin, &queue).await;
    let mut ids = pg.enqueue(&queue, FIRST, 20).await;

    let db = PgDatabase::new(pg.pool.clone());
    let relay = OutboxRelay::builder(
        pg.outbox.clone(),
        RabbitPublisher::new(rabbit::connect(&amqp).await).with_options(
            PublisherOptions::default().routing(RoutingMode::FixedExchange(String::new())),
        ),
    )
    .batch_size(50)
    .publish_concurrency(25)
    .publish_timeout(Duration::from_secs(2))
    .lease_ttl(Duration::from_secs(8))
    .build()
    .unwrap();
    let wake = omnibox_postgres::PgWakeup::connect(&pg.pool, &pg.config)
        .await
        .unwrap();
    let mut relay_worker = RelayWorker::builder(relay, db.clone())
        .worker_id(WorkerId::new("relay").unwrap())
        .wakeup(wake)
        .poll_interval(Duration::from_millis(200))
        .error_backoff(Duration::from_millis(100), Duration::from_secs(1))
        .build()
        .unwrap();
    let runner = InboxRunner::builder(
        RabbitConsumer::new(rabbit::connect(&amqp).await, queue.as_str()),
        db,
        pg.inbox.clone(),
        "billing",
    )
    .handler(RecordEffect {
        schema: pg.schema.clone(),
    })
    .redelivery_delay(Duration::from_millis(100))
    .idle_backoff(Duration::from_millis(10), Duration::from_millis(500))
    .build()
    .unwrap();
    let mut inbox = InboxWorker::builder(runner).build().unwrap();
    let shutdown = Shutdown::new();
    let relay_run = {
        let shutdown = shutdown.clone();
        tokio::spawn(async move { relay_worker.run(&shutdown).await })
    };
    let inbox_run = {
        let shutdown = shutdown.clone();
        tokio::spawn(async move { inbox.run(&shutdown).await })
    };

    until("work under way", LIMIT, async || {
        pg.effects().await.0 >= 100
    })
    .await;
    let c = &cluster;
    tokio::task::block_in_place(|| {
        c.stop("fast").unwrap_or_else(|e| panic!("{e}"));
        std::thread::sleep(Duration::from_secs(2));
        c.start().unwrap_or_else(|e| panic!("{e}"));
    });
    // New business transactions after the restart (the pool reconnects).
    ids.extend(pg.enqueue(&queue, SECOND, 20).await);
    let total = (FIRST + SECOND) as i64;
    until(
        "everything after the restart",
        Duration::from_secs(90),
        async || {
            pg.outbox_count(EventStatus::Completed).await == total && pg.effects().await.0 == total
        },
    )
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    shutdown.trigger();
    let summary = bounded("relay stop", LIMIT, relay_run).await.unwrap();
    assert_eq!(
        bounded("inbox stop", LIMIT, inbox_run).await.unwrap(),
        Stopped::Graceful
    );
    assert_eq!(summary.stopped, Stopped::Graceful);
    assert_eq!(
        pg.effects().await,
        (total, 0, total),
        "each effect exactly once"
    );
    assert_eq!(pg.effect_ids().await, ids.into_iter().collect());
    assert_eq!(pg.inbox_count(EventStatus::Completed).await, total);
    eprintln!("postgres restart: relay {summary:?}");
    rabbit::delete(&admin, &queue).await;
    pg.drop_schema().await;
    drop(cluster);
}

//! PostgreSQL restarts under a running relay worker and inbox worker: both recover without
//! a restart of their own and lose nothing. The database is a throwaway cluster (`initdb`
//! into a temporary directory as the `postgres` user, on its own port), so the shared
//! server other tests use is never touched.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use chrono::TimeDelta;
use common::{LIMIT, Pg, RecordEffect, bounded, rabbit, until};
use omnibox_core::inbox::InboxRunner;
use omnibox_core::model::EventStatus;
use omnibox_core::relay::OutboxRelay;
use omnibox_core::worker::{InboxWorker, RelayWorker, Stopped};
use omnibox_core::{Shutdown, WorkerId};
use omnibox_postgres::PgDatabase;
use omnibox_rabbitmq::{PublisherOptions, RabbitConsumer, RabbitPublisher, RoutingMode};

/// A private PostgreSQL cluster; stopped and removed when dropped.
struct Cluster {
    bin: PathBuf,
    dir: PathBuf,
    port: u16,
}

fn run_as_postgres(args: &[&str]) {
    let out = Command::new("runuser")
        .arg("-u")
        .arg("postgres")
        .arg("--")
        .args(args)
        .output()
        .expect("runuser");
    assert!(
        out.status.success(),
        "{args:?} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

impl Cluster {
    fn create() -> Self {
        let bin = std::fs::read_dir("/usr/lib/postgresql")
            .expect("PostgreSQL server binaries under /usr/lib/postgresql")
            .filter_map(Result::ok)
            .map(|e| e.path().join("bin"))
            .find(|p| p.join("initdb").exists())
            .expect("initdb under /usr/lib/postgresql/*/bin");
        let dir = std::env::temp_dir().join(omnibox_testing::unique_name("omnibox_pg"));
        std::fs::create_dir(&dir).unwrap();
        let status = Command::new("chown")
            .args(["postgres:postgres", dir.to_str().unwrap()])
            .status()
            .unwrap();
        assert!(status.success(), "chown the cluster directory to postgres");
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let c = Self { bin, dir, port };
        run_as_postgres(&[
            c.tool("initdb").as_str(),
            "-D",
            c.data().as_str(),
            "-A",
            "trust",
            "-U",
            "postgres",
            "--no-sync",
        ]);
        c.start();
        c
    }

    fn tool(&self, name: &str) -> String {
        self.bin.join(name).to_str().unwrap().to_owned()
    }

    fn data(&self) -> String {
        self.dir.join("data").to_str().unwrap().to_owned()
    }

    fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }

    fn start(&self) {
        let opts = format!(
            "-p {} -k {} -c listen_addresses=127.0.0.1 -c fsync=off",
            self.port,
            self.dir.display()
        );
        let log = Path::new(&self.dir).join("log");
        run_as_postgres(&[
            self.tool("pg_ctl").as_str(),
            "-D",
            self.data().as_str(),
            "-l",
            log.to_str().unwrap(),
            "-o",
            opts.as_str(),
            "-w",
            "-t",
            "30",
            "start",
        ]);
    }

    fn stop(&self, mode: &str) {
        run_as_postgres(&[
            self.tool("pg_ctl").as_str(),
            "-D",
            self.data().as_str(),
            "-m",
            mode,
            "-w",
            "-t",
            "30",
            "stop",
        ]);
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let _ = Command::new("runuser")
            .args(["-u", "postgres", "--"])
            .args([
                self.tool("pg_ctl").as_str(),
                "-D",
                self.data().as_str(),
                "-m",
                "immediate",
                "stop",
            ])
            .output();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn relay_and_inbox_survive_a_postgres_restart() {
    const FIRST: usize = 1000;
    const SECOND: usize = 500;
    common::init_tracing();
    let amqp = rabbit::url().await;
    let cluster = tokio::task::spawn_blocking(Cluster::create).await.unwrap();
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
    .lease_ttl(TimeDelta::seconds(8))
    .build()
    .unwrap();
    let wake = omnibox_postgres::Wakeup::connect(&pg.pool, &pg.config, Duration::from_millis(200))
        .await
        .unwrap();
    let mut relay_worker = RelayWorker::builder(relay, db.clone(), WorkerId::new("relay").unwrap())
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
        c.stop("fast");
        std::thread::sleep(Duration::from_secs(2));
        c.start();
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

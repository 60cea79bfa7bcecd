//! PgBouncer mode through a real PgBouncer in **transaction pooling** (issue 10): the store
//! conformance suites, a relay batch and an inbox message, all over connections that
//! PgBouncer hands to a different server session per transaction. The test starts its own
//! PgBouncer (Debian package `pgbouncer`) on a free port in front of DATABASE_URL's server,
//! and stops it at the end.
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests may panic

mod common;

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{TestDb, database_url};
use omnibox_core::inbox::{AckStrategy, InboxRunner};
use omnibox_core::memory::MemoryBroker;
use omnibox_core::relay::OutboxRelay;
use omnibox_core::{
    HandlerError, HandlerOutcome, InboxEvent, OutboxEvent, Publisher, Shutdown, WorkerId,
    handler_fn,
};
use omnibox_postgres::{PgDatabase, PgInboxStore, PgOutboxStore, PgStoreConfig};
use sqlx::PgPool;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};

/// A PgBouncer child process in transaction pooling mode, killed on drop.
struct Bouncer {
    child: Child,
    dir: PathBuf,
    port: u16,
}

impl Bouncer {
    fn start(server: &PgConnectOptions) -> Self {
        let binary = ["/usr/sbin/pgbouncer", "/usr/bin/pgbouncer"]
            .into_iter()
            .find(|p| std::path::Path::new(p).exists())
            .expect("PgBouncer is not installed: `apt-get install pgbouncer` (.ci/run does)");
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let dir = std::env::temp_dir().join(format!("omnibox-pgbouncer-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).unwrap();
        let ini = format!(
            "[databases]\n* = host={host} port={server_port}\n\n[pgbouncer]\n\
             listen_addr = 127.0.0.1\nlisten_port = {port}\nauth_type = trust\n\
             auth_file = {dir}/users.txt\npool_mode = transaction\nmax_client_conn = 200\n\
             default_pool_size = 20\nunix_socket_dir =\nlogfile = {dir}/pgbouncer.log\n\
             ignore_startup_parameters = extra_float_digits,options,search_path\n",
            host = server.get_host(),
            server_port = server.get_port(),
            dir = dir.display(),
        );
        std::fs::write(dir.join("pgbouncer.ini"), ini).unwrap();
        std::fs::write(
            dir.join("users.txt"),
            format!("\"{}\" \"\"\n", server.get_username()),
        )
        .unwrap();
        // PgBouncer refuses to run as root: run it as the `postgres` user then.
        let as_root = Command::new("id")
            .arg("-u")
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
            .unwrap_or(false);
        let mut cmd = if as_root {
            let status = Command::new("chown")
                .args(["-R", "postgres"])
                .arg(&dir)
                .status()
                .unwrap();
            assert!(
                status.success(),
                "chown the PgBouncer directory to postgres"
            );
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--", binary]);
            c
        } else {
            Command::new(binary)
        };
        let child = cmd
            .arg(dir.join("pgbouncer.ini"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start pgbouncer");
        let bouncer = Self { child, dir, port };
        for _ in 0..100 {
            if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
                return bouncer;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let log = std::fs::read_to_string(bouncer.dir.join("pgbouncer.log")).unwrap_or_default();
        panic!("PgBouncer did not listen on {port}: {log}");
    }

    /// A pool of client connections through PgBouncer.
    async fn pool(&self, server: &PgConnectOptions, schema: &str) -> PgPool {
        PgPoolOptions::new()
            .max_connections(8)
            .connect_with(
                server
                    .clone()
                    .host("127.0.0.1")
                    .port(self.port)
                    .application_name(schema),
            )
            .await
            .expect("connect through PgBouncer")
    }
}

impl Drop for Bouncer {
    fn drop(&mut self) {
        // `runuser` forwards the signal to pgbouncer.
        let _ = Command::new("kill")
            .arg(self.child.id().to_string())
            .status();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

async fn server() -> PgConnectOptions {
    database_url().await.parse().unwrap()
}

type Guards = Arc<Mutex<Option<TestDb>>>;

/// A fresh migrated schema (made directly), and its stores' config in PgBouncer mode.
async fn fresh(guards: &Guards) -> (TestDb, PgStoreConfig) {
    let old = guards.lock().unwrap().take();
    drop(old);
    let (db, cfg) = TestDb::migrated(false).await;
    (db, cfg.pgbouncer(true))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn store_conformance_through_pgbouncer_in_transaction_mode() {
    let server = server().await;
    let bouncer = Bouncer::start(&server);
    let guards = Guards::default();
    let pools: Arc<Mutex<Vec<PgPool>>> = Arc::default();
    omnibox_testing::outbox_store_conformance(|| async {
        let (db, cfg) = fresh(&guards).await;
        let pool = bouncer.pool(&server, &db.schema).await;
        pools.lock().unwrap().push(pool.clone());
        *guards.lock().unwrap() = Some(db);
        (PgDatabase::new(pool), PgOutboxStore::new(&cfg).unwrap())
    })
    .await;
    omnibox_testing::inbox_store_conformance(|| async {
        let (db, cfg) = fresh(&guards).await;
        let pool = bouncer.pool(&server, &db.schema).await;
        pools.lock().unwrap().push(pool.clone());
        *guards.lock().unwrap() = Some(db);
        (PgDatabase::new(pool), PgInboxStore::new(&cfg).unwrap())
    })
    .await;
    let pools: Vec<PgPool> = std::mem::take(&mut *pools.lock().unwrap());
    for pool in pools {
        pool.close().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn relay_and_inbox_through_pgbouncer_in_transaction_mode() {
    let server = server().await;
    let bouncer = Bouncer::start(&server);
    let (db, cfg) = TestDb::migrated(false).await;
    let cfg = cfg.pgbouncer(true);
    let pool = bouncer.pool(&server, &db.schema).await;
    let pg = PgDatabase::new(pool.clone());
    let outbox = PgOutboxStore::new(&cfg).unwrap();
    let inbox = PgInboxStore::new(&cfg).unwrap();

    // Enqueue through PgBouncer, relay to the in-memory broker, consume into the inbox.
    let events: Vec<OutboxEvent> = (0..20)
        .map(|i| {
            OutboxEvent::builder(
                "order",
                uuid::Uuid::now_v7(),
                "order.placed",
                "orders",
                format!("k{}", i % 4),
            )
            .payload(serde_json::json!({ "i": i }))
            .build()
            .unwrap()
        })
        .collect();
    let mut tx = pool.begin().await.unwrap();
    outbox.enqueue_many(&mut tx, &events).await.unwrap();
    tx.commit().await.unwrap();
    let broker = MemoryBroker::new();
    let relay = OutboxRelay::builder(outbox, broker.clone())
        .batch_size(8)
        .build()
        .unwrap();
    let worker = WorkerId::generate("relay").unwrap();
    for _ in 0..20 {
        let r = relay
            .publish_batch(&pg, &worker, &Shutdown::new())
            .await
            .unwrap();
        if r.claimed == 0 {
            break;
        }
    }
    assert_eq!(broker.published("orders").len(), 20);

    // A redelivery of the first message too: handled once.
    broker.publish(&events[0]).await.unwrap();
    let mut runner = InboxRunner::builder(broker.consumer(["orders"], "g"), pg, inbox.clone(), "g")
        .ack_strategy(AckStrategy::ExactlyOnceInbox)
        .handler(handler_fn(
            |_e: &InboxEvent, conn: &mut sqlx::PgConnection| {
                Box::pin(async move {
                    // A handler write in the inbox transaction, through PgBouncer.
                    sqlx::query("SELECT 1")
                        .persistent(false)
                        .execute(conn)
                        .await
                        .map_err(|e| {
                            HandlerError::from(omnibox_postgres::classify("handler", e))
                        })?;
                    Ok(HandlerOutcome::Completed)
                })
            },
        ))
        .build()
        .unwrap();
    let mut duplicates = 0;
    for _ in 0..21 {
        let out = tokio::time::timeout(Duration::from_secs(10), runner.process_one())
            .await
            .unwrap()
            .unwrap();
        assert!(out.acked, "{out:?}");
        duplicates += usize::from(out.duplicate);
    }
    assert_eq!(duplicates, 1);
    let rows: i64 = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
        "SELECT count(*) FROM {} WHERE status = 'completed'",
        inbox.names().qualified
    )))
    .persistent(false)
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(rows, 20);
    pool.close().await;
    drop(bouncer);
}

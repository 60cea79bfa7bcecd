//! The `inbox` section: messages/s into the inbox (exactly-once strategy, a handler that
//! writes one business row through its connection), fed from the in-memory broker, against
//! the commit rate of the same connections (one business row per transaction, nothing
//! else), measured just before. Plain (one transaction per message) and batched
//! (`batch_size`), 1/4/8 runners in one consumer group; and one runner with a concurrency
//! of 4/8 (`lanes`: messages over 64 keys) against as many connections.

use std::time::{Duration, Instant};

use omnibox_core::inbox::{AckStrategy, InboxRunner};
use omnibox_core::memory::MemoryBroker;
use omnibox_core::model::Headers;
use omnibox_core::shutdown::Shutdown;
use omnibox_core::{Handler, HandlerError, HandlerOutcome, HandlerResult, InboxEvent};
use omnibox_postgres::{PgDatabase, PgInboxStore, PgStoreConfig, migrate};
use sqlx::{AssertSqlSafe, PgConnection};
use uuid::Uuid;

use super::{Bench, env_list, env_u64, eps};

const TOPIC: &str = "inbox-bench";
const GROUP: &str = "bench";

/// Writes one business row per message, through the inbox's connection.
#[derive(Clone)]
struct WriteRow {
    insert: String,
}

impl Handler<InboxEvent, PgConnection> for WriteRow {
    async fn handle(&self, event: &InboxEvent, conn: &mut PgConnection) -> HandlerResult {
        sqlx::query(AssertSqlSafe(self.insert.clone()))
            .bind(Uuid::now_v7())
            .bind(&event.message_id)
            .execute(&mut *conn)
            .await
            .map_err(|e| HandlerError::permanent(e.to_string()))?;
        Ok(HandlerOutcome::Completed)
    }
}

/// One business row per transaction on `workers` connections: the commit rate.
async fn commit_rate(b: &Bench, insert: &str, workers: usize, total: u64) -> f64 {
    let per = total / workers as u64;
    let t0 = Instant::now();
    let tasks: Vec<_> = (0..workers)
        .map(|_| {
            let pool = b.pool.clone();
            let insert = insert.to_owned();
            tokio::spawn(async move {
                let mut conn = pool.acquire().await.expect("connection");
                for i in 0..per {
                    let mut tx = sqlx::Connection::begin(&mut *conn).await.expect("begin");
                    sqlx::query(AssertSqlSafe(insert.clone()))
                        .bind(Uuid::now_v7())
                        .bind(format!("c{i}"))
                        .execute(&mut *tx)
                        .await
                        .expect("insert");
                    tx.commit().await.expect("commit");
                }
            })
        })
        .collect();
    for t in tasks {
        t.await.expect("commit task");
    }
    eps(per * workers as u64, t0.elapsed())
}

/// Keys the messages are spread over (their unit of order, for the lanes).
const KEYS: u64 = 64;

/// `runners` inbox runners in one group, each with `batch` and `concurrency`, ingest
/// `messages` from a fresh topic.
async fn ingest(
    b: &Bench,
    cfg: &PgStoreConfig,
    insert: &str,
    (runners, batch, concurrency): (usize, usize, usize),
    messages: u64,
) -> f64 {
    let store = PgInboxStore::new(cfg).expect("inbox store");
    let broker = MemoryBroker::new();
    let body = br#"{"total": 42}"#.to_vec();
    for i in 0..messages {
        let mut headers = Headers::new();
        headers.insert("message_id".into(), Uuid::now_v7().to_string());
        headers.insert("event_type".into(), "order.placed".into());
        broker.push_keyed(TOPIC, &format!("k{}", i % KEYS), body.clone(), headers);
    }
    let shutdown = Shutdown::new();
    let t0 = Instant::now();
    let tasks: Vec<_> = (0..runners)
        .map(|_| {
            let mut runner = InboxRunner::builder(
                broker.consumer([TOPIC], GROUP),
                PgDatabase::new(b.pool.clone()),
                store.clone(),
                GROUP,
            )
            .ack_strategy(AckStrategy::ExactlyOnceInbox)
            .handler(WriteRow {
                insert: insert.to_owned(),
            })
            .batch_size(batch)
            .concurrency(concurrency)
            .build()
            .expect("runner");
            let shutdown = shutdown.clone();
            tokio::spawn(async move { runner.run(&shutdown).await.expect("runner run") })
        })
        .collect();
    while broker.acked(TOPIC, GROUP) < messages {
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    let took = t0.elapsed();
    shutdown.trigger();
    for t in tasks {
        t.await.expect("runner task");
    }
    eps(messages, took)
}

/// Print one `inbox` line per runner count and mode.
pub(super) async fn inbox_ingest(b: &Bench, rounds: u64) {
    let messages = env_u64("OMNIBOX_SUITE_MESSAGES", 20_000);
    let batch = env_u64("OMNIBOX_SUITE_INBOX_BATCH", 100) as usize;
    let business = format!("\"{}\".received", b.schema);
    b.exec(format!(
        "CREATE SCHEMA IF NOT EXISTS \"{}\"; \
         CREATE TABLE {business} (id uuid PRIMARY KEY, message_id text NOT NULL)",
        b.schema
    ))
    .await;
    let insert = format!("INSERT INTO {business} (id, message_id) VALUES ($1, $2)");
    let mut cases = Vec::new();
    for &runners in &env_list("OMNIBOX_SUITE_RUNNERS", &[1usize, 4, 8]) {
        cases.push(("plain", runners, 1, 1));
        cases.push(("batched", runners, batch, 1));
    }
    for &lanes in &env_list("OMNIBOX_SUITE_INBOX_LANES", &[4usize, 8]) {
        cases.push(("lanes", 1, 1, lanes));
    }
    for (mode, runners, size, lanes) in cases {
        // Connections in use: one per runner, or one per lane.
        let connections = runners * lanes;
        let (mut commit, mut got) = (0.0, 0.0);
        for round in 0..rounds {
            let table = format!("inbox_{mode}_{runners}_{lanes}_{round}");
            let cfg = PgStoreConfig::new()
                .schema(b.schema.clone())
                .inbox_table(table);
            migrate(&b.pool, &cfg).await.expect("migrate inbox");
            commit += commit_rate(b, &insert, connections, messages.min(10_000)).await;
            got += ingest(b, &cfg, &insert, (runners, size, lanes), messages).await;
        }
        let (commit, got) = (commit / rounds as f64, got / rounds as f64);
        println!(
            "inbox mode={mode} runners={runners} concurrency={lanes} batch={size} \
             messages={messages} msgs_per_s={got:.0} commit_tps={commit:.0} vs_commit={:.2}",
            got / commit
        );
    }
}

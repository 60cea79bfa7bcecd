//! The end-to-end benchmark suite (`cargo xtask bench`): every figure is a ratio against a
//! reference measured in the same process, on the same data, back to back.
//!
//! - `relay_drain`: real [`RelayWorker`]s draining a pending backlog through an
//!   acknowledge-at-once publisher, against the raw claim/complete loop (the reference's
//!   SQL, no per-key order) with as many tasks; 1/2/4 workers, batch 100/1000, 1k and 50k
//!   keys, mark and delete completion. `scaling` compares each worker count with one.
//! - `enqueue`: one business row per transaction, with and without one event beside it.
//! - `inbox`: messages/s through inbox runners (exactly once, a handler writing one row)
//!   against the commit rate of as many connections; plain and batched, 1/4/8 runners, and
//!   one runner with a concurrency of 4/8 (`suite/inbox.rs`; knobs
//!   `OMNIBOX_SUITE_MESSAGES`, `OMNIBOX_SUITE_INBOX_BATCH`, `OMNIBOX_SUITE_RUNNERS`,
//!   `OMNIBOX_SUITE_INBOX_LANES`).
//! - `latency`: commit → publish at a steady rate, LISTEN/NOTIFY wake-ups, on an
//!   in-memory publisher (an analysed table and a never-analysed one) and on RabbitMQ with
//!   publisher confirms at the default settings.
//!
//! Each result is one line, `section key=value …`, in a fixed order, so two runs compare
//! with `diff`. Knobs: `OMNIBOX_SUITE_EVENTS` (backlog per drain, default 50000),
//! `OMNIBOX_SUITE_ROUNDS` (default 1), `OMNIBOX_SUITE_ONLY` (comma list of sections),
//! `OMNIBOX_SUITE_LATENCY_SECS` (default 5), `OMNIBOX_SUITE_RATE` (events/s, default 1000);
//! the drain grid narrows with `OMNIBOX_SUITE_MODES` (`mark,delete`), `OMNIBOX_SUITE_BATCH`,
//! `OMNIBOX_SUITE_KEYS` and `OMNIBOX_SUITE_WORKERS` (comma lists); `OMNIBOX_SUITE_POLL_MS`
//! is the relay workers' poll interval (default 10). `OMNIBOX_SUITE_ASYNC_CLAIMS=1` runs the
//! relay and latency sections with `PgStoreConfig::asynchronous_claims` (the header line
//! says `claims=async`).
//! Needs `DATABASE_URL`; the RabbitMQ leg needs `AMQP_URL`.
#![allow(clippy::unwrap_used, clippy::expect_used)] // benches may panic

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use omnibox_core::error::PublishError;
use omnibox_core::model::OutboxEvent;
use omnibox_core::relay::OutboxRelay;
use omnibox_core::{CancellationToken, Event, Publisher};
use omnibox_postgres::{
    CompletionMode, PgDatabase, PgOutboxStore, PgStoreConfig, PgWakeup, migrate,
};
use omnibox_rabbitmq::{RabbitPublisher, lapin};
use sqlx::{AssertSqlSafe, PgPool, Row};
use uuid::Uuid;

#[path = "suite/inbox.rs"]
mod inbox;

fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// The values of a comma list in `name`, or `default` when unset.
fn env_list<T: std::str::FromStr + Copy>(name: &str, default: &[T]) -> Vec<T> {
    match std::env::var(name) {
        Ok(v) => v.split(',').filter_map(|s| s.trim().parse().ok()).collect(),
        Err(_) => default.to_vec(),
    }
}

fn wanted(section: &str) -> bool {
    match std::env::var("OMNIBOX_SUITE_ONLY") {
        Ok(only) => only.split(',').any(|s| s.trim() == section),
        Err(_) => true,
    }
}

/// Acknowledges at once; counts, and stamps publish times when asked.
#[derive(Default)]
struct Counting {
    published: AtomicU64,
    stamps: Mutex<HashMap<Uuid, Instant>>,
    stamp: bool,
}

impl Counting {
    fn stamping() -> Self {
        Self {
            stamp: true,
            ..Self::default()
        }
    }

    fn note(&self, id: Uuid) {
        self.published.fetch_add(1, Ordering::Relaxed);
        if self.stamp {
            self.stamps.lock().unwrap().insert(id, Instant::now());
        }
    }
}

impl Publisher for Counting {
    async fn publish(&self, event: &OutboxEvent) -> Result<(), PublishError> {
        self.note(event.id());
        Ok(())
    }
}

/// A real publisher, stamped when its acknowledgement arrives.
struct Stamped<P> {
    inner: P,
    seen: Counting,
}

impl<P: Publisher> Publisher for Stamped<P> {
    async fn publish(&self, event: &OutboxEvent) -> Result<(), PublishError> {
        self.inner.publish(event).await?;
        self.seen.note(event.id());
        Ok(())
    }
}

struct Bench {
    pool: PgPool,
    schema: String,
    /// Outbox stores commit their claims asynchronously.
    async_claims: bool,
}

impl Bench {
    /// Outbox table `name` in the bench schema, migrated, with its config and store;
    /// `channel` turns NOTIFY on.
    async fn outbox(
        &self,
        name: &str,
        mode: CompletionMode,
        channel: Option<&str>,
    ) -> (PgStoreConfig, PgOutboxStore) {
        let mut cfg = PgStoreConfig::new()
            .schema(self.schema.clone())
            .outbox_table(name)
            .completion(mode)
            .asynchronous_claims(self.async_claims);
        if let Some(channel) = channel {
            cfg = cfg.notify_channel(channel);
        }
        migrate(&self.pool, &cfg).await.expect("migrate");
        let store = PgOutboxStore::new(&cfg).expect("store");
        (cfg, store)
    }

    async fn exec(&self, sql: String) {
        sqlx::raw_sql(AssertSqlSafe(sql))
            .execute(&self.pool)
            .await
            .expect("bench sql");
    }

    /// `events` pending rows over `keys` keys, one per ms in the past, analysed.
    async fn refill(&self, table: &str, events: u64, keys: u64) {
        self.exec(format!(
            "TRUNCATE {table}; INSERT INTO {table} (id, event_type, payload, status, attempts_made, max_attempts, \
             scheduled_at, created_at, aggregate_type, aggregate_id, topic, partition_key) \
             SELECT gen_random_uuid(), 'e', '{{\"a\":1}}', 'pending', 0, 6, now() - interval '1 hour' + g * interval '1 ms', \
             now() - interval '1 hour' + g * interval '1 ms', 'o', gen_random_uuid(), 't', 'k' || (g % {keys}) \
             FROM generate_series(1, {events}) g; ANALYZE {table};"
        ))
        .await;
    }

    async fn pending(&self, table: &str) -> i64 {
        sqlx::query_scalar(AssertSqlSafe(format!(
            "SELECT count(*) FROM {table} WHERE status = 'pending'"
        )))
        .fetch_one(&self.pool)
        .await
        .expect("count")
    }

    /// Relay workers until every event is published and settled.
    async fn drain_relay(
        &self,
        store: &PgOutboxStore,
        workers: usize,
        batch: u32,
        events: u64,
    ) -> Duration {
        let table = store.names().qualified.clone();
        let publisher = Arc::new(Counting::default());
        let token = CancellationToken::new();
        let db = PgDatabase::new(self.pool.clone());
        let t0 = Instant::now();
        let handles: Vec<_> = (0..workers)
            .map(|_| {
                let worker = OutboxRelay::builder(store.clone(), publisher.clone())
                    .batch_size(batch)
                    .worker(db.clone())
                    .poll_interval(Duration::from_millis(
                        env_u64("OMNIBOX_SUITE_POLL_MS", 10).max(1),
                    ))
                    .build()
                    .expect("relay");
                tokio::spawn(worker.serve(token.clone()))
            })
            .collect();
        while publisher.published.load(Ordering::Relaxed) < events {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        while self.pending(&table).await > 0 {
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        let took = t0.elapsed();
        token.cancel();
        for h in handles {
            h.await.expect("worker");
        }
        took
    }

    /// The raw loop: the reference's claim and completion SQL, no ordering, one task per
    /// worker, each until its claim comes back empty.
    async fn drain_raw(
        &self,
        table: &str,
        mode: CompletionMode,
        workers: usize,
        batch: u32,
    ) -> Duration {
        let t0 = Instant::now();
        let handles: Vec<_> = (0..workers)
            .map(|w| {
                let pool = self.pool.clone();
                let me = format!("raw-{w}");
                let claim = format!(
                    "WITH c AS (SELECT id FROM {table} WHERE status = 'pending' AND locked_at IS NULL \
                     AND attempts_made < max_attempts AND scheduled_at <= now() ORDER BY scheduled_at \
                     LIMIT $1 FOR UPDATE SKIP LOCKED) \
                     UPDATE {table} t SET locked_at = now(), locked_by = $2 FROM c WHERE t.id = c.id RETURNING t.*"
                );
                let done = match mode {
                    CompletionMode::Delete => {
                        format!("DELETE FROM {table} WHERE id = ANY($1) AND locked_by = $2")
                    }
                    _ => format!(
                        "UPDATE {table} SET status = 'completed', completed_at = now(), locked_at = NULL, \
                         locked_by = NULL WHERE id = ANY($1) AND locked_by = $2"
                    ),
                };
                tokio::spawn(async move {
                    loop {
                        let mut tx = pool.begin().await.expect("begin");
                        let rows = sqlx::query(AssertSqlSafe(claim.clone()))
                            .bind(i64::from(batch))
                            .bind(&me)
                            .fetch_all(&mut *tx)
                            .await
                            .expect("claim");
                        tx.commit().await.expect("commit");
                        if rows.is_empty() {
                            return;
                        }
                        // Read what a publisher needs, as the store does.
                        let ids: Vec<Uuid> = rows
                            .iter()
                            .map(|r| {
                                let _: String = r.get("topic");
                                let _: String = r.get("partition_key");
                                let _: serde_json::Value = r.get("payload");
                                let _: Option<serde_json::Value> = r.get("headers");
                                r.get("id")
                            })
                            .collect();
                        let mut tx = pool.begin().await.expect("begin");
                        sqlx::query(AssertSqlSafe(done.clone()))
                            .bind(ids)
                            .bind(&me)
                            .execute(&mut *tx)
                            .await
                            .expect("complete");
                        tx.commit().await.expect("commit");
                    }
                })
            })
            .collect();
        for h in handles {
            h.await.expect("raw worker");
        }
        let took = t0.elapsed();
        assert_eq!(self.pending(table).await, 0, "the raw loop left events");
        took
    }
}

fn eps(events: u64, took: Duration) -> f64 {
    events as f64 / took.as_secs_f64().max(1e-9)
}

async fn relay_drain(b: &Bench, events: u64, rounds: u64) {
    let modes = std::env::var("OMNIBOX_SUITE_MODES").unwrap_or_else(|_| "mark,delete".into());
    for (mode, label) in [
        (CompletionMode::MarkCompleted, "mark"),
        (CompletionMode::Delete, "delete"),
    ] {
        if !modes.split(',').any(|m| m.trim() == label) {
            continue;
        }
        let (_, store) = b.outbox(&format!("drain_{label}"), mode, None).await;
        let table = store.names().qualified.clone();
        for &batch in &env_list("OMNIBOX_SUITE_BATCH", &[100u32, 1000]) {
            for &keys in &env_list("OMNIBOX_SUITE_KEYS", &[1000u64, 50_000]) {
                let mut one_worker = 0.0;
                for &workers in &env_list("OMNIBOX_SUITE_WORKERS", &[1usize, 2, 4]) {
                    let (mut relay, mut raw) = (Duration::ZERO, Duration::ZERO);
                    for round in 0..rounds {
                        for relay_turn in [round % 2 == 0, round % 2 != 0] {
                            b.refill(&table, events, keys).await;
                            if relay_turn {
                                relay += b.drain_relay(&store, workers, batch, events).await;
                            } else {
                                raw += b.drain_raw(&table, mode, workers, batch).await;
                            }
                        }
                    }
                    let (relay, raw) = (eps(events * rounds, relay), eps(events * rounds, raw));
                    if workers == 1 {
                        one_worker = relay;
                    }
                    println!(
                        "relay_drain mode={label} batch={batch} keys={keys} workers={workers} \
                         relay_eps={relay:.0} raw_eps={raw:.0} ratio={:.2} vs_1_worker={:.2}",
                        relay / raw,
                        relay / one_worker
                    );
                }
            }
        }
    }
}

async fn enqueue_overhead(b: &Bench, rounds: u64) {
    let (_, store) = b
        .outbox("enqueue", CompletionMode::MarkCompleted, None)
        .await;
    let orders = format!("\"{}\".orders", b.schema);
    b.exec(format!(
        "CREATE TABLE {orders} (id uuid PRIMARY KEY, customer text NOT NULL)"
    ))
    .await;
    let insert = format!("INSERT INTO {orders} VALUES ($1, $2)");
    let per_turn = 500u64;
    let (mut plain, mut with_event) = (Duration::ZERO, Duration::ZERO);
    for round in 0..rounds * 4 {
        for event_turn in [round % 2 == 0, round % 2 != 0] {
            let t0 = Instant::now();
            for i in 0..per_turn {
                let id = Uuid::now_v7();
                let mut tx = b.pool.begin().await.expect("begin");
                sqlx::query(AssertSqlSafe(insert.clone()))
                    .bind(id)
                    .bind("customer")
                    .execute(&mut *tx)
                    .await
                    .expect("insert");
                if event_turn {
                    let e = OutboxEvent::builder(
                        "order",
                        id,
                        "order.placed",
                        "orders",
                        format!("k{i}"),
                    )
                    .payload(serde_json::json!({ "order": id, "customer": "customer" }))
                    .build()
                    .expect("event");
                    store.enqueue(&mut tx, &e).await.expect("enqueue");
                }
                tx.commit().await.expect("commit");
            }
            if event_turn {
                with_event += t0.elapsed();
            } else {
                plain += t0.elapsed();
            }
        }
    }
    let n = per_turn * rounds * 4;
    let (p, w) = (eps(n, plain), eps(n, with_event));
    println!(
        "enqueue txns={n} plain_tps={p:.0} with_event_tps={w:.0} ratio={:.2} overhead_pct={:.1}",
        w / p,
        (p / w - 1.0) * 100.0
    );
}

/// Percentile (0..=100) of sorted samples, in ms.
fn pct(sorted: &[Duration], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((sorted.len() as f64 - 1.0) * p / 100.0).round() as usize;
    sorted[i].as_secs_f64() * 1000.0
}

/// Enqueue at `rate` events/s for `secs`, each in its own transaction, with a relay worker
/// woken by LISTEN/NOTIFY; commit → publish per event.
async fn latency<P: Publisher + 'static>(
    b: &Bench,
    (cfg, store): &(PgStoreConfig, PgOutboxStore),
    label: &str,
    publisher: P,
    secs: u64,
    rate: u64,
) {
    let publisher = Arc::new(Stamped {
        inner: publisher,
        seen: Counting::stamping(),
    });
    let table = store.names().qualified.clone();
    let token = CancellationToken::new();
    let wakeup = PgWakeup::connect(&b.pool, cfg).await.expect("listen");
    let worker = OutboxRelay::builder(store.clone(), publisher.clone())
        .worker(PgDatabase::new(b.pool.clone()))
        .wakeup(wakeup)
        .build()
        .expect("relay");
    let handle = tokio::spawn(worker.serve(token.clone()));
    tokio::time::sleep(Duration::from_millis(200)).await;
    let total = secs * rate;
    let mut committed = HashMap::with_capacity(total as usize);
    let interval = Duration::from_secs_f64(1.0 / rate as f64);
    let start = tokio::time::Instant::now();
    for i in 0..total {
        tokio::time::sleep_until(start + interval * i as u32).await;
        let e = OutboxEvent::builder(
            "order",
            Uuid::now_v7(),
            "order.placed",
            "bench-latency",
            format!("k{}", i % 100),
        )
        .payload(serde_json::json!({ "i": i }))
        .build()
        .expect("event");
        let mut tx = b.pool.begin().await.expect("begin");
        store.enqueue(&mut tx, &e).await.expect("enqueue");
        tx.commit().await.expect("commit");
        committed.insert(e.id(), Instant::now());
    }
    let deadline = Instant::now() + Duration::from_secs(60);
    while publisher.seen.published.load(Ordering::Relaxed) < total && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    token.cancel();
    handle.await.expect("relay");
    let stamps = publisher.seen.stamps.lock().unwrap().clone();
    let mut lat: Vec<Duration> = committed
        .iter()
        .filter_map(|(id, c)| stamps.get(id).map(|p| p.saturating_duration_since(*c)))
        .collect();
    lat.sort();
    let analysed: Option<chrono::DateTime<chrono::Utc>> = sqlx::query(
        "SELECT greatest(last_analyze, last_autoanalyze) FROM pg_stat_user_tables WHERE relid = $1::regclass",
    )
    .bind(&table)
    .fetch_one(&b.pool)
    .await
    .map(|r| r.get(0))
    .unwrap_or(None);
    println!(
        "latency publisher={label} rate={rate} events={total} published={} p50_ms={:.2} p99_ms={:.2} max_ms={:.2} analysed={}",
        lat.len(),
        pct(&lat, 50.0),
        pct(&lat, 99.0),
        pct(&lat, 100.0),
        analysed.is_some()
    );
}

async fn latency_suite(b: &Bench, secs: u64, rate: u64) {
    let mark = CompletionMode::MarkCompleted;
    // A table analysed with a backlog behind it, the usual state of a running service.
    let analysed = b
        .outbox("lat_analysed", mark, Some("omnibox_suite_a"))
        .await;
    let table = analysed.1.names().qualified.clone();
    b.refill(&table, 20_000, 1000).await;
    b.exec(format!(
        "UPDATE {table} SET status = 'completed', completed_at = now(); ANALYZE {table}"
    ))
    .await;
    latency(
        b,
        &analysed,
        "memory-analysed",
        Counting::default(),
        secs,
        rate,
    )
    .await;

    // Never analysed (autovacuum off for it): a first deployment, or a delete-mode table
    // that stays small; the claim plans without statistics.
    let fresh = b.outbox("lat_fresh", mark, Some("omnibox_suite_f")).await;
    let table = fresh.1.names().qualified.clone();
    b.exec(format!(
        "ALTER TABLE {table} SET (autovacuum_enabled = false)"
    ))
    .await;
    latency(
        b,
        &fresh,
        "memory-never-analysed",
        Counting::default(),
        secs,
        rate,
    )
    .await;

    // RabbitMQ, publisher confirms, persistent messages, default options.
    let Ok(url) = std::env::var("AMQP_URL") else {
        panic!("AMQP_URL must point at RabbitMQ for the latency leg (cargo xtask bench sets it)");
    };
    let conn = lapin::Connection::connect(&url, lapin::ConnectionProperties::default())
        .await
        .expect("connect to RabbitMQ");
    let ch = conn.create_channel().await.expect("channel");
    ch.queue_declare(
        "bench-latency".into(),
        lapin::options::QueueDeclareOptions {
            durable: true,
            ..Default::default()
        },
        Default::default(),
    )
    .await
    .expect("declare");
    let rabbit = b.outbox("lat_rabbit", mark, Some("omnibox_suite_r")).await;
    let publisher = RabbitPublisher::new(conn);
    latency(b, &rabbit, "rabbitmq-confirms", publisher, secs, rate).await;
    let _ = ch
        .queue_delete("bench-latency".into(), Default::default())
        .await;
}

#[tokio::main]
async fn main() {
    let url = std::env::var("DATABASE_URL")
        .expect("DATABASE_URL must point at PostgreSQL (cargo xtask bench sets it)");
    let pool = sqlx::postgres::PgPoolOptions::new()
        .max_connections(16)
        .connect(&url)
        .await
        .expect("connect to PostgreSQL");
    let events = env_u64("OMNIBOX_SUITE_EVENTS", 50_000);
    let rounds = env_u64("OMNIBOX_SUITE_ROUNDS", 1).max(1);
    let secs = env_u64("OMNIBOX_SUITE_LATENCY_SECS", 5);
    let rate = env_u64("OMNIBOX_SUITE_RATE", 1000).max(1);
    let settings: (String, String, String) = sqlx::query_as(
        "SELECT current_setting('server_version'), current_setting('fsync'), current_setting('synchronous_commit')",
    )
    .fetch_one(&pool)
    .await
    .expect("settings");
    let async_claims = env_u64("OMNIBOX_SUITE_ASYNC_CLAIMS", 0) == 1;
    println!(
        "suite v1 postgres={} fsync={} synchronous_commit={} events={events} rounds={rounds} cores={} claims={}",
        settings.0,
        settings.1,
        settings.2,
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        if async_claims { "async" } else { "durable" }
    );
    let b = Bench {
        pool,
        schema: format!("omnibox_suite_{}", Uuid::new_v4().simple()),
        async_claims,
    };
    if wanted("relay") {
        relay_drain(&b, events, rounds).await;
    }
    if wanted("enqueue") {
        enqueue_overhead(&b, rounds).await;
    }
    if wanted("inbox") {
        inbox::inbox_ingest(&b, rounds).await;
    }
    if wanted("latency") {
        latency_suite(&b, secs, rate).await;
    }
    b.exec(format!("DROP SCHEMA IF EXISTS \"{}\" CASCADE", b.schema))
        .await;
}

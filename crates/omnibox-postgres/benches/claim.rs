//! Claim-and-complete throughput: the store's claim + bulk settle path against a
//! hand-written minimal SQL loop, in the same run; plus enqueue throughput with NOTIFY on
//! and off. Needs DATABASE_URL. Prints events/s and the ratio.
//!
//! `OMNIBOX_BENCH_ROWS` (default 5000) rows are drained per iteration, `OMNIBOX_BENCH_BATCH`
//! (default 500) per claim. Both paths commit durably (whatever the server's
//! `synchronous_commit` is, printed first), one transaction for the claim and one for the
//! completion.
//!
//! Criterion measures each path on its own, one after the other, so a change in the
//! machine's load between the two skews a ratio taken from those figures. The headline
//! ratio therefore comes from a paired phase run after criterion: `OMNIBOX_BENCH_PAIRS`
//! (default 12) rounds, each draining a fresh backlog with both paths back to back,
//! alternating which goes first.
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests and benches may panic

use std::sync::Mutex;
use std::time::{Duration, Instant};

use criterion::{Criterion, Throughput};
use omnibox_core::Event;
use omnibox_core::model::{OutboxEvent, WorkerId};
use omnibox_core::store::{ClaimEvents, ClaimRequest, Settle, SettleEvents, Settlement};
use omnibox_postgres::{PgOutboxStore, PgStoreConfig, migrate};
use sqlx::{AssertSqlSafe, PgPool};
use uuid::Uuid;

static TOTALS: Mutex<Vec<(&'static str, u64, Duration)>> = Mutex::new(Vec::new());

fn env_u32(name: &str, default: u32) -> u32 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn record(name: &'static str, events: u64, took: Duration) {
    if let Ok(mut t) = TOTALS.lock() {
        t.push((name, events, took));
    }
}

async fn refill(pool: &PgPool, table: &str, rows: u32) {
    sqlx::raw_sql(AssertSqlSafe(format!(
        "TRUNCATE {table}; INSERT INTO {table} (id, event_type, payload, status, attempts_made, max_attempts, \
         scheduled_at, created_at, aggregate_type, aggregate_id, topic, partition_key) \
         SELECT gen_random_uuid(), 'e', '{{\"a\":1}}', 'pending', 0, 6, now() - interval '1 hour' + g * interval '1 ms', \
         now() - interval '1 hour' + g * interval '1 ms', 'o', gen_random_uuid(), 't', 'k' || g \
         FROM generate_series(1, {rows}) g; ANALYZE {table};"
    )))
    .execute(pool)
    .await
    .expect("refill");
}

async fn drain_store(pool: &PgPool, store: &PgOutboxStore, batch: u32) -> u64 {
    let me = WorkerId::new("bench").expect("worker");
    let mut n = 0;
    loop {
        let t0 = Instant::now();
        let mut tx = pool.begin().await.expect("begin");
        let got = store
            .claim(&mut tx, &ClaimRequest::new(me.clone(), batch))
            .await
            .expect("claim");
        tx.commit().await.expect("commit");
        if got.is_empty() {
            return n;
        }
        let s: Vec<_> = got
            .iter()
            .map(|e| Settlement {
                id: e.id(),
                lease: e.common().locked_at.unwrap_or_default(),
                action: Settle::Complete,
            })
            .collect();
        let t1 = Instant::now();
        let mut tx = pool.begin().await.expect("begin");
        store.settle(&mut tx, &me, &s).await.expect("settle");
        tx.commit().await.expect("commit");
        record("store_claim_phase", got.len() as u64, t1 - t0);
        record("store_settle_phase", got.len() as u64, t1.elapsed());
        n += got.len() as u64;
    }
}

async fn drain_minimal(pool: &PgPool, table: &str, batch: u32) -> u64 {
    let claim = format!(
        "WITH c AS (SELECT id FROM {table} WHERE status = 'pending' AND locked_at IS NULL AND attempts_made < max_attempts \
         AND scheduled_at <= now() ORDER BY scheduled_at LIMIT $1 FOR UPDATE SKIP LOCKED) \
         UPDATE {table} t SET locked_at = now(), locked_by = 'bench' FROM c WHERE t.id = c.id RETURNING t.*"
    );
    let done = format!(
        "UPDATE {table} SET status = 'completed', completed_at = now(), locked_at = NULL, locked_by = NULL \
         WHERE id = ANY($1) AND locked_by = 'bench'"
    );
    let mut n = 0;
    loop {
        let t0 = Instant::now();
        let mut tx = pool.begin().await.expect("begin");
        let rows = sqlx::query(AssertSqlSafe(claim.clone()))
            .bind(i64::from(batch))
            .fetch_all(&mut *tx)
            .await
            .expect("claim");
        tx.commit().await.expect("commit");
        if rows.is_empty() {
            return n;
        }
        // Read what a relay needs to publish (as the store does), then complete by id.
        let ids: Vec<Uuid> = rows
            .iter()
            .map(|r| {
                use sqlx::Row;
                let _topic: String = r.get("topic");
                let _key: String = r.get("partition_key");
                let _event_type: String = r.get("event_type");
                let _payload: serde_json::Value = r.get("payload");
                let _headers: Option<serde_json::Value> = r.get("headers");
                r.get::<Uuid, _>("id")
            })
            .collect();
        let t1 = Instant::now();
        let mut tx = pool.begin().await.expect("begin");
        sqlx::query(AssertSqlSafe(done.clone()))
            .bind(ids)
            .execute(&mut *tx)
            .await
            .expect("complete");
        tx.commit().await.expect("commit");
        record("minimal_claim_phase", rows.len() as u64, t1 - t0);
        record("minimal_settle_phase", rows.len() as u64, t1.elapsed());
        n += rows.len() as u64;
    }
}

fn event(i: u32) -> OutboxEvent {
    OutboxEvent::builder("o", Uuid::now_v7(), "e", "t", format!("k{i}"))
        .payload(serde_json::json!({ "i": i }))
        .build()
        .expect("event")
}

fn main() {
    let url = std::env::var("DATABASE_URL")
        .expect("DATABASE_URL must point at PostgreSQL for the claim benchmark");
    let rows = env_u32("OMNIBOX_BENCH_ROWS", 5000);
    let batch = env_u32("OMNIBOX_BENCH_BATCH", 500);
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let schema = format!("omnibox_bench_{}", Uuid::new_v4().simple());
    let (pool, store, notify_store, plain_store, table) = rt.block_on(async {
        let pool = PgPool::connect(&url).await.expect("connect");
        let fsync: String = sqlx::query_scalar("SHOW fsync")
            .fetch_one(&pool)
            .await
            .expect("fsync");
        let sc: String = sqlx::query_scalar("SHOW synchronous_commit")
            .fetch_one(&pool)
            .await
            .expect("sc");
        println!("postgres: fsync={fsync} synchronous_commit={sc}; rows/iter={rows} batch={batch}");
        let cfg = PgStoreConfig::new().schema(schema.clone());
        migrate(&pool, &cfg).await.expect("migrate");
        let store = PgOutboxStore::new(&cfg).expect("store");
        let notify =
            PgOutboxStore::new(&cfg.clone().notify_channel("omnibox_bench")).expect("store");
        let table = store.names().qualified.clone();
        (pool, store.clone(), notify, store, table)
    });

    let mut c = Criterion::default()
        .configure_from_args()
        .sample_size(10)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(5));
    {
        let mut g = c.benchmark_group("claim_and_complete");
        g.throughput(Throughput::Elements(u64::from(rows)));
        g.bench_function(format!("store/batch{batch}"), |b| {
            b.iter_custom(|iters| {
                rt.block_on(async {
                    let mut total = Duration::ZERO;
                    for _ in 0..iters {
                        refill(&pool, &table, rows).await;
                        let t = Instant::now();
                        let n = drain_store(&pool, &store, batch).await;
                        let took = t.elapsed();
                        assert_eq!(n, u64::from(rows));
                        record("store", n, took);
                        total += took;
                    }
                    total
                })
            })
        });
        g.bench_function(format!("minimal_sql/batch{batch}"), |b| {
            b.iter_custom(|iters| {
                rt.block_on(async {
                    let mut total = Duration::ZERO;
                    for _ in 0..iters {
                        refill(&pool, &table, rows).await;
                        let t = Instant::now();
                        let n = drain_minimal(&pool, &table, batch).await;
                        let took = t.elapsed();
                        assert_eq!(n, u64::from(rows));
                        record("minimal", n, took);
                        total += took;
                    }
                    total
                })
            })
        });
        g.finish();
    }
    {
        let per_iter = 200u32;
        let mut g = c.benchmark_group("enqueue_one_per_transaction");
        g.throughput(Throughput::Elements(u64::from(per_iter)));
        for (name, s) in [("notify_off", &plain_store), ("notify_on", &notify_store)] {
            g.bench_function(name, |b| {
                b.iter_custom(|iters| {
                    rt.block_on(async {
                        let mut total = Duration::ZERO;
                        for _ in 0..iters {
                            let events: Vec<_> = (0..per_iter).map(event).collect();
                            let t = Instant::now();
                            for e in &events {
                                let mut tx = pool.begin().await.expect("begin");
                                s.enqueue(&mut tx, e).await.expect("enqueue");
                                tx.commit().await.expect("commit");
                            }
                            let took = t.elapsed();
                            record(
                                if name == "notify_on" {
                                    "enqueue_notify_on"
                                } else {
                                    "enqueue_notify_off"
                                },
                                u64::from(per_iter),
                                took,
                            );
                            total += took;
                        }
                        total
                    })
                })
            });
        }
        g.finish();
    }
    c.final_summary();

    // Paired phase: both paths on the same backlog size, back to back, alternating order.
    let pairs = env_u32("OMNIBOX_BENCH_PAIRS", 12);
    rt.block_on(async {
        for i in 0..pairs {
            for store_turn in [i % 2 == 0, i % 2 != 0] {
                refill(&pool, &table, rows).await;
                let t = Instant::now();
                let n = if store_turn {
                    drain_store(&pool, &store, batch).await
                } else {
                    drain_minimal(&pool, &table, batch).await
                };
                assert_eq!(n, u64::from(rows));
                record(
                    if store_turn {
                        "paired_store"
                    } else {
                        "paired_minimal"
                    },
                    n,
                    t.elapsed(),
                );
            }
        }
    });

    let rate = |name: &str| {
        let t = TOTALS.lock().map(|t| t.clone()).unwrap_or_default();
        let (n, d) = t
            .iter()
            .filter(|(k, _, _)| *k == name)
            .fold((0u64, Duration::ZERO), |(n, d), (_, m, e)| (n + m, d + *e));
        if d.is_zero() {
            0.0
        } else {
            n as f64 / d.as_secs_f64()
        }
    };
    let ratio = |s: f64, m: f64| if m > 0.0 { s / m } else { 0.0 };
    let (s, m) = (rate("paired_store"), rate("paired_minimal"));
    println!(
        "claim+complete (batch {batch}, {pairs} interleaved pairs): store {s:.0} events/s, \
         minimal SQL {m:.0} events/s, ratio {:.2}",
        ratio(s, m)
    );
    let (s, m) = (rate("store"), rate("minimal"));
    println!(
        "claim+complete (batch {batch}, criterion runs, one path after the other): store {s:.0} events/s, \
         minimal SQL {m:.0} events/s, ratio {:.2}",
        ratio(s, m)
    );
    println!(
        "phases (all runs): store claim {:.0} events/s, settle {:.0} events/s; \
         minimal claim {:.0} events/s, settle {:.0} events/s",
        rate("store_claim_phase"),
        rate("store_settle_phase"),
        rate("minimal_claim_phase"),
        rate("minimal_settle_phase")
    );
    let (on, off) = (rate("enqueue_notify_on"), rate("enqueue_notify_off"));
    println!(
        "enqueue (1 event per transaction): NOTIFY off {off:.0} events/s, NOTIFY on {on:.0} events/s"
    );
    rt.block_on(async {
        let _ = sqlx::raw_sql(AssertSqlSafe(format!(
            "DROP SCHEMA IF EXISTS \"{schema}\" CASCADE"
        )))
        .execute(&pool)
        .await;
    });
}

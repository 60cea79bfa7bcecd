//! The producer process: business transactions at a steady rate, round-robin over the
//! keys, each writing a `business` row and its event in one transaction. On restart it
//! resumes every key after its last committed sequence number. A transaction that fails is
//! retried with the same `(key, seq)`; a unique violation on the retry means the earlier
//! commit did land (its acknowledgement was lost), so the producer moves on.

use std::collections::HashMap;
use std::time::Duration;

use omnibox_core::{OutboxEvent, Shutdown};
use omnibox_postgres::PgOutboxStore;
use sqlx::{AssertSqlSafe, PgPool, Row};

use super::RigEnv;
use super::world::{self, STEP};

/// Run until SIGTERM.
pub async fn run(env: RigEnv) -> Result<(), String> {
    let pool = env.pool(2).await?;
    let (outbox, _) = world::stores(&env.schema, env.partitioned)?;
    let shutdown = Shutdown::new();
    super::on_signals(shutdown.clone())?;
    let mut next = loop {
        match resume_points(&pool, &env).await {
            Ok(next) => break next,
            Err(e) => {
                eprintln!("producer: read resume points: {e}");
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    };
    let mut tick = tokio::time::interval(Duration::from_secs(1) / env.rate);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut key = 0usize;
    println!("ready");
    while !shutdown.is_requested() {
        tick.tick().await;
        let seq = next[key];
        match write(&pool, &outbox, &env, key, seq).await {
            Ok(()) => {
                next[key] += 1;
                key = (key + 1) % env.keys;
            }
            Err(e) if is_unique_violation(&e) => {
                // The previous try committed; only its reply was lost.
                next[key] += 1;
                key = (key + 1) % env.keys;
            }
            Err(e) => {
                eprintln!("producer: k{key:04}/{seq}: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
    pool.close().await;
    Ok(())
}

/// The name of business key number `key`.
pub fn key_name(key: usize) -> String {
    format!("k{key:04}")
}

async fn resume_points(pool: &PgPool, env: &RigEnv) -> Result<Vec<i64>, sqlx::Error> {
    let rows = sqlx::query(AssertSqlSafe(format!(
        "SELECT key, max(seq) FROM {}.business GROUP BY key",
        env.schema
    )))
    .fetch_all(pool)
    .await?;
    let last: HashMap<String, i64> = rows
        .into_iter()
        .map(|r| (r.get::<String, _>(0), r.get::<i64, _>(1)))
        .collect();
    Ok((0..env.keys)
        .map(|k| last.get(&key_name(k)).map_or(1, |s| s + 1))
        .collect())
}

async fn write(
    pool: &PgPool,
    outbox: &PgOutboxStore,
    env: &RigEnv,
    key: usize,
    seq: i64,
) -> Result<(), sqlx::Error> {
    let name = key_name(key);
    let event = OutboxEvent::builder(
        "chaos",
        uuid::Uuid::now_v7(),
        STEP,
        env.topic(env.lane_of(key)),
        name.as_str(),
    )
    .payload(serde_json::json!({ "key": name, "seq": seq }))
    .build()
    .map_err(|e| sqlx::Error::Protocol(e.to_string()))?;
    let mut tx = pool.begin().await?;
    sqlx::query(AssertSqlSafe(format!(
        "INSERT INTO {}.business (key, seq, event_id) VALUES ($1, $2, $3)",
        env.schema
    )))
    .bind(&name)
    .bind(seq)
    .bind(event.common.id)
    .execute(&mut *tx)
    .await?;
    outbox
        .enqueue(&mut tx, &event)
        .await
        .map_err(|e| sqlx::Error::Protocol(e.to_string()))?;
    tx.commit().await
}

fn is_unique_violation(e: &sqlx::Error) -> bool {
    e.as_database_error()
        .is_some_and(|d| d.code().as_deref() == Some("23505"))
}

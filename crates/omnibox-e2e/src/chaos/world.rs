//! The rig's business tables, beside the omnibox tables in the run's schema:
//!
//! - `business (key, seq, event_id)`: one row per committed business change, written by
//!   the producer in the same transaction as its event;
//! - `effects (message_id, key, seq, worker)`: one row per time the inbox handler ran to
//!   commit — no unique constraint, so a duplicate effect shows as a second row;
//! - `key_state (key, last_seq)`: the last sequence number the handler saw per key;
//! - `violations`: every time the handler saw a sequence number other than `last + 1`;
//! - `poison (event_id)`: the poison events the orchestrator wrote (the handler refuses
//!   them, so each must end as an inbox dead letter).

use omnibox_core::OutboxEvent;
use omnibox_postgres::{PgInboxStore, PgOutboxStore, PgStoreConfig};
use sqlx::{AssertSqlSafe, PgPool};

/// The event type of a business step (payload `{"key": "k0001", "seq": 7}`).
pub const STEP: &str = "chaos.step";
/// The event type the handler always refuses.
pub const POISON: &str = "chaos.poison";

/// The store configuration of a run's schema (plain or partitioned tables).
pub fn store_config(schema: &str, partitioned: bool) -> PgStoreConfig {
    PgStoreConfig::new().schema(schema).partitioned(partitioned)
}

/// The outbox and inbox stores of a run's schema.
pub fn stores(schema: &str, partitioned: bool) -> Result<(PgOutboxStore, PgInboxStore), String> {
    let config = store_config(schema, partitioned);
    Ok((
        PgOutboxStore::new(&config).map_err(|e| e.to_string())?,
        PgInboxStore::new(&config).map_err(|e| e.to_string())?,
    ))
}

/// Create the schema, the omnibox tables and the business tables.
pub async fn create(pool: &PgPool, schema: &str, partitioned: bool) -> Result<(), String> {
    let ddl = [
        format!("CREATE SCHEMA {schema}"),
        format!(
            "CREATE TABLE {schema}.business (key text NOT NULL, seq bigint NOT NULL, \
             event_id uuid NOT NULL, PRIMARY KEY (key, seq))"
        ),
        format!(
            "CREATE TABLE {schema}.effects (message_id text NOT NULL, key text NOT NULL, \
             seq bigint NOT NULL, worker text NOT NULL, at timestamptz NOT NULL DEFAULT now())"
        ),
        format!("CREATE INDEX ON {schema}.effects (key, seq)"),
        format!("CREATE TABLE {schema}.key_state (key text PRIMARY KEY, last_seq bigint NOT NULL)"),
        format!(
            "CREATE TABLE {schema}.violations (key text NOT NULL, expected bigint NOT NULL, \
             got bigint NOT NULL, message_id text NOT NULL, worker text NOT NULL, \
             at timestamptz NOT NULL DEFAULT now())"
        ),
        format!("CREATE TABLE {schema}.poison (event_id uuid PRIMARY KEY)"),
    ];
    for sql in &ddl[..1] {
        exec(pool, sql).await?;
    }
    omnibox_postgres::migrate(pool, &store_config(schema, partitioned))
        .await
        .map_err(|e| format!("migrate: {e}"))?;
    for sql in &ddl[1..] {
        exec(pool, sql).await?;
    }
    Ok(())
}

async fn exec(pool: &PgPool, sql: &str) -> Result<(), String> {
    sqlx::query(AssertSqlSafe(sql.to_owned()))
        .execute(pool)
        .await
        .map(drop)
        .map_err(|e| format!("{sql}: {e}"))
}

/// Write `count` poison events (recorded in `poison`) in one transaction, spread over the
/// lanes' topics.
pub async fn poison_burst(
    pool: &PgPool,
    outbox: &PgOutboxStore,
    schema: &str,
    topics: &[String],
    count: usize,
) -> Result<(), String> {
    let events = (0..count)
        .map(|i| {
            let id = uuid::Uuid::now_v7();
            OutboxEvent::builder(
                "chaos",
                id,
                POISON,
                topics[i % topics.len()].as_str(),
                format!("poison-{id}"),
            )
            .payload(serde_json::json!({ "poison": true }))
            .build()
            .map_err(|e| e.to_string())
        })
        .collect::<Result<Vec<_>, _>>()?;
    let ids: Vec<uuid::Uuid> = events.iter().map(|e| e.common.id).collect();
    let mut tx = pool.begin().await.map_err(|e| e.to_string())?;
    sqlx::query(AssertSqlSafe(format!(
        "INSERT INTO {schema}.poison (event_id) SELECT * FROM UNNEST($1::uuid[])"
    )))
    .bind(&ids)
    .execute(&mut *tx)
    .await
    .map_err(|e| e.to_string())?;
    outbox
        .enqueue_many(&mut tx, &events)
        .await
        .map_err(|e| e.to_string())?;
    tx.commit().await.map_err(|e| e.to_string())
}

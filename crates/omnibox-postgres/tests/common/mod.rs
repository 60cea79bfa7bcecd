//! Shared test support: one fresh schema per test, dropped at the end (also on panic).
#![allow(dead_code)]

use chrono::Utc;
use omnibox_core::model::{InboxEvent, OutboxEvent};
use omnibox_postgres::PgStoreConfig;
use sqlx::PgPool;
use sqlx::postgres::PgPoolOptions;
use uuid::Uuid;

pub fn database_url() -> String {
    match std::env::var("DATABASE_URL") {
        Ok(url) if !url.is_empty() => url,
        _ => panic!(
            "DATABASE_URL is not set: the omnibox-postgres tests need a PostgreSQL server \
             (e.g. DATABASE_URL=postgres://postgres@127.0.0.1:5432/postgres)"
        ),
    }
}

/// A unique schema, dropped with CASCADE when the guard goes out of scope.
pub struct TestDb {
    pub pool: PgPool,
    pub schema: String,
}

impl TestDb {
    pub async fn new() -> Self {
        let url = database_url();
        let schema = format!("omnibox_t_{}", Uuid::new_v4().simple());
        let pool = PgPoolOptions::new()
            .max_connections(12)
            .acquire_timeout(std::time::Duration::from_secs(30))
            .connect(&url)
            .await
            .expect("connect to DATABASE_URL");
        sqlx::raw_sql(sqlx::AssertSqlSafe(format!("CREATE SCHEMA \"{schema}\"")))
            .execute(&pool)
            .await
            .expect("create schema");
        Self { pool, schema }
    }

    pub fn config(&self) -> PgStoreConfig {
        PgStoreConfig::new().schema(self.schema.clone())
    }

    pub async fn migrated(partitioned: bool) -> (Self, PgStoreConfig) {
        let db = Self::new().await;
        let cfg = db.config().partitioned(partitioned);
        omnibox_postgres::migrate(&db.pool, &cfg)
            .await
            .expect("migrate");
        (db, cfg)
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        let schema = self.schema.clone();
        let url = database_url();
        // Async cleanup on a separate thread with its own runtime, so it also runs while a
        // failed test unwinds.
        let _ = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime");
            rt.block_on(async move {
                if let Ok(pool) = PgPoolOptions::new().max_connections(1).connect(&url).await {
                    let _ = sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
                        "DROP SCHEMA IF EXISTS \"{schema}\" CASCADE"
                    )))
                    .execute(&pool)
                    .await;
                    pool.close().await;
                }
            });
        })
        .join();
    }
}

pub fn outbox(topic: &str, key: &str) -> OutboxEvent {
    OutboxEvent::builder("order", Uuid::now_v7(), "order.placed", topic, key)
        .payload(serde_json::json!({ "n": 1 }))
        .build()
        .expect("valid event")
}

pub fn outbox_at(topic: &str, key: &str, n: i64) -> OutboxEvent {
    let at = Utc::now() - chrono::TimeDelta::seconds(10) + chrono::TimeDelta::milliseconds(n);
    OutboxEvent::builder("order", Uuid::now_v7(), "order.placed", topic, key)
        .payload(serde_json::json!({ "n": n }))
        .created_at(at)
        .scheduled_at(at)
        .build()
        .expect("valid event")
}

pub fn inbox(message_id: &str) -> InboxEvent {
    InboxEvent::builder(message_id, "group-a", "orders", "order.placed")
        .payload(serde_json::json!({ "m": message_id }))
        .build()
        .expect("valid event")
}

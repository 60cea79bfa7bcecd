//! Shared test support: one fresh schema per test, dropped at the end (also on panic).
#![allow(dead_code)]

use chrono::Utc;
use omnibox_core::model::{InboxEvent, OutboxEvent};
use omnibox_postgres::PgStoreConfig;
use sqlx::PgPool;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use uuid::Uuid;

/// DATABASE_URL, else a testcontainers PostgreSQL, else a loud error naming the variable.
pub async fn database_url() -> String {
    match omnibox_testing::postgres_url().await {
        Ok(url) => url,
        Err(e) => panic!("omnibox-postgres tests need PostgreSQL: {e}"),
    }
}

/// A unique schema, dropped with CASCADE when the guard goes out of scope.
pub struct TestDb {
    pub pool: PgPool,
    pub schema: String,
    url: String,
}

impl TestDb {
    pub async fn new() -> Self {
        let url = database_url().await;
        let schema = format!("omnibox_t_{}", Uuid::new_v4().simple());
        let options: PgConnectOptions = url.parse().expect("DATABASE_URL is a postgres URL");
        let pool = PgPoolOptions::new()
            .max_connections(8)
            .acquire_timeout(std::time::Duration::from_secs(30))
            .connect_with(options.application_name(&schema))
            .await
            .expect("connect to DATABASE_URL");
        sqlx::raw_sql(sqlx::AssertSqlSafe(format!("CREATE SCHEMA \"{schema}\"")))
            .execute(&pool)
            .await
            .expect("create schema");
        Self { pool, schema, url }
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
        let url = self.url.clone();
        // Async cleanup on a separate thread with its own runtime, so it also runs while a
        // failed test unwinds.
        let _ = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime");
            rt.block_on(async move {
                if let Ok(pool) = PgPoolOptions::new().max_connections(1).connect(&url).await {
                    // The test's own connections may still hold locks (a transaction whose
                    // rollback is queued on the blocked runtime): end them first.
                    let _ = sqlx::query(
                        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
                         WHERE application_name = $1 AND pid <> pg_backend_pid()",
                    )
                    .bind(&schema)
                    .execute(&pool)
                    .await;
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

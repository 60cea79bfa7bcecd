//! Shared support of the CLI tests: the binary with a clean environment, a fresh schema
//! per test (dropped at the end, also on panic), and events written by the library.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use omnibox_core::OutboxEvent;
use omnibox_postgres::sqlx::postgres::PgPoolOptions;
use omnibox_postgres::sqlx::{self, PgPool};
use omnibox_postgres::{PgOutboxStore, PgStoreConfig};

/// DATABASE_URL, else a testcontainers PostgreSQL, else a loud error naming the variable.
pub async fn database_url() -> String {
    match omnibox_testing::postgres_url().await {
        Ok(url) => url,
        Err(e) => panic!("omnibox-cli tests need PostgreSQL: {e}"),
    }
}

/// The `omnibox` binary with no `OMNIBOX_*` variable from the outer environment, pointed
/// at `url`.
pub fn omnibox(url: &str) -> assert_cmd::Command {
    let mut cmd = assert_cmd::Command::cargo_bin("omnibox").expect("the omnibox binary is built");
    for (k, _) in std::env::vars() {
        if k.starts_with("OMNIBOX_") {
            cmd.env_remove(k);
        }
    }
    cmd.env("DATABASE_URL", url)
        .env_remove("RUST_LOG")
        .timeout(Duration::from_secs(60));
    cmd
}

/// A unique schema (migrated by the CLI or not), dropped when the guard goes away.
pub struct Schema {
    pub name: String,
    pub url: String,
    pub pool: PgPool,
}

impl Schema {
    pub async fn new() -> Self {
        let url = database_url().await;
        let name = omnibox_testing::unique_name("cli");
        let pool = PgPoolOptions::new()
            .max_connections(4)
            .connect(&url)
            .await
            .expect("connect");
        Self { name, url, pool }
    }

    pub fn config(&self) -> PgStoreConfig {
        PgStoreConfig::new().schema(self.name.clone())
    }

    pub fn outbox(&self) -> PgOutboxStore {
        PgOutboxStore::new(&self.config()).unwrap()
    }

    /// Enqueue `n` events on `topic` (keys `k0`, `k1`, …) in one transaction.
    pub async fn enqueue(&self, topic: &str, n: usize) -> Vec<uuid::Uuid> {
        let store = self.outbox();
        let mut tx = self.pool.begin().await.unwrap();
        let mut ids = Vec::new();
        for i in 0..n {
            let e = OutboxEvent::builder(
                "order",
                uuid::Uuid::now_v7(),
                "order.placed",
                topic,
                format!("k{i}"),
            )
            .payload(serde_json::json!({"n": i}))
            .build()
            .unwrap();
            ids.push(e.common.id);
            store.enqueue(&mut tx, &e).await.unwrap();
        }
        tx.commit().await.unwrap();
        ids
    }

    /// Like [`Self::enqueue`], with the store's NOTIFY on `<schema>_wake` (as the relay
    /// tests configure it).
    pub async fn enqueue_notify(&self, topic: &str, n: usize) {
        let store =
            PgOutboxStore::new(&self.config().notify_channel(format!("{}_wake", self.name)))
                .unwrap();
        let mut tx = self.pool.begin().await.unwrap();
        for i in 0..n {
            let e = OutboxEvent::builder(
                "order",
                uuid::Uuid::now_v7(),
                "order.placed",
                topic,
                format!("late{i}"),
            )
            .payload(serde_json::json!({"late": i}))
            .build()
            .unwrap();
            store.enqueue(&mut tx, &e).await.unwrap();
        }
        tx.commit().await.unwrap();
    }

    pub async fn count(&self, sql_where: &str) -> i64 {
        let sql = format!(
            "SELECT count(*) FROM \"{}\".outbox_events WHERE {sql_where}",
            self.name
        );
        sqlx::query_scalar(sqlx::AssertSqlSafe(sql))
            .fetch_one(&self.pool)
            .await
            .unwrap()
    }

    pub async fn exists(&self) -> bool {
        sqlx::query_scalar(
            "SELECT EXISTS (SELECT 1 FROM information_schema.schemata WHERE schema_name = $1)",
        )
        .bind(&self.name)
        .fetch_one(&self.pool)
        .await
        .unwrap()
    }
}

impl Drop for Schema {
    fn drop(&mut self) {
        let (name, url) = (self.name.clone(), self.url.clone());
        let _ = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async move {
                if let Ok(pool) = PgPoolOptions::new().max_connections(1).connect(&url).await {
                    let _ = sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
                        "DROP SCHEMA IF EXISTS \"{name}\" CASCADE"
                    )))
                    .execute(&pool)
                    .await;
                }
            });
        })
        .join();
    }
}

/// Parse a command's stdout as JSON.
pub fn json_of(out: &assert_cmd::assert::Assert) -> serde_json::Value {
    let stdout = String::from_utf8_lossy(&out.get_output().stdout).into_owned();
    serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("stdout is not JSON ({e}): {stdout}"))
}

pub fn stdout(out: &assert_cmd::assert::Assert) -> String {
    String::from_utf8_lossy(&out.get_output().stdout).into_owned()
}

pub fn stderr(out: &assert_cmd::assert::Assert) -> String {
    String::from_utf8_lossy(&out.get_output().stderr).into_owned()
}

//! Shared support for the end-to-end tests: a fresh PostgreSQL schema per test, a business
//! "effects" table written by the inbox handler, fault-injecting wrappers.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashSet;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use omnibox_core::consumer::{AckHandle, Consumer, Delivery, Redelivery};
use omnibox_core::model::EventStatus;
use omnibox_core::{
    ConsumeError, Handler, HandlerError, HandlerOutcome, HandlerResult, InboxEvent, OutboxEvent,
    PublishError, Publisher,
};
use omnibox_postgres::{PgInboxStore, PgOutboxStore, PgStoreConfig};
use sqlx::postgres::PgPoolOptions;
use sqlx::{PgConnection, PgPool, Row};

/// Every wait of a test is bounded by this unless it says otherwise.
pub const LIMIT: Duration = Duration::from_secs(60);

pub async fn bounded<T>(what: &str, limit: Duration, f: impl Future<Output = T>) -> T {
    tokio::time::timeout(limit, f)
        .await
        .unwrap_or_else(|_| panic!("timed out after {limit:?}: {what}"))
}

/// Poll `cond` every 50 ms until it holds, bounded by `limit`.
pub async fn until(what: &str, limit: Duration, cond: impl AsyncFnMut() -> bool) {
    until_every(what, limit, Duration::from_millis(50), cond).await;
}

/// Poll `cond` every `period` until it holds, bounded by `limit`.
pub async fn until_every(
    what: &str,
    limit: Duration,
    period: Duration,
    mut cond: impl AsyncFnMut() -> bool,
) {
    bounded(what, limit, async {
        while !cond().await {
            tokio::time::sleep(period).await;
        }
    })
    .await;
}

pub fn init_tracing() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "error".into()),
        )
        .with_test_writer()
        .try_init();
}

pub async fn database_url() -> String {
    omnibox_testing::postgres_url()
        .await
        .unwrap_or_else(|e| panic!("{e}"))
}

/// A fresh schema with the omnibox tables and an `effects` business table.
pub struct Pg {
    pub pool: PgPool,
    pub schema: String,
    pub config: PgStoreConfig,
    pub outbox: PgOutboxStore,
    pub inbox: PgInboxStore,
}

impl Pg {
    pub async fn new(url: &str, prefix: &str) -> Self {
        Self::with(url, prefix, |c| c).await
    }

    pub async fn with(
        url: &str,
        prefix: &str,
        configure: impl FnOnce(PgStoreConfig) -> PgStoreConfig,
    ) -> Self {
        Self::with_pool(
            url,
            prefix,
            PgPoolOptions::new().max_connections(10),
            configure,
        )
        .await
    }

    /// Like [`Pg::with`], with the caller's pool settings (size, `test_before_acquire`).
    pub async fn with_pool(
        url: &str,
        prefix: &str,
        options: PgPoolOptions,
        configure: impl FnOnce(PgStoreConfig) -> PgStoreConfig,
    ) -> Self {
        let pool = options
            .acquire_timeout(Duration::from_secs(5))
            .connect(url)
            .await
            .unwrap_or_else(|e| panic!("connect to {url}: {e}"));
        let schema = omnibox_testing::unique_name(prefix);
        Self::in_schema(pool, schema, configure).await
    }

    pub async fn in_schema(
        pool: PgPool,
        schema: String,
        configure: impl FnOnce(PgStoreConfig) -> PgStoreConfig,
    ) -> Self {
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "CREATE SCHEMA IF NOT EXISTS {schema}"
        )))
        .execute(&pool)
        .await
        .unwrap();
        let config = configure(PgStoreConfig::new().schema(schema.as_str()));
        omnibox_postgres::migrate(&pool, &config).await.unwrap();
        for ddl in [
            format!(
                "CREATE TABLE IF NOT EXISTS {schema}.effects (message_id text PRIMARY KEY, n int NOT NULL)"
            ),
            format!("CREATE TABLE IF NOT EXISTS {schema}.orders (id uuid PRIMARY KEY)"),
        ] {
            sqlx::query(sqlx::AssertSqlSafe(ddl))
                .execute(&pool)
                .await
                .unwrap();
        }
        Self {
            outbox: PgOutboxStore::new(&config).unwrap(),
            inbox: PgInboxStore::new(&config).unwrap(),
            pool,
            schema,
            config,
        }
    }

    /// Enqueue `n` events on `topic` over `keys` keys, each with its business row, in
    /// business transactions of up to 500 events. Returns the event ids.
    pub async fn enqueue(&self, topic: &str, n: usize, keys: usize) -> Vec<String> {
        self.enqueue_typed(topic, n, keys, "order.placed").await
    }

    pub async fn enqueue_typed(
        &self,
        topic: &str,
        n: usize,
        keys: usize,
        event_type: &str,
    ) -> Vec<String> {
        self.enqueue_chunked(topic, n, keys, event_type, 500).await
    }

    /// Enqueue `n` events in business transactions of up to `chunk` events, each chunk one
    /// bulk insert (`UNNEST`, one round trip) of the business rows and one of the events.
    pub async fn enqueue_chunked(
        &self,
        topic: &str,
        n: usize,
        keys: usize,
        event_type: &str,
        chunk: usize,
    ) -> Vec<String> {
        let mut ids = Vec::with_capacity(n);
        let mut start = 0;
        while start < n {
            let end = (start + chunk.max(1)).min(n);
            let mut tx = self.pool.begin().await.unwrap();
            let mut events = Vec::with_capacity(end - start);
            for i in start..end {
                let order = uuid::Uuid::now_v7();
                events.push(
                    OutboxEvent::builder(
                        "order",
                        order,
                        event_type,
                        topic,
                        format!("k{}", i % keys.max(1)),
                    )
                    .payload(serde_json::json!({ "order": order, "i": i }))
                    .build()
                    .unwrap(),
                );
            }
            let orders: Vec<uuid::Uuid> = events.iter().map(|e| e.common.id).collect();
            sqlx::query(sqlx::AssertSqlSafe(format!(
                "INSERT INTO {}.orders (id) SELECT * FROM UNNEST($1::uuid[])",
                self.schema
            )))
            .bind(&orders)
            .execute(&mut *tx)
            .await
            .unwrap();
            self.outbox.enqueue_many(&mut tx, &events).await.unwrap();
            tx.commit().await.unwrap();
            ids.extend(events.iter().map(|e| e.common.id.to_string()));
            start = end;
        }
        ids
    }

    /// `ANALYZE` the outbox table, as autovacuum's auto-analyze does after a bulk load in a
    /// real deployment (this machine's PostgreSQL runs with `autovacuum = off`). Without
    /// statistics the planner expects about one pending row and plans the claim as "read
    /// every pending row (probing the per-key order guard for each), sort, take the first
    /// `batch`": a claim then costs O(pending) and a drain O(pending²) (20 000 events:
    /// ~50 ms per claim instead of ~2 ms).
    pub async fn analyze_outbox(&self) {
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "ANALYZE {}.outbox_events",
            self.schema
        )))
        .execute(&self.pool)
        .await
        .unwrap();
    }

    pub async fn outbox_count(&self, status: EventStatus) -> i64 {
        self.count("outbox_events", status).await
    }

    pub async fn inbox_count(&self, status: EventStatus) -> i64 {
        self.count("inbox_events", status).await
    }

    async fn count(&self, table: &str, status: EventStatus) -> i64 {
        let status = match status {
            EventStatus::Pending => "pending",
            EventStatus::Completed => "completed",
            EventStatus::Failed => "failed",
        };
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT count(*) FROM {}.{table} WHERE status = $1",
            self.schema
        )))
        .bind(status)
        .fetch_one(&self.pool)
        .await
        .map(|r| r.get::<i64, _>(0))
        .unwrap_or(-1)
    }

    /// `(rows, rows with n != 1, total n)` of the effects table.
    pub async fn effects(&self) -> (i64, i64, i64) {
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT count(*), count(*) FILTER (WHERE n <> 1), coalesce(sum(n), 0)::bigint FROM {}.effects",
            self.schema
        )))
        .fetch_one(&self.pool)
        .await
        .map(|r| (r.get(0), r.get(1), r.get(2)))
        .unwrap_or((-1, -1, -1))
    }

    pub async fn effect_ids(&self) -> HashSet<String> {
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT message_id FROM {}.effects",
            self.schema
        )))
        .fetch_all(&self.pool)
        .await
        .unwrap()
        .into_iter()
        .map(|r| r.get(0))
        .collect()
    }

    /// Outbox rows under a lease.
    pub async fn outbox_leased(&self) -> i64 {
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT count(*) FROM {}.outbox_events WHERE locked_at IS NOT NULL",
            self.schema
        )))
        .fetch_one(&self.pool)
        .await
        .map(|r| r.get(0))
        .unwrap()
    }

    /// Sum of attempts spent by outbox rows.
    pub async fn outbox_attempts(&self) -> i64 {
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT coalesce(sum(attempts_made), 0)::bigint FROM {}.outbox_events",
            self.schema
        )))
        .fetch_one(&self.pool)
        .await
        .map(|r| r.get(0))
        .unwrap()
    }

    pub async fn drop_schema(self) {
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "DROP SCHEMA IF EXISTS {} CASCADE",
            self.schema
        )))
        .execute(&self.pool)
        .await
        .unwrap();
        self.pool.close().await;
    }
}

/// The business effect: one `effects` row per message, written through the inbox
/// transaction; `n` counts how often it ran (a duplicate effect shows as `n = 2`).
/// Messages of type `poison` always fail.
#[derive(Debug, Clone, Default)]
pub struct RecordEffect {
    pub schema: String,
}

impl Handler<InboxEvent, PgConnection> for RecordEffect {
    async fn handle(&self, event: &InboxEvent, conn: &mut PgConnection) -> HandlerResult {
        if event.common.event_type == "poison" {
            return Err(HandlerError::permanent("poison: this handler always fails"));
        }
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "INSERT INTO {}.effects (message_id, n) VALUES ($1, 1)
             ON CONFLICT (message_id) DO UPDATE SET n = effects.n + 1",
            self.schema
        )))
        .bind(&event.message_id)
        .execute(conn)
        .await
        .map_err(|e| HandlerError::from(omnibox_postgres::classify("handler write", e)))?;
        Ok(HandlerOutcome::Completed)
    }
}

/// Publishes every event twice (a redelivery injected on the way).
#[derive(Debug, Clone)]
pub struct Twice<P>(pub P);

impl<P: Publisher> Publisher for Twice<P> {
    async fn publish(&self, event: &OutboxEvent) -> Result<(), PublishError> {
        self.0.publish(event).await?;
        self.0.publish(event).await
    }
}

/// Hands every message back once (nack, immediate redelivery) before delivering it.
pub struct NackOnce<C> {
    pub inner: C,
    pub seen: Arc<Mutex<HashSet<String>>>,
}

impl<C> NackOnce<C> {
    pub fn new(inner: C) -> Self {
        Self {
            inner,
            seen: Arc::default(),
        }
    }
}

impl<C: Consumer> Consumer for NackOnce<C> {
    type Ack = C::Ack;

    async fn start(&mut self) -> Result<(), ConsumeError> {
        self.inner.start().await
    }

    async fn receive(&mut self) -> Result<Delivery<C::Ack>, ConsumeError> {
        loop {
            let d = self.inner.receive().await?;
            let Ok(msg) = &d.message else { return Ok(d) };
            let first = self.seen.lock().unwrap().insert(msg.message_id.clone());
            if !first {
                return Ok(d);
            }
            d.ack.nack(Redelivery::Immediate).await?;
        }
    }

    async fn stop(&mut self) -> Result<(), ConsumeError> {
        self.inner.stop().await
    }
}

/// RabbitMQ: a connection and a fresh durable queue.
pub mod rabbit {
    use omnibox_rabbitmq::lapin;
    use omnibox_rabbitmq::lapin::options::{QueueDeclareOptions, QueueDeleteOptions};
    use omnibox_rabbitmq::lapin::types::FieldTable;

    pub async fn url() -> String {
        omnibox_testing::amqp_url()
            .await
            .unwrap_or_else(|e| panic!("{e}"))
    }

    pub async fn connect(url: &str) -> lapin::Connection {
        lapin::Connection::connect(url, lapin::ConnectionProperties::default())
            .await
            .unwrap_or_else(|e| panic!("connect to {url}: {e}"))
    }

    pub async fn declare(conn: &lapin::Connection, queue: &str) {
        let ch = conn.create_channel().await.unwrap();
        ch.queue_declare(
            queue.into(),
            QueueDeclareOptions {
                durable: true,
                ..Default::default()
            },
            FieldTable::default(),
        )
        .await
        .unwrap();
        let _ = ch.close(200, "OK".into()).await;
    }

    pub async fn delete(conn: &lapin::Connection, queue: &str) {
        let ch = conn.create_channel().await.unwrap();
        let _ = ch
            .queue_delete(queue.into(), QueueDeleteOptions::default())
            .await;
        let _ = ch.close(200, "OK".into()).await;
    }
}

/// Kafka for the e2e tests: `KAFKA_BOOTSTRAP_SERVERS`, else librdkafka's mock cluster.
pub mod kafka {
    use omnibox_kafka::KafkaConsumer;
    use omnibox_kafka::rdkafka::ClientConfig;
    use omnibox_kafka::rdkafka::mocking::MockCluster;
    use omnibox_kafka::rdkafka::producer::DefaultProducerContext;

    use super::{LIMIT, bounded};

    /// Where the tests' Kafka is; keeps the mock cluster (when used) alive.
    pub struct Kafka {
        /// The mock cluster, when no real Kafka is configured.
        pub mock: Option<MockCluster<'static, DefaultProducerContext>>,
        /// `bootstrap.servers`.
        pub bootstrap: String,
    }

    impl Kafka {
        /// `KAFKA_BOOTSTRAP_SERVERS`, else (no Docker here) an in-process mock cluster.
        pub async fn resolve() -> Self {
            match omnibox_testing::kafka_bootstrap().await {
                // A real Kafka: the topic is created on first use (auto.create.topics.enable).
                Ok(bootstrap) => Self {
                    mock: None,
                    bootstrap,
                },
                Err(omnibox_testing::ServiceError::UseKafkaMockCluster { .. }) => {
                    let mock = MockCluster::new(1).unwrap();
                    let bootstrap = mock.bootstrap_servers();
                    Self {
                        mock: Some(mock),
                        bootstrap,
                    }
                }
                Err(e) => panic!("{e}"),
            }
        }

        /// A unique one-partition topic (created on the mock cluster).
        pub fn topic(&self, prefix: &str) -> String {
            let topic = omnibox_testing::unique_name(prefix);
            if let Some(mock) = &self.mock {
                mock.create_topic(&topic, 1, 1).unwrap();
            }
            topic
        }

        /// A unique topic of `partitions` partitions (on a real Kafka, created through the
        /// admin API).
        pub async fn topic_with_partitions(&self, prefix: &str, partitions: i32) -> String {
            use omnibox_kafka::rdkafka::admin::{
                AdminClient, AdminOptions, NewTopic, TopicReplication,
            };
            use omnibox_kafka::rdkafka::client::DefaultClientContext;
            let topic = omnibox_testing::unique_name(prefix);
            match &self.mock {
                Some(mock) => mock.create_topic(&topic, partitions, 1).unwrap(),
                None => {
                    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
                        .set("bootstrap.servers", &self.bootstrap)
                        .create()
                        .unwrap();
                    let new = NewTopic::new(&topic, partitions, TopicReplication::Fixed(1));
                    let created = bounded(
                        "create topic",
                        LIMIT,
                        admin.create_topics([&new], &AdminOptions::new()),
                    )
                    .await
                    .unwrap();
                    for result in created {
                        result.unwrap_or_else(|(t, e)| panic!("create topic {t}: {e}"));
                    }
                }
            }
            topic
        }

        /// A consumer of `topic` in a fresh group, from the beginning, without auto-commit.
        pub fn consumer(&self, topic: &str) -> KafkaConsumer {
            KafkaConsumer::from_config(
                ClientConfig::new()
                    .set("bootstrap.servers", &self.bootstrap)
                    .set("group.id", omnibox_testing::unique_name("billing"))
                    .set("enable.auto.commit", "false")
                    .set("auto.offset.reset", "earliest")
                    .set("session.timeout.ms", "6000")
                    .set("heartbeat.interval.ms", "500")
                    .set("fetch.wait.max.ms", "10"),
                [topic.to_owned()],
            )
            .unwrap()
        }
    }

    /// Drop `holder` (something owning a Kafka consumer) off the runtime: closing a consumer
    /// blocks while it leaves the group.
    pub async fn close<T: Send + 'static>(holder: T) {
        let (tx, rx) = tokio::sync::oneshot::channel();
        std::thread::spawn(move || {
            drop(holder);
            let _ = tx.send(());
        });
        bounded("kafka consumer close", LIMIT, rx).await.unwrap();
    }
}

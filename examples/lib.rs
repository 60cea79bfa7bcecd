//! Runnable omnibox scenarios: `cargo run -p omnibox-examples --example <name>`
//! (or `cargo xtask example <name>`, which starts the local services first).
//!
//! Every example uses only the `omnibox` facade (features set in this package's
//! `Cargo.toml`). This library holds what the examples share: service addresses, a fresh
//! PostgreSQL schema with the omnibox tables and two business tables, the business
//! transaction that places an order, and the inbox handler that credits loyalty points.
//! See `examples/README.md` for the list.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use omnibox::metrics::{Metric, MetricsSink};
use omnibox::postgres::sqlx::postgres::PgPoolOptions;
use omnibox::postgres::sqlx::{self, AssertSqlSafe, PgConnection, PgPool, Row};
use omnibox::postgres::{PgInboxStore, PgOutboxStore, PgStoreConfig, handler_error};
use omnibox::{
    Handler, HandlerError, HandlerOutcome, HandlerResult, InboxEvent, Message, OutboxEvent,
};

/// The error type of the examples.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;
/// The result type of the examples.
pub type Result<T = ()> = std::result::Result<T, BoxError>;

/// Every wait of an example is bounded by this.
pub const LIMIT: Duration = Duration::from_secs(15);

/// `DATABASE_URL`, else the local default.
pub fn database_url() -> String {
    env_or(
        "DATABASE_URL",
        "postgres://postgres@127.0.0.1:5432/postgres",
    )
}

/// `AMQP_URL`, else the local default.
pub fn amqp_url() -> String {
    env_or("AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/%2f")
}

/// `NATS_URL`, else the local default.
pub fn nats_url() -> String {
    env_or("NATS_URL", "nats://127.0.0.1:4222")
}

/// `KAFKA_BOOTSTRAP_SERVERS` when set and not empty (else the Kafka example embeds a mock
/// cluster).
pub fn kafka_bootstrap() -> Option<String> {
    std::env::var("KAFKA_BOOTSTRAP_SERVERS")
        .ok()
        .filter(|v| !v.trim().is_empty())
}

fn env_or(var: &str, default: &str) -> String {
    std::env::var(var)
        .ok()
        .filter(|v| !v.trim().is_empty())
        .unwrap_or_else(|| default.to_owned())
}

/// `<prefix>_<12 random hex digits>`: a name no other run uses (schemas, queues, streams,
/// topics).
pub fn unique_name(prefix: &str) -> String {
    let id = uuid::Uuid::new_v4().simple().to_string();
    format!("{prefix}_{}", &id[..12])
}

/// Await `f`, failing with a message naming `what` after [`LIMIT`].
pub async fn within<T>(what: &str, f: impl Future<Output = T>) -> Result<T> {
    tokio::time::timeout(LIMIT, f)
        .await
        .map_err(|_| format!("timed out after {LIMIT:?}: {what}").into())
}

/// Poll `cond` every 25 ms until it holds, failing after [`LIMIT`].
pub async fn wait_until(what: &str, mut cond: impl AsyncFnMut() -> Result<bool>) -> Result {
    within(what, async {
        loop {
            if cond().await? {
                return Ok(());
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    })
    .await?
}

/// A fresh schema holding the omnibox tables and the business tables `orders` and
/// `loyalty_credits`; [`Demo::cleanup`] drops it.
#[derive(Debug)]
pub struct Demo {
    /// The application's pool.
    pub pool: PgPool,
    /// The schema's name.
    pub schema: String,
    /// The store configuration (schema, optional NOTIFY channel, layout).
    pub config: PgStoreConfig,
    /// The outbox store.
    pub outbox: PgOutboxStore,
    /// The inbox store.
    pub inbox: PgInboxStore,
}

impl Demo {
    /// Connect to [`database_url`], create a schema named `<prefix>_<random>`, run omnibox's
    /// migrations with the configuration `configure` returns, and create the business
    /// tables.
    pub async fn connect(
        prefix: &str,
        configure: impl FnOnce(PgStoreConfig) -> PgStoreConfig,
    ) -> Result<Self> {
        let url = database_url();
        let pool = PgPoolOptions::new()
            .max_connections(8)
            .acquire_timeout(Duration::from_secs(5))
            .connect(&url)
            .await
            .map_err(|e| format!("connect to PostgreSQL at {url} (set DATABASE_URL): {e}"))?;
        let schema = unique_name(prefix);
        let config = configure(PgStoreConfig::new().schema(schema.as_str()));
        let applied = omnibox::postgres::migrate(&pool, &config).await?;
        println!(
            "[setup] schema {schema}: {} omnibox migrations applied ({})",
            applied.len(),
            applied
                .iter()
                .map(|m| format!("{} v{}", m.table, m.version))
                .collect::<Vec<_>>()
                .join(", ")
        );
        for ddl in [
            format!(
                "CREATE TABLE {schema}.orders (id uuid PRIMARY KEY, customer text NOT NULL, total int NOT NULL)"
            ),
            // `times` counts how often the handler ran for a message: 1 means once.
            format!(
                "CREATE TABLE {schema}.loyalty_credits (message_id text PRIMARY KEY, customer text NOT NULL, points int NOT NULL, times int NOT NULL DEFAULT 1)"
            ),
        ] {
            sqlx::raw_sql(AssertSqlSafe(ddl)).execute(&pool).await?;
        }
        Ok(Self {
            outbox: PgOutboxStore::new(&config)?,
            inbox: PgInboxStore::new(&config)?,
            pool,
            schema,
            config,
        })
    }

    /// The business transaction: insert the order and enqueue its `order.placed` event on
    /// `topic` in ONE transaction, then commit (`commit = true`) or roll back. Returns the
    /// event.
    pub async fn place_order(
        &self,
        topic: &str,
        customer: &str,
        total: i32,
        commit: bool,
    ) -> Result<OutboxEvent> {
        let order = uuid::Uuid::now_v7();
        let event = order_placed(order, topic, customer, total)?;
        self.place_order_with(order, customer, total, &event, commit)
            .await?;
        Ok(event)
    }

    /// Like [`Demo::place_order`] with an event you built (for example with trace headers).
    pub async fn place_order_with(
        &self,
        order: uuid::Uuid,
        customer: &str,
        total: i32,
        event: &OutboxEvent,
        commit: bool,
    ) -> Result {
        let mut tx = self.pool.begin().await?;
        sqlx::query(AssertSqlSafe(format!(
            "INSERT INTO {}.orders (id, customer, total) VALUES ($1, $2, $3)",
            self.schema
        )))
        .bind(order)
        .bind(customer)
        .bind(total)
        .execute(&mut *tx)
        .await?;
        self.outbox.enqueue(&mut tx, event).await?;
        if commit {
            tx.commit().await?;
        } else {
            tx.rollback().await?;
        }
        Ok(())
    }

    /// `SELECT count(*) FROM <schema>.<table> [WHERE <filter>]`.
    pub async fn count(&self, table: &str, filter: &str) -> Result<i64> {
        let filter = if filter.is_empty() {
            String::new()
        } else {
            format!(" WHERE {filter}")
        };
        let row = sqlx::query(AssertSqlSafe(format!(
            "SELECT count(*) FROM {}.{table}{filter}",
            self.schema
        )))
        .fetch_one(&self.pool)
        .await?;
        Ok(row.try_get(0)?)
    }

    /// `(customer, points, times)` of every loyalty credit, by customer.
    pub async fn credits(&self) -> Result<Vec<(String, i32, i32)>> {
        let rows = sqlx::query(AssertSqlSafe(format!(
            "SELECT customer, points, times FROM {}.loyalty_credits ORDER BY customer, message_id",
            self.schema
        )))
        .fetch_all(&self.pool)
        .await?;
        rows.into_iter()
            .map(|r| Ok((r.try_get(0)?, r.try_get(1)?, r.try_get(2)?)))
            .collect()
    }

    /// Drop the schema and close the pool.
    pub async fn cleanup(self) {
        let dropped = sqlx::raw_sql(AssertSqlSafe(format!(
            "DROP SCHEMA IF EXISTS {} CASCADE",
            self.schema
        )))
        .execute(&self.pool)
        .await;
        match dropped {
            Ok(_) => println!("[cleanup] schema {} dropped", self.schema),
            Err(e) => eprintln!("[cleanup] dropping schema {} failed: {e}", self.schema),
        }
        self.pool.close().await;
    }
}

/// The `order.placed` message: a typed payload that carries its event type, aggregate,
/// topic and partition key (see `omnibox::message`).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct OrderPlaced {
    /// The order (the aggregate).
    pub order: uuid::Uuid,
    /// Who placed it: the partition key, so one customer's events stay in order.
    pub customer: String,
    /// Order total, in whole units.
    pub total: i32,
}

impl Message for OrderPlaced {
    const EVENT_TYPE: &'static str = "order.placed";
    const AGGREGATE_TYPE: &'static str = "order";
    /// Each example publishes to a queue of its own (`.topic(…)` when enqueuing).
    const TOPIC: &'static str = "orders";

    fn aggregate_id(&self) -> uuid::Uuid {
        self.order
    }

    fn partition_key(&self) -> String {
        self.customer.clone()
    }
}

/// The `order.placed` event of `order` on `topic`, with an idempotency key so a retried
/// request cannot enqueue it twice.
pub fn order_placed(
    order: uuid::Uuid,
    topic: &str,
    customer: &str,
    total: i32,
) -> Result<OutboxEvent> {
    let placed = OrderPlaced {
        order,
        customer: customer.to_owned(),
        total,
    };
    Ok(OutboxEvent::message(&placed)
        .topic(topic)
        .idempotency_key(format!("order-placed-{order}"))
        .build()?)
}

/// The consumer's business effect: credit one loyalty point per unit of the order total,
/// written through the inbox transaction's connection — so it commits exactly when the
/// inbox row completes (effectively once).
#[derive(Debug, Clone)]
pub struct CreditLoyaltyPoints {
    /// The schema holding `loyalty_credits`.
    pub schema: String,
}

impl Handler<InboxEvent, PgConnection> for CreditLoyaltyPoints {
    async fn handle(&self, event: &InboxEvent, conn: &mut PgConnection) -> HandlerResult {
        // Typed: a payload that is not an `OrderPlaced` is a counted failure (it ends as a
        // dead letter once its attempts are spent), never a panic or a silent zero.
        let order: OrderPlaced = event.message()?;
        credit(&self.schema, &event.message_id, &order, conn, 1).await?;
        Ok(HandlerOutcome::Completed)
    }
}

/// Insert the credit of `order` (`points per unit × total`) into `loyalty_credits`; a
/// second run for the same message would show as `times = 2`.
pub async fn credit(
    schema: &str,
    message_id: &str,
    order: &OrderPlaced,
    conn: &mut PgConnection,
    points_per_unit: i64,
) -> std::result::Result<i64, HandlerError> {
    let customer = order.customer.as_str();
    let points = i64::from(order.total) * points_per_unit;
    sqlx::query(AssertSqlSafe(format!(
        "INSERT INTO {schema}.loyalty_credits (message_id, customer, points) VALUES ($1, $2, $3)
         ON CONFLICT (message_id) DO UPDATE SET times = loyalty_credits.times + 1"
    )))
    .bind(message_id)
    .bind(customer)
    .bind(i32::try_from(points).unwrap_or(i32::MAX))
    .execute(conn)
    .await
    // `handler_error` sorts the SQL error: an outage or a deadlock is transient (no attempt spent),
    // a deterministic error (a constraint, bad data) is counted and ends dead-lettered; the
    // source error is kept.
    .map_err(handler_error)?;
    Ok(points)
}

/// A [`MetricsSink`] that prints what the inbox and relay report and counts duplicates —
/// the examples use it to show a redelivered message being recognised.
#[derive(Debug, Clone, Default)]
pub struct Narrator {
    duplicates: Arc<AtomicU64>,
    handled: Arc<AtomicU64>,
}

impl Narrator {
    /// A fresh narrator.
    pub fn new() -> Self {
        Self::default()
    }

    /// Broker messages recognised as already handled.
    pub fn duplicates(&self) -> u64 {
        self.duplicates.load(Ordering::SeqCst)
    }

    /// Events completed (published by a relay, handled by an inbox).
    pub fn completed(&self) -> u64 {
        self.handled.load(Ordering::SeqCst)
    }
}

impl MetricsSink for Narrator {
    fn record(&self, metric: &Metric<'_>) {
        match metric {
            Metric::Completed {
                job,
                event_type,
                route,
            } => {
                self.handled.fetch_add(1, Ordering::SeqCst);
                println!("    [{job}] completed {event_type} ({route})");
            }
            Metric::Duplicate { job, event_type } => {
                self.duplicates.fetch_add(1, Ordering::SeqCst);
                println!(
                    "    [{job}] duplicate {event_type}: already handled, acknowledged without running the handler"
                );
            }
            Metric::Failed {
                job,
                event_type,
                kind,
                ..
            } => println!("    [{job}] {event_type} failed ({kind:?})"),
            Metric::DeadLettered { job, event_type } => {
                println!("    [{job}] {event_type} dead-lettered")
            }
            _ => {}
        }
    }
}

/// RabbitMQ helpers: connect, declare and delete the example's own queue.
pub mod rabbit {
    use omnibox::rabbitmq::lapin::options::{QueueDeclareOptions, QueueDeleteOptions};
    use omnibox::rabbitmq::lapin::types::FieldTable;
    use omnibox::rabbitmq::lapin::{Connection, ConnectionProperties};

    use super::{Result, amqp_url};

    /// Connect to [`amqp_url`].
    pub async fn connect() -> Result<Connection> {
        let url = amqp_url();
        Connection::connect(&url, ConnectionProperties::default())
            .await
            .map_err(|e| format!("connect to RabbitMQ at {url} (set AMQP_URL): {e}").into())
    }

    /// A reconnecting connector to [`amqp_url`]: publishers and consumers built on it
    /// replace a connection the broker closed (restart, failover, missed heartbeats).
    pub fn connector(connection_name: &str) -> omnibox::rabbitmq::RabbitConnector {
        omnibox::rabbitmq::RabbitConnector::from_uri(
            amqp_url(),
            ConnectionProperties::default().with_connection_name(connection_name.into()),
        )
    }

    /// Declare a durable queue named `queue`.
    pub async fn declare_queue(conn: &Connection, queue: &str) -> Result {
        let ch = conn.create_channel().await?;
        ch.queue_declare(
            queue.into(),
            QueueDeclareOptions {
                durable: true,
                ..Default::default()
            },
            FieldTable::default(),
        )
        .await?;
        ch.close(200, "OK".into()).await?;
        Ok(())
    }

    /// Messages ready in `queue`.
    pub async fn ready(conn: &Connection, queue: &str) -> Result<u32> {
        let ch = conn.create_channel().await?;
        let q = ch
            .queue_declare(
                queue.into(),
                QueueDeclareOptions {
                    passive: true,
                    ..Default::default()
                },
                FieldTable::default(),
            )
            .await?;
        ch.close(200, "OK".into()).await?;
        Ok(q.message_count())
    }

    /// Delete `queue` (errors are printed, not returned: this runs during cleanup).
    pub async fn delete_queue(conn: &Connection, queue: &str) {
        let deleted = async {
            let ch = conn.create_channel().await?;
            ch.queue_delete(queue.into(), QueueDeleteOptions::default())
                .await?;
            ch.close(200, "OK".into()).await?;
            Result::Ok(())
        }
        .await;
        match deleted {
            Ok(()) => println!("[cleanup] queue {queue} deleted"),
            Err(e) => eprintln!("[cleanup] deleting queue {queue} failed: {e}"),
        }
    }
}

/// The broker round trip the per-broker examples share: enqueue `orders` orders in business
/// transactions, relay them with a [`RelayWorker`](omnibox::worker::RelayWorker) through
/// `publisher`, consume them with an [`InboxWorker`](omnibox::worker::InboxWorker) from
/// `consumer` into the PostgreSQL inbox, wait until every order's credit exists, and shut
/// both workers down gracefully. Returns the inbox worker, so the caller decides how its
/// consumer is closed (a Kafka consumer's close blocks: drop it off the runtime).
pub async fn relay_and_consume<P, C>(
    demo: &Demo,
    topic: &str,
    publisher: P,
    consumer: C,
    orders: usize,
) -> Result<
    omnibox::worker::InboxWorker<
        C,
        omnibox::postgres::PgDatabase,
        PgInboxStore,
        CreditLoyaltyPoints,
    >,
>
where
    P: omnibox::Publisher + 'static,
    C: omnibox::consumer::Consumer + Sync + 'static,
{
    use omnibox::inbox::{AckStrategy, InboxRunner};
    use omnibox::relay::OutboxRelay;

    for i in 0..orders {
        let customer = format!("customer-{}", i % 3);
        demo.place_order(topic, &customer, 10 + i as i32, true)
            .await?;
    }
    println!("1. {orders} orders and their events committed (topic {topic})");

    let db = omnibox::postgres::PgDatabase::new(demo.pool.clone());
    let relay_worker = OutboxRelay::builder(demo.outbox.clone(), publisher)
        .publish_timeout(Duration::from_secs(5))
        .lease_ttl(Duration::from_secs(60))
        .worker(db.clone())
        .poll_interval(Duration::from_millis(200))
        .build()?;
    let mut inbox_worker = InboxRunner::builder(consumer, db, demo.inbox.clone(), "loyalty")
        .ack_strategy(AckStrategy::ExactlyOnceInbox)
        .handler(CreditLoyaltyPoints {
            schema: demo.schema.clone(),
        })
        .idle_backoff(Duration::from_millis(10), Duration::from_millis(200))
        .worker()
        .build()?;
    let shutdown = omnibox::Shutdown::new();
    let relay_task = tokio::spawn(relay_worker.serve(shutdown.clone()));
    let inbox_task = {
        let shutdown = shutdown.clone();
        tokio::spawn(async move {
            let stopped = inbox_worker.run(&shutdown).await;
            (stopped, inbox_worker)
        })
    };
    println!("2. relay worker and inbox worker (consumer group `loyalty`) started");

    let wanted = orders as i64;
    wait_until("every order relayed", async || {
        Ok(demo.count("outbox_events", "status = 'completed'").await? == wanted)
    })
    .await?;
    println!("3. relay: {orders} events published (broker confirmed each) and completed");
    wait_until("every message handled", async || {
        Ok(demo.count("loyalty_credits", "").await? == wanted)
    })
    .await?;
    let credits = demo.credits().await?;
    let once = credits.iter().all(|c| c.2 == 1);
    println!(
        "4. inbox: {} messages stored and handled, each effect applied once: {once}",
        demo.count("inbox_events", "status = 'completed'").await?
    );
    for (customer, points, _) in &credits {
        println!("   {customer} +{points} points");
    }
    shutdown.trigger();
    let summary = within("relay stop", relay_task).await??;
    let (stopped, inbox_worker) = within("inbox stop", inbox_task).await??;
    println!(
        "5. shut down: relay {:?} (published {}), inbox {stopped:?}",
        summary.stopped, summary.published
    );
    if !once || credits.len() != orders {
        return Err(format!("expected {orders} effects applied once, got {credits:?}").into());
    }
    Ok(inbox_worker)
}

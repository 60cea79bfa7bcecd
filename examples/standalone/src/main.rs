//! A service outside the omnibox workspace: a typed event enqueued in the caller's sqlx
//! transaction, relayed to Kafka, handled by a typed inbox handler in the inbox transaction.
//! The README counts the lines between the two `// wiring` marks, plus the one line that
//! enqueues the event.

use core::mem; // `use omnibox::prelude::*` must not shadow `core::` or `metrics::`
use std::time::{Duration, Instant};

use metrics::counter;
use omnibox::kafka::rdkafka::ClientConfig;
use omnibox::kafka::rdkafka::mocking::MockCluster;
use omnibox::kafka::{KafkaConsumer, KafkaPublisher};
use omnibox::postgres::sqlx::{self, PgConnection, PgPool};
use omnibox::postgres::{
    PgDatabase, PgInboxStore, PgOutboxStore, PgStoreConfig, handler_error, migrate,
};
use omnibox::prelude::*;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

type Result<T = (), E = Box<dyn std::error::Error>> = std::result::Result<T, E>;

#[derive(Debug, Serialize, Deserialize)]
struct OrderPlaced {
    order: Uuid,
    customer: String,
    points: i32,
}

impl Message for OrderPlaced {
    const EVENT_TYPE: &'static str = "order.placed";
    const AGGREGATE_TYPE: &'static str = "order";
    const TOPIC: &'static str = "standalone-orders";
    fn aggregate_id(&self) -> Uuid {
        self.order
    }
}

/// Credits the order's points in the inbox transaction: once per message.
struct CreditPoints(String);

impl MessageHandler<OrderPlaced, PgConnection> for CreditPoints {
    async fn handle(
        &self,
        o: OrderPlaced,
        _: &InboxEvent,
        conn: &mut PgConnection,
    ) -> HandlerResult {
        let sql = format!("INSERT INTO {}.credits VALUES ($1, $2)", self.0);
        sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(&o.customer)
            .bind(o.points)
            .execute(&mut *conn)
            .await
            .map_err(handler_error)?;
        counter!("standalone_credits_total").increment(1);
        Ok(HandlerOutcome::Completed)
    }
}

fn kafka_config(bootstrap: &str, extra: &[(&str, &str)]) -> ClientConfig {
    let mut config = ClientConfig::new();
    config
        .set("bootstrap.servers", bootstrap)
        .set("session.timeout.ms", "6000");
    for (k, v) in extra {
        config.set(*k, *v);
    }
    config
}

#[tokio::main]
async fn main() -> Result {
    assert_eq!(mem::size_of::<u32>(), 4);
    let url = std::env::var("DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into());
    let pool = PgPool::connect(&url).await?;
    let schema = format!("standalone_{}", Uuid::new_v4().simple());
    let (_mock, bootstrap) = match std::env::var("KAFKA_BOOTSTRAP_SERVERS") {
        Ok(b) => (None, b),
        Err(_) => {
            let mock = MockCluster::new(1)?;
            mock.create_topic(OrderPlaced::TOPIC, 1, 1)?;
            let b = mock.bootstrap_servers();
            (Some(mock), b)
        }
    };
    let result = run(&pool, &schema, &bootstrap).await;
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "DROP SCHEMA IF EXISTS {schema} CASCADE"
    )))
    .execute(&pool)
    .await?;
    println!("[cleanup] schema {schema} dropped");
    result
}

async fn run(pool: &PgPool, schema: &str, bootstrap: &str) -> Result {
    // Application configuration: the pool above, the Kafka clients, the tables (migrated
    // here; `omnibox migrate` does it at deploy time).
    let producer = kafka_config(bootstrap, &[]);
    let consumer = kafka_config(
        bootstrap,
        &[("group.id", "loyalty"), ("auto.offset.reset", "earliest")],
    );
    let config = PgStoreConfig::new().schema(schema);
    migrate(pool, &config).await?;
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
        "CREATE TABLE {schema}.credits (customer text, points int);
         CREATE TABLE {schema}.orders (id uuid PRIMARY KEY, customer text)"
    )))
    .execute(pool)
    .await?;

    // wiring
    let db = PgDatabase::new(pool.clone());
    let outbox = PgOutboxStore::new(&config)?;
    let relay = OutboxRelay::builder(outbox.clone(), KafkaPublisher::from_config(&producer)?)
        .worker(db.clone())
        .build()?;
    let consumer = KafkaConsumer::from_config(&consumer, [OrderPlaced::TOPIC])?;
    let inbox = InboxRunner::builder(consumer, db, PgInboxStore::new(&config)?, "loyalty")
        .handler(typed::<OrderPlaced, _>(CreditPoints(schema.into())))
        .worker()
        .build()?;
    let token = CancellationToken::new(); // the application's own
    let relayed = tokio::spawn(relay.serve(token.clone()));
    let consumed = tokio::spawn(inbox.serve(token.clone()));
    // wiring

    // The business transaction: its row and its typed event commit together.
    let placed = OrderPlaced {
        order: Uuid::now_v7(),
        customer: "customer-7".into(),
        points: 42,
    };
    let mut tx = pool.begin().await?;
    let insert = format!("INSERT INTO {schema}.orders VALUES ($1, $2)");
    sqlx::query(sqlx::AssertSqlSafe(insert))
        .bind(placed.order)
        .bind(&placed.customer)
        .execute(&mut *tx)
        .await?;
    outbox.enqueue_message(&mut tx, &placed).await?; // the one line of outbox code
    tx.commit().await?;
    println!(
        "enqueued order {} in the business transaction",
        placed.order
    );

    let started = Instant::now();
    let credited = loop {
        let n: i64 = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
            "SELECT count(*) FROM {schema}.credits"
        )))
        .fetch_one(pool)
        .await?;
        if n > 0 || started.elapsed() > Duration::from_secs(30) {
            break n;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    token.cancel();
    let summary = relayed.await?;
    let stopped = consumed.await?;
    println!("relay {summary:?}; inbox {stopped:?}");
    if credited != 1 || summary.published != 1 {
        return Err(format!(
            "expected one credit and one publish, got {credited} and {}",
            summary.published
        )
        .into());
    }
    println!("standalone: typed event relayed through Kafka and credited once");
    Ok(())
}

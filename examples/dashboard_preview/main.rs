//! Traffic generator for the dashboard preview (`examples/dashboard_preview/run.sh` renders
//! `dashboards/omnibox-preview.png` from it; the examples test runs it for a few seconds).
//!
//! Runs, for `PREVIEW_SECONDS` (default 180), a real omnibox relay and inbox against the
//! local PostgreSQL (`DATABASE_URL`) and RabbitMQ (`AMQP_URL`), with the metrics of
//! `omnibox-metrics` served on `PREVIEW_METRICS_ADDR` (default `127.0.0.1:9464`) for a local
//! Prometheus to scrape. Everything lives in a fresh schema and queue that are dropped at
//! the end.
//!
//! Injected trouble (so every panel has something to show), all through the normal code
//! paths:
//! - orders arrive at 15/s, with a 45/s burst between 25 % and 40 % of the run;
//! - 10 % of the messages are slow for the handler (100–600 ms), 3 % are skipped by it,
//!   4 % are poison (the handler fails permanently until the attempts are spent and the
//!   row is dead-lettered);
//! - the publisher wrapper fails 0.2 % of publishes transiently, rejects 1 % of events
//!   permanently (dead-lettered after 3 attempts), sends 1 % twice (a lost confirm: the
//!   inbox sees a duplicate), and fails everything during a broker "outage" between 60 %
//!   and 72 % of the run (the circuit breaker opens, the outbox backlog grows);
//! - at 20 % a "crashed" relay claims 10 events and never settles them: the maintenance
//!   worker releases the stale leases;
//! - completed rows older than 30 s are cleaned up.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::TimeDelta;
use omnibox::backoff::{Backoff, Jitter};
use omnibox::error::{HandlerError, PublishError};
use omnibox::inbox::{AckStrategy, InboxRunner};
use omnibox::maintenance::Maintenance;
use omnibox::metrics::{BacklogObserver, FacadeMetrics, MetricsSink};
use omnibox::model::Limits;
use omnibox::pipeline::steps::CircuitBreakerStep;
use omnibox::postgres::sqlx::postgres::PgPoolOptions;
use omnibox::postgres::sqlx::{self, AssertSqlSafe, PgConnection, PgPool};
use omnibox::postgres::{PgDatabase, PgInboxStore, PgOutboxStore, PgStoreConfig};
use omnibox::rabbitmq::lapin::{Connection, ConnectionProperties};
use omnibox::rabbitmq::{
    ConsumerOptions, PublisherOptions, RabbitConsumer, RabbitPublisher, RoutingMode,
};
use omnibox::relay::OutboxRelay;
use omnibox::store::{ClaimEvents, ClaimRequest};
use omnibox::worker::MaintenanceWorker;
use omnibox::{Handler, HandlerOutcome, HandlerResult, InboxEvent, OutboxEvent, Publisher};
use omnibox::{Shutdown, WorkerId};

use omnibox_examples::{Result, rabbit};

fn env_or(var: &str, default: &str) -> String {
    std::env::var(var)
        .ok()
        .filter(|v| !v.trim().is_empty())
        .unwrap_or_else(|| default.to_owned())
}

/// The run's clock: fraction of the run elapsed.
#[derive(Clone, Copy)]
struct Timeline {
    start: Instant,
    total: Duration,
}

impl Timeline {
    fn fraction(&self) -> f64 {
        self.start.elapsed().as_secs_f64() / self.total.as_secs_f64()
    }
}

/// The real RabbitMQ publisher with injected failures (see the module docs).
struct FlakyPublisher {
    inner: RabbitPublisher,
    timeline: Timeline,
}

impl Publisher for FlakyPublisher {
    async fn publish(&self, event: &OutboxEvent) -> std::result::Result<(), PublishError> {
        let f = self.timeline.fraction();
        if (0.60..0.72).contains(&f) {
            return Err(PublishError::transient(
                "broker unreachable (injected outage)",
            ));
        }
        let payload = &event.common.payload;
        if payload.get("unroutable").and_then(|v| v.as_bool()) == Some(true) {
            return Err(PublishError::permanent("rejected by broker (injected)"));
        }
        if fastrand::f64() < 0.002 {
            return Err(PublishError::transient("confirm timed out (injected)"));
        }
        self.inner.publish(event).await?;
        if payload.get("duplicate").and_then(|v| v.as_bool()) == Some(true) {
            // A lost confirm: the message reaches the broker twice.
            self.inner.publish(event).await?;
        }
        Ok(())
    }
}

/// The inbox handler: credits loyalty points in the inbox transaction; slow, skipping or
/// failing on the messages marked so.
#[derive(Clone)]
struct CreditPoints {
    schema: String,
}

impl Handler<InboxEvent, PgConnection> for CreditPoints {
    async fn handle(&self, event: &InboxEvent, conn: &mut PgConnection) -> HandlerResult {
        let payload = &event.common.payload;
        if let Some(ms) = payload.get("slow_ms").and_then(|v| v.as_u64()) {
            tokio::time::sleep(Duration::from_millis(ms)).await;
        }
        if payload.get("poison").and_then(|v| v.as_bool()) == Some(true) {
            return Err(HandlerError::permanent("amount is not a number (injected)"));
        }
        if payload.get("skip").and_then(|v| v.as_bool()) == Some(true) {
            return Ok(HandlerOutcome::skipped("test customer"));
        }
        sqlx::query(AssertSqlSafe(format!(
            "INSERT INTO {}.credits (message_id, points) VALUES ($1, $2)
             ON CONFLICT (message_id) DO NOTHING",
            self.schema
        )))
        .bind(&event.message_id)
        .bind(payload.get("total").and_then(|v| v.as_i64()).unwrap_or(0))
        .execute(conn)
        .await
        .map_err(|e| HandlerError::transient(e.to_string()))?;
        Ok(HandlerOutcome::Completed)
    }
}

fn order_event(queue: &str, n: u64) -> Result<OutboxEvent> {
    let event_type = match n % 10 {
        0..=5 => "order.placed",
        6..=8 => "order.paid",
        _ => "order.refunded",
    };
    let mut payload = serde_json::json!({ "order": n, "total": 10 + (n % 90) });
    let r = fastrand::f64();
    if r < 0.04 {
        payload["poison"] = true.into();
    } else if r < 0.07 {
        payload["skip"] = true.into();
    } else if r < 0.17 {
        payload["slow_ms"] = fastrand::u64(100..600).into();
    } else if r < 0.18 {
        payload["unroutable"] = true.into();
    } else if r < 0.19 {
        payload["duplicate"] = true.into();
    }
    Ok(OutboxEvent::builder(
        "order",
        uuid::Uuid::now_v7(),
        event_type,
        queue,
        format!("customer-{}", n % 50),
    )
    .payload(payload)
    .max_attempts(3)
    .build()?)
}

/// Enqueue orders in business transactions, at the run's rate, until the last 8 % of the
/// run (left to drain).
async fn produce(
    pool: PgPool,
    outbox: PgOutboxStore,
    queue: String,
    timeline: Timeline,
) -> Result<u64> {
    let tick = Duration::from_millis(100);
    let mut owed = 0.0;
    let mut n = 0u64;
    let mut interval = tokio::time::interval(tick);
    loop {
        interval.tick().await;
        let f = timeline.fraction();
        if f >= 0.92 {
            return Ok(n);
        }
        let rate = if (0.25..0.40).contains(&f) {
            45.0
        } else {
            15.0
        };
        owed += rate * tick.as_secs_f64();
        let mut tx = pool.begin().await?;
        while owed >= 1.0 {
            let event = order_event(&queue, n)?;
            outbox.enqueue(&mut tx, &event).await?;
            owed -= 1.0;
            n += 1;
        }
        tx.commit().await?;
    }
}

#[tokio::main]
async fn main() -> Result {
    let seconds: u64 = env_or("PREVIEW_SECONDS", "180").parse()?;
    let listen: SocketAddr = env_or("PREVIEW_METRICS_ADDR", "127.0.0.1:9464").parse()?;
    if !listen.ip().is_loopback() {
        return Err(format!("{listen}: the preview serves metrics on loopback only").into());
    }
    let db_url = env_or(
        "DATABASE_URL",
        "postgres://postgres@127.0.0.1:5432/postgres",
    );
    let amqp_url = env_or("AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/%2f");

    omnibox::metrics::install_prometheus(listen)?;
    println!("metrics on http://{listen}/metrics");

    let pool = PgPoolOptions::new()
        .max_connections(10)
        .acquire_timeout(Duration::from_secs(5))
        .connect(&db_url)
        .await?;
    let suffix = uuid::Uuid::new_v4().simple().to_string();
    let schema = format!("dashboard_preview_{}", &suffix[..12]);
    let queue = format!("dashboard_preview_orders_{}", &suffix[..12]);
    let config = PgStoreConfig::new().schema(schema.as_str());
    omnibox::postgres::migrate(&pool, &config).await?;
    sqlx::raw_sql(AssertSqlSafe(format!(
        "CREATE TABLE {schema}.credits (message_id text PRIMARY KEY, points bigint NOT NULL)"
    )))
    .execute(&pool)
    .await?;
    let conn = Connection::connect(&amqp_url, ConnectionProperties::default()).await?;
    rabbit::declare_queue(&conn, &queue).await?;
    println!("schema {schema}, queue {queue}, {seconds} s");

    let outcome = run(&pool, &config, &schema, &queue, &amqp_url, seconds).await;

    rabbit::delete_queue(&conn, &queue).await;
    let _ = conn.close(200, "bye".into()).await;
    sqlx::raw_sql(AssertSqlSafe(format!("DROP SCHEMA {schema} CASCADE")))
        .execute(&pool)
        .await?;
    pool.close().await;
    println!("[cleanup] schema {schema} and queue {queue} dropped");
    outcome
}

async fn run(
    pool: &PgPool,
    config: &PgStoreConfig,
    schema: &str,
    queue: &str,
    amqp_url: &str,
    seconds: u64,
) -> Result {
    let outbox = PgOutboxStore::new(config)?;
    let inbox = PgInboxStore::new(config)?;
    let db = PgDatabase::new(pool.clone());
    let sink: Arc<dyn MetricsSink> = Arc::new(FacadeMetrics::new()); // one sink, shared
    let timeline = Timeline {
        start: Instant::now(),
        total: Duration::from_secs(seconds),
    };
    let shutdown = Shutdown::new();

    // Relay: circuit breaker (5 failures, 5 s), retries after 1–5 s.
    let publisher =
        RabbitPublisher::new(Connection::connect(amqp_url, ConnectionProperties::default()).await?)
            .with_options(
                PublisherOptions::default().routing(RoutingMode::FixedExchange(String::new())),
            );
    let relay_worker = OutboxRelay::builder(
        outbox.clone(),
        FlakyPublisher {
            inner: publisher,
            timeline,
        },
    )
    .job_name("orders_relay")
    .batch_size(25)
    .metrics(sink.clone())
    .circuit_breaker(CircuitBreakerStep::new(5, Duration::from_secs(5))?)
    .backoff(Backoff::new(
        Duration::from_secs(1),
        Duration::from_secs(5),
        Jitter::Equal,
    )?)
    .publish_timeout(Duration::from_secs(5))
    .lease_ttl(Duration::from_secs(60))
    .worker(db.clone())
    .poll_interval(Duration::from_millis(250))
    .build()?;

    // Inbox: one consumer, exactly-once-inbox acknowledgements, 3 attempts.
    let consumer = RabbitConsumer::new(
        Connection::connect(amqp_url, ConnectionProperties::default()).await?,
        queue,
    )
    .with_options(ConsumerOptions::default().prefetch(32));
    let inbox_worker = InboxRunner::builder(consumer, db.clone(), inbox.clone(), "loyalty")
        .ack_strategy(AckStrategy::ExactlyOnceInbox)
        .handler(CreditPoints {
            schema: schema.to_owned(),
        })
        .limits(Limits::default().max_attempts(3))
        .backoff(Backoff::new(
            Duration::from_millis(500),
            Duration::from_secs(3),
            Jitter::Equal,
        )?)
        .redelivery_delay(Duration::from_millis(500))
        .metrics(sink.clone())
        .job_name("loyalty_inbox")
        .idle_backoff(Duration::from_millis(10), Duration::from_millis(200))
        .worker()
        .build()?;

    // Maintenance: stale leases after 20 s, completed rows kept 30 s.
    let outbox_maintenance = MaintenanceWorker::builder(
        Maintenance::new(outbox.clone())
            .job_name("outbox_maintenance")
            .metrics(sink.clone()),
        db.clone(),
    )
    .interval(Duration::from_secs(10))
    .stale_after(Duration::from_secs(20))
    .retention(Duration::from_secs(30))
    .build()?;
    let inbox_maintenance = MaintenanceWorker::builder(
        Maintenance::new(inbox.clone())
            .job_name("inbox_maintenance")
            .metrics(sink.clone()),
        db.clone(),
    )
    .interval(Duration::from_secs(10))
    .stale_after(Duration::from_secs(20))
    .retention(Duration::from_secs(30))
    .build()?;

    // Backlog gauges every 2 s.
    let observers = [
        BacklogObserver::new(outbox.clone(), db.clone(), sink.clone())
            .table("outbox_events")
            .interval(Duration::from_secs(2))
            .spawn(shutdown.clone()),
        BacklogObserver::new(inbox.clone(), db.clone(), sink.clone())
            .table("inbox_events")
            .interval(Duration::from_secs(2))
            .spawn(shutdown.clone()),
    ];

    let relay_task = tokio::spawn(relay_worker.serve(shutdown.clone()));
    let inbox_task = tokio::spawn(inbox_worker.serve(shutdown.clone()));
    let maintenance_tasks = [
        tokio::spawn(outbox_maintenance.serve(shutdown.clone())),
        tokio::spawn(inbox_maintenance.serve(shutdown.clone())),
    ];
    let producer = tokio::spawn(produce(
        pool.clone(),
        outbox.clone(),
        queue.to_owned(),
        timeline,
    ));

    // A relay that claims 10 events at 20 % of the run and dies holding their leases.
    let crash_at = timeline.total.mul_f64(0.20);
    tokio::time::sleep(crash_at).await;
    // The relay keeps the outbox nearly empty: claim what arrives over up to 5 s.
    let crashed = WorkerId::new("relay-crashed")?;
    let mut orphaned = 0;
    let deadline = Instant::now() + Duration::from_secs(5);
    while orphaned < 10 && Instant::now() < deadline {
        let mut conn = pool.acquire().await?;
        orphaned += outbox
            .claim(
                &mut conn,
                &ClaimRequest::new(crashed.clone(), 10 - orphaned)
                    .lease_ttl(TimeDelta::seconds(20)),
            )
            .await?
            .len() as u32;
        drop(conn);
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    println!("crashed relay left {orphaned} leased events");

    let produced = producer.await??;
    println!("{produced} orders enqueued; draining");
    tokio::time::sleep(timeline.total.saturating_sub(timeline.start.elapsed())).await;
    shutdown.trigger();
    let summary = relay_task.await?;
    let stopped = inbox_task.await?;
    for (name, t) in ["outbox", "inbox"].into_iter().zip(maintenance_tasks) {
        println!("{name} maintenance: {:?}", t.await?);
    }
    for o in observers {
        o.await?;
    }
    println!(
        "relay published {} ({:?}); inbox {stopped:?}",
        summary.published, summary.stopped
    );
    println!("dashboard preview finished");
    Ok(())
}

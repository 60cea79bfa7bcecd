//! A relay process for the fault tests: PostgreSQL outbox → RabbitMQ (default exchange,
//! routing key = topic = queue), run by a [`RelayWorker`] until SIGTERM / Ctrl-C (first
//! signal graceful, second abort). The SIGKILL test kills it mid-drain.
//!
//! Usage: `DATABASE_URL=... AMQP_URL=... omnibox-e2e-relay <schema> <worker-id> [batch]
//! [publish-concurrency] [lease-secs] [publish-timeout-ms] [step-delay-ms]`.
//!
//! `step-delay-ms` (default 0) adds a step before the publish step that waits that long per
//! event: a slow enrichment step, so that a batch spends its time between broker calls
//! (the lease-stall test freezes the process there).

use std::time::Duration;

use omnibox_core::OutboxEvent;
use omnibox_core::pipeline::{BatchCtx, Step, StepResult};
use omnibox_core::relay::OutboxRelay;
use omnibox_core::worker::RelayWorker;
use omnibox_core::{Shutdown, WorkerId};
use omnibox_postgres::{PgDatabase, PgOutboxStore, PgStoreConfig};
use omnibox_rabbitmq::{PublisherOptions, RabbitConnector, RabbitPublisher, RoutingMode, lapin};
use tokio::signal::unix::{SignalKind, signal};

type BoxError = Box<dyn std::error::Error + Send + Sync>;

fn env(name: &str) -> Result<String, BoxError> {
    std::env::var(name).map_err(|_| format!("{name} must be set").into())
}

fn arg<T: std::str::FromStr>(args: &[String], i: usize, default: T) -> Result<T, BoxError> {
    match args.get(i) {
        None => Ok(default),
        Some(s) => s
            .parse()
            .map_err(|_| format!("argument {i} `{s}` is invalid").into()),
    }
}

/// Waits before each event's publish (a slow step in front of the broker).
struct Delay(Duration);

impl<C: Send> Step<OutboxEvent, C> for Delay {
    async fn execute(
        &self,
        _event: &OutboxEvent,
        _ctx: &mut BatchCtx<'_, OutboxEvent, C>,
    ) -> StepResult {
        tokio::time::sleep(self.0).await;
        StepResult::Continue
    }
}

#[tokio::main]
async fn main() -> Result<(), BoxError> {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_writer(std::io::stderr)
        .init();
    let args: Vec<String> = std::env::args().collect();
    let schema = args
        .get(1)
        .ok_or("usage: omnibox-e2e-relay <schema> <worker-id>")?;
    let worker = WorkerId::new(args.get(2).ok_or("missing worker id")?)?;
    let batch: u32 = arg(&args, 3, 200)?;
    let concurrency: usize = arg(&args, 4, 64)?;
    let lease_secs: u64 = arg(&args, 5, 10)?;
    let publish_timeout_ms: u64 = arg(&args, 6, 2_000)?;
    let step_delay_ms: u64 = arg(&args, 7, 0)?;

    let pool = sqlx::postgres::PgPoolOptions::new()
        .max_connections(4)
        // No ping round trip before each transaction: a dead connection fails the
        // statement instead, and the worker backs off and retries.
        .test_before_acquire(false)
        .connect(&env("DATABASE_URL")?)
        .await?;
    let config = PgStoreConfig::new().schema(schema.as_str());
    let outbox = PgOutboxStore::new(&config)?;
    // A reconnecting connection: a production relay must survive the broker closing it.
    let amqp = RabbitConnector::from_uri(env("AMQP_URL")?, lapin::ConnectionProperties::default());
    let publisher = RabbitPublisher::new(amqp).with_options(
        PublisherOptions::default().routing(RoutingMode::FixedExchange(String::new())),
    );
    let mut builder = OutboxRelay::builder(outbox, publisher);
    if step_delay_ms > 0 {
        builder = builder.step_before(Delay(Duration::from_millis(step_delay_ms)));
    }
    let relay = builder
        .batch_size(batch)
        .publish_concurrency(concurrency)
        .publish_timeout(Duration::from_millis(publish_timeout_ms))
        .lease_ttl(Duration::from_secs(lease_secs))
        .build()?;
    let mut relay_worker = RelayWorker::builder(relay, PgDatabase::new(pool))
        .worker_id(worker)
        .poll_interval(Duration::from_millis(100))
        .build()?;

    let shutdown = Shutdown::new();
    let on_signal = shutdown.clone();
    let mut term = signal(SignalKind::terminate())?;
    tokio::spawn(async move {
        loop {
            tokio::select! {
                _ = term.recv() => {}
                r = tokio::signal::ctrl_c() => if r.is_err() { break },
            }
            on_signal.trigger(); // first: graceful; second: abort
        }
    });
    println!("ready");
    let summary = relay_worker.run(&shutdown).await;
    eprintln!("{summary:?}");
    Ok(())
}

//! `omnibox relay`: relay workers and the maintenance worker, from the settings.

use std::sync::Arc;

use omnibox_core::maintenance::Maintenance;
use omnibox_core::metrics::{MetricsSink, NoopMetrics};
use omnibox_core::publisher::Publisher;
use omnibox_core::relay::OutboxRelay;
use omnibox_core::worker::{MaintenanceWorker, RelayWorker};
use omnibox_core::{Shutdown, WorkerId};
use omnibox_kafka::KafkaPublisher;
use omnibox_nats::NatsPublisher;
use omnibox_nats::async_nats;
use omnibox_postgres::sqlx::PgPool;
use omnibox_postgres::{PgDatabase, PgOutboxStore, PgWakeup};
use omnibox_rabbitmq::{RabbitConnector, RabbitPublisher, lapin};
use omnibox_settings::{BrokerKind, Settings};
use tokio::signal::unix::{SignalKind, signal};

use crate::context::Context;
use crate::error::{CliError, CliResult};

/// Connect to the configured broker and run until a signal.
pub async fn run(ctx: &Context) -> CliResult {
    let s = &ctx.settings;
    let broker = s.broker.ok_or_else(|| {
        CliError::usage(
            "no broker: set `broker = \"kafka\" | \"rabbitmq\" | \"nats\"` or OMNIBOX_BROKER",
        )
    })?;
    let pool = ctx.pool().await?;
    let store = ctx.outbox()?;
    let metrics: Arc<dyn MetricsSink> = match s.metrics.prometheus_options()? {
        Some(options) => {
            let sink = s.metrics.sink()?;
            options.install().map_err(|e| {
                CliError::failed(format!(
                    "metrics endpoint on {:?}: {e}",
                    s.metrics.prometheus_listen
                ))
            })?;
            tracing::info!(listen = ?s.metrics.prometheus_listen, "serving Prometheus metrics");
            Arc::new(sink)
        }
        None => Arc::new(NoopMetrics),
    };
    match broker {
        BrokerKind::Rabbitmq => {
            let url = s.rabbitmq.url.clone().ok_or_else(|| {
                CliError::usage("broker rabbitmq: set `[rabbitmq] url` or OMNIBOX_RABBITMQ__URL")
            })?;
            let connector = RabbitConnector::from_uri(url, lapin::ConnectionProperties::default());
            // Fail fast with one clear line when the broker is unreachable at start.
            connector.connection().await.map_err(|e| {
                CliError::failed(format!(
                    "cannot connect to RabbitMQ at {}: {e}",
                    s.rabbitmq.url.as_deref().unwrap_or_default()
                ))
            })?;
            let publisher =
                RabbitPublisher::new(connector).with_options(s.rabbitmq.publisher_options());
            serve(s, pool, store, publisher, metrics).await
        }
        BrokerKind::Nats => {
            let url = s.nats.url.clone().ok_or_else(|| {
                CliError::usage("broker nats: set `[nats] url` or OMNIBOX_NATS__URL")
            })?;
            let options = s
                .nats
                .connect_options()
                .await
                .map_err(|e| CliError::usage(format!("[nats] credentials: {e}")))?;
            let client = async_nats::connect_with_options(url.as_str(), options)
                .await
                .map_err(|e| CliError::failed(format!("cannot connect to NATS at {url}: {e}")))?;
            let publisher = NatsPublisher::new(async_nats::jetstream::new(client))
                .with_options(s.nats.publisher_options());
            serve(s, pool, store, publisher, metrics).await
        }
        BrokerKind::Kafka => {
            if s.kafka.bootstrap_servers.is_none()
                && !s.kafka.properties.contains_key("bootstrap.servers")
            {
                return Err(CliError::usage(
                    "broker kafka: set `[kafka] bootstrap_servers` or OMNIBOX_KAFKA__BOOTSTRAP_SERVERS",
                ));
            }
            let publisher = KafkaPublisher::from_config(&s.kafka.client_config())
                .map_err(|e| CliError::usage(format!("[kafka]: {e}")))?
                .with_queue_timeout(s.kafka.queue_timeout);
            serve(s, pool, store, publisher, metrics).await
        }
        _ => Err(CliError::usage("unsupported broker")),
    }
}

async fn serve<P: Publisher + 'static>(
    s: &Settings,
    pool: PgPool,
    store: PgOutboxStore,
    publisher: P,
    metrics: Arc<dyn MetricsSink>,
) -> CliResult {
    let relay = s
        .relay
        .apply(OutboxRelay::builder(store.clone(), publisher))?
        .metrics(metrics.clone())
        .build()
        .map_err(|e| CliError::usage(format!("[relay]: {e}")))?;
    let relay = Arc::new(relay);
    let shutdown = Shutdown::new();
    let config = s.store.to_config();
    let db = PgDatabase::with_timeouts(pool.clone(), s.store.timeouts());
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..s.relay.workers {
        let id = WorkerId::generate(&s.relay.worker_prefix)
            .map_err(|e| CliError::usage(format!("relay.worker_prefix: {e}")))?;
        let wakeup = PgWakeup::connect(&pool, &config).await?;
        let worker = s
            .relay
            .apply_worker(
                RelayWorker::builder(relay.clone(), db.clone())
                    .worker_id(id.clone())
                    .wakeup(wakeup),
            )
            .build()
            .map_err(|e| CliError::usage(format!("[relay]: {e}")))?;
        let shutdown = shutdown.clone();
        tracing::info!(worker = %id, "relay worker started");
        tasks.spawn(async move {
            let mut worker = worker;
            let summary = worker.run(&shutdown).await;
            tracing::info!(worker = %id, ?summary, "relay worker stopped");
        });
    }
    if s.maintenance.enabled {
        let m = Maintenance::new(store).metrics(metrics);
        let worker = s
            .maintenance
            .apply(MaintenanceWorker::builder(m, db.clone()))?
            .build()
            .map_err(|e| CliError::usage(format!("[maintenance]: {e}")))?;
        let shutdown = shutdown.clone();
        tasks.spawn(async move {
            let summary = worker.run(&shutdown).await;
            tracing::info!(?summary, "maintenance worker stopped");
        });
    }
    let mut term = signal(SignalKind::terminate())
        .map_err(|e| CliError::failed(format!("signal handler: {e}")))?;
    let on_signal = shutdown.clone();
    tokio::spawn(async move {
        loop {
            tokio::select! {
                _ = term.recv() => {}
                r = tokio::signal::ctrl_c() => if r.is_err() { break },
            }
            if on_signal.is_requested() {
                tracing::warn!(
                    "second signal: aborting in-flight batches (their leases expire and they are retried)"
                );
            } else {
                tracing::info!("signal: draining (a second signal aborts)");
            }
            on_signal.trigger();
        }
    });
    tracing::info!(workers = s.relay.workers, schema = %s.store.schema, "relay running");
    println!("ready");
    while let Some(r) = tasks.join_next().await {
        if let Err(e) = r {
            return Err(CliError::failed(format!("a worker panicked: {e}")));
        }
    }
    tracing::info!("relay stopped");
    Ok(())
}

//! A relay process: a [`RelayWorker`] over the run's outbox, publishing to the run's broker
//! until SIGTERM (drain) or a second SIGTERM (abort).

use std::time::Duration;

use omnibox_core::relay::OutboxRelay;
use omnibox_core::worker::RelayWorker;
use omnibox_core::{Publisher, Shutdown, WorkerId};
use omnibox_postgres::PgDatabase;

use super::{Broker, RigEnv, world};

/// Events claimed per batch.
const BATCH: u32 = 50;
/// How long one publish may take before it counts as a transient failure.
const PUBLISH_TIMEOUT: Duration = Duration::from_secs(2);

/// Run until SIGTERM.
pub async fn run(env: RigEnv) -> Result<(), String> {
    match env.broker {
        Broker::Rabbitmq => {
            use omnibox_rabbitmq::{
                PublisherOptions, RabbitConnector, RabbitPublisher, RoutingMode, lapin,
            };
            let connector = RabbitConnector::from_uri(
                env.broker_url.clone(),
                lapin::ConnectionProperties::default()
                    .with_connection_name(env.name.clone().into()),
            );
            let publisher = RabbitPublisher::new(connector).with_options(
                PublisherOptions::default().routing(RoutingMode::FixedExchange(String::new())),
            );
            relay(env, publisher).await
        }
        Broker::Nats => {
            let client = nats_client(&env).await?;
            let publisher =
                omnibox_nats::NatsPublisher::new(omnibox_nats::async_nats::jetstream::new(client));
            relay(env, publisher).await
        }
        Broker::Kafka => {
            let mut config = omnibox_kafka::rdkafka::ClientConfig::new();
            config
                .set("bootstrap.servers", &env.broker_url)
                .set("client.id", &env.name);
            let publisher = omnibox_kafka::KafkaPublisher::from_config(&config)
                .map_err(|e| format!("Kafka producer: {e}"))?;
            relay(env, publisher).await
        }
    }
}

/// A NATS client named after the process that keeps reconnecting (also at start, while a
/// restarted server is still down).
pub async fn nats_client(env: &RigEnv) -> Result<omnibox_nats::async_nats::Client, String> {
    omnibox_nats::async_nats::ConnectOptions::new()
        .name(env.name.clone())
        .retry_on_initial_connect()
        .connect(env.broker_url.as_str())
        .await
        .map_err(|e| format!("NATS: {e}"))
}

async fn relay<P: Publisher + 'static>(env: RigEnv, publisher: P) -> Result<(), String> {
    let pool = env.pool(4).await?;
    let (outbox, _) = world::stores(&env.schema, env.partitioned)?;
    let relay = OutboxRelay::builder(outbox, publisher)
        .batch_size(BATCH)
        .publish_timeout(PUBLISH_TIMEOUT)
        .lease_ttl(env.lease)
        .build()
        .map_err(|e| e.to_string())?;
    let worker = WorkerId::new(env.name.as_str()).map_err(|e| e.to_string())?;
    let mut worker = RelayWorker::builder(relay, PgDatabase::new(pool))
        .worker_id(worker)
        .poll_interval(Duration::from_millis(100))
        .build()
        .map_err(|e| e.to_string())?;
    let shutdown = Shutdown::new();
    super::on_signals(shutdown.clone())?;
    println!("ready");
    let summary = worker.run(&shutdown).await;
    eprintln!("{summary:?}");
    Ok(())
}

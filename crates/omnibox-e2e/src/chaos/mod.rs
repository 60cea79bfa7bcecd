//! The chaos rig: real producer, relay and inbox processes against a throwaway PostgreSQL
//! cluster and a broker, faults on a seeded schedule, then a drain and a ledger of what was
//! committed, published and handled (lost, duplicated, stuck, out of order).
//!
//! One binary plays every part (`omnibox-chaos run` orchestrates; `producer`, `relay` and
//! `inbox` are the processes it starts and kills). The children take their settings from
//! the environment ([`RigEnv`]), so a killed process restarts with exactly the same ones.

pub mod inbox;
pub mod ledger;
pub mod orchestrator;
pub mod producer;
pub mod relay;
pub mod schedule;
pub mod world;

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};

/// The broker a run goes through.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Broker {
    /// A throwaway RabbitMQ node.
    Rabbitmq,
    /// A throwaway `nats-server -js`.
    Nats,
    /// librdkafka's mock cluster hosted by the orchestrator (or `KAFKA_BOOTSTRAP_SERVERS`).
    Kafka,
}

impl Broker {
    /// The name used on the command line and in the environment.
    pub fn as_str(self) -> &'static str {
        match self {
            Broker::Rabbitmq => "rabbitmq",
            Broker::Nats => "nats",
            Broker::Kafka => "kafka",
        }
    }
}

impl fmt::Display for Broker {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Broker {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "rabbitmq" => Ok(Broker::Rabbitmq),
            "nats" => Ok(Broker::Nats),
            "kafka" => Ok(Broker::Kafka),
            other => Err(format!(
                "unknown broker `{other}` (expected rabbitmq, nats or kafka)"
            )),
        }
    }
}

/// Everything a child process needs, passed through the environment.
#[derive(Debug, Clone)]
pub struct RigEnv {
    /// The throwaway cluster (`DATABASE_URL`).
    pub database_url: String,
    /// The schema holding the omnibox and business tables (`CHAOS_SCHEMA`).
    pub schema: String,
    /// The broker (`CHAOS_BROKER`).
    pub broker: Broker,
    /// Its URL or bootstrap servers (`CHAOS_BROKER_URL`).
    pub broker_url: String,
    /// Prefix of queue, subject, stream and topic names (`CHAOS_BASE`).
    pub base: String,
    /// Ordered lanes (queues, filtered consumers or partitions) keys are spread over
    /// (`CHAOS_LANES`).
    pub lanes: usize,
    /// Business keys (`CHAOS_KEYS`).
    pub keys: usize,
    /// Business transactions per second of the producer (`CHAOS_RATE`).
    pub rate: u32,
    /// Relay and inbox lease (`CHAOS_LEASE_MS`).
    pub lease: Duration,
    /// Partitioned outbox and inbox tables (`CHAOS_PARTITIONED=1`).
    pub partitioned: bool,
    /// This process's name: its worker id, PostgreSQL `application_name` and broker
    /// connection name, all starting with `chaos-` (`CHAOS_NAME`).
    pub name: String,
}

impl RigEnv {
    /// Read the settings of a child process.
    pub fn from_env() -> Result<Self, String> {
        fn var(name: &str) -> Result<String, String> {
            std::env::var(name).map_err(|_| format!("{name} must be set"))
        }
        fn num<T: FromStr>(name: &str) -> Result<T, String> {
            let v = var(name)?;
            v.parse()
                .map_err(|_| format!("{name}=`{v}` is not a valid number"))
        }
        let schema = var("CHAOS_SCHEMA")?;
        if schema.is_empty()
            || !schema
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
        {
            return Err(format!(
                "CHAOS_SCHEMA=`{schema}`: only a-z, 0-9 and _ are allowed"
            ));
        }
        Ok(Self {
            database_url: var("DATABASE_URL")?,
            schema,
            broker: var("CHAOS_BROKER")?.parse()?,
            broker_url: var("CHAOS_BROKER_URL")?,
            base: var("CHAOS_BASE")?,
            lanes: num::<usize>("CHAOS_LANES")?.max(1),
            keys: num::<usize>("CHAOS_KEYS")?.max(1),
            rate: num::<u32>("CHAOS_RATE")?.max(1),
            lease: Duration::from_millis(num("CHAOS_LEASE_MS")?),
            partitioned: var("CHAOS_PARTITIONED")? == "1",
            name: var("CHAOS_NAME")?,
        })
    }

    /// The environment that recreates these settings (with `name` as the process name).
    pub fn to_env(&self, name: &str) -> Vec<(&'static str, String)> {
        vec![
            ("DATABASE_URL", self.database_url.clone()),
            ("CHAOS_SCHEMA", self.schema.clone()),
            ("CHAOS_BROKER", self.broker.as_str().to_owned()),
            ("CHAOS_BROKER_URL", self.broker_url.clone()),
            ("CHAOS_BASE", self.base.clone()),
            ("CHAOS_LANES", self.lanes.to_string()),
            ("CHAOS_KEYS", self.keys.to_string()),
            ("CHAOS_RATE", self.rate.to_string()),
            ("CHAOS_LEASE_MS", self.lease.as_millis().to_string()),
            ("CHAOS_PARTITIONED", u8::from(self.partitioned).to_string()),
            ("CHAOS_NAME", name.to_owned()),
        ]
    }

    /// The lane of business key number `key`.
    pub fn lane_of(&self, key: usize) -> usize {
        key % self.lanes
    }

    /// The topic events of `lane` are published to: a queue / subject per lane on
    /// RabbitMQ and NATS; one topic with a partition per lane on Kafka (the partition is
    /// chosen by the partition key's hash there).
    pub fn topic(&self, lane: usize) -> String {
        match self.broker {
            Broker::Kafka => self.base.clone(),
            Broker::Rabbitmq | Broker::Nats => format!("{}.{lane}", self.base),
        }
    }

    /// A pool whose connections carry this process's name as `application_name` (so the
    /// orchestrator can terminate them), without a ping before each use: a dead connection
    /// fails its statement and the worker backs off, as in production.
    pub async fn pool(&self, max: u32) -> Result<PgPool, String> {
        let options = PgConnectOptions::from_str(&self.database_url)
            .map_err(|e| format!("DATABASE_URL: {e}"))?
            .application_name(&self.name);
        Ok(PgPoolOptions::new()
            .max_connections(max)
            .acquire_timeout(Duration::from_secs(5))
            .test_before_acquire(false)
            .connect_lazy_with(options))
    }
}

/// Block until SIGTERM or Ctrl-C, then fire `shutdown` (a second signal fires it again:
/// the workers abort instead of draining).
pub fn on_signals(shutdown: omnibox_core::Shutdown) -> Result<(), String> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).map_err(|e| format!("SIGTERM handler: {e}"))?;
    tokio::spawn(async move {
        loop {
            tokio::select! {
                _ = term.recv() => {}
                r = tokio::signal::ctrl_c() => if r.is_err() { break },
            }
            shutdown.trigger();
        }
    });
    Ok(())
}

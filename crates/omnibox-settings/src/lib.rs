//! Settings for omnibox from a TOML file and the environment.
//!
//! Every knob of the library's configuration has a key here, grouped by the part it
//! configures: `[database]`, `[store]`, `[relay]`, `[inbox]`, `[maintenance]`,
//! `[rabbitmq]`, `[nats]`, `[kafka]`, `[metrics]`, `[log]`. [`Loader`] reads, in order
//! of precedence (last wins): the built-in defaults, a TOML file, `DATABASE_URL`, and
//! `OMNIBOX_*` variables with `__` between nesting levels (`OMNIBOX_RELAY__BATCH_SIZE=500`).
//! Durations are human-readable strings (`"250ms"`, `"30s"`, `"10m"`).
//!
//! - **One set of defaults.** Each section's `Default` is built from the constants and
//!   `Default` impls of the builders it configures, so an empty file gives exactly the
//!   builders' defaults (the `defaults` test builds both and compares them).
//! - **Errors name the key and its source.** An unknown key or a bad value is
//!   [`SettingsError::Invalid`], listing each problem with its dotted key and where the
//!   value came from: `relay.toml line 4`, `environment variable OMNIBOX_RELAY__BATCH_SIZE`.
//! - **No secrets in messages.** Passwords in URLs are masked (`postgres://app:***@db/app`)
//!   in `Debug` output and in errors ([`redact`]); Kafka properties naming a password,
//!   secret or key are masked in `Debug`.
//! - **TLS is passed through**: `amqps://` URLs, `[nats] require_tls` and certificate
//!   files, any librdkafka `security.*` / `ssl.*` / `sasl.*` property in `[kafka.properties]`.
//!
//! ```
//! use omnibox_settings::{Settings, LogFormat};
//!
//! let s = Settings::from_toml_str(r#"
//!     broker = "rabbitmq"
//!
//!     [database]
//!     url = "postgres://app:secret@127.0.0.1/app"
//!
//!     [store]
//!     schema = "billing"
//!     notify_channel = "outbox"
//!
//!     [relay]
//!     workers = 2
//!     batch_size = 500
//!     publish_concurrency = 32
//!     lease_ttl = "60s"
//!
//!     [maintenance]
//!     retention = "7days"
//!
//!     [rabbitmq]
//!     url = "amqp://guest:guest@127.0.0.1:5672/%2f"
//!
//!     [log]
//!     format = "json"
//! "#).unwrap();
//! assert_eq!(s.relay.workers, 2);
//! assert_eq!(s.log.format, LogFormat::Json);
//! assert!(!format!("{s:?}").contains("secret"));
//! ```
//!
//! With the adapter features (`postgres`, `rabbitmq`, `nats`, `kafka`, `prometheus`),
//! sections convert to the adapters' own types: [`StoreSettings::to_config`],
//! `RabbitSettings::publisher_options`, `NatsSettings::connect_options`,
//! `KafkaSettings::client_config`, `MetricsSettings::prometheus_options`. The relay,
//! inbox and maintenance sections apply to the core builders:
//! [`RelaySettings::apply`], [`RelaySettings::apply_worker`], [`InboxSettings::apply`],
//! [`MaintenanceSettings::apply`].
#![forbid(unsafe_code)]
#![deny(missing_docs)]
#![cfg_attr(docsrs, feature(doc_cfg))]

mod backoff;
mod convert;
mod database;
mod error;
mod inbox;
mod kafka;
mod load;
mod maintenance;
mod nats;
mod observability;
mod rabbitmq;
mod redact;
mod relay;
mod store;

use serde::{Deserialize, Serialize};

pub use backoff::{BackoffSettings, JitterSetting};
pub use database::DatabaseSettings;
pub use error::{Problem, SettingsError};
pub use inbox::{AckSetting, InboxSettings};
pub use kafka::KafkaSettings;
pub use load::{ENV_PREFIX, Loader};
pub use maintenance::MaintenanceSettings;
pub use nats::{NatsConsumerSettings, NatsSettings};
pub use observability::{LogFormat, LogSettings, MetricsSettings};
pub use rabbitmq::{RabbitConsumerSettings, RabbitSettings, RoutingSetting};
pub use redact::redact;
pub use relay::{BreakerSettings, RelaySettings};
pub use store::{CompletionSetting, StoreSettings};

/// Which broker a relay publishes to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum BrokerKind {
    /// `[kafka]`.
    Kafka,
    /// `[rabbitmq]`.
    Rabbitmq,
    /// `[nats]`.
    Nats,
}

/// All settings. `Settings::default()` is what an empty file loads.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
#[non_exhaustive]
pub struct Settings {
    /// The broker a relay publishes to (no default).
    pub broker: Option<BrokerKind>,
    /// `[database]`.
    pub database: DatabaseSettings,
    /// `[store]`.
    pub store: StoreSettings,
    /// `[relay]`.
    pub relay: RelaySettings,
    /// `[inbox]`.
    pub inbox: InboxSettings,
    /// `[maintenance]`.
    pub maintenance: MaintenanceSettings,
    /// `[rabbitmq]`.
    pub rabbitmq: RabbitSettings,
    /// `[nats]`.
    pub nats: NatsSettings,
    /// `[kafka]`.
    pub kafka: KafkaSettings,
    /// `[metrics]`.
    pub metrics: MetricsSettings,
    /// `[log]`.
    pub log: LogSettings,
}

impl Settings {
    /// A [`Loader`] (defaults, `DATABASE_URL`, `OMNIBOX_*`; add a file with
    /// [`Loader::file`]).
    pub fn loader() -> Loader {
        Loader::new()
    }

    /// Settings from TOML text alone (no environment).
    pub fn from_toml_str(text: &str) -> Result<Self, SettingsError> {
        Loader::new()
            .toml(text)
            .env_prefix(None)
            .database_url_env(None)
            .load()
    }

    /// Checks serde cannot express (positive counts and durations where zero makes no
    /// sense). The builders check the rest when they build.
    pub fn check(&self) -> Result<(), SettingsError> {
        let mut problems = Vec::new();
        let mut bad = |key: &str, ok: bool, message: &str| {
            if !ok {
                problems.push(Problem {
                    key: key.to_owned(),
                    origin: "settings".to_owned(),
                    message: message.to_owned(),
                });
            }
        };
        bad(
            "relay.workers",
            self.relay.workers >= 1,
            "must be at least 1",
        );
        bad(
            "relay.batch_size",
            self.relay.batch_size >= 1,
            "must be at least 1",
        );
        bad(
            "relay.publish_concurrency",
            self.relay.publish_concurrency != Some(0),
            "must be at least 1",
        );
        bad(
            "relay.publish_timeout",
            !self.relay.publish_timeout.is_zero(),
            "must be positive",
        );
        bad(
            "relay.lease_ttl",
            !self.relay.lease_ttl.is_zero(),
            "must be positive",
        );
        bad(
            "relay.poll_interval",
            !self.relay.poll_interval.is_zero(),
            "must be positive",
        );
        bad(
            "inbox.lease_ttl",
            !self.inbox.lease_ttl.is_zero(),
            "must be positive",
        );
        bad(
            "maintenance.interval",
            !self.maintenance.interval.is_zero(),
            "must be positive",
        );
        bad(
            "database.max_connections",
            self.database.max_connections >= 1,
            "must be at least 1",
        );
        bad(
            "store.max_attempts",
            self.store.max_attempts >= 1,
            "must be at least 1",
        );
        if problems.is_empty() {
            Ok(())
        } else {
            Err(SettingsError::Invalid(problems))
        }
    }
}

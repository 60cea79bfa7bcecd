//! # omnibox
//!
//! Transactional outbox and inbox for Rust services. This facade re-exports
//! [`omnibox_core`]'s modules and, behind cargo features, the adapters — so you compile only
//! what you use. It holds no logic of its own.
//!
//! Start with the [`prelude`]: `use omnibox::prelude::*;` brings the types an application
//! names (events, relay, inbox runner, workers, shutdown, errors) and nothing else, so it
//! never shadows a crate of yours (`core`, `metrics`, …). Adapters are modules:
//! `omnibox::postgres`, `omnibox::rabbitmq`, `omnibox::kafka`, `omnibox::nats`,
//! `omnibox::metrics`, `omnibox::otel`.
//!
//! ## Quickstart: PostgreSQL outbox → RabbitMQ
//!
//! With `omnibox-rs = { version = "0.1", features = ["postgres", "rabbitmq"] }` (the package
//! is `omnibox-rs`; the library is `omnibox`):
//!
//! ```no_run
//! # #[cfg(all(feature = "postgres", feature = "rabbitmq"))]
//! # async fn quickstart() -> Result<(), Box<dyn std::error::Error>> {
//! use omnibox::postgres::{PgDatabase, PgOutboxStore, PgStoreConfig, migrate, sqlx};
//! use omnibox::prelude::*;
//! use omnibox::rabbitmq::{RabbitConnector, RabbitPublisher};
//!
//! let pool = sqlx::PgPool::connect("postgres://postgres@127.0.0.1:5432/postgres").await?;
//! let config = PgStoreConfig::new().schema("shop");
//! migrate(&pool, &config).await?;
//! let outbox = PgOutboxStore::new(&config)?;
//!
//! // The business change and its event commit in one transaction.
//! let mut tx = pool.begin().await?;
//! let order_id = uuid::Uuid::now_v7();
//! sqlx::query("INSERT INTO shop.orders (id, total) VALUES ($1, 42)")
//!     .bind(order_id)
//!     .execute(&mut *tx)
//!     .await?;
//! let event = OutboxEvent::builder("order", order_id, "order.placed", "orders", "customer-7")
//!     .payload(serde_json::json!({ "order": order_id, "total": 42 }))
//!     .build()?;
//! outbox.enqueue(&mut tx, &event).await?;
//! tx.commit().await?;
//!
//! // A relay worker publishes committed events (a reconnecting RabbitMQ connection).
//! let rabbit = RabbitConnector::from_uri("amqp://guest:guest@127.0.0.1:5672/%2f", Default::default());
//! let relay = OutboxRelay::builder(outbox, RabbitPublisher::new(rabbit)).build()?;
//! let mut worker = RelayWorker::builder(relay, PgDatabase::new(pool)).worker_id(WorkerId::generate("relay")?)
//!     .build()?;
//! let shutdown = Shutdown::new();
//! let summary = worker.run(&shutdown).await; // until `shutdown.trigger()`
//! println!("published {}", summary.published);
//! # Ok(())
//! # }
//! ```
//!
//! ## Feature flags
//! | feature | brings |
//! |---|---|
//! | `postgres` | `postgres`: sqlx stores, migrations, LISTEN/NOTIFY wake-up |
//! | `kafka` | `kafka`: rdkafka publisher and consumer |
//! | `rabbitmq` | `rabbitmq`: lapin publisher (confirms) and consumer |
//! | `nats` | `nats`: async-nats JetStream publisher and consumer |
//! | `metrics` | `metrics`: metrics-facade sink and backlog observer |
//! | `prometheus` | `metrics::install_prometheus`: a Prometheus `/metrics` endpoint |
//! | `otel` | `otel`: OpenTelemetry spans and W3C trace-context propagation |
//! | `settings` | `settings`: every knob from TOML + `OMNIBOX_*` variables (figment) |
//! | `full` | all of the above |
//!
//! ## Guarantees
//! At-least-once to the broker; effectively-once for effects made inside the inbox
//! transaction; at-least-once otherwise. omnibox never promises exactly-once delivery.
#![forbid(unsafe_code)]
#![deny(missing_docs)]
#![cfg_attr(docsrs, feature(doc_cfg))]

pub use omnibox_core::{
    backoff, clock, consumer, domain, envelope, error, factories, handler, inbox, maintenance,
    memory, message, model, pipeline, publisher, relay, router, shutdown, store, wake, worker,
};

/// The types an application names, without any module: `use omnibox::prelude::*;` never
/// shadows a crate or module of the caller's.
///
/// ```
/// use omnibox::prelude::*;
/// use core::mem; // the standard library's `core`, not a re-export
///
/// let worker = WorkerId::new("relay-1").unwrap();
/// assert_eq!(worker.as_str(), "relay-1");
/// assert_eq!(mem::size_of::<u8>(), 1);
/// ```
pub mod prelude {
    pub use omnibox_core::consumer::Consumer;
    pub use omnibox_core::inbox::{AckStrategy, InboxRunner};
    pub use omnibox_core::relay::OutboxRelay;
    pub use omnibox_core::worker::{InboxWorker, MaintenanceWorker, RelayWorker};
    pub use omnibox_core::{
        CancellationToken, Error, Event, EventStatus, FailureKind, Handler, HandlerError,
        HandlerOutcome, HandlerResult, InboxEvent, Message, MessageHandler, OutboxEvent, Publisher,
        Shutdown, StoreError, WorkerId, handler_fn, typed,
    };
}

/// PostgreSQL storage (feature `postgres`).
#[cfg(feature = "postgres")]
#[cfg_attr(docsrs, doc(cfg(feature = "postgres")))]
pub use omnibox_postgres as postgres;

/// Kafka adapter (feature `kafka`).
#[cfg(feature = "kafka")]
#[cfg_attr(docsrs, doc(cfg(feature = "kafka")))]
pub use omnibox_kafka as kafka;

/// RabbitMQ adapter (feature `rabbitmq`).
#[cfg(feature = "rabbitmq")]
#[cfg_attr(docsrs, doc(cfg(feature = "rabbitmq")))]
pub use omnibox_rabbitmq as rabbitmq;

/// NATS JetStream adapter (feature `nats`).
#[cfg(feature = "nats")]
#[cfg_attr(docsrs, doc(cfg(feature = "nats")))]
pub use omnibox_nats as nats;

/// Metrics: core's sink trait and measurements, plus (feature `metrics`) the `metrics`-facade
/// sink and backlog observer, and (feature `prometheus`) the Prometheus endpoint.
pub mod metrics {
    pub use omnibox_core::metrics::*;
    #[cfg(feature = "metrics")]
    #[cfg_attr(docsrs, doc(cfg(feature = "metrics")))]
    pub use omnibox_metrics::*;
}

/// OpenTelemetry (feature `otel`).
#[cfg(feature = "otel")]
#[cfg_attr(docsrs, doc(cfg(feature = "otel")))]
pub use omnibox_otel as otel;

/// Settings from TOML files and the environment (feature `settings`; with the adapter
/// features, sections convert to their options).
#[cfg(feature = "settings")]
#[cfg_attr(docsrs, doc(cfg(feature = "settings")))]
pub use omnibox_settings as settings;

// Root re-exports kept for existing code (`omnibox::OutboxEvent`, …); new code uses the
// prelude or the modules.
pub use omnibox_core::{
    BoxError, CancellationToken, ConsumeError, DomainError, DynHandler, DynPublisher,
    EnvelopeError, Error, Event, EventStatus, FailureKind, Handler, HandlerError, HandlerOutcome,
    HandlerResult, InboxEvent, Message, MessageHandler, OutboxEvent, PublishError, Publisher,
    Shutdown, StoreError, ValidationError, WorkerId, handler_fn, typed,
};

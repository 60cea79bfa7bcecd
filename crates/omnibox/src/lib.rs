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
//! ## Quickstart: PostgreSQL outbox → Kafka → PostgreSQL inbox
//!
//! With `omnibox-rs = { version = "0.1", features = ["postgres", "kafka"] }` (the package
//! is `omnibox-rs`; the library is `omnibox`). `examples/standalone` is this program, run
//! by the test suite as a crate outside the workspace.
//!
//! ```no_run
//! # #[cfg(all(feature = "postgres", feature = "kafka"))]
//! # async fn quickstart(pool: omnibox::postgres::sqlx::PgPool, producer: omnibox::kafka::rdkafka::ClientConfig,
//! #     consumer: omnibox::kafka::rdkafka::ClientConfig) -> Result<(), Box<dyn std::error::Error>> {
//! use omnibox::kafka::{KafkaConsumer, KafkaPublisher};
//! use omnibox::postgres::sqlx::{self, PgConnection};
//! use omnibox::postgres::{PgDatabase, PgInboxStore, PgOutboxStore, PgStoreConfig, handler_error};
//! use omnibox::prelude::*;
//!
//! #[derive(serde::Serialize, serde::Deserialize)]
//! struct OrderPlaced { order: uuid::Uuid, points: i32 }
//!
//! impl Message for OrderPlaced {
//!     const EVENT_TYPE: &'static str = "order.placed";
//!     const AGGREGATE_TYPE: &'static str = "order";
//!     const TOPIC: &'static str = "orders";
//!     fn aggregate_id(&self) -> uuid::Uuid { self.order }
//! }
//!
//! struct CreditPoints;
//! impl MessageHandler<OrderPlaced, PgConnection> for CreditPoints {
//!     async fn handle(&self, o: OrderPlaced, _: &InboxEvent, conn: &mut PgConnection) -> HandlerResult {
//!         // In the inbox transaction: committed once per message, with the inbox row.
//!         sqlx::query("INSERT INTO shop.credits (points) VALUES ($1)")
//!             .bind(o.points)
//!             .execute(&mut *conn)
//!             .await
//!             .map_err(handler_error)?; // outage: retried; refused data: counted
//!         Ok(HandlerOutcome::Completed)
//!     }
//! }
//!
//! let config = PgStoreConfig::new().schema("shop"); // tables from `omnibox migrate`
//! let db = PgDatabase::new(pool.clone());
//! let outbox = PgOutboxStore::new(&config)?;
//! let relay = OutboxRelay::builder(outbox.clone(), KafkaPublisher::from_config(&producer)?)
//!     .worker(db.clone())
//!     .build()?;
//! let consumer = KafkaConsumer::from_config(&consumer, [OrderPlaced::TOPIC])?;
//! let inbox = InboxRunner::builder(consumer, db, PgInboxStore::new(&config)?, "loyalty")
//!     .handler(typed::<OrderPlaced, _>(CreditPoints))
//!     .worker()
//!     .build()?;
//! let token = CancellationToken::new(); // the application's own (signals, HTTP server)
//! let relayed = tokio::spawn(relay.serve(token.clone()));
//! let consumed = tokio::spawn(inbox.serve(token.clone()));
//!
//! // The business change and its event commit in one transaction.
//! let mut tx = pool.begin().await?;
//! let order = uuid::Uuid::now_v7();
//! sqlx::query("INSERT INTO shop.orders (id) VALUES ($1)").bind(order).execute(&mut *tx).await?;
//! outbox.enqueue_message(&mut tx, &OrderPlaced { order, points: 42 }).await?;
//! tx.commit().await?;
//!
//! token.cancel(); // on SIGTERM: both workers drain, then return
//! let (summary, _stopped) = (relayed.await?, consumed.await?);
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
    backoff, clock, consumer, domain, envelope, error, handler, inbox, maintenance, memory,
    message, model, pipeline, processors, publisher, relay, router, shutdown, store, wake, worker,
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

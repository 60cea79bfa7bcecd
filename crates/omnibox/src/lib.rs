//! # omnibox
//!
//! Transactional outbox and inbox for Rust services. This facade re-exports
//! [`omnibox_core`] and, behind cargo features, the adapters — so you compile only what you
//! use. It holds no logic of its own.
//!
//! ## Feature flags
//! | feature | brings |
//! |---|---|
//! | `postgres` | [`postgres`]: sqlx stores, migrations, LISTEN/NOTIFY wake-up |
//! | `kafka` | [`kafka`]: rdkafka publisher and consumer |
//! | `rabbitmq` | [`rabbitmq`]: lapin publisher (confirms) and consumer |
//! | `nats` | [`nats`]: async-nats JetStream publisher and consumer |
//! | `metrics` | [`metrics`]: metrics-facade sink and backlog observer |
//! | `prometheus` | `metrics::install_prometheus`: a Prometheus `/metrics` endpoint |
//! | `otel` | [`otel`]: OpenTelemetry spans and W3C trace-context propagation |
//! | `full` | all of the above |
//!
//! ## Guarantees
//! At-least-once to the broker; effectively-once for effects made inside the inbox
//! transaction; at-least-once otherwise. omnibox never promises exactly-once delivery.
#![forbid(unsafe_code)]
#![deny(missing_docs)]
#![cfg_attr(docsrs, feature(doc_cfg))]

pub use omnibox_core as core;
pub use omnibox_core::*;

/// PostgreSQL storage (feature `postgres`).
#[cfg(feature = "postgres")]
pub use omnibox_postgres as postgres;

/// Kafka adapter (feature `kafka`).
#[cfg(feature = "kafka")]
pub use omnibox_kafka as kafka;

/// RabbitMQ adapter (feature `rabbitmq`).
#[cfg(feature = "rabbitmq")]
pub use omnibox_rabbitmq as rabbitmq;

/// NATS JetStream adapter (feature `nats`).
#[cfg(feature = "nats")]
pub use omnibox_nats as nats;

/// Metrics: core's sink trait and measurements, plus (feature `metrics`) the `metrics`-facade
/// sink and backlog observer, and (feature `prometheus`) the Prometheus endpoint.
pub mod metrics {
    pub use omnibox_core::metrics::*;
    #[cfg(feature = "metrics")]
    pub use omnibox_metrics::*;
}

/// OpenTelemetry (feature `otel`).
#[cfg(feature = "otel")]
pub use omnibox_otel as otel;

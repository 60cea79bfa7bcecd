//! # omnibox-rabbitmq
//!
//! RabbitMQ adapter for omnibox, built on [`lapin`] (re-exported): a publisher that returns
//! only after the broker's publisher confirm, and a consumer with manual acknowledgements.
//!
//! - [`RabbitPublisher`]: confirm-mode channel, persistent messages, `mandatory` publishes
//!   (an unroutable message is a permanent error, not a silent drop), `message_id` = event
//!   id, metadata headers as an AMQP field table, exchange and routing key per
//!   [`RoutingMode`].
//! - [`RabbitConsumer`]: `basic.qos` prefetch, manual ack, nack with requeue (immediately or
//!   after a client-side delay), [`RabbitAck::reject`] without requeue, the `redelivered`
//!   flag on [`RabbitAck`].
//! - [`error`]: the one place where lapin errors become transient or permanent.
//!
//! - [`RabbitConnector`]: where both get their connection; from a URI or a factory closure
//!   (TLS, custom properties) it replaces a lost connection with backoff, logs the state
//!   changes and reports them to a hook ([`ConnectionEvent`]) for metrics.
//!
//! Both take a [`RabbitConnector`] (or, without reconnects, a `lapin::Connection` /
//! `Arc<lapin::Connection>` you built) and open their own channels on its connection.
//!
//! Guarantees: delivery to the broker is at least once (a relay that crashes after the
//! confirm and before recording it publishes again; the consumer side deduplicates by
//! `message_id`). Nothing here promises exactly-once delivery.
#![forbid(unsafe_code)]
#![deny(missing_docs)]

pub mod connector;
pub mod consumer;
pub mod error;
pub mod headers;
pub mod publisher;

pub use connector::{ConnectionEvent, RabbitConnector};
pub use consumer::{ConsumerOptions, RabbitAck, RabbitConsumer};
pub use lapin;
pub use publisher::{PublisherOptions, RabbitPublisher, RoutingMode};

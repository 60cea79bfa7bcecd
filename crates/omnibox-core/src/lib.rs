//! # omnibox-core
//!
//! The heart of omnibox, a transactional outbox and inbox: models, domain rules, capability
//! traits for stores, publishers and consumers, the processing pipeline and the services
//! built on it. No I/O: adapters (PostgreSQL, Kafka, RabbitMQ, NATS) implement the traits.
//!
//! ## Guarantees
//! - **Outbox**: an event reaches the broker if and only if the transaction that wrote it
//!   committed — *at least once*: a relay that crashes after publishing and before recording
//!   the result publishes again.
//! - **Inbox**: each message is stored once per `(message_id, consumer_group)`; effects a
//!   handler makes *inside the inbox transaction* happen effectively once; effects outside
//!   it are at-least-once. omnibox never promises exactly-once *delivery*.
#![forbid(unsafe_code)]
#![deny(missing_docs)]

pub mod backoff;
pub mod clock;
pub mod consumer;
pub mod domain;
pub mod envelope;
pub mod error;
pub mod handler;
pub mod inbox;
pub mod maintenance;
pub mod memory;
pub mod message;
pub mod metrics;
pub mod model;
pub mod pipeline;
pub mod processors;
pub mod publisher;
pub mod relay;
pub mod router;
pub mod shutdown;
pub mod store;
pub mod wake;
pub mod worker;

pub use error::{
    BoxError, ConsumeError, DomainError, EnvelopeError, Error, FailureKind, HandlerError,
    PublishError, StoreError, ValidationError,
};
pub use handler::{DynHandler, Handler, HandlerOutcome, HandlerResult, handler_fn};
pub use message::{Message, MessageHandler, typed};
pub use model::{Event, EventStatus, InboxEvent, OutboxEvent, WorkerId};
pub use publisher::{DynPublisher, Publisher};
pub use shutdown::{CancellationToken, Shutdown};

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
//!
//! ## Concept map
//!
//! Each concept, the item that embodies it and the one file it lives in.
//!
//! | concept | item | file |
//! |---|---|---|
//! | an event row and its fields | [`OutboxEvent`], [`InboxEvent`], [`model::EventCommon`] | `model/outbox.rs`, `model/inbox.rs`, `model/common.rs` |
//! | a typed event (type, aggregate, topic, key) | [`Message`], [`MessageHandler`], [`typed`] | `message.rs` |
//! | limits and validation | [`model::Limits`], [`ValidationError`] | `model/limits.rs`, `model/validate.rs` |
//! | state rules (lease, complete, fail, retry) | [`domain::Domain`] | `domain.rs` |
//! | what a store can do | [`store::ClaimEvents`], [`store::SettleEvents`], … ; [`store::OutboxStore`], [`store::InboxStore`] | `store.rs` |
//! | claiming a batch | [`store::ClaimRequest`], [`pipeline::FetchStrategy`] | `store.rs`, `pipeline/fetch.rs` |
//! | leases and their check before a broker call | [`pipeline::LeaseWatch`] | `pipeline/lease.rs` |
//! | the pipeline: steps over a batch | [`pipeline::Processor`], [`pipeline::Step`], [`pipeline::BatchCtx`] | `pipeline/processor.rs`, `pipeline/step.rs`, `pipeline/context.rs` |
//! | built-in steps | [`pipeline::steps`] (publish, handler, sibling dedup, circuit breaker, metrics, dead-letter notify) | `pipeline/steps/<name>.rs` |
//! | ready-made step orders | [`processors::outbox_processor`], [`processors::inbox_processor`] | `processors.rs` |
//! | the relay (one batch) | [`relay::OutboxRelay`] | `relay.rs` |
//! | the inbox (one message) | [`inbox::InboxRunner`], [`inbox::AckStrategy`] | `inbox/runner.rs`, `inbox/strategy.rs` |
//! | long-running workers and shutdown | [`worker::RelayWorker`], [`worker::InboxWorker`], [`worker::MaintenanceWorker`], [`Shutdown`] | `relay/worker.rs`, `inbox/worker.rs`, `maintenance/worker.rs`, `shutdown.rs` |
//! | waking the relay | [`wake::Wakeup`] | `wake.rs` |
//! | stale leases, retention | [`maintenance::Maintenance`] | `maintenance.rs` |
//! | handlers and their errors | [`Handler`], [`HandlerOutcome`], [`HandlerError`] | `handler.rs`, `error.rs` |
//! | routing by event type and source | [`router::Router`] | `router/mod.rs` |
//! | brokers, seen from the core | [`Publisher`], [`consumer::Consumer`] | `publisher.rs`, `consumer.rs` |
//! | the wire format | [`envelope`] | `envelope.rs` |
//! | retry backoff | [`backoff::Backoff`] | `backoff.rs` |
//! | measurements | [`metrics::MetricsSink`], [`metrics::Metric`] | `metrics.rs` |
//! | in-memory stores and broker | [`memory`] | `memory/` |
//!
//! Coming from omni-box? The porting notes (`docs/porting.md` in the repository) map its
//! classes and sections to these items and list the bugs it fixes.
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

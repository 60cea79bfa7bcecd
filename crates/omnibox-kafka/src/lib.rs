//! # omnibox-kafka
//!
//! Kafka adapters for [omnibox](omnibox_core) over [`rdkafka`] (re-exported): a
//! [`KafkaPublisher`] that resolves only after the broker's delivery report, and a
//! [`KafkaConsumer`] with one acknowledgement handle per record.
//!
//! Both take a client you built yourself, so every librdkafka setting stays yours.
//!
//! ## Publishing
//!
//! Each outbox event becomes one record: key = the event's partition key (so events of one
//! key stay ordered within a partition), value = the converter's body (the
//! [`EnvelopeConverter`](omnibox_core::envelope::EnvelopeConverter) by default, or
//! [`RawConverter`](omnibox_core::envelope::RawConverter) /
//! [`SchemaVersionedConverter`](omnibox_core::envelope::SchemaVersionedConverter)), headers =
//! [`metadata_headers`](omnibox_core::envelope::metadata_headers) (`event_id`, `event_type`,
//! `schema_version` and trace ids when set, plus the event's own headers such as
//! `traceparent`).
//!
//! Recommended producer settings ([`KafkaPublisher::from_config`] applies the first two where
//! you have not set them; see [`producer_config`]):
//!
//! - `partitioner=murmur2_random` ([`JAVA_COMPATIBLE_PARTITIONER`]): a key lands on the
//!   partition the Java and Python clients pick. librdkafka's default (`consistent_random`,
//!   CRC32) picks another, so a key published by both kinds of client would be split
//!   across two partitions and lose its order.
//! - `enable.idempotence=true` and `acks=all`: librdkafka's own retries then neither
//!   duplicate nor reorder records within a partition, and a delivery report means the
//!   record is on every in-sync replica. (The outbox relay can still publish an event twice
//!   if it crashes between the delivery report and recording the result: delivery is
//!   at-least-once, consumers dedupe through the inbox.)
//! - `message.timeout.ms` below the relay's publish timeout (e.g. `25000` against a 30 s
//!   timeout): a record that cannot be delivered in time fails as a *transient* error
//!   (not counting an attempt) instead of being cut off by the relay. The publisher never
//!   sleeps or retries on its own; librdkafka retries within `message.timeout.ms`.
//!
//! ```no_run
//! use omnibox_kafka::KafkaPublisher;
//! use omnibox_kafka::rdkafka::ClientConfig;
//! use omnibox_kafka::rdkafka::producer::FutureProducer;
//! use omnibox_core::{OutboxEvent, Publisher};
//!
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! let producer: FutureProducer = ClientConfig::new()
//!     .set("bootstrap.servers", "localhost:9092")
//!     .set("enable.idempotence", "true")
//!     .set("acks", "all")
//!     .set("message.timeout.ms", "25000")
//!     .create()?;
//! let publisher = KafkaPublisher::new(producer);
//!
//! let event = OutboxEvent::builder("order", uuid::Uuid::now_v7(), "order.placed", "orders", "customer-7")
//!     .payload(serde_json::json!({"total": 42}))
//!     .build()?;
//! publisher.publish(&event).await?; // returns after the delivery report
//! # Ok(()) }
//! ```
//!
//! ## Consuming
//!
//! ```no_run
//! use omnibox_kafka::{KafkaConsumer, KafkaConsumerContext};
//! use omnibox_kafka::rdkafka::ClientConfig;
//! use omnibox_core::consumer::{AckHandle, Consumer};
//!
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! let client = ClientConfig::new()
//!     .set("bootstrap.servers", "localhost:9092")
//!     .set("group.id", "billing")
//!     .set("enable.auto.commit", "false") // required: acknowledgements commit
//!     .set("auto.offset.reset", "earliest")
//!     .create_with_context(KafkaConsumerContext::new())?;
//! let mut consumer = KafkaConsumer::new(client, ["orders"]);
//! consumer.start().await?;
//! let delivery = consumer.receive().await?;
//! match &delivery.message {
//!     Ok(message) => println!("{} {}", message.event_type, message.message_id),
//!     Err(malformed) => eprintln!("dead-letter: {}", malformed.error),
//! }
//! delivery.ack.ack().await?; // commits up to the contiguous acknowledged offset
//! consumer.stop().await?;
//! # Ok(()) }
//! ```
//!
//! Received records are parsed with
//! [`parse_message`](omnibox_core::envelope::parse_message): the message id is the
//! `message_id` header, else `event_id`, else `topic:partition:offset`; the source is the
//! topic unless a `source` header says otherwise. Header values are decoded as UTF-8 (invalid
//! bytes replaced); headers without a value are dropped.
//!
//! ## Errors
//!
//! [`error`] classifies every client error once: broker unreachable, timeouts, full queues
//! and leadership moves are transient; records or topics the broker refuses are permanent.
#![forbid(unsafe_code)]
#![deny(missing_docs)]

mod consumer;
mod context;
pub mod error;
mod offsets;
mod pause;
mod publisher;

pub use consumer::{KafkaAck, KafkaConsumer, TrackedStreamConsumer};
pub use context::KafkaConsumerContext;
pub use publisher::{JAVA_COMPATIBLE_PARTITIONER, KafkaPublisher, producer_config};
pub use rdkafka;

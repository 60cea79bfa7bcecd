//! # omnibox-nats
//!
//! NATS JetStream adapter for omnibox, built on [`async_nats`] (re-exported).
//!
//! - [`NatsPublisher`]: publishes to subject = topic (optionally prefixed) with
//!   `Nats-Msg-Id` = event id, and returns only after the JetStream publish ack; a
//!   duplicate ack (the stream's duplicate window dropped a re-publish) is a success.
//! - [`NatsConsumer`]: a durable pull consumer with explicit acks; [`NatsAck`] acks, naks
//!   (optionally with a delay), terminates, or signals work in progress.
//! - [`error`]: the one place where async-nats errors become transient or permanent.
//!
//! Both take a JetStream context you built (`async_nats::jetstream::new(client)`). Streams
//! are yours to create; see [`NatsPublisher`] for the `duplicate_window` to choose.
//!
//! Reconnects: async-nats reconnects the client by itself (with backoff, without limit by
//! default: keep `ConnectOptions::max_reconnects` unset, and use
//! `ConnectOptions::retry_on_initial_connect` when the server may be down at start). While
//! the server is away a publish fails as transient (never reported published: its
//! JetStream ack never came) and `receive` returns transient errors; once the client is
//! back, the pull consumer's next pull request resumes the durable consumer where its acks
//! left off, and messages delivered but not acknowledged before the outage come back after
//! `ack_wait`. Use a file-storage stream (the default) so messages survive a server
//! restart. Connection state is the client's: `Client::connection_state()` and
//! `ConnectOptions::event_callback` (disconnected / connected events) for logs and metrics.
//!
//! Guarantees: delivery to the broker is at least once; the duplicate window removes
//! re-publishes within it, and the inbox deduplicates by `message_id` beyond it. Nothing
//! here promises exactly-once delivery.
//!
//! Server versions: everything here works on NATS 2.9 (no 2.10+ feature is used).
#![forbid(unsafe_code)]
#![deny(missing_docs)]

pub mod consumer;
pub mod error;
pub mod publisher;

pub use async_nats;
pub use consumer::{ConsumerOptions, NatsAck, NatsConsumer};
pub use publisher::{MSG_ID_HEADER, NatsPublisher, PublisherOptions};

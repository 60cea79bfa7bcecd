//! Test support for omnibox adapters.
//!
//! - **Conformance suites**: plain async functions every store, publisher and consumer
//!   adapter calls from its own tests, so all of them are held to the same contract:
//!   [`outbox_store_conformance`], [`inbox_store_conformance`], [`publisher_conformance`],
//!   [`consumer_conformance`]. Each runs many small checks and panics with a message naming
//!   the suite and the failed check.
//! - **Service resolution**: [`postgres_url`], [`amqp_url`], [`nats_url`],
//!   [`kafka_bootstrap`] read the environment variable, else (feature `containers`, off by
//!   default) start one container per service per test run with testcontainers when a
//!   Docker engine is available (pinned images, removed when the run ends: see
//!   `containers`), else fail loudly with the variable to set. A test never skips silently.
//! - **Isolation**: [`unique_name`] gives schema, topic, queue and stream names.
//!
//! Running the store suites against the in-memory reference implementation:
//!
//! ```
//! # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
//! use omnibox_core::memory::{MemoryDb, MemoryOutboxStore};
//!
//! omnibox_testing::outbox_store_conformance(|| async {
//!     (MemoryDb::new(), MemoryOutboxStore::new())
//! })
//! .await;
//! # });
//! ```
//!
//! A PostgreSQL adapter would return `(pool, store)` for a fresh schema named with
//! [`unique_name`] from its `make` closure instead.
#![cfg_attr(docsrs, feature(doc_cfg))]
#![forbid(unsafe_code)]
#![deny(missing_docs)]

mod broker;
mod check;
#[cfg(feature = "containers")]
#[cfg_attr(docsrs, doc(cfg(feature = "containers")))]
pub mod containers;
mod fixtures;
mod harness;
mod inbox;
mod outbox;
mod services;
mod store_checks;

pub use broker::{ConsumerChecks, RawMessage, consumer_conformance, publisher_conformance};
pub use fixtures::{SAMPLE_GROUP, SampleEvent, outbox_event};
pub use harness::FullStore;
pub use inbox::inbox_store_conformance;
pub use outbox::outbox_store_conformance;
pub use services::{
    AMQP_URL, DATABASE_URL, KAFKA_BOOTSTRAP_SERVERS, NATS_URL, ServiceError, amqp_url,
    kafka_bootstrap, nats_url, postgres_url, unique_name,
};

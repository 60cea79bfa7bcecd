//! In-memory database, stores and broker: the reference implementation of every contract,
//! used by unit tests, doctests and the conformance suites. No I/O.
//!
//! - [`MemoryDb`]: outbox and inbox tables, dead letters and a business key/value table,
//!   with serialised transactions ([`MemoryTx`]) that roll back when dropped uncommitted.
//! - [`MemoryOutboxStore`], [`MemoryInboxStore`]: every store capability trait.
//! - [`MemoryBroker`]: a [`crate::Publisher`] and [`MemoryConsumer`]s with acks, nacks,
//!   redelivery and failure injection.
//!
//! ```
//! use omnibox_core::memory::{MemoryDb, MemoryInboxStore};
//! use omnibox_core::model::InboxEvent;
//! use omnibox_core::store::{InsertEvents, Transactions};
//!
//! # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
//! let db = MemoryDb::new();
//! let inbox = MemoryInboxStore::new();
//! let msg = InboxEvent::builder("m-1", "billing", "orders", "order.placed")
//!     .payload(serde_json::json!({"total": 42}))
//!     .build()
//!     .unwrap();
//! let mut tx = db.begin().await.unwrap();
//! assert!(!inbox.insert(&mut tx, &msg).await.unwrap().is_duplicate());
//! assert!(inbox.insert(&mut tx, &msg).await.unwrap().is_duplicate());
//! db.commit(tx).await.unwrap();
//! # });
//! ```

mod broker;
mod consumer;
mod db;
mod inbox;
mod outbox;
mod store;
mod table;

pub use broker::{MemoryBroker, PublishedMessage};
pub use consumer::{MemoryAck, MemoryConsumer};
pub use db::{MemoryConn, MemoryDb, MemoryTx, truncate_micros};
pub use inbox::MemoryInboxStore;
pub use outbox::MemoryOutboxStore;
pub use store::MemoryStore;
pub use table::MemoryEvent;

#[cfg(test)]
mod tests;

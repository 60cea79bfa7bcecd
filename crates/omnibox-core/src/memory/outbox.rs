//! The outbox table of the in-memory database.
//!
//! Dedup key: `idempotency_key` (events without one never collide, except on their id).
//! Claims hand out only the head of each `(topic, partition_key)`.

use super::db::Tables;
use super::store::MemoryStore;
use super::table::{EventTable, MemoryEvent, sealed};
use crate::model::OutboxEvent;

/// The in-memory outbox store. See [`MemoryStore`] for the helpers.
///
/// ```
/// use omnibox_core::memory::{MemoryDb, MemoryOutboxStore};
/// use omnibox_core::model::{OutboxEvent, WorkerId};
/// use omnibox_core::store::{ClaimEvents, ClaimRequest, InsertEvents, Transactions};
///
/// # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
/// let db = MemoryDb::new();
/// let store = MemoryOutboxStore::new();
/// let event = OutboxEvent::builder("order", uuid::Uuid::now_v7(), "order.placed", "orders", "o-1")
///     .payload(serde_json::json!({"total": 42}))
///     .build()
///     .unwrap();
///
/// let mut tx = db.begin().await.unwrap();
/// store.insert(&mut tx, &event).await.unwrap();
/// tx.put("order:o-1", serde_json::json!("placed")).await; // the business change
/// db.commit(tx).await.unwrap();
///
/// let mut tx = db.begin().await.unwrap();
/// let worker = WorkerId::new("relay-1").unwrap();
/// let claimed = store.claim(&mut tx, &ClaimRequest::new(worker, 10)).await.unwrap();
/// db.commit(tx).await.unwrap();
/// assert_eq!(claimed.len(), 1);
/// # });
/// ```
pub type MemoryOutboxStore = MemoryStore<OutboxEvent>;

impl sealed::Sealed for OutboxEvent {
    fn table(t: &mut Tables) -> &mut EventTable<Self> {
        &mut t.outbox
    }

    fn same_dedup_key(&self, other: &Self) -> bool {
        match (&self.common.idempotency_key, &other.common.idempotency_key) {
            (Some(a), Some(b)) => a == b,
            _ => false,
        }
    }
}

impl MemoryEvent for OutboxEvent {}

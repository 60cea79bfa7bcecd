//! The inbox table of the in-memory database.
//!
//! Dedup key: `(message_id, consumer_group)`. The table is not partitioned, so a completed
//! sibling (same key, other id) cannot exist; the lookup still checks, as a partitioned
//! SQL table would.

use uuid::Uuid;

use super::db::{MemoryConn, Tables};
use super::store::MemoryStore;
use super::table::{EventTable, MemoryEvent, sealed, table};
use crate::error::StoreError;
use crate::model::{EventStatus, InboxEvent};
use crate::store::InboxLookup;

/// The in-memory inbox store. See [`MemoryStore`] for the helpers.
pub type MemoryInboxStore = MemoryStore<InboxEvent>;

impl sealed::Sealed for InboxEvent {
    fn table(t: &mut Tables) -> &mut EventTable<Self> {
        &mut t.inbox
    }

    fn same_dedup_key(&self, other: &Self) -> bool {
        self.message_id == other.message_id && self.consumer_group == other.consumer_group
    }
}

impl MemoryEvent for InboxEvent {}

impl InboxLookup for MemoryInboxStore {
    async fn find_message(
        &self,
        conn: &mut MemoryConn,
        message_id: &str,
        consumer_group: &str,
    ) -> Result<Option<InboxEvent>, StoreError> {
        Ok(conn
            .with(|t, _| {
                table::<InboxEvent>(t)
                    .rows
                    .values()
                    .filter(|e| e.message_id == message_id && e.consumer_group == consumer_group)
                    .max_by_key(|e| (e.common.created_at, e.common.id))
                    .cloned()
            })
            .await)
    }

    async fn has_completed_sibling(
        &self,
        conn: &mut MemoryConn,
        message_id: &str,
        consumer_group: &str,
        exclude: Uuid,
    ) -> Result<bool, StoreError> {
        Ok(conn
            .with(|t, _| {
                table::<InboxEvent>(t).rows.values().any(|e| {
                    e.message_id == message_id
                        && e.consumer_group == consumer_group
                        && e.common.id != exclude
                        && e.common.status == EventStatus::Completed
                })
            })
            .await)
    }

    /// The table is not partitioned: inserts dedup on `(message_id, consumer_group)`.
    fn dedup_key_is_unique(&self) -> bool {
        true
    }
}

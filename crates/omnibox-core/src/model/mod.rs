//! Domain models: outbox and inbox events, status, limits and validation.

mod common;
mod inbox;
pub mod limits;
mod outbox;
mod status;
pub mod validate;
mod worker;

use std::collections::BTreeMap;

pub use common::EventCommon;
pub use inbox::{InboxEvent, InboxEventBuilder, InboxRecord};
pub use limits::Limits;
pub use outbox::{OutboxEvent, OutboxEventBuilder, OutboxRecord};
pub use status::{EventStatus, UnknownStatus};
pub use worker::WorkerId;

use crate::error::ValidationError;

/// A JSON object payload (key order preserved, as on the wire).
pub type Payload = serde_json::Map<String, serde_json::Value>;

/// String headers (sorted by key).
pub type Headers = BTreeMap<String, String>;

/// Which table an event lives in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EventKind {
    /// The outbox.
    Outbox,
    /// The inbox.
    Inbox,
}

impl EventKind {
    /// `"outbox"` or `"inbox"`.
    pub fn as_str(self) -> &'static str {
        match self {
            EventKind::Outbox => "outbox",
            EventKind::Inbox => "inbox",
        }
    }
}

/// What the pipeline needs from any event kind.
pub trait Event: Clone + Send + Sync + std::fmt::Debug + 'static {
    /// The table kind.
    const KIND: EventKind;

    /// The shared fields.
    fn common(&self) -> &EventCommon;

    /// A copy with new shared fields, re-checking the invariants.
    fn with_common(&self, common: EventCommon, limits: &Limits) -> Result<Self, ValidationError>;

    /// `(topic, partition_key)` for events that are ordered per key (outbox), else `None`.
    fn ordering_key(&self) -> Option<(&str, &str)>;

    /// Where the event goes (outbox topic) or came from (inbox source); used for routing
    /// and bounded metric labels.
    fn route(&self) -> &str;

    /// The aggregate type (outbox events), else `None`.
    fn aggregate_type(&self) -> Option<&str> {
        None
    }

    /// The broker message id this event was received under (inbox events), else `None`.
    fn message_id(&self) -> Option<&str> {
        None
    }

    /// The consumer group that stored this event (inbox events), else `None`.
    fn consumer_group(&self) -> Option<&str> {
        None
    }

    /// The event id.
    fn id(&self) -> uuid::Uuid {
        self.common().id
    }
}

#[cfg(test)]
mod tests;

//! What handling one broker message did.

use uuid::Uuid;

/// The result of [`InboxRunner::process_one`](super::InboxRunner::process_one).
///
/// `acked == false` means the message was handed back (nack) for redelivery.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct ConsumeOutcome {
    /// The broker message id (absent only for a malformed message that carried none).
    pub message_id: Option<String>,
    /// The inbox row the message is stored as (absent for malformed messages and when the
    /// message was acknowledged before a storage failure).
    pub event_id: Option<Uuid>,
    /// Acknowledged (`false`: handed back for redelivery).
    pub acked: bool,
    /// The handler ran and the row completed (handled or skipped) in this call.
    pub handled: bool,
    /// The message had already completed for this consumer group; nothing ran.
    pub duplicate: bool,
    /// The message ended as a dead letter — malformed, or its row spent its last attempt
    /// (now or during an earlier delivery).
    pub dead_lettered: bool,
}

impl ConsumeOutcome {
    pub(crate) fn new(message_id: Option<String>, event_id: Option<Uuid>) -> Self {
        Self {
            message_id,
            event_id,
            acked: false,
            handled: false,
            duplicate: false,
            dead_lettered: false,
        }
    }
}

//! When the runner acknowledges a broker message: [`AckStrategy`] and [`CommitPolicy`].
//!
//! The full strategy × situation table is in the [module docs](crate::inbox).

/// When an at-least-once runner acknowledges.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum CommitPolicy {
    /// Acknowledge once the message is durably stored as an inbox row — completed, or
    /// pending with its failure recorded so a batch inbox processor retries it. Handler
    /// failures do not make the broker redeliver.
    #[default]
    OnPersist,
    /// Acknowledge only after the handler succeeded (or skipped) and its transaction
    /// committed; a failure is recorded on the row and the message is handed back for
    /// redelivery, until its attempts are spent (then it is dead-lettered and acknowledged).
    OnSuccess,
}

/// How the inbox runner trades delivery guarantees for simplicity.
///
/// Whatever the strategy, each message is stored under `(message_id, consumer_group)`, so
/// a redelivered message that already completed is acknowledged without running the
/// handler again: effects the handler makes **through the connection it is given** commit
/// exactly when the row completes (effectively once). Effects outside that transaction
/// (HTTP calls, other databases) are at-least-once. No strategy makes delivery itself
/// exactly-once.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum AckStrategy {
    /// Acknowledge as soon as the message is received, before storing or handling it; the
    /// runner never hands it back. A failure after the acknowledgement loses the broker's
    /// copy: a handler failure is still recorded on the row (so a batch inbox processor can
    /// retry it), but a storage failure loses the message.
    AtMostOnce,
    /// Acknowledge after storing (see [`CommitPolicy`]).
    AtLeastOnce(CommitPolicy),
    /// Store, lock, handle and complete in one transaction; acknowledge after it commits.
    /// A failure is recorded on the row in a second transaction and the message is handed
    /// back for redelivery; after the last attempt the row is failed and dead-lettered and
    /// the message acknowledged, so a poison message never loops.
    #[default]
    ExactlyOnceInbox,
}

impl AckStrategy {
    /// At-least-once, acknowledging once stored.
    pub const AT_LEAST_ONCE_ON_PERSIST: Self = Self::AtLeastOnce(CommitPolicy::OnPersist);
    /// At-least-once, acknowledging once handled.
    pub const AT_LEAST_ONCE_ON_SUCCESS: Self = Self::AtLeastOnce(CommitPolicy::OnSuccess);

    /// `true` when the message is acknowledged before anything else happens.
    pub fn acks_first(self) -> bool {
        matches!(self, AckStrategy::AtMostOnce)
    }

    /// `true` when a row that exists and is durable is enough to acknowledge — even when
    /// the handler failed or another worker holds the row's lease.
    pub fn acks_when_persisted(self) -> bool {
        matches!(
            self,
            AckStrategy::AtMostOnce | AckStrategy::AtLeastOnce(CommitPolicy::OnPersist)
        )
    }

    /// A stable label for logs.
    pub fn as_str(self) -> &'static str {
        match self {
            AckStrategy::AtMostOnce => "at_most_once",
            AckStrategy::AtLeastOnce(CommitPolicy::OnPersist) => "at_least_once/on_persist",
            AckStrategy::AtLeastOnce(CommitPolicy::OnSuccess) => "at_least_once/on_success",
            AckStrategy::ExactlyOnceInbox => "exactly_once_inbox",
        }
    }
}

impl std::fmt::Display for AckStrategy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

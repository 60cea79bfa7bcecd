//! Error types. One `#[non_exhaustive]` enum per concern, all convertible into [`Error`].

use std::error::Error as StdError;

use uuid::Uuid;

use crate::model::EventStatus;

/// A boxed error source that callers can downcast.
pub type BoxError = Box<dyn StdError + Send + Sync + 'static>;

/// A field or invariant of an event (or of a value going into one) is invalid.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ValidationError {
    /// A required text field is empty or only whitespace.
    #[error("`{field}` must not be blank")]
    Blank {
        /// The field.
        field: &'static str,
    },
    /// A text field is longer than its limit.
    #[error("`{field}` is {actual} characters long, the limit is {max}")]
    TooLong {
        /// The field.
        field: &'static str,
        /// The limit.
        max: usize,
        /// The actual length.
        actual: usize,
    },
    /// A text field holds a character it may not hold.
    #[error("`{field}` contains a forbidden character: {reason}")]
    ForbiddenCharacter {
        /// The field.
        field: &'static str,
        /// What is wrong.
        reason: &'static str,
    },
    /// The payload is not a JSON object.
    #[error("the payload must be a JSON object, got {found}")]
    PayloadNotObject {
        /// The JSON type that was found.
        found: &'static str,
    },
    /// The payload is an empty object.
    #[error("the payload must not be empty")]
    PayloadEmpty,
    /// The payload could not be turned into JSON.
    #[error("the payload is not JSON-serialisable: {0}")]
    PayloadNotSerializable(String),
    /// The payload's compact JSON encoding is larger than the limit.
    #[error("the payload is {actual} bytes, the limit is {max}")]
    PayloadTooLarge {
        /// The limit in bytes.
        max: usize,
        /// The actual size in bytes.
        actual: usize,
    },
    /// Two header keys are equal when compared without case.
    #[error("header `{key}` appears twice (keys are compared without case)")]
    DuplicateHeader {
        /// The repeated key.
        key: String,
    },
    /// More headers than allowed.
    #[error("{actual} headers, the limit is {max}")]
    TooManyHeaders {
        /// The limit.
        max: usize,
        /// The actual count.
        actual: usize,
    },
    /// `scheduled_at` lies further before `created_at` than the allowed skew.
    #[error("scheduled_at is {seconds_before}s before created_at, the allowed skew is {skew}s")]
    ScheduledTooEarly {
        /// How far before, in seconds.
        seconds_before: i64,
        /// The allowed skew, in seconds.
        skew: i64,
    },
    /// `scheduled_at` lies further in the future than allowed.
    #[error("scheduled_at is {seconds_after}s after created_at, the limit is {max}s")]
    ScheduledTooFar {
        /// How far after, in seconds.
        seconds_after: i64,
        /// The limit, in seconds.
        max: i64,
    },
    /// `status` and `completed_at` disagree.
    #[error("status {status} and completed_at disagree: {reason}")]
    CompletionInconsistent {
        /// The status.
        status: EventStatus,
        /// What is wrong.
        reason: &'static str,
    },
    /// `attempts_made`, `max_attempts` and `status` disagree.
    #[error(
        "attempts are inconsistent: {reason} (attempts_made={attempts_made}, max_attempts={max_attempts}, status={status})"
    )]
    AttemptsInconsistent {
        /// Failed attempts so far.
        attempts_made: u32,
        /// The budget.
        max_attempts: u32,
        /// The status.
        status: EventStatus,
        /// What is wrong.
        reason: &'static str,
    },
    /// `locked_at` and `locked_by` are not both set or both empty, or a non-pending event is locked.
    #[error("lock fields are inconsistent: {reason}")]
    LockInconsistent {
        /// What is wrong.
        reason: &'static str,
    },
    /// A numeric setting is out of range.
    #[error("`{field}` is out of range: {reason}")]
    OutOfRange {
        /// The setting.
        field: &'static str,
        /// What is wrong.
        reason: String,
    },
}

/// A domain rule refused a state transition (lock, complete, fail, ...).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DomainError {
    /// The resulting event would be invalid.
    #[error(transparent)]
    Validation(#[from] ValidationError),
    /// The event is not in a status that allows the transition.
    #[error("event {id} is {status}, expected one of {expected:?}")]
    InvalidState {
        /// The event.
        id: Uuid,
        /// Its status.
        status: EventStatus,
        /// The statuses the transition accepts.
        expected: &'static [EventStatus],
    },
    /// The event is not locked.
    #[error("event {id} is not locked")]
    NotLocked {
        /// The event.
        id: Uuid,
    },
    /// The event is locked by another worker.
    #[error("event {id} is locked by `{locked_by}`, not by `{worker}`")]
    LockedByAnother {
        /// The event.
        id: Uuid,
        /// The lock owner.
        locked_by: String,
        /// The worker that tried.
        worker: String,
    },
    /// The event is already locked.
    #[error("event {id} is already locked by `{locked_by}`")]
    AlreadyLocked {
        /// The event.
        id: Uuid,
        /// The lock owner.
        locked_by: String,
    },
    /// A time argument is before the event's creation or schedule.
    #[error("event {id}: {reason}")]
    InvalidTime {
        /// The event.
        id: Uuid,
        /// What is wrong.
        reason: &'static str,
    },
    /// No attempt is left to count.
    #[error("event {id} has no attempt left ({max_attempts} made)")]
    AttemptsExhausted {
        /// The event.
        id: Uuid,
        /// The budget.
        max_attempts: u32,
    },
}

/// Whether a failure should spend one of the event's attempts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FailureKind {
    /// The environment failed (broker down, timeout, database restart): retry without
    /// counting an attempt.
    Transient,
    /// The event itself was refused (rejected record, handler error): count an attempt.
    Permanent,
}

impl FailureKind {
    /// `true` for [`FailureKind::Permanent`].
    pub fn counts_attempt(self) -> bool {
        matches!(self, FailureKind::Permanent)
    }

    /// A stable label for metrics and logs.
    pub fn as_str(self) -> &'static str {
        match self {
            FailureKind::Transient => "transient",
            FailureKind::Permanent => "permanent",
        }
    }
}

/// A storage operation failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// The database could not be reached or the connection broke (transient).
    #[error("storage connection failed: {message}")]
    Connection {
        /// What happened (no secrets).
        message: String,
        /// The client error.
        #[source]
        source: Option<BoxError>,
    },
    /// A statement timed out or was cancelled (transient).
    #[error("storage operation timed out: {message}")]
    Timeout {
        /// What happened.
        message: String,
        /// The client error.
        #[source]
        source: Option<BoxError>,
    },
    /// The database refused the statement because of concurrent work (serialization
    /// failure, deadlock, lock not available); retrying may succeed (transient).
    #[error("storage contention: {message}")]
    Contention {
        /// What happened.
        message: String,
        /// The client error.
        #[source]
        source: Option<BoxError>,
    },
    /// The database refused a value it cannot store (PostgreSQL SQLSTATE class 22 — e.g. a
    /// `\u0000` in JSON, a NUL byte in text, a value too long — or a NOT NULL / CHECK
    /// violation). Permanent: the same data is refused on every retry, so it must be
    /// dead-lettered, not retried as if the database were down.
    #[error("storage refused the data: {message}")]
    Data {
        /// What happened.
        message: String,
        /// The client error.
        #[source]
        source: Option<BoxError>,
    },
    /// A constraint was violated.
    #[error("storage integrity violation: {message}")]
    Integrity {
        /// What happened.
        message: String,
        /// The client error.
        #[source]
        source: Option<BoxError>,
    },
    /// A table or schema name is not a valid SQL identifier.
    #[error("invalid SQL identifier {name:?}: {reason}")]
    InvalidIdentifier {
        /// The rejected name.
        name: String,
        /// Why it was rejected.
        reason: &'static str,
    },
    /// A row read from storage does not form a valid event.
    #[error("stored row {id} is invalid: {source}")]
    InvalidRow {
        /// The row's id.
        id: Uuid,
        /// The violated rule.
        #[source]
        source: ValidationError,
    },
    /// A request to the store is invalid (limit of zero, duplicate ids, ...).
    #[error("invalid store request: {0}")]
    InvalidRequest(String),
    /// The transaction's isolation level cannot keep the store's guarantee: a keyed insert
    /// (idempotency key, inbox `(message_id, consumer_group)`) into a table that dedups by
    /// lock-then-check instead of a unique index is only correct at READ COMMITTED, where
    /// the check sees rows committed while it waited for the lock. Permanent: run that
    /// transaction at READ COMMITTED.
    #[error(
        "a keyed insert into {table} needs READ COMMITTED, but the transaction runs at {level}: \
         {table} dedups with a lock and a check, which cannot see rows committed after a \
         {level} snapshot; start the transaction with `BEGIN ISOLATION LEVEL READ COMMITTED` \
         (or `SET TRANSACTION ISOLATION LEVEL READ COMMITTED` as its first statement)"
    )]
    UnsupportedIsolation {
        /// The table (qualified name).
        table: String,
        /// The transaction's isolation level, as the database reports it.
        level: String,
    },
    /// Any other storage failure.
    #[error("storage operation `{operation}` failed: {message}")]
    Other {
        /// The operation.
        operation: &'static str,
        /// What happened.
        message: String,
        /// The client error.
        #[source]
        source: Option<BoxError>,
    },
}

impl StoreError {
    /// Whether retrying later may succeed without any change to the event.
    pub fn kind(&self) -> FailureKind {
        match self {
            StoreError::Connection { .. }
            | StoreError::Timeout { .. }
            | StoreError::Contention { .. } => FailureKind::Transient,
            _ => FailureKind::Permanent,
        }
    }
}

/// Publishing an event to a broker failed.
#[derive(Debug, thiserror::Error)]
#[error("{kind:?} publish failure: {message}")]
pub struct PublishError {
    /// Transient (broker unreachable, timeout, queue full) or permanent (rejected).
    pub kind: FailureKind,
    /// What happened (no payloads, no secrets).
    pub message: String,
    /// The client error.
    #[source]
    pub source: Option<BoxError>,
}

impl PublishError {
    /// A transient failure: the event is retried without spending an attempt.
    pub fn transient(message: impl Into<String>) -> Self {
        Self {
            kind: FailureKind::Transient,
            message: message.into(),
            source: None,
        }
    }

    /// A permanent failure: the broker refused this event; an attempt is spent.
    pub fn permanent(message: impl Into<String>) -> Self {
        Self {
            kind: FailureKind::Permanent,
            message: message.into(),
            source: None,
        }
    }

    /// Attach the client error.
    pub fn with_source(mut self, source: impl Into<BoxError>) -> Self {
        self.source = Some(source.into());
        self
    }
}

/// Receiving from, acknowledging to or connecting a consumer failed.
#[derive(Debug, thiserror::Error)]
#[error("{kind:?} consumer failure: {message}")]
pub struct ConsumeError {
    /// Transient (connection lost, timeout) or permanent (unknown queue, not authorised).
    pub kind: FailureKind,
    /// What happened.
    pub message: String,
    /// The client error.
    #[source]
    pub source: Option<BoxError>,
}

impl ConsumeError {
    /// A transient failure.
    pub fn transient(message: impl Into<String>) -> Self {
        Self {
            kind: FailureKind::Transient,
            message: message.into(),
            source: None,
        }
    }

    /// A permanent failure.
    pub fn permanent(message: impl Into<String>) -> Self {
        Self {
            kind: FailureKind::Permanent,
            message: message.into(),
            source: None,
        }
    }

    /// Attach the client error.
    pub fn with_source(mut self, source: impl Into<BoxError>) -> Self {
        self.source = Some(source.into());
        self
    }
}

/// A broker message could not be turned into an inbox message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum EnvelopeError {
    /// The body is empty.
    #[error("the message body is empty")]
    EmptyBody,
    /// The body is not valid JSON.
    #[error("the message body is not valid JSON: {0}")]
    InvalidJson(String),
    /// The body (or its inner `payload`) is not a JSON object.
    #[error("the message payload must be a JSON object, got {found}")]
    NotAnObject {
        /// The JSON type found.
        found: &'static str,
    },
    /// The message carries no stable id (no `message_id` / `event_id` header and no broker
    /// id that survives redelivery), so it cannot be deduplicated.
    #[error("the message has no stable id (set a `message_id` header or property)")]
    MissingMessageId,
    /// A metadata field has the wrong JSON type.
    #[error("envelope field `{field}` must be a string")]
    FieldNotString {
        /// The field.
        field: &'static str,
    },
    /// The message would not form a valid inbox event.
    #[error(transparent)]
    Invalid(#[from] ValidationError),
}

/// A handler failed.
///
/// **Transient or counted — the rule.** A failure that may pass with time and no change to
/// the message (database or broker unreachable, a timeout, a deadlock or serialization
/// failure) is [`transient`](Self::transient): retried without spending an attempt. One
/// that will recur on every try (refused data, a violated constraint, a payload that does
/// not decode, a bug) is [`permanent`](Self::permanent): it spends an attempt and, once
/// the budget is spent, ends as a dead letter. Calling every error transient makes a
/// deterministic failure retry forever and never reach the dead letters.
///
/// Convert, don't stringify: `From<StoreError>` keeps the store's classification and the
/// source error, and `omnibox_postgres::handler_error` classifies a `sqlx::Error`
/// (`.map_err(handler_error)?`).
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct HandlerError {
    /// Transient (retry without counting) or permanent (count an attempt).
    pub kind: FailureKind,
    /// What happened; stored as the event's `last_error` (truncated).
    pub message: String,
    /// The underlying error.
    #[source]
    pub source: Option<BoxError>,
}

impl HandlerError {
    /// A permanent failure (spends an attempt).
    pub fn permanent(message: impl Into<String>) -> Self {
        Self {
            kind: FailureKind::Permanent,
            message: message.into(),
            source: None,
        }
    }

    /// A transient failure (retried without spending an attempt).
    pub fn transient(message: impl Into<String>) -> Self {
        Self {
            kind: FailureKind::Transient,
            message: message.into(),
            source: None,
        }
    }

    /// Wrap any error as a permanent failure, keeping it as the source.
    pub fn from_error(err: impl Into<BoxError>) -> Self {
        let source = err.into();
        Self {
            kind: FailureKind::Permanent,
            message: source.to_string(),
            source: Some(source),
        }
    }
}

impl From<StoreError> for HandlerError {
    fn from(err: StoreError) -> Self {
        Self {
            kind: err.kind(),
            message: err.to_string(),
            source: Some(Box::new(err)),
        }
    }
}

impl From<serde_json::Error> for HandlerError {
    fn from(err: serde_json::Error) -> Self {
        Self::from_error(err)
    }
}

/// The top-level error of omnibox.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// Invalid input.
    #[error(transparent)]
    Validation(#[from] ValidationError),
    /// A refused state transition.
    #[error(transparent)]
    Domain(#[from] DomainError),
    /// Storage failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// Publishing failed.
    #[error(transparent)]
    Publish(#[from] PublishError),
    /// Consuming failed.
    #[error(transparent)]
    Consume(#[from] ConsumeError),
    /// A message could not be parsed.
    #[error(transparent)]
    Envelope(#[from] EnvelopeError),
    /// A configuration value is invalid.
    #[error("invalid configuration: {0}")]
    Config(String),
}

//! Validation limits (omni-box's defaults).

use chrono::TimeDelta;

use crate::error::ValidationError;

/// Longest `event_type`.
pub const EVENT_TYPE_MAX: usize = 100;
/// Longest `aggregate_type`.
pub const AGGREGATE_TYPE_MAX: usize = 50;
/// Longest topic, partition key, source, message id, consumer group and worker id.
pub const NAME_MAX: usize = 255;
/// Longest trace, correlation and causation id.
pub const TRACE_ID_MAX: usize = 64;
/// Longest idempotency key.
pub const IDEMPOTENCY_KEY_MAX: usize = 128;
/// Longest schema version.
pub const SCHEMA_VERSION_MAX: usize = 50;
/// Longest `last_error`, in bytes (the column holds 2000 characters).
pub const LAST_ERROR_MAX_BYTES: usize = 2000;
/// Suffix appended to a truncated error.
pub const TRUNCATION_SUFFIX: &str = "... [TRUNCATED]";

/// Limits applied when events are built or transitions are made.
///
/// `Default` gives omni-box 0.3.1's values, so tables shared with Python services accept
/// the same rows.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Limits {
    /// Attempt budget of new events (default 6).
    pub max_attempts: u32,
    /// Largest compact-JSON payload, in bytes (default 1 000 000).
    pub payload_max_bytes: usize,
    /// Most headers (default 100).
    pub headers_max_count: usize,
    /// Longest header key, in characters (default 64).
    pub header_key_max_len: usize,
    /// Longest header value, in characters (default 512).
    pub header_value_max_len: usize,
    /// How far `scheduled_at` may lie before `created_at` (default 60 s).
    pub schedule_skew: TimeDelta,
    /// How far `scheduled_at` may lie after `created_at` (default 365 days).
    pub schedule_max_future: TimeDelta,
    /// Longest stored `last_error`, in bytes (default 2000).
    pub last_error_max_bytes: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_attempts: 6,
            payload_max_bytes: 1_000_000,
            headers_max_count: 100,
            header_key_max_len: 64,
            header_value_max_len: 512,
            schedule_skew: TimeDelta::seconds(60),
            schedule_max_future: TimeDelta::days(365),
            last_error_max_bytes: LAST_ERROR_MAX_BYTES,
        }
    }
}

impl Limits {
    /// Set the attempt budget of new events.
    pub fn max_attempts(mut self, n: u32) -> Self {
        self.max_attempts = n;
        self
    }

    /// Set the payload size limit.
    pub fn payload_max_bytes(mut self, n: usize) -> Self {
        self.payload_max_bytes = n;
        self
    }

    /// Set the header count limit.
    pub fn headers_max_count(mut self, n: usize) -> Self {
        self.headers_max_count = n;
        self
    }

    /// Set the schedule skew.
    pub fn schedule_skew(mut self, d: std::time::Duration) -> Self {
        self.schedule_skew = crate::clock::delta(d);
        self
    }

    /// Set how far in the future an event may be scheduled.
    pub fn schedule_max_future(mut self, d: std::time::Duration) -> Self {
        self.schedule_max_future = crate::clock::delta(d);
        self
    }

    /// Check that the limits themselves make sense.
    pub fn validate(&self) -> Result<(), ValidationError> {
        let bad = |field, reason: &str| {
            Err(ValidationError::OutOfRange {
                field,
                reason: reason.to_owned(),
            })
        };
        if self.max_attempts == 0 {
            return bad("max_attempts", "must be at least 1");
        }
        if self.payload_max_bytes == 0 {
            return bad("payload_max_bytes", "must be at least 1");
        }
        if self.header_key_max_len == 0 || self.header_value_max_len == 0 {
            return bad("header limits", "must be at least 1");
        }
        if self.schedule_skew < TimeDelta::zero() {
            return bad("schedule_skew", "must not be negative");
        }
        if self.schedule_max_future < TimeDelta::seconds(1) {
            return bad("schedule_max_future", "must be at least 1 s");
        }
        if self.last_error_max_bytes <= TRUNCATION_SUFFIX.len() {
            return bad("last_error_max_bytes", "must exceed the truncation suffix");
        }
        Ok(())
    }
}

//! Fields every event kind shares, and the invariants that tie them together.

use chrono::{DateTime, TimeDelta, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::limits::Limits;
use super::{EventStatus, Headers, Payload};
use crate::error::ValidationError;

/// The columns shared by outbox and inbox events (omni-box's `EventMixin`, minus
/// `updated_at`, which only the database keeps).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct EventCommon {
    /// Row id. New events get a time-ordered UUIDv7 (the column is a plain `UUID`).
    pub id: Uuid,
    /// Event type, ≤100 characters.
    pub event_type: String,
    /// Non-empty JSON object.
    pub payload: Payload,
    /// Validated string headers; `None` when empty.
    pub headers: Option<Headers>,
    /// Trace id, ≤64.
    pub trace_id: Option<String>,
    /// Idempotency key, ≤128 (outbox dedup).
    pub idempotency_key: Option<String>,
    /// Correlation id, ≤64.
    pub correlation_id: Option<String>,
    /// Causation id, ≤64.
    pub causation_id: Option<String>,
    /// Payload schema version, ≤50.
    pub schema_version: Option<String>,
    /// Status.
    pub status: EventStatus,
    /// Counted (failed) attempts so far.
    pub attempts_made: u32,
    /// Attempt budget.
    pub max_attempts: u32,
    /// Last failure, ≤2000 bytes.
    pub last_error: Option<String>,
    /// Creation time.
    pub created_at: DateTime<Utc>,
    /// Not processed before this time.
    pub scheduled_at: DateTime<Utc>,
    /// Set exactly when completed.
    pub completed_at: Option<DateTime<Utc>>,
    /// Lease start; doubles as the lease's fencing token.
    pub locked_at: Option<DateTime<Utc>>,
    /// Lease holder.
    pub locked_by: Option<String>,
}

impl EventCommon {
    /// Fresh pending fields with a new UUIDv7, created and scheduled `now`.
    pub fn new(
        event_type: String,
        payload: Payload,
        now: DateTime<Utc>,
        max_attempts: u32,
    ) -> Self {
        Self {
            id: Uuid::now_v7(),
            event_type,
            payload,
            headers: None,
            trace_id: None,
            idempotency_key: None,
            correlation_id: None,
            causation_id: None,
            schema_version: None,
            status: EventStatus::Pending,
            attempts_made: 0,
            max_attempts,
            last_error: None,
            created_at: now,
            scheduled_at: now,
            completed_at: None,
            locked_at: None,
            locked_by: None,
        }
    }

    /// `true` when a lease is held.
    pub fn is_locked(&self) -> bool {
        self.locked_at.is_some()
    }

    /// `true` when pending with attempts left.
    pub fn can_retry(&self) -> bool {
        self.status == EventStatus::Pending && self.attempts_made < self.max_attempts
    }

    /// Attempts left (0 unless pending).
    pub fn attempts_left(&self) -> u32 {
        if self.status == EventStatus::Pending {
            self.max_attempts.saturating_sub(self.attempts_made)
        } else {
            0
        }
    }

    /// Check text fields, headers and the payload. With `trusted_payload` the payload
    /// is only checked for being a non-empty object (rows read back from storage).
    pub fn check_fields(
        &mut self,
        limits: &Limits,
        trusted_payload: bool,
    ) -> Result<(), ValidationError> {
        use super::limits::*;
        use super::validate;
        self.event_type = validate::required("event_type", &self.event_type, EVENT_TYPE_MAX)?;
        self.trace_id = validate::optional("trace_id", self.trace_id.as_deref(), TRACE_ID_MAX)?;
        self.idempotency_key = validate::optional(
            "idempotency_key",
            self.idempotency_key.as_deref(),
            IDEMPOTENCY_KEY_MAX,
        )?;
        self.correlation_id = validate::optional(
            "correlation_id",
            self.correlation_id.as_deref(),
            TRACE_ID_MAX,
        )?;
        self.causation_id =
            validate::optional("causation_id", self.causation_id.as_deref(), TRACE_ID_MAX)?;
        self.schema_version = validate::optional(
            "schema_version",
            self.schema_version.as_deref(),
            SCHEMA_VERSION_MAX,
        )?;
        self.locked_by = validate::optional("locked_by", self.locked_by.as_deref(), NAME_MAX)?;
        self.headers = validate::headers(self.headers.take(), limits)?;
        if trusted_payload {
            if self.payload.is_empty() {
                return Err(ValidationError::PayloadEmpty);
            }
        } else {
            let p = std::mem::take(&mut self.payload);
            self.payload = validate::payload(serde_json::Value::Object(p), limits)?;
        }
        if let Some(e) = &self.last_error
            && e.len() > limits.last_error_max_bytes
        {
            self.last_error = Some(validate::truncate_error(e, limits.last_error_max_bytes));
        }
        Ok(())
    }

    /// Check the cross-field invariants: schedule window, completion, attempts, lock.
    pub fn check_invariants(&self, limits: &Limits) -> Result<(), ValidationError> {
        if self.max_attempts == 0 {
            return Err(ValidationError::OutOfRange {
                field: "max_attempts",
                reason: "must be at least 1".into(),
            });
        }
        let delta = self.scheduled_at - self.created_at;
        if delta < -limits.schedule_skew {
            return Err(ValidationError::ScheduledTooEarly {
                seconds_before: -delta.num_seconds(),
                skew: limits.schedule_skew.num_seconds(),
            });
        }
        if delta > limits.schedule_max_future {
            return Err(ValidationError::ScheduledTooFar {
                seconds_after: delta.num_seconds(),
                max: limits.schedule_max_future.num_seconds(),
            });
        }
        match (self.status, self.completed_at) {
            (EventStatus::Completed, None) => {
                return Err(ValidationError::CompletionInconsistent {
                    status: self.status,
                    reason: "a completed event needs completed_at",
                });
            }
            (EventStatus::Completed, Some(done)) => {
                let tolerance = TimeDelta::seconds(1);
                if done < self.created_at - tolerance || done < self.scheduled_at - tolerance {
                    return Err(ValidationError::CompletionInconsistent {
                        status: self.status,
                        reason: "completed_at is before created_at or scheduled_at",
                    });
                }
            }
            (_, Some(_)) => {
                return Err(ValidationError::CompletionInconsistent {
                    status: self.status,
                    reason: "only a completed event has completed_at",
                });
            }
            (_, None) => {}
        }
        let attempts = |reason| ValidationError::AttemptsInconsistent {
            attempts_made: self.attempts_made,
            max_attempts: self.max_attempts,
            status: self.status,
            reason,
        };
        if self.attempts_made > self.max_attempts {
            return Err(attempts("attempts_made exceeds max_attempts"));
        }
        match self.status {
            EventStatus::Failed if self.attempts_made != self.max_attempts => {
                return Err(attempts("a failed event has spent every attempt"));
            }
            EventStatus::Pending if self.attempts_made >= self.max_attempts => {
                return Err(attempts("a pending event has an attempt left"));
            }
            _ => {}
        }
        match (&self.locked_at, &self.locked_by) {
            (Some(_), None) | (None, Some(_)) => {
                return Err(ValidationError::LockInconsistent {
                    reason: "locked_at and locked_by must be set together",
                });
            }
            (Some(_), Some(_)) if self.status != EventStatus::Pending => {
                return Err(ValidationError::LockInconsistent {
                    reason: "only a pending event can be locked",
                });
            }
            _ => {}
        }
        Ok(())
    }
}

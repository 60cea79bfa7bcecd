//! Domain rules: pure state transitions on events.
//!
//! Each transition takes the event and returns a new, re-validated event; nothing here
//! touches storage. Stores implement the same rules in SQL; the in-memory store calls these
//! functions directly, and the conformance suite holds the SQL stores to the same results.

use chrono::{DateTime, TimeDelta, Utc};

use crate::error::{DomainError, ValidationError};
use crate::model::validate::truncate_error;
use crate::model::{Event, EventStatus, Limits, WorkerId};

const PENDING: &[EventStatus] = &[EventStatus::Pending];

/// Default lease: a claimed event whose lease is older than this may be taken over.
pub const DEFAULT_LEASE_TTL: TimeDelta = TimeDelta::seconds(300);

/// Stateless rule book; holds only the limits it validates with.
#[derive(Debug, Clone, Default)]
pub struct Domain {
    limits: Limits,
}

impl Domain {
    /// Rules with these limits.
    pub fn new(limits: Limits) -> Result<Self, ValidationError> {
        limits.validate()?;
        Ok(Self { limits })
    }

    /// The limits.
    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    /// `true` when the event's lease started more than `ttl` before `now`.
    pub fn is_lease_stale<E: Event>(&self, event: &E, now: DateTime<Utc>, ttl: TimeDelta) -> bool {
        match event.common().locked_at {
            Some(at) => now - at > ttl,
            None => false,
        }
    }

    fn require_pending<E: Event>(event: &E) -> Result<(), DomainError> {
        let c = event.common();
        if c.status != EventStatus::Pending {
            return Err(DomainError::InvalidState {
                id: c.id,
                status: c.status,
                expected: PENDING,
            });
        }
        Ok(())
    }

    /// Fail unless `worker` holds the event's lease.
    pub fn assert_locked_by<E: Event>(
        &self,
        event: &E,
        worker: &WorkerId,
    ) -> Result<(), DomainError> {
        let c = event.common();
        match &c.locked_by {
            None => Err(DomainError::NotLocked { id: c.id }),
            Some(owner) if owner != worker.as_str() => Err(DomainError::LockedByAnother {
                id: c.id,
                locked_by: owner.clone(),
                worker: worker.to_string(),
            }),
            Some(_) => Ok(()),
        }
    }

    /// Take the lease on an unlocked pending event.
    pub fn lock<E: Event>(
        &self,
        event: &E,
        worker: &WorkerId,
        now: DateTime<Utc>,
    ) -> Result<E, DomainError> {
        Self::require_pending(event)?;
        let c = event.common();
        if let Some(owner) = &c.locked_by {
            return Err(DomainError::AlreadyLocked {
                id: c.id,
                locked_by: owner.clone(),
            });
        }
        let mut next = c.clone();
        next.locked_at = Some(now);
        next.locked_by = Some(worker.to_string());
        Ok(event.with_common(next, &self.limits)?)
    }

    /// Move the lease start forward (the holder is still working).
    pub fn refresh<E: Event>(
        &self,
        event: &E,
        worker: &WorkerId,
        now: DateTime<Utc>,
    ) -> Result<E, DomainError> {
        Self::require_pending(event)?;
        self.assert_locked_by(event, worker)?;
        let mut next = event.common().clone();
        next.locked_at = Some(now);
        Ok(event.with_common(next, &self.limits)?)
    }

    /// Give the lease back without spending an attempt.
    pub fn unlock<E: Event>(&self, event: &E, worker: &WorkerId) -> Result<E, DomainError> {
        Self::require_pending(event)?;
        self.assert_locked_by(event, worker)?;
        let mut next = event.common().clone();
        next.locked_at = None;
        next.locked_by = None;
        Ok(event.with_common(next, &self.limits)?)
    }

    /// Clear anyone's lease (operator action), recording the reason.
    pub fn force_unlock<E: Event>(&self, event: &E, reason: &str) -> Result<E, DomainError> {
        let c = event.common();
        if c.locked_at.is_none() {
            return Err(DomainError::NotLocked { id: c.id });
        }
        let reason = crate::model::validate::required("reason", reason, 255)?;
        let mut next = c.clone();
        next.locked_at = None;
        next.locked_by = None;
        next.last_error = Some(format!("Administrative force unlock: {reason}"));
        Ok(event.with_common(next, &self.limits)?)
    }

    /// Mark the event completed at `now` (the lease holder only).
    pub fn complete<E: Event>(
        &self,
        event: &E,
        worker: &WorkerId,
        now: DateTime<Utc>,
    ) -> Result<E, DomainError> {
        Self::require_pending(event)?;
        self.assert_locked_by(event, worker)?;
        let c = event.common();
        if now < c.created_at || now < c.scheduled_at {
            return Err(DomainError::InvalidTime {
                id: c.id,
                reason: "completed_at is before created_at or scheduled_at",
            });
        }
        let mut next = c.clone();
        next.status = EventStatus::Completed;
        next.completed_at = Some(now);
        next.locked_at = None;
        next.locked_by = None;
        Ok(event.with_common(next, &self.limits)?)
    }

    /// Record a failure (the lease holder only). A counted failure spends an attempt and
    /// makes the event `failed` when the budget is spent; `retry_at` (clamped into the
    /// event's schedule window) becomes the new `scheduled_at`.
    pub fn fail<E: Event>(
        &self,
        event: &E,
        worker: &WorkerId,
        error: &str,
        counted: bool,
        retry_at: Option<DateTime<Utc>>,
    ) -> Result<E, DomainError> {
        Self::require_pending(event)?;
        self.assert_locked_by(event, worker)?;
        self.apply_failure(event, error, counted, retry_at)
    }

    /// The failure rule itself, without the lease check (used by stale-lease recovery).
    pub fn apply_failure<E: Event>(
        &self,
        event: &E,
        error: &str,
        counted: bool,
        retry_at: Option<DateTime<Utc>>,
    ) -> Result<E, DomainError> {
        let c = event.common();
        let attempts = c.attempts_made + u32::from(counted);
        if attempts > c.max_attempts {
            return Err(DomainError::AttemptsExhausted {
                id: c.id,
                max_attempts: c.max_attempts,
            });
        }
        let mut next = c.clone();
        next.attempts_made = attempts;
        next.status = if attempts >= c.max_attempts {
            EventStatus::Failed
        } else {
            EventStatus::Pending
        };
        next.last_error = Some(truncate_error(error, self.limits.last_error_max_bytes));
        next.locked_at = None;
        next.locked_by = None;
        if let Some(at) = retry_at {
            next.scheduled_at = self.clamp_schedule(c.created_at, at);
        }
        Ok(event.with_common(next, &self.limits)?)
    }

    /// Keep a retry time inside `[created_at, created_at + max_future]`, so a far retry can
    /// never produce a row that later fails validation.
    pub fn clamp_schedule(&self, created_at: DateTime<Utc>, at: DateTime<Utc>) -> DateTime<Utc> {
        at.max(created_at)
            .min(created_at + self.limits.schedule_max_future)
    }

    /// Bring a terminally failed event back to pending with a fresh budget.
    pub fn requeue<E: Event>(&self, event: &E, now: DateTime<Utc>) -> Result<E, DomainError> {
        let c = event.common();
        if c.status != EventStatus::Failed {
            return Err(DomainError::InvalidState {
                id: c.id,
                status: c.status,
                expected: &[EventStatus::Failed],
            });
        }
        let mut next = c.clone();
        next.status = EventStatus::Pending;
        next.attempts_made = 0;
        next.last_error = None;
        next.scheduled_at = self.clamp_schedule(c.created_at, now);
        Ok(event.with_common(next, &self.limits)?)
    }
}

/// The `last_error` written when an expired lease is recovered; the attempt counts, so a
/// row that keeps crashing its worker ends `failed` instead of looping.
pub fn lease_expired_error(previous_owner: &str) -> String {
    format!("lease expired: worker `{previous_owner}` did not finish in time")
}

#[cfg(test)]
mod tests;

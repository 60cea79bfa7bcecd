//! The in-memory store: every capability trait of [`crate::store`] on a [`MemoryConn`].

use std::marker::PhantomData;

use chrono::{DateTime, TimeDelta, Utc};
use uuid::Uuid;

use super::db::MemoryConn;
use super::table::{EventTable, MemoryEvent, domain_err, table};
use crate::domain::Domain;
use crate::error::{StoreError, ValidationError};
use crate::model::{Limits, WorkerId};
use crate::store::{
    Backlog, BacklogStats, ClaimEvents, ClaimRequest, CleanupCompleted, DeadLetter,
    DeadLetterStore, EventStore, FetchPending, Filters, InsertEvents, Inserted, LockEvent,
    LockOutcome, RefreshLeases, ReleaseStale, Savepoints, SettleEvents, SettleReport, Settlement,
    StaleReport,
};

/// An in-memory event store for kind `E`; use the aliases [`super::MemoryOutboxStore`] and
/// [`super::MemoryInboxStore`]. A cheap configuration value (its [`Limits`]); the data lives
/// in the [`super::MemoryDb`] behind the connection each call takes.
///
/// It follows every documented contract of the store traits and is the reference the
/// conformance suite in `omnibox-testing` is checked against.
#[derive(Debug)]
pub struct MemoryStore<E> {
    domain: Domain,
    _kind: PhantomData<fn() -> E>,
}

impl<E> Clone for MemoryStore<E> {
    fn clone(&self) -> Self {
        Self {
            domain: self.domain.clone(),
            _kind: PhantomData,
        }
    }
}

impl<E> Default for MemoryStore<E> {
    fn default() -> Self {
        Self {
            domain: Domain::default(),
            _kind: PhantomData,
        }
    }
}

impl<E: MemoryEvent> MemoryStore<E> {
    /// A store with the default limits.
    pub fn new() -> Self {
        Self::default()
    }

    /// A store applying `limits` to transitions.
    pub fn with_limits(limits: Limits) -> Result<Self, ValidationError> {
        Ok(Self {
            domain: Domain::new(limits)?,
            _kind: PhantomData,
        })
    }

    /// The limits.
    pub fn limits(&self) -> &Limits {
        self.domain.limits()
    }

    /// One event by id.
    pub async fn get(&self, conn: &mut MemoryConn, id: Uuid) -> Option<E> {
        conn.with(|t, _| table::<E>(t).rows.get(&id).cloned()).await
    }

    /// Every event, ordered by `(created_at, id)`.
    pub async fn all(&self, conn: &mut MemoryConn) -> Vec<E> {
        let mut all = conn
            .with(|t, _| table::<E>(t).rows.values().cloned().collect::<Vec<_>>())
            .await;
        all.sort_by_key(|e| (e.common().created_at, e.id()));
        all
    }

    /// Every dead letter, oldest first.
    pub async fn dead_letters(&self, conn: &mut MemoryConn) -> Vec<DeadLetter> {
        conn.with(|t, _| table::<E>(t).dead.clone()).await
    }

    /// Bring terminally failed events back to pending with a fresh budget; returns the
    /// requeued events (ids that are missing or not `failed` are ignored).
    pub async fn requeue_failed(
        &self,
        conn: &mut MemoryConn,
        ids: &[Uuid],
    ) -> Result<Vec<E>, StoreError> {
        let domain = &self.domain;
        conn.with(|t, now| table::<E>(t).requeue(domain, ids, now))
            .await
    }

    /// Replay a dead letter: requeue its event and remove the letter. A letter without an
    /// event (a malformed message) or whose event is gone or no longer `failed` is refused.
    pub async fn replay_dead_letter(
        &self,
        conn: &mut MemoryConn,
        letter_id: Uuid,
    ) -> Result<E, StoreError> {
        let domain = &self.domain;
        conn.with(|t, now| {
            let tab = table::<E>(t);
            let pos = tab
                .dead
                .iter()
                .position(|l| l.id == letter_id)
                .ok_or_else(|| StoreError::InvalidRequest(format!("no dead letter {letter_id}")))?;
            let event_id = tab.dead[pos].event_id.ok_or_else(|| {
                StoreError::InvalidRequest(format!(
                    "dead letter {letter_id} has no stored event to replay"
                ))
            })?;
            let requeued = tab.requeue(domain, &[event_id], now)?;
            let event = requeued.into_iter().next().ok_or_else(|| {
                StoreError::InvalidRequest(format!(
                    "event {event_id} of dead letter {letter_id} is missing or not failed"
                ))
            })?;
            tab.dead.remove(pos);
            Ok(event)
        })
        .await
    }

    /// Clear anyone's lease (operator action), recording `reason` as the last error.
    pub async fn force_unlock(
        &self,
        conn: &mut MemoryConn,
        id: Uuid,
        reason: &str,
    ) -> Result<E, StoreError> {
        let domain = &self.domain;
        conn.with(|t, _| {
            let tab = table::<E>(t);
            let event = tab
                .rows
                .get(&id)
                .ok_or_else(|| StoreError::InvalidRequest(format!("no event {id}")))?;
            let next = domain
                .force_unlock(event, reason)
                .map_err(|e| domain_err("force_unlock", e))?;
            tab.rows.insert(id, next.clone());
            Ok(next)
        })
        .await
    }
}

impl<E: MemoryEvent> EventStore for MemoryStore<E> {
    type Event = E;
    type Conn = MemoryConn;
}

impl<E: MemoryEvent> ClaimEvents for MemoryStore<E> {
    async fn claim(&self, conn: &mut MemoryConn, req: &ClaimRequest) -> Result<Vec<E>, StoreError> {
        let domain = &self.domain;
        conn.with(|t, now| table::<E>(t).claim(domain, req, now))
            .await
    }
}

impl<E: MemoryEvent> FetchPending for MemoryStore<E> {
    async fn fetch_pending(
        &self,
        conn: &mut MemoryConn,
        filters: &Filters,
        limit: u32,
    ) -> Result<Vec<E>, StoreError> {
        conn.with(|t, now| table::<E>(t).fetch_pending(filters, limit, now))
            .await
    }
}

impl<E: MemoryEvent> LockEvent for MemoryStore<E> {
    async fn try_lock(
        &self,
        conn: &mut MemoryConn,
        id: Uuid,
        worker: &WorkerId,
        lease_ttl: TimeDelta,
        ignore_schedule: bool,
    ) -> Result<LockOutcome<E>, StoreError> {
        let domain = &self.domain;
        conn.with(|t, now| {
            table::<E>(t).try_lock(domain, id, worker, lease_ttl, ignore_schedule, now)
        })
        .await
    }
}

impl<E: MemoryEvent> SettleEvents for MemoryStore<E> {
    async fn settle(
        &self,
        conn: &mut MemoryConn,
        worker: &WorkerId,
        settlements: &[Settlement],
    ) -> Result<SettleReport, StoreError> {
        let domain = &self.domain;
        conn.with(|t, now| table::<E>(t).settle(domain, worker, settlements, now))
            .await
    }
}

impl<E: MemoryEvent> RefreshLeases for MemoryStore<E> {
    async fn refresh(
        &self,
        conn: &mut MemoryConn,
        worker: &WorkerId,
        leases: &[(Uuid, DateTime<Utc>)],
    ) -> Result<Vec<(Uuid, DateTime<Utc>)>, StoreError> {
        let domain = &self.domain;
        conn.with(|t, now| table::<E>(t).refresh(domain, worker, leases, now))
            .await
    }
}

impl<E: MemoryEvent> ReleaseStale for MemoryStore<E> {
    async fn release_stale(
        &self,
        conn: &mut MemoryConn,
        ttl: TimeDelta,
        limit: u32,
    ) -> Result<StaleReport, StoreError> {
        let domain = &self.domain;
        conn.with(|t, now| table::<E>(t).release_stale(domain, ttl, limit, now))
            .await
    }
}

impl<E: MemoryEvent> CleanupCompleted for MemoryStore<E> {
    async fn delete_completed(
        &self,
        conn: &mut MemoryConn,
        older_than: TimeDelta,
        limit: u32,
    ) -> Result<u64, StoreError> {
        Ok(conn
            .with(|t, now| table::<E>(t).delete_completed(older_than, limit, now))
            .await)
    }
}

impl<E: MemoryEvent> InsertEvents for MemoryStore<E> {
    async fn insert(&self, conn: &mut MemoryConn, event: &E) -> Result<Inserted<E>, StoreError> {
        let limits = self.domain.limits();
        let event = EventTable::prepare(limits, event)?;
        Ok(conn.with(|t, _| table::<E>(t).insert_prepared(event)).await)
    }

    async fn insert_many(
        &self,
        conn: &mut MemoryConn,
        events: &[E],
    ) -> Result<Vec<Inserted<E>>, StoreError> {
        let limits = self.domain.limits();
        // Check every event before writing any, so an error leaves no partial batch.
        let prepared = events
            .iter()
            .map(|e| EventTable::prepare(limits, e))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(conn
            .with(|t, _| {
                let tab = table::<E>(t);
                prepared
                    .into_iter()
                    .map(|e| tab.insert_prepared(e))
                    .collect()
            })
            .await)
    }
}

impl<E: MemoryEvent> DeadLetterStore for MemoryStore<E> {
    async fn dead_letter(
        &self,
        conn: &mut MemoryConn,
        letter: &DeadLetter,
    ) -> Result<(), StoreError> {
        let letter = letter.clone();
        conn.with(|t, _| table::<E>(t).dead.push(letter)).await;
        Ok(())
    }
}

impl<E: MemoryEvent> BacklogStats for MemoryStore<E> {
    async fn backlog(&self, conn: &mut MemoryConn) -> Result<Backlog, StoreError> {
        Ok(conn.with(|t, now| table::<E>(t).backlog(now)).await)
    }
}

/// Real savepoints on the transaction's state (see [`Savepoints`]): `savepoint` copies the
/// transaction's tables, `rollback_to_savepoint` restores the newest copy, and
/// `release_savepoint` drops it. An autocommit connection has no savepoints (error).
impl<E: MemoryEvent> Savepoints for MemoryStore<E> {
    async fn savepoint(&self, conn: &mut MemoryConn) -> Result<(), StoreError> {
        conn.savepoint()
    }

    async fn rollback_to_savepoint(&self, conn: &mut MemoryConn) -> Result<(), StoreError> {
        conn.rollback_to_savepoint()
    }

    async fn release_savepoint(&self, conn: &mut MemoryConn) -> Result<(), StoreError> {
        conn.release_savepoint()
    }
}

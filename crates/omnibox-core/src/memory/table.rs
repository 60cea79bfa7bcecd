//! One event table and the store contract implemented on it, generic over the event kind.
//! Every transition goes through [`Domain`], so the in-memory store is the executable
//! reference of the rules the SQL stores implement in SQL.

use std::collections::{BTreeMap, HashMap};

use chrono::{DateTime, TimeDelta, Utc};
use uuid::Uuid;

use super::db::{Tables, truncate_micros};
use crate::domain::{Domain, lease_expired_error};
use crate::error::{DomainError, StoreError};
use crate::model::{Event, EventStatus, Limits, WorkerId};
use crate::store::{
    Backlog, ClaimRequest, DeadLetter, Filters, Inserted, LockOutcome, Settle, SettleReport,
    Settlement, StaleReport,
};

/// Rows of one kind plus their dead letters.
#[derive(Debug, Clone)]
pub struct EventTable<E> {
    pub(crate) rows: BTreeMap<Uuid, E>,
    pub(crate) dead: Vec<DeadLetter>,
}

impl<E> Default for EventTable<E> {
    fn default() -> Self {
        Self {
            rows: BTreeMap::new(),
            dead: Vec::new(),
        }
    }
}

/// Event kinds the in-memory store can hold (outbox and inbox events). Sealed.
pub trait MemoryEvent: Event + sealed::Sealed {}

pub(crate) mod sealed {
    use super::{EventTable, Tables};

    /// Where a kind lives and how it is deduplicated.
    pub trait Sealed: Sized {
        /// The kind's table.
        fn table(t: &mut Tables) -> &mut EventTable<Self>;
        /// `true` when `other` has the same dedup key as `self`.
        fn same_dedup_key(&self, other: &Self) -> bool;
    }
}

pub(crate) fn domain_err(operation: &'static str, e: DomainError) -> StoreError {
    StoreError::Other {
        operation,
        message: e.to_string(),
        source: Some(Box::new(e)),
    }
}

fn claim_order<E: Event>(e: &E) -> (DateTime<Utc>, DateTime<Utc>, Uuid) {
    let c = e.common();
    (c.scheduled_at, c.created_at, c.id)
}

fn claimable<E: Event>(e: &E, now: DateTime<Utc>) -> bool {
    let c = e.common();
    c.status == EventStatus::Pending && c.scheduled_at <= now && c.attempts_made < c.max_attempts
}

fn stale<E: Event>(e: &E, now: DateTime<Utc>, ttl: TimeDelta) -> bool {
    e.common().locked_at.is_some_and(|at| now - at > ttl)
}

/// Copy of `e` with every timestamp truncated to microseconds.
fn truncated<E: Event>(e: &E, limits: &Limits) -> Result<E, StoreError> {
    let mut c = e.common().clone();
    c.created_at = truncate_micros(c.created_at);
    c.scheduled_at = truncate_micros(c.scheduled_at);
    c.completed_at = c.completed_at.map(truncate_micros);
    c.locked_at = c.locked_at.map(truncate_micros);
    e.with_common(c, limits)
        .map_err(|source| StoreError::InvalidRow { id: e.id(), source })
}

impl<E: MemoryEvent> EventTable<E> {
    /// For each ordering key, the earliest `(created_at, id)` of a pending event that blocks
    /// later events of its key: due, leased or waiting for a retry.
    fn blockers(&self, now: DateTime<Utc>) -> HashMap<(&str, &str), (DateTime<Utc>, Uuid)> {
        let mut heads: HashMap<(&str, &str), (DateTime<Utc>, Uuid)> = HashMap::new();
        for e in self.rows.values() {
            let c = e.common();
            let Some(key) = e.ordering_key() else {
                continue;
            };
            let blocks = c.status == EventStatus::Pending
                && (c.scheduled_at <= now || c.last_error.is_some() || c.locked_at.is_some());
            if blocks {
                let pos = (c.created_at, c.id);
                heads
                    .entry(key)
                    .and_modify(|h| *h = (*h).min(pos))
                    .or_insert(pos);
            }
        }
        heads
    }

    /// Ids a claim (`ttl = Some`) or a fetch (`ttl = None`, unlocked rows only) may return,
    /// in claim order, honouring per-key ordering.
    fn candidates(
        &self,
        filters: &Filters,
        now: DateTime<Utc>,
        ttl: Option<TimeDelta>,
    ) -> Vec<Uuid> {
        let blockers = self.blockers(now);
        let mut out: Vec<&E> = self
            .rows
            .values()
            .filter(|e| claimable(*e, now) && filters.matches(*e))
            .filter(|e| match ttl {
                Some(ttl) => e.common().locked_at.is_none() || stale(*e, now, ttl),
                None => e.common().locked_at.is_none(),
            })
            .filter(|e| match e.ordering_key() {
                Some(key) => blockers
                    .get(&key)
                    .is_none_or(|head| *head >= (e.common().created_at, e.id())),
                None => true,
            })
            .collect();
        out.sort_by_key(|e| claim_order(*e));
        out.into_iter().map(Event::id).collect()
    }

    /// Count an expired lease as one failed attempt. Returns the event unlocked, or `None`
    /// when that spent its budget (then it is `failed` and dead-lettered).
    fn take_over(
        &mut self,
        domain: &Domain,
        event: &E,
        now: DateTime<Utc>,
    ) -> Result<Option<E>, StoreError> {
        let owner = event.common().locked_by.clone().unwrap_or_default();
        let error = lease_expired_error(&owner);
        let next = domain
            .apply_failure(event, &error, true, None)
            .map_err(|e| domain_err("lease takeover", e))?;
        self.rows.insert(next.id(), next.clone());
        if next.common().status == EventStatus::Failed {
            self.dead.push(DeadLetter::from_event(&next, &error, now));
            return Ok(None);
        }
        Ok(Some(next))
    }

    pub(crate) fn claim(
        &mut self,
        domain: &Domain,
        req: &ClaimRequest,
        now: DateTime<Utc>,
    ) -> Result<Vec<E>, StoreError> {
        if req.limit == 0 {
            return Err(StoreError::InvalidRequest(
                "claim limit must be at least 1".into(),
            ));
        }
        if req.lease_ttl < TimeDelta::zero() {
            return Err(StoreError::InvalidRequest(
                "lease_ttl must not be negative".into(),
            ));
        }
        let ids = self.candidates(&req.filters, now, Some(req.lease_ttl));
        let mut out = Vec::new();
        for id in ids.into_iter().take(req.limit as usize) {
            let Some(mut event) = self.rows.get(&id).cloned() else {
                continue;
            };
            if event.common().locked_at.is_some() {
                match self.take_over(domain, &event, now)? {
                    Some(e) => event = e,
                    None => continue,
                }
            }
            let locked = domain
                .lock(&event, &req.worker, now)
                .map_err(|e| domain_err("claim", e))?;
            self.rows.insert(id, locked.clone());
            out.push(locked);
        }
        Ok(out)
    }

    pub(crate) fn fetch_pending(
        &self,
        filters: &Filters,
        limit: u32,
        now: DateTime<Utc>,
    ) -> Result<Vec<E>, StoreError> {
        if limit == 0 {
            return Err(StoreError::InvalidRequest(
                "fetch limit must be at least 1".into(),
            ));
        }
        Ok(self
            .candidates(filters, now, None)
            .into_iter()
            .take(limit as usize)
            .filter_map(|id| self.rows.get(&id).cloned())
            .collect())
    }

    pub(crate) fn try_lock(
        &mut self,
        domain: &Domain,
        id: Uuid,
        worker: &WorkerId,
        ttl: TimeDelta,
        ignore_schedule: bool,
        now: DateTime<Utc>,
    ) -> Result<LockOutcome<E>, StoreError> {
        let Some(mut event) = self.rows.get(&id).cloned() else {
            return Ok(LockOutcome::Missing);
        };
        if event.common().status != EventStatus::Pending {
            return Ok(LockOutcome::Finished(event));
        }
        if event.common().locked_at.is_some() {
            if !stale(&event, now, ttl) {
                return Ok(LockOutcome::Busy(event));
            }
            match self.take_over(domain, &event, now)? {
                Some(e) => event = e,
                None => {
                    let failed = self.rows.get(&id).cloned();
                    return Ok(failed.map_or(LockOutcome::Missing, LockOutcome::Finished));
                }
            }
        }
        if !ignore_schedule && event.common().scheduled_at > now {
            return Ok(LockOutcome::NotDue(event));
        }
        let locked = domain
            .lock(&event, worker, now)
            .map_err(|e| domain_err("try_lock", e))?;
        self.rows.insert(id, locked.clone());
        Ok(LockOutcome::Locked(locked))
    }

    pub(crate) fn settle(
        &mut self,
        domain: &Domain,
        worker: &WorkerId,
        settlements: &[Settlement],
        now: DateTime<Utc>,
    ) -> Result<SettleReport, StoreError> {
        let mut seen = std::collections::HashSet::new();
        if let Some(dup) = settlements.iter().find(|s| !seen.insert(s.id)) {
            return Err(StoreError::InvalidRequest(format!(
                "settlement ids must be distinct; {} appears twice",
                dup.id
            )));
        }
        // Compute every change first, then apply: a refused transition leaves no trace.
        let mut report = SettleReport::default();
        let mut changes: Vec<(E, Option<DeadLetter>)> = Vec::new();
        for s in settlements {
            let held = self.rows.get(&s.id).filter(|e| {
                let c = e.common();
                c.status == EventStatus::Pending
                    && c.locked_by.as_deref() == Some(worker.as_str())
                    && c.locked_at == Some(truncate_micros(s.lease))
            });
            let Some(event) = held else {
                report.lease_lost.push(s.id);
                continue;
            };
            match &s.action {
                Settle::Complete => {
                    let c = event.common();
                    let at = now.max(c.created_at).max(c.scheduled_at);
                    let next = domain
                        .complete(event, worker, at)
                        .map_err(|e| domain_err("settle", e))?;
                    report.completed.push(s.id);
                    changes.push((next, None));
                }
                Settle::Fail {
                    error,
                    counted,
                    retry_at,
                } => {
                    let next = domain
                        .fail(
                            event,
                            worker,
                            error,
                            *counted,
                            retry_at.map(truncate_micros),
                        )
                        .map_err(|e| domain_err("settle", e))?;
                    if next.common().status == EventStatus::Failed {
                        let stored = next.common().last_error.clone().unwrap_or_default();
                        let letter = DeadLetter::from_event(&next, &stored, now);
                        report.dead_lettered.push(s.id);
                        changes.push((next, Some(letter)));
                    } else {
                        report.retrying.push(s.id);
                        changes.push((next, None));
                    }
                }
                Settle::Release => {
                    let next = domain
                        .unlock(event, worker)
                        .map_err(|e| domain_err("settle", e))?;
                    report.released.push(s.id);
                    changes.push((next, None));
                }
            }
        }
        for (event, letter) in changes {
            self.rows.insert(event.id(), event);
            self.dead.extend(letter);
        }
        Ok(report)
    }

    pub(crate) fn refresh(
        &mut self,
        domain: &Domain,
        worker: &WorkerId,
        leases: &[(Uuid, DateTime<Utc>)],
        now: DateTime<Utc>,
    ) -> Result<Vec<(Uuid, DateTime<Utc>)>, StoreError> {
        let mut out = Vec::new();
        for (id, token) in leases {
            let Some(event) = self.rows.get(id) else {
                continue;
            };
            let c = event.common();
            let held = c.status == EventStatus::Pending
                && c.locked_by.as_deref() == Some(worker.as_str())
                && c.locked_at == Some(truncate_micros(*token));
            if !held {
                continue;
            }
            let at = now.max(c.locked_at.unwrap_or(now));
            let next = domain
                .refresh(event, worker, at)
                .map_err(|e| domain_err("refresh", e))?;
            self.rows.insert(*id, next);
            out.push((*id, at));
        }
        Ok(out)
    }

    pub(crate) fn release_stale(
        &mut self,
        domain: &Domain,
        ttl: TimeDelta,
        limit: u32,
        now: DateTime<Utc>,
    ) -> Result<StaleReport, StoreError> {
        let mut expired: Vec<&E> = self
            .rows
            .values()
            .filter(|e| e.common().status == EventStatus::Pending && stale(*e, now, ttl))
            .collect();
        expired.sort_by_key(|e| (e.common().locked_at, e.id()));
        let expired: Vec<E> = expired.into_iter().take(limit as usize).cloned().collect();
        let mut report = StaleReport::default();
        for event in expired {
            match self.take_over(domain, &event, now)? {
                Some(_) => report.released += 1,
                None => report.failed += 1,
            }
        }
        Ok(report)
    }

    pub(crate) fn delete_completed(
        &mut self,
        older_than: TimeDelta,
        limit: u32,
        now: DateTime<Utc>,
    ) -> u64 {
        let cutoff = now - older_than;
        let mut old: Vec<(DateTime<Utc>, Uuid)> = self
            .rows
            .values()
            .filter_map(|e| {
                let c = e.common();
                (c.status == EventStatus::Completed)
                    .then_some(c.completed_at)
                    .flatten()
                    .filter(|at| *at < cutoff)
                    .map(|at| (at, c.id))
            })
            .collect();
        old.sort();
        let mut n = 0;
        for (_, id) in old.into_iter().take(limit as usize) {
            self.rows.remove(&id);
            n += 1;
        }
        n
    }

    /// The event as it will be stored (timestamps truncated), or why it cannot be.
    pub(crate) fn prepare(limits: &Limits, event: &E) -> Result<E, StoreError> {
        truncated(event, limits)
    }

    /// Insert a prepared event unless its id or dedup key exists.
    pub(crate) fn insert_prepared(&mut self, event: E) -> Inserted<E> {
        let existing = self
            .rows
            .values()
            .filter(|e| e.id() == event.id() || e.same_dedup_key(&event))
            .min_by_key(|e| (e.common().created_at, e.id()));
        if let Some(e) = existing {
            return Inserted::Duplicate(e.clone());
        }
        self.rows.insert(event.id(), event.clone());
        Inserted::New(event)
    }

    pub(crate) fn backlog(&self, now: DateTime<Utc>) -> Backlog {
        let mut b = Backlog::default();
        let mut oldest_pending: Option<DateTime<Utc>> = None;
        let mut oldest_claimable: Option<DateTime<Utc>> = None;
        for e in self.rows.values() {
            let c = e.common();
            match c.status {
                EventStatus::Pending => {
                    b.pending += 1;
                    if c.locked_at.is_some() {
                        b.leased += 1;
                    }
                    oldest_pending =
                        Some(oldest_pending.map_or(c.created_at, |o| o.min(c.created_at)));
                    if c.scheduled_at <= now {
                        oldest_claimable =
                            Some(oldest_claimable.map_or(c.created_at, |o| o.min(c.created_at)));
                    }
                }
                EventStatus::Failed => b.failed += 1,
                EventStatus::Completed => {}
            }
        }
        let age = |t: DateTime<Utc>| (now - t).max(TimeDelta::zero());
        b.oldest_pending_age = oldest_pending.map(age);
        b.oldest_claimable_age = oldest_claimable.map(age);
        b.dead_letters = self.dead.len() as u64;
        b
    }

    pub(crate) fn requeue(
        &mut self,
        domain: &Domain,
        ids: &[Uuid],
        now: DateTime<Utc>,
    ) -> Result<Vec<E>, StoreError> {
        let mut out = Vec::new();
        for id in ids {
            let Some(event) = self.rows.get(id) else {
                continue;
            };
            if event.common().status != EventStatus::Failed {
                continue;
            }
            let next = domain
                .requeue(event, now)
                .map_err(|e| domain_err("requeue", e))?;
            self.rows.insert(*id, next.clone());
            out.push(next);
        }
        Ok(out)
    }
}

/// The tables' helper for kind `E`.
pub(crate) fn table<E: MemoryEvent>(t: &mut Tables) -> &mut EventTable<E> {
    E::table(t)
}

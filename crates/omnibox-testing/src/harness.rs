//! A store under test plus its database: each operation in its own committed transaction.

use chrono::{DateTime, TimeDelta, Utc};
use omnibox_core::model::{Event, EventStatus, WorkerId};
use omnibox_core::store::{
    Backlog, BacklogStats, ClaimEvents, ClaimRequest, CleanupCompleted, DeadLetterStore,
    EventStore, FetchPending, Filters, InsertEvents, Inserted, LockEvent, LockOutcome,
    RefreshLeases, ReleaseStale, Settle, SettleEvents, SettleReport, Settlement, Transactions,
};
use uuid::Uuid;

use crate::check::Ctx;

/// Every store capability the conformance suites exercise, on connection `C`.
/// Implemented for every type that has them all.
pub trait FullStore<C>:
    EventStore<Conn = C>
    + ClaimEvents
    + FetchPending
    + LockEvent
    + SettleEvents
    + RefreshLeases
    + ReleaseStale
    + CleanupCompleted
    + InsertEvents
    + DeadLetterStore
    + BacklogStats
{
}

impl<C, S> FullStore<C> for S where
    S: EventStore<Conn = C>
        + ClaimEvents
        + FetchPending
        + LockEvent
        + SettleEvents
        + RefreshLeases
        + ReleaseStale
        + CleanupCompleted
        + InsertEvents
        + DeadLetterStore
        + BacklogStats
{
}

/// The lease used by claims in the suites unless a check needs a short one.
pub(crate) const LONG_LEASE: TimeDelta = TimeDelta::seconds(300);
/// The short lease of expiry checks (the SQL stores use the database clock, so expiry is
/// tested with real time).
pub(crate) const SHORT_LEASE: TimeDelta = TimeDelta::milliseconds(200);
/// How long to sleep for a short lease to expire.
pub(crate) const EXPIRE: std::time::Duration = std::time::Duration::from_millis(400);

/// What a non-destructive look at one event found.
#[derive(Debug)]
pub(crate) enum Peek<E> {
    /// No such event.
    Missing,
    /// Pending, due and unlocked.
    Free(E),
    /// Pending, in retry backoff or scheduled later.
    NotDue(E),
    /// Leased (by anyone).
    Busy(E),
    /// Completed or failed.
    Finished(E),
}

impl<E: Event> Peek<E> {
    pub(crate) fn event(&self, ctx: &Ctx) -> &E {
        match self {
            Peek::Missing => ctx.fail("the event is missing"),
            Peek::Free(e) | Peek::NotDue(e) | Peek::Busy(e) | Peek::Finished(e) => e,
        }
    }

    pub(crate) fn status(&self, ctx: &Ctx) -> EventStatus {
        self.event(ctx).common().status
    }
}

pub(crate) fn worker(name: &str) -> WorkerId {
    match WorkerId::new(name) {
        Ok(w) => w,
        Err(e) => panic!("invalid worker id {name}: {e}"),
    }
}

pub(crate) fn lease_of<E: Event>(ctx: &Ctx, e: &E) -> DateTime<Utc> {
    match e.common().locked_at {
        Some(at) => at,
        None => ctx.fail(format_args!("event {} has no lease", e.id())),
    }
}

pub(crate) fn settlement<E: Event>(ctx: &Ctx, e: &E, action: Settle) -> Settlement {
    Settlement {
        id: e.id(),
        lease: lease_of(ctx, e),
        action,
    }
}

pub(crate) fn ids<E: Event>(events: &[E]) -> Vec<Uuid> {
    events.iter().map(Event::id).collect()
}

/// The database and the store under test.
pub(crate) struct Harness<'a, T, S> {
    pub(crate) db: &'a T,
    pub(crate) store: &'a S,
    pub(crate) ctx: Ctx,
}

impl<'a, T, S> Harness<'a, T, S>
where
    T: Transactions,
    S: FullStore<T::Conn>,
{
    pub(crate) async fn begin(&self) -> T::Tx {
        self.ctx.ok(self.db.begin().await, "begin")
    }

    pub(crate) async fn commit(&self, tx: T::Tx) {
        self.ctx.ok(self.db.commit(tx).await, "commit");
    }

    pub(crate) async fn insert(&self, events: &[S::Event]) -> Vec<Inserted<S::Event>> {
        let mut tx = self.begin().await;
        let r = self
            .ctx
            .ok(self.store.insert_many(&mut tx, events).await, "insert_many");
        self.commit(tx).await;
        r
    }

    pub(crate) async fn claim_with(
        &self,
        who: &str,
        limit: u32,
        ttl: TimeDelta,
        filters: Filters,
    ) -> Vec<S::Event> {
        let req = ClaimRequest::new(worker(who), limit)
            .lease_ttl(ttl)
            .filters(filters);
        let mut tx = self.begin().await;
        let r = self.ctx.ok(self.store.claim(&mut tx, &req).await, "claim");
        self.commit(tx).await;
        r
    }

    pub(crate) async fn claim(&self, who: &str, limit: u32) -> Vec<S::Event> {
        self.claim_with(who, limit, LONG_LEASE, Filters::none())
            .await
    }

    pub(crate) async fn settle(&self, who: &str, s: &[Settlement]) -> SettleReport {
        let mut tx = self.begin().await;
        let r = self
            .ctx
            .ok(self.store.settle(&mut tx, &worker(who), s).await, "settle");
        self.commit(tx).await;
        r
    }

    pub(crate) async fn fetch(&self, filters: Filters, limit: u32) -> Vec<S::Event> {
        let mut tx = self.begin().await;
        let r = self.ctx.ok(
            self.store.fetch_pending(&mut tx, &filters, limit).await,
            "fetch_pending",
        );
        self.commit(tx).await;
        r
    }

    pub(crate) async fn try_lock(
        &self,
        who: &str,
        id: Uuid,
        ttl: TimeDelta,
        ignore_schedule: bool,
    ) -> LockOutcome<S::Event> {
        let mut tx = self.begin().await;
        let r = self.ctx.ok(
            self.store
                .try_lock(&mut tx, id, &worker(who), ttl, ignore_schedule)
                .await,
            "try_lock",
        );
        self.commit(tx).await;
        r
    }

    pub(crate) async fn backlog(&self) -> Backlog {
        let mut tx = self.begin().await;
        let r = self.ctx.ok(self.store.backlog(&mut tx).await, "backlog");
        self.commit(tx).await;
        r
    }

    /// Look at one event without changing it (a due, free event is locked and released
    /// again in one rolled-back transaction).
    pub(crate) async fn peek(&self, id: Uuid) -> Peek<S::Event> {
        let mut tx = self.begin().await;
        let r = self.ctx.ok(
            self.store
                .try_lock(
                    &mut tx,
                    id,
                    &worker("conformance-peek"),
                    TimeDelta::days(1),
                    false,
                )
                .await,
            "try_lock (peek)",
        );
        self.ctx.ok(self.db.rollback(tx).await, "rollback");
        match r {
            LockOutcome::Missing => Peek::Missing,
            LockOutcome::Locked(e) => {
                let mut tx = self.begin().await;
                let fetched = self.ctx.ok(
                    self.store
                        .fetch_pending(&mut tx, &Filters::none(), 10_000)
                        .await,
                    "fetch_pending (peek)",
                );
                self.commit(tx).await;
                match fetched.into_iter().find(|f| f.id() == e.id()) {
                    Some(f) => Peek::Free(f),
                    None => Peek::Free(e),
                }
            }
            LockOutcome::NotDue(e) => Peek::NotDue(e),
            LockOutcome::Busy(e) => Peek::Busy(e),
            LockOutcome::Finished(e) => Peek::Finished(e),
        }
    }
}

//! Storage capability traits.
//!
//! A store is a reusable configuration value (table names, limits) that takes the caller's
//! connection on every call — `&mut PgConnection` for PostgreSQL, passed as `&mut *tx` —
//! so one store serves every transaction and every worker, and writes join the caller's
//! transaction. Each ability is its own small trait; a custom store implements the ones
//! it can, and the pipeline asks only for what it uses.
//!
//! Timestamps (`now`) come from the store's own clock: the database clock for SQL stores.

use std::future::Future;
use std::ops::DerefMut;

use chrono::{DateTime, TimeDelta, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::error::StoreError;
use crate::model::{Event, EventKind, Headers, InboxEvent, OutboxEvent, WorkerId};

/// The associated types every store shares.
pub trait EventStore: Send + Sync {
    /// The event kind stored ([`crate::model::OutboxEvent`] or [`InboxEvent`]).
    type Event: Event;
    /// The connection the caller passes in (for sqlx: `PgConnection`).
    type Conn: Send;
}

/// Which events a fetch or claim may return. Empty lists mean "no restriction".
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Filters {
    /// Outbox: only these topics.
    pub topics: Vec<String>,
    /// Outbox: only these aggregate types.
    pub aggregate_types: Vec<String>,
    /// Inbox: only these sources.
    pub sources: Vec<String>,
    /// Only these event types.
    pub event_types: Vec<String>,
}

impl Filters {
    /// No restriction.
    pub fn none() -> Self {
        Self::default()
    }

    /// Restrict to topics (outbox).
    pub fn topics<I: IntoIterator<Item = S>, S: Into<String>>(mut self, topics: I) -> Self {
        self.topics = topics.into_iter().map(Into::into).collect();
        self
    }

    /// Restrict to sources (inbox).
    pub fn sources<I: IntoIterator<Item = S>, S: Into<String>>(mut self, sources: I) -> Self {
        self.sources = sources.into_iter().map(Into::into).collect();
        self
    }

    /// Restrict to aggregate types (outbox).
    pub fn aggregate_types<I: IntoIterator<Item = S>, S: Into<String>>(mut self, v: I) -> Self {
        self.aggregate_types = v.into_iter().map(Into::into).collect();
        self
    }

    /// Restrict to event types.
    pub fn event_types<I: IntoIterator<Item = S>, S: Into<String>>(mut self, v: I) -> Self {
        self.event_types = v.into_iter().map(Into::into).collect();
        self
    }

    /// `true` when the event passes these filters.
    pub fn matches<E: Event>(&self, event: &E) -> bool {
        let ok = |list: &Vec<String>, v: &str| list.is_empty() || list.iter().any(|x| x == v);
        let c = event.common();
        if !ok(&self.event_types, &c.event_type) {
            return false;
        }
        match E::KIND {
            EventKind::Outbox => {
                ok(&self.topics, event.route())
                    && (self.aggregate_types.is_empty()
                        || event
                            .aggregate_type()
                            .is_some_and(|t| ok(&self.aggregate_types, t)))
            }
            EventKind::Inbox => ok(&self.sources, event.route()),
        }
    }
}

/// A claim: lock up to `limit` due events for `worker` with a lease of `lease_ttl`.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct ClaimRequest {
    /// Who claims.
    pub worker: WorkerId,
    /// At most this many events (≥1).
    pub limit: u32,
    /// Lease length; a lease older than this is expired and may be taken over (the takeover
    /// spends one attempt of the event, see [`crate::domain::lease_expired_error`]).
    pub lease_ttl: TimeDelta,
    /// Restrictions.
    pub filters: Filters,
    /// The claim's transaction commits right after the claim (the relay's leased path),
    /// so a store may let one such claim run at a time per table: each then sees the
    /// leases the one before it committed, instead of competing for heads it cannot see
    /// are taken. A store bounds the wait and claims anyway after it. Such a transaction
    /// writes only leases, so a store may offer to commit it without waiting for the disk
    /// (the PostgreSQL store's `asynchronous_claims`). Default `false` (a caller that
    /// publishes inside the claim's transaction must not serialise).
    pub exclusive: bool,
}

impl ClaimRequest {
    /// A claim with the default lease (300 s) and no filters.
    pub fn new(worker: WorkerId, limit: u32) -> Self {
        Self {
            worker,
            limit,
            lease_ttl: crate::domain::DEFAULT_LEASE_TTL,
            filters: Filters::default(),
            exclusive: false,
        }
    }

    /// Mark the claim as committed at once ([`ClaimRequest::exclusive`]).
    pub fn exclusive(mut self, exclusive: bool) -> Self {
        self.exclusive = exclusive;
        self
    }

    /// Set the lease length.
    pub fn lease_ttl(mut self, ttl: TimeDelta) -> Self {
        self.lease_ttl = ttl;
        self
    }

    /// Set the filters.
    pub fn filters(mut self, filters: Filters) -> Self {
        self.filters = filters;
        self
    }
}

/// Lock due events with `FOR UPDATE SKIP LOCKED` semantics: concurrent claims never return
/// the same event; the lease (`locked_at`, `locked_by`) is written by the claim itself.
///
/// Contract (checked by the conformance suite):
/// - only `pending` events with `scheduled_at <= now` and attempts left;
/// - ordered by `scheduled_at, created_at, id`;
/// - events with an ordering key (outbox `(topic, partition_key)`): an event is claimable
///   only when no earlier pending event of its key is due, leased, or waiting for a retry;
/// - an expired lease (older than `lease_ttl`) is taken over and the takeover counts one
///   attempt (`last_error` = [`crate::domain::lease_expired_error`]); an event whose budget
///   that spends becomes `failed` and is not returned;
/// - a claimed row that cannot be decoded into a valid event is not returned and must not
///   fail the claim: the store marks it `failed` (its budget spent) and dead-letters it with
///   the decode error, on `conn` (in the claim's transaction). Its key's later events become
///   claimable, as after any terminal failure.
pub trait ClaimEvents: EventStore {
    /// Claim events.
    fn claim(
        &self,
        conn: &mut Self::Conn,
        req: &ClaimRequest,
    ) -> impl Future<Output = Result<Vec<Self::Event>, StoreError>> + Send;
}

/// Read due, unlocked events without locking them (the optimistic strategy pairs this
/// with [`LockEvent`]).
pub trait FetchPending: EventStore {
    /// Due, unlocked, pending events in claim order.
    fn fetch_pending(
        &self,
        conn: &mut Self::Conn,
        filters: &Filters,
        limit: u32,
    ) -> impl Future<Output = Result<Vec<Self::Event>, StoreError>> + Send;
}

/// What happened when one event was locked by id.
#[derive(Debug, Clone, PartialEq)]
pub enum LockOutcome<E> {
    /// Now leased by the caller; the event as it is after locking.
    Locked(E),
    /// Another worker holds a live lease.
    Busy(E),
    /// Not pending (completed or failed): nothing to do.
    Finished(E),
    /// Pending but not due yet (retry backoff).
    NotDue(E),
    /// No such event.
    Missing,
}

/// Lock one event by id (inbox runner, optimistic fetch). An expired lease is taken over
/// and counts an attempt, as in [`ClaimEvents`]. A store that locks by id also inserts,
/// and [`LockEvent::insert_leased`] does both.
pub trait LockEvent: InsertEvents {
    /// Try to lease `id` for `worker`. `ignore_schedule` locks a pending event even when its
    /// retry time has not come (a redelivered message is being handled now).
    fn try_lock(
        &self,
        conn: &mut Self::Conn,
        id: Uuid,
        worker: &WorkerId,
        lease_ttl: TimeDelta,
        ignore_schedule: bool,
    ) -> impl Future<Output = Result<LockOutcome<Self::Event>, StoreError>> + Send;

    /// Insert `events` as [`InsertEvents::insert_many`] does, leasing each row it writes to
    /// `worker`: the inbox runner stores a message in order to handle it at once, so the
    /// lock that would follow the insert is a round trip saved. Results in input order:
    /// [`Inserted::New`] rows come back leased (`locked_by == worker`, the lease in
    /// `locked_at`); [`Inserted::Duplicate`] rows are the stored rows, untouched (lock them
    /// with [`LockEvent::try_lock`] when they are pending).
    ///
    /// The default inserts, then locks each new row; SQL stores do both in one statement.
    fn insert_leased(
        &self,
        conn: &mut Self::Conn,
        events: &[Self::Event],
        worker: &WorkerId,
        lease_ttl: TimeDelta,
    ) -> impl Future<Output = Result<Vec<Inserted<Self::Event>>, StoreError>> + Send {
        async move {
            let inserted = self.insert_many(conn, events).await?;
            let mut out = Vec::with_capacity(inserted.len());
            for row in inserted {
                let Inserted::New(row) = row else {
                    out.push(row);
                    continue;
                };
                match self
                    .try_lock(conn, row.id(), worker, lease_ttl, true)
                    .await?
                {
                    LockOutcome::Locked(locked) => out.push(Inserted::New(locked)),
                    _ => {
                        return Err(StoreError::Other {
                            operation: "insert_leased",
                            message: format!(
                                "event {} was inserted but could not be leased",
                                row.id()
                            ),
                            source: None,
                        });
                    }
                }
            }
            Ok(out)
        }
    }
}

/// What to do with one leased event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Settle {
    /// Processed: `completed` (or deleted, in a store's delete-on-complete mode).
    Complete,
    /// Failed. `counted` spends an attempt (the last one makes the event `failed` and
    /// dead-letters it in the same transaction); `retry_at` becomes `scheduled_at`
    /// (`None` keeps the schedule).
    Fail {
        /// The error (truncated to the limit by the store).
        error: String,
        /// Spend an attempt.
        counted: bool,
        /// Next try.
        retry_at: Option<DateTime<Utc>>,
    },
    /// Give the lease back untouched (shutdown, breaker open, batch stopped).
    Release,
}

/// One event's result, fenced by its lease: it applies only while `worker` still holds the
/// lease that started at `lease` (the event's `locked_at` as claimed). A worker whose lease
/// expired and was taken over cannot overwrite the new owner's result.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settlement {
    /// The event.
    pub id: Uuid,
    /// The lease token: `locked_at` as returned by the claim or lock.
    pub lease: DateTime<Utc>,
    /// What to do.
    pub action: Settle,
}

/// What a settle call did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct SettleReport {
    /// Completed.
    pub completed: Vec<Uuid>,
    /// Failed and still pending (will retry).
    pub retrying: Vec<Uuid>,
    /// Failed terminally (status `failed`, dead-lettered).
    pub dead_lettered: Vec<Uuid>,
    /// Lease released.
    pub released: Vec<Uuid>,
    /// Not applied: the lease was lost (expired and taken over, or released by an operator).
    pub lease_lost: Vec<Uuid>,
}

/// Apply results to leased events, all in one round trip where the store can.
pub trait SettleEvents: EventStore {
    /// Apply `settlements` for `worker`. Ids must be distinct.
    fn settle(
        &self,
        conn: &mut Self::Conn,
        worker: &WorkerId,
        settlements: &[Settlement],
    ) -> impl Future<Output = Result<SettleReport, StoreError>> + Send;
}

/// Extend leases that are still held; returns `(id, new lease token)` for each extended one.
pub trait RefreshLeases: EventStore {
    /// Refresh leases `(id, current token)` held by `worker`.
    fn refresh(
        &self,
        conn: &mut Self::Conn,
        worker: &WorkerId,
        leases: &[(Uuid, DateTime<Utc>)],
    ) -> impl Future<Output = Result<Vec<(Uuid, DateTime<Utc>)>, StoreError>> + Send;
}

/// Stale-lease recovery result.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct StaleReport {
    /// Leases cleared; the event is pending again (one attempt spent).
    pub released: u64,
    /// Events whose last attempt that was: now `failed` and dead-lettered.
    pub failed: u64,
}

/// Release leases older than `ttl`, counting one attempt per release, so a row that keeps crashing its worker ends failed.
pub trait ReleaseStale: EventStore {
    /// Release at most `limit` stale leases.
    fn release_stale(
        &self,
        conn: &mut Self::Conn,
        ttl: TimeDelta,
        limit: u32,
    ) -> impl Future<Output = Result<StaleReport, StoreError>> + Send;
}

/// Retention cleanup.
pub trait CleanupCompleted: EventStore {
    /// Delete at most `limit` events completed more than `older_than` ago; returns the count.
    fn delete_completed(
        &self,
        conn: &mut Self::Conn,
        older_than: TimeDelta,
        limit: u32,
    ) -> impl Future<Output = Result<u64, StoreError>> + Send;
}

/// Result of an idempotent insert.
#[derive(Debug, Clone, PartialEq)]
pub enum Inserted<E> {
    /// The event was written.
    New(E),
    /// An event with the same dedup key exists; this is that stored event. Not an error,
    /// and the caller's transaction is not aborted.
    Duplicate(E),
}

impl<E> Inserted<E> {
    /// The stored event, new or existing.
    pub fn event(&self) -> &E {
        match self {
            Inserted::New(e) | Inserted::Duplicate(e) => e,
        }
    }

    /// `true` for a duplicate.
    pub fn is_duplicate(&self) -> bool {
        matches!(self, Inserted::Duplicate(_))
    }
}

/// Insert events unless their dedup key exists (outbox: `idempotency_key`; inbox:
/// `(message_id, consumer_group)`).
pub trait InsertEvents: EventStore {
    /// Insert one event.
    fn insert(
        &self,
        conn: &mut Self::Conn,
        event: &Self::Event,
    ) -> impl Future<Output = Result<Inserted<Self::Event>, StoreError>> + Send;

    /// Insert many in one round trip where possible; results in input order. Duplicates
    /// within the batch resolve to the first occurrence.
    fn insert_many(
        &self,
        conn: &mut Self::Conn,
        events: &[Self::Event],
    ) -> impl Future<Output = Result<Vec<Inserted<Self::Event>>, StoreError>> + Send;
}

/// Inbox lookups by dedup key.
pub trait InboxLookup: EventStore<Event = InboxEvent> {
    /// The stored event for `(message_id, consumer_group)` (the newest if several).
    fn find_message(
        &self,
        conn: &mut Self::Conn,
        message_id: &str,
        consumer_group: &str,
    ) -> impl Future<Output = Result<Option<InboxEvent>, StoreError>> + Send;

    /// `true` when another completed event has the same key (possible only in partitioned
    /// tables, whose unique index includes `created_at`).
    fn has_completed_sibling(
        &self,
        conn: &mut Self::Conn,
        message_id: &str,
        consumer_group: &str,
        exclude: Uuid,
    ) -> impl Future<Output = Result<bool, StoreError>> + Send;

    /// `true` when the store's unique index on `(message_id, consumer_group)` alone rules
    /// out siblings: a freshly inserted ([`Inserted::New`]) event is then the only row with
    /// its key, and callers may skip [`has_completed_sibling`](Self::has_completed_sibling)
    /// for it. The default `false` is always safe (callers keep asking); a partitioned
    /// table, whose unique index includes `created_at`, must answer `false`.
    fn dedup_key_is_unique(&self) -> bool {
        false
    }
}

/// A message or event that will not be retried, kept with its error for an operator.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct DeadLetter {
    /// Dead-letter id.
    pub id: Uuid,
    /// The event row it came from, when there was one (a malformed message has none).
    pub event_id: Option<Uuid>,
    /// Outbox or inbox.
    pub kind: String,
    /// Event type, when known.
    pub event_type: Option<String>,
    /// Topic (outbox) or source (inbox).
    pub route: Option<String>,
    /// Broker message id (inbox), when known.
    pub message_id: Option<String>,
    /// The body as received (for a malformed message: UTF-8 with invalid sequences and NUL
    /// characters replaced by U+FFFD) or the payload as JSON text. The exact bytes are
    /// [`DeadLetter::original_body`].
    pub body: String,
    /// The exact bytes received, when [`body`](Self::body) is not an exact copy (a body
    /// that is not valid UTF-8 or holds a NUL character, which a text column cannot keep).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub body_bytes: Option<Vec<u8>>,
    /// Headers.
    pub headers: Option<Headers>,
    /// Why it was dead-lettered.
    pub error: String,
    /// Attempts spent.
    pub attempts: u32,
    /// When.
    pub created_at: DateTime<Utc>,
}

impl DeadLetter {
    /// A dead letter for an event that spent its budget.
    pub fn from_event<E: Event>(event: &E, error: &str, now: DateTime<Utc>) -> Self {
        let c = event.common();
        Self {
            id: Uuid::now_v7(),
            event_id: Some(c.id),
            kind: E::KIND.as_str().to_owned(),
            event_type: Some(c.event_type.clone()),
            route: Some(event.route().to_owned()),
            message_id: event.message_id().map(str::to_owned),
            body: serde_json::Value::Object(c.payload.clone()).to_string(),
            body_bytes: None,
            headers: c.headers.clone(),
            error: error.to_owned(),
            attempts: c.attempts_made,
            created_at: now,
        }
    }

    /// A dead letter for a broker message that could not be parsed.
    pub fn from_malformed(msg: &crate::consumer::MalformedMessage, now: DateTime<Utc>) -> Self {
        Self {
            id: Uuid::now_v7(),
            event_id: None,
            kind: EventKind::Inbox.as_str().to_owned(),
            event_type: None,
            route: Some(msg.source.clone()),
            message_id: msg.message_id.clone(),
            body: crate::model::validate::text_of(&msg.body),
            body_bytes: (std::str::from_utf8(&msg.body).is_err() || msg.body.contains(&0))
                .then(|| msg.body.clone()),
            headers: (!msg.headers.is_empty()).then(|| msg.headers.clone()),
            error: msg.error.to_string(),
            attempts: 0,
            created_at: now,
        }
    }
}

impl DeadLetter {
    /// The body exactly as it was received: [`body_bytes`](Self::body_bytes) when the text
    /// form is not exact, else the text's bytes.
    pub fn original_body(&self) -> &[u8] {
        self.body_bytes.as_deref().unwrap_or(self.body.as_bytes())
    }
}

/// Keep dead letters (terminal failures and malformed messages).
pub trait DeadLetterStore: EventStore {
    /// Store a dead letter in the caller's transaction.
    fn dead_letter(
        &self,
        conn: &mut Self::Conn,
        letter: &DeadLetter,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;
}

/// Backlog figures for health checks and gauges.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
#[non_exhaustive]
pub struct Backlog {
    /// Pending events.
    pub pending: u64,
    /// Age of the oldest pending event that is due now (excludes events in retry backoff).
    pub oldest_claimable_age: Option<TimeDelta>,
    /// Age of the oldest pending event.
    pub oldest_pending_age: Option<TimeDelta>,
    /// Leased events.
    pub leased: u64,
    /// Failed (terminal) events.
    pub failed: u64,
    /// Dead letters.
    pub dead_letters: u64,
}

/// Read backlog figures cheaply (index-backed).
pub trait BacklogStats: EventStore {
    /// Current backlog.
    fn backlog(
        &self,
        conn: &mut Self::Conn,
    ) -> impl Future<Output = Result<Backlog, StoreError>> + Send;
}

/// Savepoints inside the caller's transaction, so one unit of work (one handler run of a
/// batch) can be undone without aborting the rest: the batch inbox pipeline takes a
/// savepoint before each handler, releases it when the handler succeeded and rolls back to
/// it on any failure, so a failed handler's writes never commit with its failure record
/// (see [`crate::pipeline::steps::HandlerStep`]).
///
/// The savepoint has one fixed name (`omnibox_handler` in SQL stores), used one level deep.
/// Taking it again before releasing it nests like SQL savepoints of one name: the newer
/// one shadows the older, [`Savepoints::rollback_to_savepoint`] undoes everything since the
/// newest and keeps it, [`Savepoints::release_savepoint`] drops the newest (its writes stay
/// in the transaction) and makes the older one current again.
///
/// Every method needs an open transaction on `conn`; outside one, or with no savepoint to
/// roll back to or release, it returns an error. Code running between `savepoint` and its
/// release must not end the transaction nor release or roll back past the savepoint.
///
/// ```
/// # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
/// use omnibox_core::memory::{MemoryDb, MemoryInboxStore};
/// use omnibox_core::store::{Savepoints, Transactions};
///
/// let db = MemoryDb::new();
/// let store = MemoryInboxStore::new();
/// let mut tx = db.begin().await.unwrap();
/// tx.put("kept", serde_json::json!(1)).await;
/// store.savepoint(&mut tx).await.unwrap();
/// tx.put("undone", serde_json::json!(2)).await;
/// store.rollback_to_savepoint(&mut tx).await.unwrap();
/// store.release_savepoint(&mut tx).await.unwrap();
/// db.commit(tx).await.unwrap();
/// assert_eq!(db.value("kept").await, Some(serde_json::json!(1)));
/// assert_eq!(db.value("undone").await, None);
/// # });
/// ```
pub trait Savepoints: EventStore {
    /// Take a savepoint in the transaction open on `conn`.
    fn savepoint(
        &self,
        conn: &mut Self::Conn,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;
    /// Undo every write since the newest savepoint, which stays in place (and makes an
    /// aborted SQL transaction usable again).
    fn rollback_to_savepoint(
        &self,
        conn: &mut Self::Conn,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;
    /// Drop the newest savepoint, keeping its writes in the transaction.
    fn release_savepoint(
        &self,
        conn: &mut Self::Conn,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// Release the newest savepoint and take a new one: the next unit of work starts
    /// where the last one succeeded. The default makes the two calls; SQL stores send both
    /// statements in one round trip.
    fn renew_savepoint(
        &self,
        conn: &mut Self::Conn,
    ) -> impl Future<Output = Result<(), StoreError>> + Send {
        async move {
            self.release_savepoint(conn).await?;
            self.savepoint(conn).await
        }
    }
}

/// Begin, commit and roll back transactions; the caller's database handle.
pub trait Transactions: Send + Sync {
    /// The connection type stores take.
    type Conn: Send;
    /// An open transaction; derefs to the connection.
    type Tx: DerefMut<Target = Self::Conn> + Send;

    /// Begin a transaction.
    fn begin(&self) -> impl Future<Output = Result<Self::Tx, StoreError>> + Send;
    /// Commit it.
    fn commit(&self, tx: Self::Tx) -> impl Future<Output = Result<(), StoreError>> + Send;
    /// Roll it back.
    fn rollback(&self, tx: Self::Tx) -> impl Future<Output = Result<(), StoreError>> + Send;
}

/// Everything a relay needs from an outbox store (claim, settle, refresh leases), named
/// once: implemented for every store that has those capabilities.
pub trait OutboxStore:
    EventStore<Event = OutboxEvent> + ClaimEvents + SettleEvents + RefreshLeases
{
}

impl<S> OutboxStore for S where
    S: EventStore<Event = OutboxEvent> + ClaimEvents + SettleEvents + RefreshLeases
{
}

/// Everything an inbox runner needs from an inbox store (insert, lock, settle, look up by
/// message, dead letters, savepoints for batches), named once: implemented for every store
/// that has those capabilities.
pub trait InboxStore:
    EventStore<Event = InboxEvent>
    + InsertEvents
    + LockEvent
    + SettleEvents
    + InboxLookup
    + DeadLetterStore
    + Savepoints
{
}

impl<S> InboxStore for S where
    S: EventStore<Event = InboxEvent>
        + InsertEvents
        + LockEvent
        + SettleEvents
        + InboxLookup
        + DeadLetterStore
        + Savepoints
{
}

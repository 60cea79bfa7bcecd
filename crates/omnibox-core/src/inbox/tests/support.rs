//! Shared test fixtures: a harness over `crate::memory`, a failure-injecting wrapper around
//! the memory inbox store, and a scripted handler.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use chrono::{TimeDelta, TimeZone, Utc};
use serde_json::json;
use uuid::Uuid;

use crate::clock::{Clock, ManualClock};
use crate::error::{HandlerError, StoreError};
use crate::handler::{Handler, HandlerOutcome, HandlerResult};
use crate::inbox::{AckStrategy, InboxRunner, InboxRunnerBuilder, NoHandler};
use crate::memory::{MemoryBroker, MemoryConn, MemoryConsumer, MemoryDb, MemoryInboxStore};
use crate::model::{EventStatus, Headers, InboxEvent, Limits, WorkerId};
use crate::store::{
    DeadLetter, DeadLetterStore, EventStore, InboxLookup, InsertEvents, Inserted, LockEvent,
    LockOutcome, Savepoints, Settle, SettleEvents, SettleReport, Settlement, Transactions,
};

pub(super) const TOPIC: &str = "orders";
pub(super) const GROUP: &str = "billing";

/// Bound on any single wait in these tests (virtual time: tests run with a paused clock).
pub(super) const WAIT: Duration = Duration::from_secs(3600);

/// The memory inbox store with injectable storage failures.
#[derive(Debug, Clone, Default)]
pub(super) struct FlakyStore {
    pub(super) inner: MemoryInboxStore,
    fail_inserts: Arc<AtomicUsize>,
    fail_dead_letters: Arc<AtomicUsize>,
    /// What `dedup_key_is_unique` answers (default `false`: the runner asks for siblings).
    dedup_key_unique: Arc<AtomicBool>,
    /// How many times `has_completed_sibling` was asked.
    pub(super) sibling_calls: Arc<AtomicUsize>,
}

impl FlakyStore {
    /// Make the next `n` inserts fail with a (transient) connection error.
    pub(super) fn fail_next_inserts(&self, n: usize) {
        self.fail_inserts.store(n, Ordering::SeqCst);
    }

    /// Set what `dedup_key_is_unique` answers.
    pub(super) fn set_dedup_key_unique(&self, unique: bool) {
        self.dedup_key_unique.store(unique, Ordering::SeqCst);
    }

    /// Make the next `n` dead-letter writes fail.
    pub(super) fn fail_next_dead_letters(&self, n: usize) {
        self.fail_dead_letters.store(n, Ordering::SeqCst);
    }
}

fn take(counter: &AtomicUsize) -> bool {
    counter
        .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
        .is_ok()
}

fn injected() -> StoreError {
    StoreError::Connection {
        message: "injected failure".into(),
        source: None,
    }
}

impl EventStore for FlakyStore {
    type Event = InboxEvent;
    type Conn = MemoryConn;
}

impl InsertEvents for FlakyStore {
    async fn insert(
        &self,
        conn: &mut MemoryConn,
        event: &InboxEvent,
    ) -> Result<Inserted<InboxEvent>, StoreError> {
        if take(&self.fail_inserts) {
            return Err(injected());
        }
        self.inner.insert(conn, event).await
    }

    async fn insert_many(
        &self,
        conn: &mut MemoryConn,
        events: &[InboxEvent],
    ) -> Result<Vec<Inserted<InboxEvent>>, StoreError> {
        if take(&self.fail_inserts) {
            return Err(injected());
        }
        self.inner.insert_many(conn, events).await
    }
}

impl LockEvent for FlakyStore {
    async fn try_lock(
        &self,
        conn: &mut MemoryConn,
        id: Uuid,
        worker: &WorkerId,
        lease_ttl: TimeDelta,
        ignore_schedule: bool,
    ) -> Result<LockOutcome<InboxEvent>, StoreError> {
        self.inner
            .try_lock(conn, id, worker, lease_ttl, ignore_schedule)
            .await
    }
}

impl SettleEvents for FlakyStore {
    async fn settle(
        &self,
        conn: &mut MemoryConn,
        worker: &WorkerId,
        settlements: &[Settlement],
    ) -> Result<SettleReport, StoreError> {
        self.inner.settle(conn, worker, settlements).await
    }
}

impl InboxLookup for FlakyStore {
    async fn find_message(
        &self,
        conn: &mut MemoryConn,
        message_id: &str,
        consumer_group: &str,
    ) -> Result<Option<InboxEvent>, StoreError> {
        self.inner
            .find_message(conn, message_id, consumer_group)
            .await
    }

    async fn has_completed_sibling(
        &self,
        conn: &mut MemoryConn,
        message_id: &str,
        consumer_group: &str,
        exclude: Uuid,
    ) -> Result<bool, StoreError> {
        self.sibling_calls.fetch_add(1, Ordering::SeqCst);
        self.inner
            .has_completed_sibling(conn, message_id, consumer_group, exclude)
            .await
    }

    fn dedup_key_is_unique(&self) -> bool {
        self.dedup_key_unique.load(Ordering::SeqCst)
    }
}

impl DeadLetterStore for FlakyStore {
    async fn dead_letter(
        &self,
        conn: &mut MemoryConn,
        letter: &DeadLetter,
    ) -> Result<(), StoreError> {
        if take(&self.fail_dead_letters) {
            return Err(injected());
        }
        self.inner.dead_letter(conn, letter).await
    }
}

impl Savepoints for FlakyStore {
    async fn savepoint(&self, conn: &mut MemoryConn) -> Result<(), StoreError> {
        self.inner.savepoint(conn).await
    }

    async fn rollback_to_savepoint(&self, conn: &mut MemoryConn) -> Result<(), StoreError> {
        self.inner.rollback_to_savepoint(conn).await
    }

    async fn release_savepoint(&self, conn: &mut MemoryConn) -> Result<(), StoreError> {
        self.inner.release_savepoint(conn).await
    }
}

/// What the scripted handler does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Script {
    /// Write the effect, complete.
    Complete,
    /// Skip (no effect).
    Skip,
    /// Write the effect, then fail permanently (the effect must roll back).
    Fail,
    /// Write the effect, then ask for an uncounted retry.
    RetryUncounted,
    /// Write the effect, then sleep past any timeout.
    Hang,
    /// Write the effect, then panic.
    Panic,
    /// Write the effect; fail the first call of each message, complete later calls.
    FailFirstTime,
}

/// Messages whose id starts with this always complete, whatever the script: the healthy
/// neighbours of a batch.
pub(super) const COMPANION: &str = "companion";

/// A handler following a [`Script`] (except for [`COMPANION`] messages). Its business effect is the counter `effect:<message_id>`
/// in the MemoryDb key/value table, written through the connection it is given.
#[derive(Debug, Clone)]
pub(super) struct Scripted {
    pub(super) script: Script,
    pub(super) calls: Arc<AtomicUsize>,
    seen: Arc<std::sync::Mutex<std::collections::HashSet<String>>>,
}

impl Scripted {
    pub(super) fn new(script: Script) -> Self {
        Self {
            script,
            calls: Arc::default(),
            seen: Arc::default(),
        }
    }
}

pub(super) fn effect_key(message_id: &str) -> String {
    format!("effect:{message_id}")
}

impl Handler<InboxEvent, MemoryConn> for Scripted {
    async fn handle(&self, event: &InboxEvent, conn: &mut MemoryConn) -> HandlerResult {
        self.calls.fetch_add(1, Ordering::SeqCst);
        let companion = event.message_id.starts_with(COMPANION);
        if companion || self.script != Script::Skip {
            let key = effect_key(&event.message_id);
            let n = conn.get(&key).await.and_then(|v| v.as_i64()).unwrap_or(0);
            conn.put(key, json!(n + 1)).await;
        }
        if companion {
            return Ok(HandlerOutcome::Completed);
        }
        match self.script {
            Script::Complete => Ok(HandlerOutcome::Completed),
            Script::Skip => Ok(HandlerOutcome::skipped("not for us")),
            Script::Fail => Err(HandlerError::permanent("boom")),
            Script::RetryUncounted => Ok(HandlerOutcome::Retry {
                error: "not yet".into(),
                counted: false,
                retry_at: None,
            }),
            Script::Hang => {
                tokio::time::sleep(Duration::from_secs(24 * 3600)).await;
                Ok(HandlerOutcome::Completed)
            }
            Script::Panic => panic!("handler exploded"),
            Script::FailFirstTime => {
                let first = self
                    .seen
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .insert(event.message_id.clone());
                if first {
                    Err(HandlerError::permanent("first try fails"))
                } else {
                    Ok(HandlerOutcome::Completed)
                }
            }
        }
    }
}

/// The body and headers of a well-formed message with this id.
fn well_formed(message_id: &str) -> (String, Headers) {
    let mut headers = Headers::new();
    headers.insert("message_id".into(), message_id.into());
    headers.insert("event_type".into(), "order.placed".into());
    (
        json!({"order": message_id, "total": 42}).to_string(),
        headers,
    )
}

/// A broker, a database and an inbox store sharing a manual clock.
pub(super) struct Harness {
    pub(super) broker: MemoryBroker,
    pub(super) db: MemoryDb,
    pub(super) store: FlakyStore,
    pub(super) clock: ManualClock,
}

impl Harness {
    pub(super) fn new() -> Self {
        let clock = ManualClock::new(Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, 0).unwrap());
        Self {
            broker: MemoryBroker::new(),
            db: MemoryDb::with_clock(Arc::new(clock.clone())),
            store: FlakyStore::default(),
            clock,
        }
    }

    /// Push a well-formed message with this id.
    pub(super) fn push(&self, message_id: &str) -> u64 {
        let (body, headers) = well_formed(message_id);
        self.broker.push_raw(TOPIC, body, headers)
    }

    /// Push a well-formed message with this id under a message key (its unit of order).
    pub(super) fn push_keyed(&self, key: &str, message_id: &str) -> u64 {
        let (body, headers) = well_formed(message_id);
        self.broker.push_keyed(TOPIC, key, body, headers)
    }

    /// A runner builder on a fresh consumer of the harness' topic and group.
    pub(super) fn builder(
        &self,
        strategy: AckStrategy,
        worker: &str,
    ) -> InboxRunnerBuilder<MemoryConsumer, MemoryDb, FlakyStore, NoHandler> {
        InboxRunner::builder(
            self.broker.consumer([TOPIC], GROUP),
            self.db.clone(),
            self.store.clone(),
            GROUP,
        )
        .ack_strategy(strategy)
        .worker_id(WorkerId::new(worker).unwrap())
        .clock(Arc::new(self.clock.clone()))
    }

    pub(super) async fn rows(&self) -> Vec<InboxEvent> {
        self.store.inner.all(&mut self.db.connection()).await
    }

    pub(super) async fn row(&self, message_id: &str) -> Option<InboxEvent> {
        let mut rows: Vec<_> = self
            .rows()
            .await
            .into_iter()
            .filter(|r| r.message_id == message_id)
            .collect();
        assert!(rows.len() <= 1, "one row per message and group: {rows:?}");
        rows.pop()
    }

    pub(super) async fn dead_letters(&self) -> Vec<DeadLetter> {
        self.store
            .inner
            .dead_letters(&mut self.db.connection())
            .await
    }

    pub(super) async fn effect(&self, message_id: &str) -> i64 {
        self.db
            .value(&effect_key(message_id))
            .await
            .and_then(|v| v.as_i64())
            .unwrap_or(0)
    }

    pub(super) fn acked(&self) -> u64 {
        self.broker.acked(TOPIC, GROUP)
    }

    pub(super) fn nacked(&self) -> u64 {
        self.broker.nacked(TOPIC, GROUP)
    }

    pub(super) fn pending(&self) -> usize {
        self.broker.pending(TOPIC, GROUP)
    }

    fn event(&self, message_id: &str, max_attempts: u32) -> InboxEvent {
        InboxEvent::builder(message_id, GROUP, TOPIC, "order.placed")
            .payload(json!({"seeded": true}))
            .created_at(self.clock.now())
            .max_attempts(max_attempts)
            .build()
            .unwrap()
    }

    /// Store a row for `message_id` that already completed.
    pub(super) async fn seed_completed(&self, message_id: &str) {
        self.seed(message_id, 6, Some(Settle::Complete), "seeder")
            .await;
    }

    /// Store a row for `message_id` that spent its budget (failed and dead-lettered).
    pub(super) async fn seed_failed(&self, message_id: &str) {
        let fail = Settle::Fail {
            error: "earlier failure".into(),
            counted: true,
            retry_at: None,
        };
        self.seed(message_id, 1, Some(fail), "seeder").await;
    }

    /// Store a row for `message_id` leased (live) by another worker.
    pub(super) async fn seed_leased(&self, message_id: &str) {
        self.seed(message_id, 6, None, "other-worker").await;
    }

    async fn seed(
        &self,
        message_id: &str,
        max_attempts: u32,
        action: Option<Settle>,
        worker: &str,
    ) {
        let store = &self.store.inner;
        let worker = WorkerId::new(worker).unwrap();
        let mut tx = self.db.begin().await.unwrap();
        let row = store
            .insert(&mut tx, &self.event(message_id, max_attempts))
            .await
            .unwrap();
        let id = row.event().common.id;
        let LockOutcome::Locked(locked) = store
            .try_lock(&mut tx, id, &worker, TimeDelta::seconds(300), true)
            .await
            .unwrap()
        else {
            panic!("seed row not lockable");
        };
        if let Some(action) = action {
            store
                .settle(
                    &mut tx,
                    &worker,
                    &[Settlement {
                        id,
                        lease: locked.common.locked_at.unwrap(),
                        action,
                    }],
                )
                .await
                .unwrap();
        }
        self.db.commit(tx).await.unwrap();
    }
}

/// The status of the one row of a message.
pub(super) fn status(row: &Option<InboxEvent>) -> Option<EventStatus> {
    row.as_ref().map(|r| r.common.status)
}

/// A limits value with a given attempt budget.
pub(super) fn attempts(n: u32) -> Limits {
    Limits::default().max_attempts(n)
}

//! The in-memory database: tables, connections and serialised transactions.

use std::collections::BTreeMap;
use std::fmt;
use std::ops::{Deref, DerefMut};
use std::sync::Arc;

use chrono::{DateTime, SubsecRound, Utc};
use serde_json::Value;
use tokio::sync::{Mutex, OwnedMutexGuard};

use super::table::EventTable;
use crate::clock::{Clock, SystemClock};
use crate::error::StoreError;
use crate::model::{InboxEvent, OutboxEvent};
use crate::store::Transactions;

/// Every table of one in-memory database.
#[derive(Debug, Clone, Default)]
pub struct Tables {
    pub(crate) outbox: EventTable<OutboxEvent>,
    pub(crate) inbox: EventTable<InboxEvent>,
    pub(crate) kv: BTreeMap<String, Value>,
}

/// A shared in-memory database holding an outbox table, an inbox table, their dead letters
/// and a small key/value table for business data, so tests can show that an effect commits
/// (or rolls back) together with the event.
///
/// Cloning is cheap: clones share the data. Implements [`Transactions`]:
/// a transaction sees its own writes, [`Transactions::commit`] publishes them, and
/// [`Transactions::rollback`] — or dropping the [`MemoryTx`] uncommitted — discards them.
///
/// **Transactions are serialised**: an open transaction holds the whole database, so a
/// second `begin` waits until the first one ends. Never open two transactions (or use a
/// [`MemoryDb::connection`]) in the same task at once: that waits forever. Concurrent
/// workers in separate tasks are fine; they simply take turns, which trivially gives the
/// `FOR UPDATE SKIP LOCKED` guarantee that two claims never return the same event.
///
/// Timestamps come from the database's [`Clock`] truncated to microseconds, like
/// PostgreSQL's `timestamptz`, so lease tokens read back compare equal.
///
/// ```
/// # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
/// use omnibox_core::memory::MemoryDb;
/// use omnibox_core::store::Transactions;
///
/// let db = MemoryDb::new();
/// let mut tx = db.begin().await.unwrap();
/// tx.put("balance", serde_json::json!(10)).await;
/// db.rollback(tx).await.unwrap();
/// assert_eq!(db.value("balance").await, None);
///
/// let mut tx = db.begin().await.unwrap();
/// tx.put("balance", serde_json::json!(10)).await;
/// db.commit(tx).await.unwrap();
/// assert_eq!(db.value("balance").await, Some(serde_json::json!(10)));
/// # });
/// ```
#[derive(Clone)]
pub struct MemoryDb {
    state: Arc<Mutex<Tables>>,
    clock: Arc<dyn Clock>,
}

impl fmt::Debug for MemoryDb {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MemoryDb")
            .field("clock", &self.clock)
            .finish_non_exhaustive()
    }
}

impl Default for MemoryDb {
    fn default() -> Self {
        Self::new()
    }
}

/// Truncate a time to microseconds (PostgreSQL's precision).
pub fn truncate_micros(t: DateTime<Utc>) -> DateTime<Utc> {
    t.trunc_subsecs(6)
}

impl MemoryDb {
    /// An empty database on the system clock.
    pub fn new() -> Self {
        Self::with_clock(Arc::new(SystemClock))
    }

    /// An empty database on `clock` (e.g. a [`crate::clock::ManualClock`], so tests can
    /// expire leases without sleeping).
    pub fn with_clock(clock: Arc<dyn Clock>) -> Self {
        Self {
            state: Arc::new(Mutex::new(Tables::default())),
            clock,
        }
    }

    /// The database clock's time, truncated to microseconds.
    pub fn now(&self) -> DateTime<Utc> {
        truncate_micros(self.clock.now())
    }

    /// An autocommit connection: each call applies at once. It waits while a transaction
    /// is open (see the type docs about using both in one task).
    pub fn connection(&self) -> MemoryConn {
        MemoryConn {
            db: self.clone(),
            tx: None,
        }
    }

    /// A committed business value.
    pub async fn value(&self, key: &str) -> Option<Value> {
        self.state.lock().await.kv.get(key).cloned()
    }
}

struct OpenTx {
    guard: OwnedMutexGuard<Tables>,
    snapshot: Option<Tables>,
    /// The transaction's state at each open savepoint, newest last.
    savepoints: Vec<Tables>,
}

/// A connection to a [`MemoryDb`]: autocommit (from [`MemoryDb::connection`]) or inside a
/// [`MemoryTx`]. Stores take `&mut MemoryConn`; business code uses [`MemoryConn::put`] and
/// [`MemoryConn::get`].
pub struct MemoryConn {
    db: MemoryDb,
    tx: Option<OpenTx>,
}

impl fmt::Debug for MemoryConn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MemoryConn")
            .field("in_transaction", &self.tx.is_some())
            .finish_non_exhaustive()
    }
}

impl MemoryConn {
    /// The database this connection belongs to.
    pub fn db(&self) -> &MemoryDb {
        &self.db
    }

    /// `true` inside a transaction.
    pub fn in_transaction(&self) -> bool {
        self.tx.is_some()
    }

    /// Run `f` on the tables with the current time: inside the transaction, or atomically
    /// on its own in autocommit mode.
    pub(crate) async fn with<R>(&mut self, f: impl FnOnce(&mut Tables, DateTime<Utc>) -> R) -> R {
        let now = self.db.now();
        match &mut self.tx {
            Some(tx) => f(&mut tx.guard, now),
            None => {
                let mut guard = self.db.state.lock().await;
                f(&mut guard, now)
            }
        }
    }

    /// The open transaction, or an error naming `operation`.
    fn open_tx(&mut self, operation: &str) -> Result<&mut OpenTx, StoreError> {
        self.tx.as_mut().ok_or_else(|| {
            StoreError::InvalidRequest(format!("{operation} needs an open transaction"))
        })
    }

    /// Take a savepoint: remember the transaction's current state (a copy of every table,
    /// so this costs one clone of the database per savepoint).
    pub(crate) fn savepoint(&mut self) -> Result<(), StoreError> {
        let tx = self.open_tx("savepoint")?;
        let state = tx.guard.clone();
        tx.savepoints.push(state);
        Ok(())
    }

    /// Restore the state of the newest savepoint, which stays in place.
    pub(crate) fn rollback_to_savepoint(&mut self) -> Result<(), StoreError> {
        let tx = self.open_tx("rollback to savepoint")?;
        let state = tx.savepoints.last().cloned().ok_or_else(|| {
            StoreError::InvalidRequest("rollback to savepoint: no savepoint is open".into())
        })?;
        *tx.guard = state;
        Ok(())
    }

    /// Drop the newest savepoint; the writes made since stay in the transaction.
    pub(crate) fn release_savepoint(&mut self) -> Result<(), StoreError> {
        let tx = self.open_tx("release savepoint")?;
        match tx.savepoints.pop() {
            Some(_) => Ok(()),
            None => Err(StoreError::InvalidRequest(
                "release savepoint: no savepoint is open".into(),
            )),
        }
    }

    /// Write a business value (joins the transaction).
    pub async fn put(&mut self, key: impl Into<String>, value: Value) {
        let key = key.into();
        self.with(|t, _| t.kv.insert(key, value)).await;
    }

    /// Read a business value (sees the transaction's own writes).
    pub async fn get(&mut self, key: &str) -> Option<Value> {
        self.with(|t, _| t.kv.get(key).cloned()).await
    }

    /// Delete a business value; returns the old one.
    pub async fn remove(&mut self, key: &str) -> Option<Value> {
        self.with(|t, _| t.kv.remove(key)).await
    }
}

/// An open in-memory transaction (see [`MemoryDb`]); derefs to its [`MemoryConn`].
/// Dropping it without [`Transactions::commit`] rolls it back.
pub struct MemoryTx {
    conn: MemoryConn,
}

impl fmt::Debug for MemoryTx {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MemoryTx").finish_non_exhaustive()
    }
}

impl Deref for MemoryTx {
    type Target = MemoryConn;
    fn deref(&self) -> &MemoryConn {
        &self.conn
    }
}

impl DerefMut for MemoryTx {
    fn deref_mut(&mut self) -> &mut MemoryConn {
        &mut self.conn
    }
}

impl Drop for MemoryTx {
    fn drop(&mut self) {
        if let Some(mut tx) = self.conn.tx.take()
            && let Some(snapshot) = tx.snapshot.take()
        {
            *tx.guard = snapshot;
        }
    }
}

impl Transactions for MemoryDb {
    type Conn = MemoryConn;
    type Tx = MemoryTx;

    async fn begin(&self) -> Result<MemoryTx, StoreError> {
        let guard = self.state.clone().lock_owned().await;
        let snapshot = Some(guard.clone());
        Ok(MemoryTx {
            conn: MemoryConn {
                db: self.clone(),
                tx: Some(OpenTx {
                    guard,
                    snapshot,
                    savepoints: Vec::new(),
                }),
            },
        })
    }

    async fn commit(&self, mut tx: MemoryTx) -> Result<(), StoreError> {
        if let Some(mut open) = tx.conn.tx.take() {
            open.snapshot = None;
        }
        Ok(())
    }

    async fn rollback(&self, tx: MemoryTx) -> Result<(), StoreError> {
        drop(tx);
        Ok(())
    }
}

//! The outbox and inbox stores: every core capability trait, in SQL.

use std::collections::{HashMap, HashSet};
use std::marker::PhantomData;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use chrono::{DateTime, TimeDelta, Utc};
use omnibox_core::error::StoreError;
use omnibox_core::model::validate::truncate_error;
use omnibox_core::model::{EventKind, EventStatus, InboxEvent, Limits, OutboxEvent, WorkerId};
use omnibox_core::store::{
    Backlog, BacklogStats, ClaimEvents, ClaimRequest, CleanupCompleted, DeadLetter,
    DeadLetterStore, EventStore, FetchPending, Filters, InboxLookup, InsertEvents, Inserted,
    LockEvent, LockOutcome, RefreshLeases, ReleaseStale, Settle, SettleEvents, SettleReport,
    Settlement, StaleReport,
};
use sqlx::postgres::PgRow;
use sqlx::{AssertSqlSafe, PgConnection, Row};
use uuid::Uuid;

use crate::config::{CompletionMode, PgStoreConfig, TableNames, Tables};
use crate::dead_letter_columns::{DeadLetterColumns, text};
use crate::error::ResultExt;
use crate::row::{
    PgEvent, PgQuery, Undecodable, bind_common, decode_each, decode_rows, read_limits,
};
use crate::sql::Statements;

/// The PostgreSQL outbox store.
pub type PgOutboxStore = PgEventStore<OutboxEvent>;
/// The PostgreSQL inbox store.
pub type PgInboxStore = PgEventStore<InboxEvent>;

/// A store for one event table; a cheap-to-clone configuration value that takes the
/// caller's connection (`&mut PgConnection`, e.g. `&mut *tx`) on every call.
///
/// **Reading is lenient, writing is strict.** Events are validated with the configured
/// [`Limits`] when they are written; rows are read back without the write-side policies
/// (header count and length caps, the schedule window), because another writer — one with
/// wider limits, an omni-box service, a hand-repaired row — may have stored them
/// legitimately, and a reader that refuses what the table holds wedges that row's key. Only
/// a row that is truly unusable (payload not a JSON object, a header value that is not a
/// string or holds control characters, a blank topic or key, inconsistent status, attempt
/// or lease columns) is refused. The claim fails and dead-letters such a row in its own
/// transaction, with the decode error as `last_error` and as the dead letter's reason, and
/// returns the rest of the batch; the row no longer heads its `(topic, partition_key)`, so
/// the key's later events are published after it (as after any terminal failure; replay
/// the dead letter after repairing the row). The optimistic fetch's `fetch_pending` does
/// the same with the unleased rows it reads. Reads of one row by id (`try_lock`, lookups)
/// report such a row as [`StoreError::InvalidRow`].
#[derive(Debug)]
pub struct PgEventStore<E> {
    tables: Arc<Tables>,
    sql: Arc<Statements>,
    limits: Limits,
    /// `limits` without the write-side policies: what rows are read with.
    read_limits: Limits,
    claim_timeout: Option<Duration>,
    persistent: bool,
    completion: CompletionMode,
    /// Exclusive claims through this store (and its clones) that came back full since the
    /// last one that came back short of its limit. A short claim means fewer claimable
    /// events than a batch (few keys, or a drained backlog), where concurrent claims
    /// compete for the same heads; exclusive claims take the claim gate until
    /// [`FULL_CLAIMS_UNGATED`] full ones in a row show there is work for all. Starts at 0.
    full_claims: Arc<AtomicU32>,
    _kind: PhantomData<fn() -> E>,
}

impl<E> Clone for PgEventStore<E> {
    fn clone(&self) -> Self {
        Self {
            tables: self.tables.clone(),
            sql: self.sql.clone(),
            limits: self.limits.clone(),
            read_limits: self.read_limits.clone(),
            claim_timeout: self.claim_timeout,
            persistent: self.persistent,
            completion: self.completion,
            full_claims: self.full_claims.clone(),
            _kind: PhantomData,
        }
    }
}

/// Full exclusive claims in a row after which a store stops taking the claim gate.
const FULL_CLAIMS_UNGATED: u32 = 8;

/// Largest settle batch that runs through the cached prepared statement; bigger batches
/// are planned with their actual arrays (a cached generic plan was quadratic at 500 rows).
pub(crate) const SMALL_UNNEST_BATCH: usize = 16;

/// How many times one claim call claims again when every row it got was undecodable.
const MAX_UNDECODABLE_ROUNDS: usize = 4;

fn micros(d: TimeDelta) -> i64 {
    d.num_microseconds().unwrap_or(i64::MAX)
}

fn limit_i64(limit: u32) -> Result<i64, StoreError> {
    if limit == 0 {
        return Err(StoreError::InvalidRequest(
            "limit must be at least 1".into(),
        ));
    }
    Ok(i64::from(limit))
}

impl<E: PgEvent> PgEventStore<E> {
    /// Build a store from `config`, validating every name and rendering the SQL once.
    pub fn new(config: &PgStoreConfig) -> Result<Self, StoreError> {
        config
            .limits
            .validate()
            .map_err(|e| StoreError::InvalidRequest(format!("invalid limits: {e}")))?;
        let tables = config.tables()?;
        let names = E::names(&tables).clone();
        let sql = Statements::build(
            &tables,
            &names,
            E::KIND,
            E::EXTRA,
            E::ROUTE,
            config.completion,
            config.asynchronous_claims,
        );
        Ok(Self {
            tables: Arc::new(tables),
            sql: Arc::new(sql),
            limits: config.limits.clone(),
            read_limits: read_limits(&config.limits),
            claim_timeout: config.claim_timeout,
            persistent: !config.pgbouncer,
            completion: config.completion,
            full_claims: Arc::new(AtomicU32::new(0)),
            _kind: PhantomData,
        })
    }

    /// The table names this store uses.
    pub fn names(&self) -> &TableNames {
        E::names(&self.tables)
    }

    /// The completion mode in effect (the inbox always marks completed).
    pub fn completion(&self) -> CompletionMode {
        match E::KIND {
            EventKind::Outbox => self.completion,
            EventKind::Inbox => CompletionMode::MarkCompleted,
        }
    }

    /// The claim statement (for `EXPLAIN` in tests and diagnostics). Parameters: `$1`
    /// worker, `$2` limit, `$3` lease TTL in µs, then one `text[]` per filter.
    pub fn claim_sql(&self) -> &str {
        &self.sql.claim
    }

    pub(crate) fn query(&self, sql: &Arc<str>) -> PgQuery<'static> {
        sqlx::query(AssertSqlSafe(sql.clone())).persistent(self.persistent)
    }

    /// An unnamed statement: planned with the actual arrays on every call. Used for
    /// statements joining a table to `UNNEST` of bound arrays, whose cached generic plan
    /// (which assumes 10 array elements) can degrade to a quadratic nested loop.
    pub(crate) fn query_custom_plan(&self, sql: &Arc<str>) -> PgQuery<'static> {
        sqlx::query(AssertSqlSafe(sql.clone())).persistent(false)
    }

    /// The statement for an `UNNEST` of `n` bound elements: up to
    /// [`SMALL_UNNEST_BATCH`] the normally cached prepared statement (its generic plan
    /// assumes about 10 elements, right for small batches, and it saves the parse and plan
    /// on every call: the inbox settles one event per transaction); above that a fresh
    /// plan per call ([`Self::query_custom_plan`]).
    pub(crate) fn query_for_batch(&self, sql: &Arc<str>, n: usize) -> PgQuery<'static> {
        if n <= SMALL_UNNEST_BATCH {
            self.query(sql)
        } else {
            self.query_custom_plan(sql)
        }
    }

    fn decode(&self, rows: &[PgRow]) -> Result<Vec<E>, StoreError> {
        decode_rows(rows, &self.read_limits)
    }

    /// Fail and dead-letter rows that cannot be decoded, on the caller's `conn` (so in its
    /// transaction). A claimed row is fenced by the lease the claim wrote for `worker`; an
    /// unleased row (read by [`FetchPending`]) only while it is still unleased. The decode
    /// error becomes `last_error` and the dead letter's reason.
    async fn fail_undecodable(
        &self,
        conn: &mut PgConnection,
        worker: &str,
        bad: &[Undecodable],
    ) -> Result<(), StoreError> {
        for b in bad {
            tracing::error!(event_id = %b.id, error = %b.error, table = %self.names().qualified,
                "claimed row cannot be decoded: failing and dead-lettering it");
        }
        self.query_custom_plan(&self.sql.fail_undecodable)
            .bind(bad.iter().map(|b| b.id).collect::<Vec<_>>())
            .bind(bad.iter().map(|b| b.lease).collect::<Vec<_>>())
            .bind(
                bad.iter()
                    .map(|b| truncate_error(&b.error.to_string(), self.limits.last_error_max_bytes))
                    .collect::<Vec<_>>(),
            )
            .bind(worker.to_owned())
            .execute(&mut *conn)
            .await
            .op("fail undecodable rows")?;
        Ok(())
    }

    fn bind_filters(
        &self,
        q: PgQuery<'static>,
        f: &Filters,
    ) -> Result<PgQuery<'static>, StoreError> {
        match E::KIND {
            EventKind::Outbox => {
                if !f.sources.is_empty() {
                    return Err(StoreError::InvalidRequest(
                        "the outbox has no `source` column; filter by topic".into(),
                    ));
                }
                Ok(q.bind(f.topics.clone())
                    .bind(f.aggregate_types.clone())
                    .bind(f.event_types.clone()))
            }
            EventKind::Inbox => {
                if !f.topics.is_empty() || !f.aggregate_types.is_empty() {
                    return Err(StoreError::InvalidRequest(
                        "the inbox has no `topic` or `aggregate_type` column; filter by source"
                            .into(),
                    ));
                }
                Ok(q.bind(f.sources.clone()).bind(f.event_types.clone()))
            }
        }
    }

    fn partition_scoped(&self) -> bool {
        self.names().partitioned
    }

    /// The dedup identity of an event, when it has one.
    fn identity(event: &E) -> Option<(String, String)> {
        match E::KIND {
            EventKind::Outbox => event
                .common()
                .idempotency_key
                .clone()
                .map(|k| (k, String::new())),
            EventKind::Inbox => Some((
                event.message_id()?.to_owned(),
                event.consumer_group()?.to_owned(),
            )),
        }
    }

    /// Insert with dedup; `leased_to`: lease each new row to that worker in the same
    /// statement.
    async fn insert_impl(
        &self,
        conn: &mut PgConnection,
        events: &[E],
        leased_to: Option<&WorkerId>,
    ) -> Result<Vec<Inserted<E>>, StoreError> {
        if events.is_empty() {
            return Ok(Vec::new());
        }
        let identities: Vec<Option<(String, String)>> = events.iter().map(Self::identity).collect();
        let guarded = self.partition_scoped() && identities.iter().any(Option::is_some);
        if guarded {
            // Partitioned tables cannot enforce the dedup key across partitions: serialise
            // writers of the same key with the reference's advisory lock, then insert only
            // keys that do not exist yet. Correct only at READ COMMITTED: the same statement
            // reads the isolation level, and a higher one is refused (`isolation.rs`).
            let keyed: Vec<&(String, String)> = identities.iter().flatten().collect();
            let q = self.query(&self.sql.advisory_lock);
            let q = match E::KIND {
                EventKind::Outbox => q
                    .bind(self.names().table.as_str().to_owned())
                    .bind(keyed.iter().map(|k| k.0.clone()).collect::<Vec<_>>()),
                EventKind::Inbox => q
                    .bind(keyed.iter().map(|k| k.0.clone()).collect::<Vec<_>>())
                    .bind(keyed.iter().map(|k| k.1.clone()).collect::<Vec<_>>()),
            };
            let row = q.fetch_one(&mut *conn).await.op("insert (advisory lock)")?;
            let level: String = row.try_get("isolation").op("insert (advisory lock)")?;
            crate::isolation::check_keyed_insert(&self.names().qualified, &level)?;
        }
        let sql = match (guarded, leased_to.is_some()) {
            (true, false) => &self.sql.insert_guarded,
            (false, false) => &self.sql.insert,
            (true, true) => &self.sql.insert_guarded_leased,
            (false, true) => &self.sql.insert_leased,
        };
        // Collapse in-batch duplicates to their first occurrence (a partitioned table's
        // unique index cannot see that two rows with different created_at share a key).
        let mut first: HashSet<&(String, String)> = HashSet::new();
        let to_insert: Vec<E> = events
            .iter()
            .zip(&identities)
            .filter(|(_, ident)| ident.as_ref().is_none_or(|k| first.insert(k)))
            .map(|(e, _)| e.clone())
            .collect();
        let mut q = E::bind_extra(bind_common(self.query(sql), &to_insert), &to_insert);
        if let Some(worker) = leased_to {
            q = q.bind(worker.as_str().to_owned());
        }
        let rows = q.fetch_all(&mut *conn).await.op("insert")?;
        let mut inserted: HashMap<Uuid, E> = HashMap::with_capacity(rows.len());
        for e in self.decode(&rows)? {
            inserted.insert(e.id(), e);
        }
        let mut by_key: HashMap<(String, String), E> = HashMap::new();
        let mut by_id: HashMap<Uuid, E> = HashMap::new();
        if inserted.len() < events.len() {
            let mut missing_keys = Vec::new();
            let mut missing_ids = Vec::new();
            for (e, ident) in events.iter().zip(&identities) {
                if inserted.contains_key(&e.id()) {
                    continue;
                }
                match ident {
                    Some(k) => missing_keys.push(k.clone()),
                    None => missing_ids.push(e.id()),
                }
            }
            if !missing_keys.is_empty() {
                let q = self.query(&self.sql.lookup_by_key);
                let q = match E::KIND {
                    EventKind::Outbox => {
                        q.bind(missing_keys.iter().map(|k| k.0.clone()).collect::<Vec<_>>())
                    }
                    EventKind::Inbox => q
                        .bind(missing_keys.iter().map(|k| k.0.clone()).collect::<Vec<_>>())
                        .bind(missing_keys.iter().map(|k| k.1.clone()).collect::<Vec<_>>()),
                };
                let rows = q.fetch_all(&mut *conn).await.op("insert (lookup)")?;
                for e in self.decode(&rows)? {
                    if let Some(k) = Self::identity(&e) {
                        by_key.insert(k, e);
                    }
                }
            }
            if !missing_ids.is_empty() {
                let rows = self
                    .query(&self.sql.lookup_by_id)
                    .bind(missing_ids)
                    .fetch_all(&mut *conn)
                    .await
                    .op("insert (lookup)")?;
                for e in self.decode(&rows)? {
                    by_id.insert(e.id(), e);
                }
            }
        }
        let mut out = Vec::with_capacity(events.len());
        let mut seen_new: HashSet<Uuid> = HashSet::new();
        for (e, ident) in events.iter().zip(&identities) {
            if let Some(row) = inserted.get(&e.id()).filter(|_| seen_new.insert(e.id())) {
                out.push(Inserted::New(row.clone()));
                continue;
            }
            let existing = match ident {
                Some(k) => by_key.get(k).cloned(),
                None => by_id
                    .get(&e.id())
                    .cloned()
                    .or_else(|| inserted.get(&e.id()).cloned()),
            };
            match existing {
                Some(row) => out.push(Inserted::Duplicate(row)),
                None => {
                    return Err(StoreError::Integrity {
                        message: format!(
                            "event {} conflicts with a stored row that has a different dedup key",
                            e.id()
                        ),
                        source: None,
                    });
                }
            }
        }
        Ok(out)
    }

    /// Enqueue one event in the caller's transaction (`&mut *tx`). A duplicate
    /// idempotency key is `Ok(Inserted::Duplicate(stored))` and leaves the transaction
    /// usable. With a notify channel configured, listeners are woken when the transaction
    /// commits (never on rollback).
    ///
    /// **Isolation.** On a plain table any isolation level keeps one row per idempotency
    /// key (a unique index decides; above READ COMMITTED a racing second writer may get a
    /// serialization failure, [`StoreError::Contention`], which is transient). On a
    /// partitioned table a keyed event needs a READ COMMITTED transaction; above it the
    /// call fails with [`StoreError::UnsupportedIsolation`] rather than risk storing the
    /// key twice.
    ///
    /// **Order.** The relay publishes one key's events in `created_at` order (the time the
    /// event was built), not in commit order: two transactions that enqueue for one
    /// `(topic, partition_key)` and commit in the opposite order of their timestamps are
    /// published in timestamp order, and the later-built one may even be published first
    /// when it commits first and is relayed before the other commits. Where one key's
    /// events must follow its commits, serialise the writers of that key: lock the
    /// aggregate's row first, then build and enqueue the event.
    ///
    /// ```no_run
    /// # async fn place(pool: sqlx::PgPool, outbox: omnibox_postgres::PgOutboxStore, order: uuid::Uuid)
    /// # -> Result<(), Box<dyn std::error::Error>> {
    /// use omnibox_core::OutboxEvent;
    ///
    /// let mut tx = pool.begin().await?;
    /// // Writers of this order queue up here, so their events' timestamps follow commits.
    /// sqlx::query("SELECT 1 FROM orders WHERE id = $1 FOR UPDATE")
    ///     .bind(order)
    ///     .execute(&mut *tx)
    ///     .await?;
    /// sqlx::query("UPDATE orders SET status = 'paid' WHERE id = $1")
    ///     .bind(order)
    ///     .execute(&mut *tx)
    ///     .await?;
    /// let event = OutboxEvent::builder("order", order, "order.paid", "orders", order.to_string())
    ///     .payload(serde_json::json!({ "order": order }))
    ///     .build()?; // `created_at` is taken now, after the lock
    /// outbox.enqueue(&mut tx, &event).await?;
    /// tx.commit().await?;
    /// # Ok(()) }
    /// ```
    pub async fn enqueue(
        &self,
        conn: &mut PgConnection,
        event: &E,
    ) -> Result<Inserted<E>, StoreError> {
        let mut v = self
            .insert_impl(conn, std::slice::from_ref(event), None)
            .await?;
        v.pop().ok_or_else(|| StoreError::Other {
            operation: "insert",
            message: "no result row".into(),
            source: None,
        })
    }

    /// Enqueue many events in one round trip (`UNNEST`); results in input order.
    pub async fn enqueue_many(
        &self,
        conn: &mut PgConnection,
        events: &[E],
    ) -> Result<Vec<Inserted<E>>, StoreError> {
        self.insert_impl(conn, events, None).await
    }

    /// Bring a terminally failed event back to pending with a fresh budget (and drop its
    /// dead letters). `false` when the event is not `failed`.
    pub async fn requeue_failed(
        &self,
        conn: &mut PgConnection,
        id: Uuid,
    ) -> Result<bool, StoreError> {
        let n = crate::dead_letters::requeue_events(self, conn, &[id]).await?;
        Ok(n == 1)
    }

    pub(crate) fn limits(&self) -> &Limits {
        &self.limits
    }

    pub(crate) fn row_limits(&self) -> &Limits {
        &self.read_limits
    }

    pub(crate) fn persistent(&self) -> bool {
        self.persistent
    }

    /// [`SettleEvents::settle`] when every settlement is [`Settle::Complete`]: the same
    /// fenced row changes through a statement that binds only ids and leases. `seen` is
    /// the empty duplicate-check set (with capacity).
    async fn settle_complete(
        &self,
        conn: &mut PgConnection,
        worker: &WorkerId,
        settlements: &[Settlement],
        mut seen: HashSet<Uuid>,
    ) -> Result<SettleReport, StoreError> {
        let n = settlements.len();
        let (mut ids, mut leases) = (Vec::with_capacity(n), Vec::with_capacity(n));
        for s in settlements {
            if !seen.insert(s.id) {
                return Err(StoreError::InvalidRequest(format!(
                    "event {} appears twice in one settle call",
                    s.id
                )));
            }
            ids.push(s.id);
            leases.push(s.lease);
        }
        let rows = self
            .query_for_batch(&self.sql.settle_complete, n)
            .bind(ids)
            .bind(leases)
            .bind(worker.as_str().to_owned())
            .fetch_all(&mut *conn)
            .await
            .op("settle")?;
        let mut report = SettleReport::default();
        report.completed.reserve(rows.len());
        // `seen` now holds every id; what remains after removing the applied ones lost
        // its lease.
        for row in &rows {
            let id: Uuid = row.try_get(0).op("settle")?;
            seen.remove(&id);
            report.completed.push(id);
        }
        report.lease_lost = settlements
            .iter()
            .map(|s| s.id)
            .filter(|id| seen.contains(id))
            .collect();
        Ok(report)
    }

    /// `SET LOCAL statement_timeout` for the claim; returns the previous value.
    async fn set_timeout(&self, conn: &mut PgConnection) -> Result<Option<String>, StoreError> {
        let Some(t) = self.claim_timeout else {
            return Ok(None);
        };
        let row = sqlx::query(
            "SELECT current_setting('statement_timeout') AS old, set_config('statement_timeout', $1, true)",
        )
        .persistent(self.persistent)
        .bind(format!("{}ms", t.as_millis().max(1)))
        .fetch_one(&mut *conn)
        .await
        .op("claim (statement_timeout)")?;
        Ok(Some(row.try_get("old").op("claim (statement_timeout)")?))
    }

    async fn restore_timeout(
        &self,
        conn: &mut PgConnection,
        old: Option<String>,
    ) -> Result<(), StoreError> {
        if let Some(old) = old {
            sqlx::query("SELECT set_config('statement_timeout', $1, true)")
                .persistent(self.persistent)
                .bind(old)
                .execute(&mut *conn)
                .await
                .op("claim (statement_timeout)")?;
        }
        Ok(())
    }
}

impl PgEventStore<OutboxEvent> {
    /// Enqueue a typed [`Message`](omnibox_core::Message) in the caller's transaction: its
    /// event (type, aggregate, topic, partition key and payload from the message) is built
    /// and inserted in one call. For headers, a schedule or an idempotency key, build it
    /// with [`OutboxEvent::message`] and [`enqueue`](Self::enqueue) it.
    ///
    /// ```no_run
    /// # #[derive(serde::Serialize, serde::Deserialize)] struct OrderPlaced { order: uuid::Uuid }
    /// # impl omnibox_core::Message for OrderPlaced {
    /// #     const EVENT_TYPE: &'static str = "order.placed";
    /// #     const AGGREGATE_TYPE: &'static str = "order";
    /// #     const TOPIC: &'static str = "orders";
    /// #     fn aggregate_id(&self) -> uuid::Uuid { self.order }
    /// # }
    /// # async fn place(pool: sqlx::PgPool, outbox: omnibox_postgres::PgOutboxStore)
    /// # -> Result<(), Box<dyn std::error::Error>> {
    /// let mut tx = pool.begin().await?;
    /// let order = uuid::Uuid::now_v7();
    /// sqlx::query("INSERT INTO orders (id) VALUES ($1)").bind(order).execute(&mut *tx).await?;
    /// outbox.enqueue_message(&mut tx, &OrderPlaced { order }).await?;
    /// tx.commit().await?;
    /// # Ok(()) }
    /// ```
    pub async fn enqueue_message<M: omnibox_core::Message>(
        &self,
        conn: &mut PgConnection,
        message: &M,
    ) -> Result<Inserted<OutboxEvent>, omnibox_core::Error> {
        let event = OutboxEvent::message(message).build()?;
        Ok(self.enqueue(conn, &event).await?)
    }
}

impl<E: PgEvent> EventStore for PgEventStore<E> {
    type Event = E;
    type Conn = PgConnection;
}

impl<E: PgEvent> ClaimEvents for PgEventStore<E> {
    async fn claim(
        &self,
        conn: &mut PgConnection,
        req: &ClaimRequest,
    ) -> Result<Vec<E>, StoreError> {
        let limit = limit_i64(req.limit)?;
        let gated = req.exclusive && E::KIND == EventKind::Outbox;
        if gated && self.full_claims.load(Ordering::Relaxed) < FULL_CLAIMS_UNGATED {
            // Takes the gate when it is free, and the claim's settings.
            let taken: bool = self
                .query(&self.sql.claim_gate_try)
                .fetch_one(&mut *conn)
                .await
                .and_then(|row| row.try_get(0))
                .op("claim (gate)")?;
            if !taken {
                sqlx::raw_sql(AssertSqlSafe(self.sql.claim_gate.clone()))
                    .execute(&mut *conn)
                    .await
                    .op("claim (gate)")?;
            }
        } else if req.exclusive {
            // The transaction commits right after the claim (see `sql::CLAIM_SETTINGS`).
            self.query(&self.sql.claim_settings)
                .execute(&mut *conn)
                .await
                .op("claim (settings)")?;
        }
        // A row that cannot be decoded is failed and dead-lettered here, in the claim's
        // transaction, and the rest of the batch is returned: it no longer heads its key,
        // so its successors become claimable (as after any terminal failure). When every
        // claimed row was bad, claim again (bounded) rather than report an empty claim.
        let claimed = self.claim_rounds(conn, req, limit).await?;
        if gated {
            let full = (claimed.len() as i64) >= limit;
            // `fetch_update` with a closure that always returns `Some` cannot fail.
            let _ = self
                .full_claims
                .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| {
                    Some(if full { n.saturating_add(1) } else { 0 })
                });
        }
        Ok(claimed)
    }
}

impl<E: PgEvent> PgEventStore<E> {
    /// The claim statement, again while every row it claimed could not be decoded.
    async fn claim_rounds(
        &self,
        conn: &mut PgConnection,
        req: &ClaimRequest,
        limit: i64,
    ) -> Result<Vec<E>, StoreError> {
        for _ in 0..MAX_UNDECODABLE_ROUNDS {
            let q = self
                .query(&self.sql.claim)
                .bind(req.worker.as_str().to_owned())
                .bind(limit)
                .bind(micros(req.lease_ttl));
            let q = self.bind_filters(q, &req.filters)?;
            let old = self.set_timeout(conn).await?;
            let rows = q.fetch_all(&mut *conn).await.op("claim")?;
            self.restore_timeout(conn, old).await?;
            let (good, bad) = decode_each(&rows, &self.read_limits)?;
            if bad.is_empty() {
                return Ok(good);
            }
            self.fail_undecodable(conn, req.worker.as_str(), &bad)
                .await?;
            if !good.is_empty() {
                return Ok(good);
            }
        }
        Ok(Vec::new())
    }
}

impl<E: PgEvent> FetchPending for PgEventStore<E> {
    async fn fetch_pending(
        &self,
        conn: &mut PgConnection,
        filters: &Filters,
        limit: u32,
    ) -> Result<Vec<E>, StoreError> {
        let q = self.query(&self.sql.fetch_pending).bind(limit_i64(limit)?);
        let rows = self
            .bind_filters(q, filters)?
            .fetch_all(&mut *conn)
            .await
            .op("fetch_pending")?;
        // As in the claim: a row that cannot be decoded is failed and dead-lettered (while
        // it is still unleased) and left out, so that it stops heading its key and the
        // optimistic fetch does not return the same bad row on every call.
        let (good, bad) = decode_each(&rows, &self.read_limits)?;
        if !bad.is_empty() {
            self.fail_undecodable(conn, "", &bad).await?;
        }
        Ok(good)
    }
}

impl<E: PgEvent> LockEvent for PgEventStore<E> {
    /// One statement: the insert writes each new row's lease (`locked_at = now()`).
    async fn insert_leased(
        &self,
        conn: &mut PgConnection,
        events: &[E],
        worker: &WorkerId,
        _lease_ttl: TimeDelta,
    ) -> Result<Vec<Inserted<E>>, StoreError> {
        self.insert_impl(conn, events, Some(worker)).await
    }

    async fn try_lock(
        &self,
        conn: &mut PgConnection,
        id: Uuid,
        worker: &WorkerId,
        lease_ttl: TimeDelta,
        ignore_schedule: bool,
    ) -> Result<LockOutcome<E>, StoreError> {
        let row = self
            .query(&self.sql.try_lock)
            .bind(worker.as_str().to_owned())
            .bind(ignore_schedule)
            .bind(micros(lease_ttl))
            .bind(id)
            .fetch_optional(&mut *conn)
            .await
            .op("try_lock")?;
        if let Some(row) = row {
            let e = E::from_row(&row, &self.read_limits)?;
            return Ok(if e.common().status == EventStatus::Pending {
                LockOutcome::Locked(e)
            } else {
                LockOutcome::Finished(e)
            });
        }
        let Some(row) = self
            .query(&self.sql.get)
            .bind(id)
            .fetch_optional(&mut *conn)
            .await
            .op("try_lock")?
        else {
            return Ok(LockOutcome::Missing);
        };
        let now: DateTime<Utc> = row.try_get("db_now").op("try_lock")?;
        let e = E::from_row(&row, &self.read_limits)?;
        let c = e.common();
        Ok(if c.status != EventStatus::Pending {
            LockOutcome::Finished(e)
        } else if c.locked_at.is_some() {
            LockOutcome::Busy(e)
        } else if !ignore_schedule && c.scheduled_at > now {
            LockOutcome::NotDue(e)
        } else {
            // Changed between the two statements (another worker got it).
            LockOutcome::Busy(e)
        })
    }
}

impl<E: PgEvent> SettleEvents for PgEventStore<E> {
    async fn settle(
        &self,
        conn: &mut PgConnection,
        worker: &WorkerId,
        settlements: &[Settlement],
    ) -> Result<SettleReport, StoreError> {
        let mut report = SettleReport::default();
        if settlements.is_empty() {
            return Ok(report);
        }
        let mut seen = HashSet::with_capacity(settlements.len());
        if settlements
            .iter()
            .all(|s| matches!(s.action, Settle::Complete))
        {
            return self.settle_complete(conn, worker, settlements, seen).await;
        }
        let n = settlements.len();
        let (mut ids, mut leases, mut actions, mut errors, mut counted, mut retry) = (
            Vec::with_capacity(n),
            Vec::with_capacity(n),
            Vec::with_capacity(n),
            Vec::with_capacity(n),
            Vec::with_capacity(n),
            Vec::with_capacity(n),
        );
        for s in settlements {
            if !seen.insert(s.id) {
                return Err(StoreError::InvalidRequest(format!(
                    "event {} appears twice in one settle call",
                    s.id
                )));
            }
            ids.push(s.id);
            leases.push(s.lease);
            match &s.action {
                Settle::Complete => {
                    actions.push("c");
                    errors.push(None);
                    counted.push(false);
                    retry.push(None);
                }
                Settle::Fail {
                    error,
                    counted: c,
                    retry_at,
                } => {
                    actions.push("f");
                    errors.push(Some(truncate_error(
                        error,
                        self.limits.last_error_max_bytes,
                    )));
                    counted.push(*c);
                    retry.push(*retry_at);
                }
                Settle::Release => {
                    actions.push("r");
                    errors.push(None);
                    counted.push(false);
                    retry.push(None);
                }
            }
        }
        let rows = self
            .query_for_batch(&self.sql.settle, n)
            .bind(ids)
            .bind(leases)
            .bind(actions)
            .bind(errors)
            .bind(counted)
            .bind(retry)
            .bind(worker.as_str().to_owned())
            .bind(micros(self.limits.schedule_max_future))
            .fetch_all(&mut *conn)
            .await
            .op("settle")?;
        let mut applied = HashSet::with_capacity(rows.len());
        for row in &rows {
            let id: Uuid = row.try_get(0).op("settle")?;
            let action: &str = row.try_get(1).op("settle")?;
            let status: &str = row.try_get(2).op("settle")?;
            applied.insert(id);
            match (action, status) {
                ("c", _) => report.completed.push(id),
                ("r", _) => report.released.push(id),
                (_, "failed") => report.dead_lettered.push(id),
                _ => report.retrying.push(id),
            }
        }
        report.lease_lost = settlements
            .iter()
            .map(|s| s.id)
            .filter(|id| !applied.contains(id))
            .collect();
        Ok(report)
    }
}

impl<E: PgEvent> RefreshLeases for PgEventStore<E> {
    async fn refresh(
        &self,
        conn: &mut PgConnection,
        worker: &WorkerId,
        leases: &[(Uuid, DateTime<Utc>)],
    ) -> Result<Vec<(Uuid, DateTime<Utc>)>, StoreError> {
        if leases.is_empty() {
            return Ok(Vec::new());
        }
        let rows = self
            .query_custom_plan(&self.sql.refresh)
            .bind(leases.iter().map(|l| l.0).collect::<Vec<_>>())
            .bind(leases.iter().map(|l| l.1).collect::<Vec<_>>())
            .bind(worker.as_str().to_owned())
            .fetch_all(&mut *conn)
            .await
            .op("refresh")?;
        rows.iter()
            .map(|r| {
                Ok((
                    r.try_get("id").op("refresh")?,
                    r.try_get("locked_at").op("refresh")?,
                ))
            })
            .collect()
    }
}

impl<E: PgEvent> ReleaseStale for PgEventStore<E> {
    async fn release_stale(
        &self,
        conn: &mut PgConnection,
        ttl: TimeDelta,
        limit: u32,
    ) -> Result<StaleReport, StoreError> {
        let row = self
            .query(&self.sql.release_stale)
            .bind(micros(ttl))
            .bind(limit_i64(limit)?)
            .fetch_one(&mut *conn)
            .await
            .op("release_stale")?;
        let released: i64 = row.try_get("released").op("release_stale")?;
        let failed: i64 = row.try_get("failed").op("release_stale")?;
        let mut report = StaleReport::default();
        report.released = u64::try_from(released).unwrap_or(0);
        report.failed = u64::try_from(failed).unwrap_or(0);
        Ok(report)
    }
}

impl<E: PgEvent> CleanupCompleted for PgEventStore<E> {
    async fn delete_completed(
        &self,
        conn: &mut PgConnection,
        older_than: TimeDelta,
        limit: u32,
    ) -> Result<u64, StoreError> {
        let r = self
            .query(&self.sql.delete_completed)
            .bind(micros(older_than))
            .bind(limit_i64(limit)?)
            .execute(&mut *conn)
            .await
            .op("delete_completed")?;
        Ok(r.rows_affected())
    }
}

impl<E: PgEvent> InsertEvents for PgEventStore<E> {
    async fn insert(&self, conn: &mut PgConnection, event: &E) -> Result<Inserted<E>, StoreError> {
        self.enqueue(conn, event).await
    }

    async fn insert_many(
        &self,
        conn: &mut PgConnection,
        events: &[E],
    ) -> Result<Vec<Inserted<E>>, StoreError> {
        self.insert_impl(conn, events, None).await
    }
}

impl InboxLookup for PgEventStore<InboxEvent> {
    async fn find_message(
        &self,
        conn: &mut PgConnection,
        message_id: &str,
        consumer_group: &str,
    ) -> Result<Option<InboxEvent>, StoreError> {
        let row = self
            .query(&self.sql.find_message)
            .bind(message_id.to_owned())
            .bind(consumer_group.to_owned())
            .fetch_optional(&mut *conn)
            .await
            .op("find_message")?;
        row.map(|r| InboxEvent::from_row(&r, &self.read_limits))
            .transpose()
    }

    async fn has_completed_sibling(
        &self,
        conn: &mut PgConnection,
        message_id: &str,
        consumer_group: &str,
        exclude: Uuid,
    ) -> Result<bool, StoreError> {
        // Answered on plain tables too (the caller's `exclude` need not be the stored row);
        // callers that just inserted the row skip it there (`dedup_key_is_unique`).
        let row = self
            .query(&self.sql.sibling)
            .bind(message_id.to_owned())
            .bind(consumer_group.to_owned())
            .bind(exclude)
            .fetch_optional(&mut *conn)
            .await
            .op("has_completed_sibling")?;
        Ok(row.is_some())
    }

    /// `true` for plain tables (unique index on `(message_id, consumer_group)`); `false`
    /// for partitioned ones, whose unique index includes `created_at`.
    fn dedup_key_is_unique(&self) -> bool {
        !self.partition_scoped()
    }
}

impl<E: PgEvent> DeadLetterStore for PgEventStore<E> {
    async fn dead_letter(
        &self,
        conn: &mut PgConnection,
        letter: &DeadLetter,
    ) -> Result<(), StoreError> {
        let columns = DeadLetterColumns::of(letter);
        self.query(&self.sql.dead_letter)
            .bind(letter.id)
            .bind(letter.event_id)
            .bind(text(&letter.kind))
            .bind(letter.event_type.as_deref().map(text))
            .bind(letter.route.as_deref().map(text))
            .bind(letter.message_id.as_deref().map(text))
            .bind(columns.body)
            .bind(columns.headers_jsonb)
            .bind(text(&letter.error))
            .bind(i32::try_from(letter.attempts).unwrap_or(i32::MAX))
            .bind(letter.created_at)
            .bind(columns.body_bytes)
            .bind(columns.headers_text)
            .execute(&mut *conn)
            .await
            .op("dead_letter")?;
        Ok(())
    }
}

impl<E: PgEvent> BacklogStats for PgEventStore<E> {
    async fn backlog(&self, conn: &mut PgConnection) -> Result<Backlog, StoreError> {
        let row = self
            .query(&self.sql.backlog)
            .fetch_one(&mut *conn)
            .await
            .op("backlog")?;
        let count = |name: &str| -> Result<u64, StoreError> {
            let v: i64 = row.try_get(name).op("backlog")?;
            Ok(u64::try_from(v).unwrap_or(0))
        };
        let age = |name: &str| -> Result<Option<TimeDelta>, StoreError> {
            let v: Option<i64> = row.try_get(name).op("backlog")?;
            Ok(v.map(|us| TimeDelta::microseconds(us.max(0))))
        };
        let mut b = Backlog::default();
        b.pending = count("pending")?;
        b.oldest_claimable_age = age("claimable_age_us")?;
        b.oldest_pending_age = age("pending_age_us")?;
        b.leased = count("leased")?;
        b.failed = count("failed")?;
        b.dead_letters = count("dead_letters")?;
        Ok(b)
    }
}

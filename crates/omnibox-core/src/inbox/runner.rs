//! The runner itself: receive, store, handle, record failures, acknowledge.

use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};

use super::attempt::{Attempt, Failure, run_handler};
use super::builder::{InboxRunnerBuilder, NoHandler, RunnerConfig};
use super::outcome::ConsumeOutcome;
use super::strategy::AckStrategy;
use crate::consumer::{
    AckHandle, Consumer, Delivery, IncomingMessage, MalformedMessage, Redelivery,
};
use crate::error::{EnvelopeError, Error, FailureKind, StoreError};
use crate::handler::Handler;
use crate::metrics::{Metric, SkipReason};
use crate::model::limits::NAME_MAX;
use crate::model::{Event, EventStatus, InboxEvent};
use crate::pipeline::steps::{TRANSIENT_RETRY_DELAY, after};
use crate::shutdown::Shutdown;
use crate::store::{
    DeadLetter, InboxStore, Inserted, LockOutcome, Settle, Settlement, Transactions,
};

mod batch;
pub(super) mod lanes;

/// Consumes broker messages into the inbox: stores each under `(message_id,
/// consumer_group)`, runs the handler in the same transaction, and acknowledges according to
/// its [`AckStrategy`] (see the [module docs](crate::inbox) for the full table).
///
/// ```
/// use omnibox_core::inbox::{AckStrategy, InboxRunner};
/// use omnibox_core::memory::{MemoryBroker, MemoryConn, MemoryDb, MemoryInboxStore};
/// use omnibox_core::model::OutboxEvent;
/// use omnibox_core::{Handler, HandlerOutcome, HandlerResult, InboxEvent, Publisher};
/// use serde_json::json;
///
/// /// Records the order total; the write commits together with the inbox row.
/// struct RecordOrder;
/// impl Handler<InboxEvent, MemoryConn> for RecordOrder {
///     async fn handle(&self, event: &InboxEvent, conn: &mut MemoryConn) -> HandlerResult {
///         let total = event.common.payload["total"].clone();
///         conn.put(format!("order:{}", event.message_id), total).await;
///         Ok(HandlerOutcome::Completed)
///     }
/// }
///
/// # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
/// let broker = MemoryBroker::new();
/// let event = OutboxEvent::builder("order", uuid::Uuid::now_v7(), "order.placed", "orders", "o-1")
///     .payload(json!({"total": 42}))
///     .build()
///     .unwrap();
/// broker.publish(&event).await.unwrap();
///
/// let db = MemoryDb::new();
/// let consumer = broker.consumer(["orders"], "billing");
/// let mut runner = InboxRunner::builder(consumer, db.clone(), MemoryInboxStore::new(), "billing")
///     .ack_strategy(AckStrategy::ExactlyOnceInbox)
///     .handler(RecordOrder)
///     .build()
///     .unwrap();
/// let outcome = runner.process_one().await.unwrap();
/// assert!(outcome.acked && outcome.handled);
/// let key = format!("order:{}", event.common.id);
/// assert_eq!(db.value(&key).await, Some(json!(42)));
/// # });
/// ```
pub struct InboxRunner<C, T, S, H = NoHandler> {
    consumer: C,
    core: Core<T, S, H>,
    started: bool,
}

/// Everything of a runner but its consumer: what handles deliveries. Kept apart so that
/// deliveries can be handled (borrowing this) while the consumer receives the next ones.
struct Core<T, S, H> {
    db: T,
    store: S,
    handler: Option<H>,
    cfg: RunnerConfig,
}

impl<C, T, S, H> std::fmt::Debug for InboxRunner<C, T, S, H> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("InboxRunner")
            .field("cfg", &self.core.cfg)
            .field("has_handler", &self.core.handler.is_some())
            .field("started", &self.started)
            .finish_non_exhaustive()
    }
}

/// What the first transaction (store, lock, handle, complete) found or did.
enum Stored {
    /// The message already completed for this group.
    Duplicate(InboxEvent),
    /// The row is failed (attempts spent, dead-lettered).
    Failed(InboxEvent),
    /// Stored or found pending; no handler to run.
    Pending(InboxEvent),
    /// Another worker holds a live lease on the row.
    Busy(InboxEvent),
    /// Handled (or skipped) and completed.
    Handled { row: InboxEvent, skipped: bool },
    /// The handler failed; the transaction was rolled back.
    HandlerFailed { row: InboxEvent, failure: Failure },
}

/// What recording a failure on the row did.
enum Recorded {
    /// Pending again, to be retried at this time.
    Retrying(DateTime<Utc>),
    /// That was the last attempt (or the row was already failed): dead-lettered.
    DeadLettered,
    /// Someone completed the row meanwhile.
    Completed,
    /// Another worker holds the lease; nothing recorded.
    Busy,
}

/// Acknowledge once, or not at all: `None` after the handle was used.
struct AckSlot<A>(Option<A>);

impl<C, T, S> InboxRunner<C, T, S, NoHandler> {
    /// Start configuring a runner that consumes from `consumer` into `store` through the
    /// transactions of `db`, as `consumer_group` (the dedup scope).
    pub fn builder(
        consumer: C,
        db: T,
        store: S,
        consumer_group: impl Into<String>,
    ) -> InboxRunnerBuilder<C, T, S, NoHandler> {
        InboxRunnerBuilder::new(consumer, db, store, consumer_group.into())
    }
}

impl<C, T, S, H> InboxRunner<C, T, S, H> {
    pub(crate) fn from_parts(
        consumer: C,
        db: T,
        store: S,
        handler: Option<H>,
        cfg: RunnerConfig,
    ) -> Self {
        Self {
            consumer,
            core: Core {
                db,
                store,
                handler,
                cfg,
            },
            started: false,
        }
    }

    /// The consumer group.
    pub fn consumer_group(&self) -> &str {
        &self.core.cfg.group
    }

    /// The worker id.
    pub fn worker(&self) -> &crate::model::WorkerId {
        &self.core.cfg.worker
    }

    /// The acknowledgement strategy.
    pub fn ack_strategy(&self) -> AckStrategy {
        self.core.cfg.strategy
    }

    /// The store.
    pub fn store(&self) -> &S {
        &self.core.store
    }

    /// The consumer.
    pub fn consumer(&self) -> &C {
        &self.consumer
    }
}

impl<C, T, S, H> InboxRunner<C, T, S, H>
where
    C: Consumer,
    T: Transactions,
    S: InboxStore<Conn = T::Conn>,
    H: Handler<InboxEvent, T::Conn>,
{
    /// Start the consumer (idempotent).
    pub async fn start(&mut self) -> Result<(), Error> {
        if !self.started {
            self.consumer.start().await?;
            self.started = true;
        }
        Ok(())
    }

    /// Stop the consumer (idempotent); messages not acknowledged are redelivered later.
    pub async fn stop(&mut self) -> Result<(), Error> {
        if self.started {
            self.started = false;
            self.consumer.stop().await?;
        }
        Ok(())
    }

    /// Consume until `shutdown` is requested, then stop the consumer.
    ///
    /// After an error or a message that was handed back, the loop pauses (0.1 s, doubling
    /// up to 5 s by default); an acknowledged message resets the pause. Waiting for a
    /// message is interrupted by the shutdown (adapters' `receive` is cancel-safe: a
    /// message not yet returned stays unacknowledged); a message being handled is finished
    /// first. Errors are logged, not returned, except a failure to start or stop the
    /// consumer.
    ///
    /// With a [`concurrency`](InboxRunnerBuilder::concurrency) above 1, up to that many
    /// messages are handled at once, one at a time per order key; the pause then applies
    /// to the lane of the message handed back (and to receiving, after a receive error),
    /// and a shutdown stops receiving and finishes the messages already received.
    pub async fn run(&mut self, shutdown: &Shutdown) -> Result<(), Error> {
        self.start().await?;
        if self.core.cfg.concurrency > 1 {
            self.run_lanes(shutdown).await;
            return self.stop().await;
        }
        let mut pause = self.core.cfg.idle_min;
        while !shutdown.is_requested() {
            let received = tokio::select! {
                biased;
                () = shutdown.requested() => break,
                r = self.consumer.receive() => r,
            };
            let acked = match received {
                Ok(first) if self.core.cfg.batch_size > 1 => {
                    let batch = self.fill_batch(first).await;
                    match self.core.handle_batch(batch).await {
                        Ok(outcomes) => outcomes.iter().all(|o| o.acked),
                        Err(e) => {
                            tracing::warn!(job = %self.core.cfg.job, error = %e, "handling a batch failed");
                            false
                        }
                    }
                }
                Ok(delivery) => self.core.handle_logged(delivery).await,
                Err(e) => {
                    tracing::warn!(job = %self.core.cfg.job, error = %e, "receiving a message failed");
                    false
                }
            };
            if acked {
                pause = self.core.cfg.idle_min;
            } else {
                tokio::select! {
                    biased;
                    () = shutdown.requested() => break,
                    () = tokio::time::sleep(pause) => {}
                }
                pause = pause.saturating_mul(2).min(self.core.cfg.idle_max);
            }
        }
        self.stop().await
    }

    /// Receive one message and handle it (see [`InboxRunner::handle_delivery`]).
    pub async fn process_one(&mut self) -> Result<ConsumeOutcome, Error> {
        self.start().await?;
        let delivery = self.consumer.receive().await?;
        self.core.handle_delivery(delivery).await
    }

    /// Handle one received message: store, handle, acknowledge or hand back, per the
    /// strategy. An `Err` means something failed that the broker must know about: the
    /// message was handed back (or, at most once, already acknowledged); `run` backs off.
    pub async fn handle_delivery(
        &mut self,
        delivery: Delivery<C::Ack>,
    ) -> Result<ConsumeOutcome, Error> {
        self.core.handle_delivery(delivery).await
    }
}

impl<T, S, H> Core<T, S, H>
where
    T: Transactions,
    S: InboxStore<Conn = T::Conn>,
    H: Handler<InboxEvent, T::Conn>,
{
    /// [`Core::handle_delivery`] with its result logged: whether the message counts as
    /// acknowledged (`false`: handed back, or an error; the caller pauses).
    async fn handle_logged<A: AckHandle>(&self, delivery: Delivery<A>) -> bool {
        match self.handle_delivery(delivery).await {
            Ok(outcome) => {
                if !outcome.acked {
                    tracing::debug!(job = %self.cfg.job, message_id = ?outcome.message_id, "message handed back for redelivery");
                }
                outcome.acked
            }
            Err(e) => {
                tracing::warn!(job = %self.cfg.job, error = %e, "handling a message failed");
                false
            }
        }
    }

    #[tracing::instrument(name = "omnibox.inbox.message", skip_all,
        fields(job = %self.cfg.job, group = %self.cfg.group))]
    pub(super) async fn handle_delivery<A: AckHandle>(
        &self,
        delivery: Delivery<A>,
    ) -> Result<ConsumeOutcome, Error> {
        self.metric(&Metric::Consumed { job: &self.cfg.job });
        let Delivery { message, ack, .. } = delivery;
        let mut slot = AckSlot(Some(ack));
        if self.cfg.strategy.acks_first() {
            self.ack(&mut slot).await?;
        }
        let built = match message {
            Ok(msg) => self.build_event(msg),
            Err(malformed) => Err(Box::new(malformed)),
        };
        match built {
            Ok(event) => self.handle_event(event, slot).await,
            Err(malformed) => self.handle_malformed(malformed, slot).await,
        }
    }

    fn build_event(&self, msg: IncomingMessage) -> Result<InboxEvent, Box<MalformedMessage>> {
        let now = self.cfg.clock.now();
        let mut b = InboxEvent::builder(
            msg.message_id.clone(),
            self.cfg.group.clone(),
            msg.source.clone(),
            msg.event_type.clone(),
        )
        .payload(&msg.payload)
        .headers(msg.headers.clone())
        .created_at(now)
        .max_attempts(self.cfg.limits.max_attempts);
        if let Some(v) = &msg.trace_id {
            b = b.trace_id(v.clone());
        }
        if let Some(v) = &msg.correlation_id {
            b = b.correlation_id(v.clone());
        }
        if let Some(v) = &msg.causation_id {
            b = b.causation_id(v.clone());
        }
        if let Some(v) = &msg.schema_version {
            b = b.schema_version(v.clone());
        }
        b.build_with(&self.cfg.limits).map_err(|e| {
            let body = serde_json::Value::Object(msg.payload)
                .to_string()
                .into_bytes();
            Box::new(MalformedMessage::new(
                Some(clip(&msg.message_id)),
                clip(&msg.source),
                body,
                msg.headers,
                EnvelopeError::Invalid(e),
            ))
        })
    }

    /// A message that cannot become an inbox event: dead-letter it, then acknowledge — it
    /// would fail the same way on every redelivery.
    async fn handle_malformed<A: AckHandle>(
        &self,
        malformed: Box<MalformedMessage>,
        slot: AckSlot<A>,
    ) -> Result<ConsumeOutcome, Error> {
        let out = ConsumeOutcome::new(malformed.message_id.clone(), None);
        tracing::warn!(job = %self.cfg.job, message_id = ?malformed.message_id, source = %malformed.source, error = %malformed.error, "malformed message");
        let letter = DeadLetter::from_malformed(&malformed, self.cfg.clock.now());
        self.settle_poison(letter, slot, out, "malformed").await
    }

    /// A message that can never be stored as an inbox event: write its dead letter in its
    /// own transaction, then acknowledge. While the database is unreachable (a transient
    /// error) the message is handed back and retried. If the store refuses even the dead
    /// letter for good (a permanent error; the PostgreSQL store keeps any body and headers
    /// losslessly, so this means a misconfigured table), the message is logged at error
    /// level (ids, route, reason and body size; never the payload, which may hold personal
    /// data) and acknowledged: handing it back would redeliver it forever and block
    /// everything behind it.
    async fn settle_poison<A: AckHandle>(
        &self,
        letter: DeadLetter,
        mut slot: AckSlot<A>,
        mut out: ConsumeOutcome,
        event_type: &str,
    ) -> Result<ConsumeOutcome, Error> {
        match self.write_dead_letter(&letter).await {
            Ok(()) => {
                self.metric(&Metric::DeadLettered {
                    job: &self.cfg.job,
                    event_type,
                });
                out.dead_lettered = true;
                out.acked = self.ack(&mut slot).await?;
                Ok(out)
            }
            Err(e) if e.kind() == FailureKind::Permanent => {
                tracing::error!(job = %self.cfg.job, message_id = ?letter.message_id, route = ?letter.route,
                    reason = %letter.error, body_bytes = letter.original_body().len(),
                    error = %e, "the store refused the dead letter too: acknowledging the message without a dead letter");
                out.acked = self.ack(&mut slot).await?;
                Ok(out)
            }
            Err(e) => {
                tracing::error!(job = %self.cfg.job, error = %e, "dead-lettering a message failed");
                self.nack_after_error(&mut slot).await;
                Err(e.into())
            }
        }
    }

    async fn write_dead_letter(&self, letter: &DeadLetter) -> Result<(), StoreError> {
        let mut tx = self.db.begin().await?;
        match self.store.dead_letter(&mut tx, letter).await {
            Ok(()) => self.db.commit(tx).await,
            Err(e) => {
                self.rollback(tx).await;
                Err(e)
            }
        }
    }

    async fn handle_event<A: AckHandle>(
        &self,
        event: InboxEvent,
        mut slot: AckSlot<A>,
    ) -> Result<ConsumeOutcome, Error> {
        let mut out = ConsumeOutcome::new(Some(event.message_id.clone()), Some(event.common.id));
        let stored = match self.store_and_handle(&event).await {
            Ok(s) => s,
            Err(e @ StoreError::Data { .. }) => {
                // The store refuses this message's data (a `\u0000` in its JSON, a NUL in a
                // header): it would be refused on every redelivery. Dead-letter it and
                // acknowledge, so it cannot wedge the partition or loop forever.
                tracing::error!(job = %self.cfg.job, message_id = %event.message_id, error = %e, "the store refused the message: dead-lettering it");
                let reason = format!("the inbox refused the message: {e}");
                let letter = DeadLetter::from_event(&event, &reason, self.cfg.clock.now());
                out.event_id = None;
                return self
                    .settle_poison(letter, slot, out, &event.common.event_type)
                    .await;
            }
            Err(e) => {
                tracing::error!(job = %self.cfg.job, message_id = %event.message_id, error = %e, "storing the message failed");
                // At most once the message was acknowledged first and is now lost; the
                // nack below is then a no-op (never hand back after an ack: bug 7).
                self.nack_after_error(&mut slot).await;
                return Err(e.into());
            }
        };
        let strategy = self.cfg.strategy;
        match stored {
            Stored::Duplicate(row) => {
                out.event_id = Some(row.common.id);
                out.duplicate = true;
                self.metric(&Metric::Duplicate {
                    job: &self.cfg.job,
                    event_type: &row.common.event_type,
                });
                out.acked = self.ack(&mut slot).await?;
            }
            Stored::Failed(row) => {
                out.event_id = Some(row.common.id);
                out.dead_lettered = true;
                out.acked = self.ack(&mut slot).await?;
            }
            Stored::Pending(row) => {
                out.event_id = Some(row.common.id);
                out.acked = self.ack(&mut slot).await?;
            }
            Stored::Busy(row) => {
                out.event_id = Some(row.common.id);
                out.acked = self.ack_or_nack_busy(&mut slot, strategy).await?;
            }
            Stored::Handled { row, skipped } => {
                out.event_id = Some(row.common.id);
                out.handled = true;
                if skipped {
                    self.metric(&Metric::Skipped {
                        job: &self.cfg.job,
                        event_type: &row.common.event_type,
                        reason: SkipReason::Handler,
                    });
                } else {
                    self.metric(&Metric::Completed {
                        job: &self.cfg.job,
                        event_type: &row.common.event_type,
                        route: row.route(),
                    });
                }
                out.acked = self.ack(&mut slot).await?;
            }
            Stored::HandlerFailed { row, failure } => {
                self.metric(&Metric::Failed {
                    job: &self.cfg.job,
                    event_type: &row.common.event_type,
                    route: row.route(),
                    kind: failure.kind(),
                });
                tracing::warn!(job = %self.cfg.job, message_id = %row.message_id, counted = failure.counted, error = %failure.error, "handler failed");
                let recorded = match self.record_failure(&event, &failure).await {
                    Ok(r) => r,
                    Err(e) => {
                        tracing::error!(job = %self.cfg.job, message_id = %row.message_id, error = %e, "recording the handler failure failed");
                        self.nack_after_error(&mut slot).await;
                        return Err(e.into());
                    }
                };
                match recorded {
                    Recorded::Retrying(at) => {
                        out.acked = if strategy.acks_when_persisted() {
                            self.ack(&mut slot).await?
                        } else {
                            let delay = (at - self.cfg.clock.now())
                                .to_std()
                                .unwrap_or(Duration::ZERO);
                            self.nack(&mut slot, redelivery_after(delay)).await?
                        };
                    }
                    Recorded::DeadLettered => {
                        self.metric(&Metric::DeadLettered {
                            job: &self.cfg.job,
                            event_type: &row.common.event_type,
                        });
                        out.dead_lettered = true;
                        out.acked = self.ack(&mut slot).await?;
                    }
                    Recorded::Completed => {
                        out.duplicate = true;
                        out.acked = self.ack(&mut slot).await?;
                    }
                    Recorded::Busy => {
                        out.acked = self.ack_or_nack_busy(&mut slot, strategy).await?;
                    }
                }
            }
        }
        Ok(out)
    }

    /// Another worker leases the row. When a durable row is enough (at most once, on
    /// persist) acknowledge; otherwise hand the message back: the other worker finishes
    /// (the redelivery then sees a completed row) or its lease expires and is taken over.
    async fn ack_or_nack_busy<A: AckHandle>(
        &self,
        slot: &mut AckSlot<A>,
        strategy: AckStrategy,
    ) -> Result<bool, Error> {
        if strategy.acks_when_persisted() {
            self.ack(slot).await
        } else {
            self.nack(slot, redelivery_after(self.cfg.redelivery_delay))
                .await
        }
    }

    /// Transaction 1: insert (dedup), lock, run the handler, complete — committed together,
    /// or rolled back when the handler fails.
    async fn store_and_handle(&self, event: &InboxEvent) -> Result<Stored, StoreError> {
        let mut tx = self.db.begin().await?;
        match self.store_and_handle_in(&mut tx, event).await {
            Ok((stored, true)) => {
                self.db.commit(tx).await?;
                Ok(stored)
            }
            Ok((stored, false)) => {
                self.rollback(tx).await;
                Ok(stored)
            }
            Err(e) => {
                self.rollback(tx).await;
                Err(e)
            }
        }
    }

    /// Returns what happened and whether to commit.
    async fn store_and_handle_in(
        &self,
        conn: &mut T::Conn,
        event: &InboxEvent,
    ) -> Result<(Stored, bool), StoreError> {
        let Some(handler) = &self.handler else {
            // Stored pending, unleased, for a batch inbox processor.
            let (row, _) = match self.insert_dedup(conn, event, false).await? {
                Ok(found) => found,
                Err(done) => return Ok((Stored::Duplicate(done), false)),
            };
            return Ok(match row.common.status {
                EventStatus::Completed => (Stored::Duplicate(row), false),
                EventStatus::Failed => (Stored::Failed(row), false),
                EventStatus::Pending => (Stored::Pending(row), true),
            });
        };
        // A new message is stored already completed, and its handler runs after: until
        // this transaction commits the row is its own (a concurrent insert of the same key
        // waits on the unique index, then finds it completed), so it needs no lease, and
        // success needs no second write — one statement per message besides the
        // handler's. A failure rolls the row back with the handler's writes and is recorded
        // in a second transaction, as for a row that was stored before.
        let (row, new) = match self
            .insert_dedup(conn, &self.completed(event)?, false)
            .await?
        {
            Ok(found) => found,
            Err(done) => return Ok((Stored::Duplicate(done), false)),
        };
        if new {
            return Ok(match self.run_timed(handler, event, conn).await {
                Attempt::Done { skipped } => (Stored::Handled { row, skipped }, true),
                Attempt::Failed(failure) => (
                    Stored::HandlerFailed {
                        row: event.clone(),
                        failure,
                    },
                    false,
                ),
            });
        }
        match row.common.status {
            EventStatus::Completed => return Ok((Stored::Duplicate(row), false)),
            EventStatus::Failed => return Ok((Stored::Failed(row), false)),
            EventStatus::Pending => {}
        }
        // A row stored by an earlier delivery: lease it. Commit in every branch below: a
        // lock may have taken over an expired lease, which spends an attempt (and may
        // dead-letter the row) — that must not be rolled back.
        let locked = match self.lock(conn, &row).await? {
            LockOutcome::Locked(locked) => locked,
            LockOutcome::Busy(r) | LockOutcome::NotDue(r) => return Ok((Stored::Busy(r), true)),
            LockOutcome::Finished(r) => return Ok((finished(r), true)),
            LockOutcome::Missing => return Err(vanished("try_lock", &row)),
        };
        let lease = lease_of(&locked)?;
        let attempt = self.run_timed(handler, &locked, conn).await;
        match attempt {
            Attempt::Done { skipped } => {
                let id = locked.common.id;
                let report = self
                    .store
                    .settle(
                        conn,
                        &self.cfg.worker,
                        &[Settlement {
                            id,
                            lease,
                            action: Settle::Complete,
                        }],
                    )
                    .await?;
                if !report.completed.contains(&id) {
                    return Err(StoreError::Other {
                        operation: "settle",
                        message: format!("inbox row {id} was not completed: its lease was lost"),
                        source: None,
                    });
                }
                Ok((
                    Stored::Handled {
                        row: locked,
                        skipped,
                    },
                    true,
                ))
            }
            Attempt::Failed(failure) => Ok((
                Stored::HandlerFailed {
                    row: locked,
                    failure,
                },
                false,
            )),
        }
    }

    /// The handler on `row`, bounded by the process timeout, its duration recorded.
    async fn run_timed(&self, handler: &H, row: &InboxEvent, conn: &mut T::Conn) -> Attempt {
        let started = Instant::now();
        let attempt = run_handler(
            handler,
            row,
            conn,
            self.cfg.process_timeout,
            self.cfg.process_timeout_kind,
        )
        .await;
        self.metric(&Metric::HandlerDuration {
            job: &self.cfg.job,
            event_type: &row.common.event_type,
            duration: started.elapsed(),
        });
        attempt
    }

    /// `event` as the row it becomes when its handler succeeds: completed now.
    fn completed(&self, event: &InboxEvent) -> Result<InboxEvent, StoreError> {
        let mut common = event.common.clone();
        common.status = EventStatus::Completed;
        common.completed_at = Some(self.cfg.clock.now().max(common.created_at));
        event
            .with_common(common, &self.cfg.limits)
            .map_err(|e| StoreError::Other {
                operation: "insert",
                message: format!(
                    "inbox row {} cannot be stored completed: {e}",
                    event.common.id
                ),
                source: None,
            })
    }

    /// Transaction 2, after a handler failure rolled transaction 1 back: store the row again
    /// if it is absent, lock it and record the failure (which may dead-letter it).
    async fn record_failure(
        &self,
        event: &InboxEvent,
        failure: &Failure,
    ) -> Result<Recorded, StoreError> {
        let mut tx = self.db.begin().await?;
        match self.record_failure_in(&mut tx, event, failure).await {
            Ok((recorded, true)) => {
                self.db.commit(tx).await?;
                Ok(recorded)
            }
            Ok((recorded, false)) => {
                self.rollback(tx).await;
                Ok(recorded)
            }
            Err(e) => {
                self.rollback(tx).await;
                Err(e)
            }
        }
    }

    async fn record_failure_in(
        &self,
        conn: &mut T::Conn,
        event: &InboxEvent,
        failure: &Failure,
    ) -> Result<(Recorded, bool), StoreError> {
        let (row, leased) = match self.insert_dedup(conn, event, true).await? {
            Ok(found) => found,
            Err(_done) => return Ok((Recorded::Completed, false)),
        };
        match row.common.status {
            EventStatus::Completed => return Ok((Recorded::Completed, false)),
            EventStatus::Failed => return Ok((Recorded::DeadLettered, false)),
            EventStatus::Pending => {}
        }
        let locked = if leased {
            row
        } else {
            match self.lock(conn, &row).await? {
                LockOutcome::Locked(locked) => locked,
                LockOutcome::Busy(_) | LockOutcome::NotDue(_) => {
                    return Ok((Recorded::Busy, true));
                }
                LockOutcome::Finished(r) => {
                    let rec = if r.common.status == EventStatus::Completed {
                        Recorded::Completed
                    } else {
                        Recorded::DeadLettered
                    };
                    return Ok((rec, true));
                }
                LockOutcome::Missing => return Err(vanished("try_lock", &row)),
            }
        };
        let lease = lease_of(&locked)?;
        let now = self.cfg.clock.now();
        let retry_at = failure.retry_at.unwrap_or_else(|| {
            let delay = if failure.counted {
                self.cfg.backoff.delay(locked.common.attempts_made)
            } else {
                TRANSIENT_RETRY_DELAY
            };
            // Saturating: a huge configured backoff must not overflow (and panic).
            after(now, delay)
        });
        let id = locked.common.id;
        let report = self
            .store
            .settle(
                conn,
                &self.cfg.worker,
                &[Settlement {
                    id,
                    lease,
                    action: Settle::Fail {
                        error: failure.error.clone(),
                        counted: failure.counted,
                        retry_at: Some(retry_at),
                    },
                }],
            )
            .await?;
        if report.dead_lettered.contains(&id) {
            Ok((Recorded::DeadLettered, true))
        } else if report.retrying.contains(&id) {
            Ok((Recorded::Retrying(retry_at), true))
        } else {
            Err(StoreError::Other {
                operation: "settle",
                message: format!("failure of inbox row {id} not recorded: its lease was lost"),
                source: None,
            })
        }
    }

    /// Insert with dedup, a new row leased to this worker when `lease`. `Ok((row, new))`:
    /// the stored row and whether this call wrote it (then leased when `lease`);
    /// `Err(row)`: a completed sibling with the same key exists (partitioned tables), so
    /// this is a duplicate and the transaction must roll back.
    async fn insert_dedup(
        &self,
        conn: &mut T::Conn,
        event: &InboxEvent,
        lease: bool,
    ) -> Result<Result<(InboxEvent, bool), InboxEvent>, StoreError> {
        let inserted = if lease {
            let events = std::slice::from_ref(event);
            let mut rows = self
                .store
                .insert_leased(conn, events, &self.cfg.worker, self.cfg.lease_ttl)
                .await?;
            rows.pop().ok_or_else(|| StoreError::Other {
                operation: "insert_leased",
                message: "no result row".into(),
                source: None,
            })?
        } else {
            self.store.insert(conn, event).await?
        };
        match inserted {
            Inserted::Duplicate(row) => Ok(Ok((row, false))),
            // A unique dedup index means a new row is the only one with its key.
            Inserted::New(row) if self.store.dedup_key_is_unique() => Ok(Ok((row, true))),
            Inserted::New(row) => {
                let sibling = self
                    .store
                    .has_completed_sibling(
                        conn,
                        &row.message_id,
                        &row.consumer_group,
                        row.common.id,
                    )
                    .await?;
                Ok(if sibling { Err(row) } else { Ok((row, true)) })
            }
        }
    }

    async fn lock(
        &self,
        conn: &mut T::Conn,
        row: &InboxEvent,
    ) -> Result<LockOutcome<InboxEvent>, StoreError> {
        self.store
            .try_lock(
                conn,
                row.common.id,
                &self.cfg.worker,
                self.cfg.lease_ttl,
                true,
            )
            .await
    }

    async fn rollback(&self, tx: T::Tx) {
        if let Err(e) = self.db.rollback(tx).await {
            tracing::warn!(job = %self.cfg.job, error = %e, "rollback failed");
        }
    }

    /// Acknowledge (no-op when already acknowledged). Returns `true`.
    async fn ack<A: AckHandle>(&self, slot: &mut AckSlot<A>) -> Result<bool, Error> {
        let Some(handle) = slot.0.take() else {
            return Ok(true);
        };
        match handle.ack().await {
            Ok(()) => {
                self.metric(&Metric::Acked { job: &self.cfg.job });
                Ok(true)
            }
            Err(e) => {
                self.metric(&Metric::AckFailed { job: &self.cfg.job });
                Err(e.into())
            }
        }
    }

    /// Hand the message back. Returns whether it counts as acknowledged: `true` only when it
    /// was acknowledged before (at most once: never handed back afterwards).
    async fn nack<A: AckHandle>(
        &self,
        slot: &mut AckSlot<A>,
        redelivery: Redelivery,
    ) -> Result<bool, Error> {
        let Some(handle) = slot.0.take() else {
            return Ok(true);
        };
        match handle.nack(redelivery).await {
            Ok(()) => {
                self.metric(&Metric::Nacked { job: &self.cfg.job });
                Ok(false)
            }
            Err(e) => {
                self.metric(&Metric::AckFailed { job: &self.cfg.job });
                Err(e.into())
            }
        }
    }

    /// Hand back after a storage failure; the storage error is what the caller returns, so a
    /// nack failure is only counted and logged.
    async fn nack_after_error<A: AckHandle>(&self, slot: &mut AckSlot<A>) {
        if let Err(e) = self
            .nack(slot, redelivery_after(self.cfg.redelivery_delay))
            .await
        {
            tracing::error!(job = %self.cfg.job, error = %e, "handing the message back failed");
        }
    }

    fn metric(&self, m: &Metric<'_>) {
        self.cfg.metrics.record(m);
    }
}

fn finished(row: InboxEvent) -> Stored {
    if row.common.status == EventStatus::Completed {
        Stored::Duplicate(row)
    } else {
        Stored::Failed(row)
    }
}

fn lease_of(row: &InboxEvent) -> Result<DateTime<Utc>, StoreError> {
    row.common.locked_at.ok_or_else(|| StoreError::Other {
        operation: "try_lock",
        message: format!("locked inbox row {} carries no lease", row.common.id),
        source: None,
    })
}

fn vanished(operation: &'static str, row: &InboxEvent) -> StoreError {
    StoreError::Other {
        operation,
        message: format!("inbox row {} vanished while being handled", row.common.id),
        source: None,
    }
}

fn redelivery_after(delay: Duration) -> Redelivery {
    if delay.is_zero() {
        Redelivery::Immediate
    } else {
        Redelivery::After(delay)
    }
}

/// Keep an identifier that failed validation storable in a dead letter.
fn clip(s: &str) -> String {
    s.chars().take(NAME_MAX).collect()
}

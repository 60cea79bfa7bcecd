//! Batches: many deliveries stored, handled and completed in one transaction, each handler
//! in its own savepoint, every acknowledgement after the commit.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use uuid::Uuid;

use super::{AckSlot, Core, InboxRunner, lease_of, redelivery_after, vanished};
use crate::consumer::{AckHandle, Consumer, Delivery};
use crate::error::{Error, StoreError};
use crate::handler::Handler;
use crate::inbox::attempt::{Attempt, Failure, run_handler};
use crate::inbox::outcome::ConsumeOutcome;
use crate::metrics::{Metric, SkipReason};
use crate::model::{Event, EventStatus, InboxEvent};
use crate::pipeline::steps::{TRANSIENT_RETRY_DELAY, after};
use crate::store::{InboxStore, Inserted, LockOutcome, Settle, Settlement, Transactions};

/// One message of a batch, from receipt to its acknowledgement.
struct Item<A> {
    /// Its place among the batch's deliveries.
    at: usize,
    event: InboxEvent,
    slot: AckSlot<A>,
    out: ConsumeOutcome,
    state: State,
}

/// Where a message of a batch stands.
enum State {
    /// Stored; the handler runs on this leased row.
    Leased(InboxEvent),
    /// Handled (or skipped): completes with the batch.
    Handled { row: InboxEvent, skipped: bool },
    /// The handler failed; its writes are undone and the failure is recorded with the batch.
    HandlerFailed {
        row: InboxEvent,
        failure: Failure,
        retry_at: DateTime<Utc>,
    },
    /// Already completed for this group: acknowledged without handling.
    Duplicate(InboxEvent),
    /// The row is failed (attempts spent, dead-lettered): acknowledged.
    Failed,
    /// Stored pending, no handler to run: acknowledged.
    Pending,
    /// Another worker holds a live lease on the row.
    Busy,
    /// The same message earlier in this batch (a redelivery that arrived with it):
    /// acknowledged or handed back as that one is.
    Follows(usize),
    /// Not looked at yet (or taken out while its handler runs).
    Received,
}

/// The handlers' savepoint.
#[derive(Clone, Copy)]
enum Savepoint {
    /// None taken yet.
    None,
    /// Taken, and a handler's writes since then are to be kept: renew before the next.
    Used,
    /// Taken (or rolled back to) with nothing after it: the next handler uses it as is.
    Clean,
}

impl<C, T, S, H> InboxRunner<C, T, S, H>
where
    C: Consumer,
    T: Transactions,
    S: InboxStore<Conn = T::Conn>,
    H: Handler<InboxEvent, T::Conn>,
{
    /// Receive one message, then up to the batch size of those that arrive within the
    /// batch linger (see [`InboxRunnerBuilder::batch_size`]), and handle them with
    /// [`InboxRunner::handle_batch`].
    ///
    /// [`InboxRunnerBuilder::batch_size`]: crate::inbox::InboxRunnerBuilder::batch_size
    pub async fn process_batch(&mut self) -> Result<Vec<ConsumeOutcome>, Error> {
        self.start().await?;
        let first = self.consumer.receive().await?;
        let deliveries = self.fill_batch(first).await;
        self.core.handle_batch(deliveries).await
    }

    /// Add to `first` the deliveries that arrive within the linger, up to the batch size.
    /// A receive error ends the batch (it is logged; the next receive meets it again).
    pub(super) async fn fill_batch(&mut self, first: Delivery<C::Ack>) -> Vec<Delivery<C::Ack>> {
        let mut batch = Vec::with_capacity(self.core.cfg.batch_size.min(1024));
        batch.push(first);
        let deadline = tokio::time::Instant::now() + self.core.cfg.batch_linger;
        while batch.len() < self.core.cfg.batch_size {
            // `receive` is cancel-safe: a message not returned before the deadline stays
            // with the consumer. A zero linger still polls once: what is ready is taken.
            match tokio::time::timeout_at(deadline, self.consumer.receive()).await {
                Ok(Ok(d)) => batch.push(d),
                Ok(Err(e)) => {
                    tracing::warn!(job = %self.core.cfg.job, error = %e, "receiving a message failed");
                    break;
                }
                Err(_) => break,
            }
        }
        batch
    }

    /// Handle `deliveries` in one transaction: store them all (one insert), then, in
    /// delivery order, run each handler in its own savepoint (a failure rolls back only its
    /// own writes and is recorded on its row), settle every row (one statement) and commit.
    /// Each message is then acknowledged or handed back exactly as
    /// [`InboxRunner::handle_delivery`] would for the same situation (the strategy table
    /// in the [module docs](crate::inbox)); `AtMostOnce` acknowledges first, as ever.
    ///
    /// Malformed messages are dead-lettered one at a time before the batch. When the store
    /// refuses a message's data (a `\u0000` in its JSON), the batch is rolled back and its
    /// messages are handled one at a time, so only that message is dead-lettered. A store
    /// whose dedup key is not unique (partitioned tables) handles the batch one at a time
    /// too. Any other storage failure rolls the batch back and hands every message back
    /// (none was acknowledged), and the error is returned: nothing is lost, and a handler's
    /// writes never commit without its row.
    ///
    /// `Ok` holds one outcome per delivery, in order. `Err` means at least one message met
    /// a failure the broker must know about; every message was still acknowledged or
    /// handed back.
    pub async fn handle_batch(
        &mut self,
        deliveries: Vec<Delivery<C::Ack>>,
    ) -> Result<Vec<ConsumeOutcome>, Error> {
        self.core.handle_batch(deliveries).await
    }
}

impl<T, S, H> Core<T, S, H>
where
    T: Transactions,
    S: InboxStore<Conn = T::Conn>,
    H: Handler<InboxEvent, T::Conn>,
{
    #[tracing::instrument(name = "omnibox.inbox.batch", skip_all,
        fields(job = %self.cfg.job, group = %self.cfg.group, size = deliveries.len()))]
    pub(super) async fn handle_batch<A: AckHandle>(
        &self,
        deliveries: Vec<Delivery<A>>,
    ) -> Result<Vec<ConsumeOutcome>, Error> {
        if deliveries.len() <= 1 || !self.store.dedup_key_is_unique() {
            let mut outcomes = Vec::with_capacity(deliveries.len());
            let mut first_error = None;
            for d in deliveries {
                match self.handle_delivery(d).await {
                    Ok(out) => outcomes.push(out),
                    Err(e) => {
                        first_error.get_or_insert(e);
                    }
                }
            }
            return first_error.map_or(Ok(outcomes), Err);
        }
        let mut first_error: Option<Error> = None;
        let mut outcomes: Vec<Option<ConsumeOutcome>> = vec![None; deliveries.len()];
        let mut items = Vec::with_capacity(deliveries.len());
        for (at, Delivery { message, ack, .. }) in deliveries.into_iter().enumerate() {
            self.metric(&Metric::Consumed { job: &self.cfg.job });
            let mut slot = AckSlot(Some(ack));
            if self.cfg.strategy.acks_first()
                && let Err(e) = self.ack(&mut slot).await
            {
                // Not acknowledged: the broker delivers it again; nothing was stored.
                first_error.get_or_insert(e);
                continue;
            }
            let built = match message {
                Ok(msg) => self.build_event(msg),
                Err(malformed) => Err(Box::new(malformed)),
            };
            match built {
                Ok(event) => items.push(Item {
                    at,
                    out: ConsumeOutcome::new(Some(event.message_id.clone()), Some(event.id())),
                    event,
                    slot,
                    state: State::Received,
                }),
                Err(malformed) => match self.handle_malformed(malformed, slot).await {
                    Ok(out) => outcomes[at] = Some(out),
                    Err(e) => {
                        first_error.get_or_insert(e);
                    }
                },
            }
        }
        let mut tx = match self.db.begin().await {
            Ok(tx) => tx,
            Err(e) => return Err(self.abandon(items, e, first_error).await),
        };
        match self.run_batch(&mut tx, &mut items).await {
            Ok(()) => {}
            Err(e @ StoreError::Data { .. }) => {
                self.rollback(tx).await;
                tracing::warn!(job = %self.cfg.job, error = %e, "the store refused a message of the batch: handling its messages one at a time");
                return self.one_at_a_time(items, outcomes, first_error).await;
            }
            Err(e) => {
                self.rollback(tx).await;
                return Err(self.abandon(items, e, first_error).await);
            }
        }
        if let Err(e) = self.db.commit(tx).await {
            return Err(self.abandon(items, e, first_error).await);
        }
        let mut acked = Vec::with_capacity(items.len());
        for item in &mut items {
            let follows = match item.state {
                State::Follows(j) => Some(acked.get(j).copied().unwrap_or(false)),
                _ => None,
            };
            let result = match follows {
                Some(true) => {
                    item.out.duplicate = true;
                    self.ack(&mut item.slot).await
                }
                Some(false) => {
                    self.nack(&mut item.slot, redelivery_after(self.cfg.redelivery_delay))
                        .await
                }
                None => self.acknowledge(item).await,
            };
            match result {
                Ok(a) => item.out.acked = a,
                Err(e) => {
                    first_error.get_or_insert(e);
                }
            }
            acked.push(item.out.acked);
            outcomes[item.at] = Some(item.out.clone());
        }
        first_error.map_or_else(|| Ok(outcomes.into_iter().flatten().collect()), Err)
    }

    /// The batch transaction: store, lock, handle, settle. Any error leaves it to be rolled
    /// back.
    async fn run_batch<A: AckHandle>(
        &self,
        conn: &mut T::Conn,
        items: &mut [Item<A>],
    ) -> Result<(), StoreError> {
        let events: Vec<InboxEvent> = items.iter().map(|i| i.event.clone()).collect();
        let inserted = match &self.handler {
            Some(_) => {
                self.store
                    .insert_leased(conn, &events, &self.cfg.worker, self.cfg.lease_ttl)
                    .await?
            }
            None => self.store.insert_many(conn, &events).await?,
        };
        if inserted.len() != items.len() {
            return Err(StoreError::Other {
                operation: "insert",
                message: format!("{} results for {} inbox rows", inserted.len(), items.len()),
                source: None,
            });
        }
        let mut first_of: HashMap<Uuid, usize> = HashMap::with_capacity(items.len());
        for (i, (item, row)) in items.iter_mut().zip(inserted).enumerate() {
            let (row, new) = match row {
                Inserted::New(r) => (r, true),
                Inserted::Duplicate(r) => (r, false),
            };
            if let Some(&j) = first_of.get(&row.id()) {
                item.out.event_id = Some(row.id());
                item.state = State::Follows(j);
                continue;
            }
            first_of.insert(row.id(), i);
            item.out.event_id = Some(row.id());
            item.state = match row.common.status {
                EventStatus::Completed => State::Duplicate(row),
                EventStatus::Failed => State::Failed,
                EventStatus::Pending if self.handler.is_none() => State::Pending,
                EventStatus::Pending if new => State::Leased(row),
                EventStatus::Pending => match self.lock(conn, &row).await? {
                    LockOutcome::Locked(locked) => State::Leased(locked),
                    LockOutcome::Busy(_) | LockOutcome::NotDue(_) => State::Busy,
                    LockOutcome::Finished(r) if r.common.status == EventStatus::Completed => {
                        State::Duplicate(r)
                    }
                    LockOutcome::Finished(_) => State::Failed,
                    LockOutcome::Missing => return Err(vanished("try_lock", &row)),
                },
            };
        }
        let Some(handler) = &self.handler else {
            return Ok(());
        };
        let mut settlements = Vec::new();
        let mut savepoint = Savepoint::None;
        for item in items.iter_mut() {
            let row = match std::mem::replace(&mut item.state, State::Received) {
                State::Leased(row) => row,
                other => {
                    item.state = other;
                    continue;
                }
            };
            let lease = lease_of(&row)?;
            // One savepoint per handler, one round trip each: taken before the first,
            // renewed (released and taken again) after a success, reused as it is after a
            // rollback to it. The last one commits with the transaction.
            match savepoint {
                Savepoint::None => self.store.savepoint(conn).await?,
                Savepoint::Used => self.store.renew_savepoint(conn).await?,
                Savepoint::Clean => {}
            }
            let started = Instant::now();
            let attempt = run_handler(
                handler,
                &row,
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
            let id = row.id();
            match attempt {
                Attempt::Done { skipped } => {
                    savepoint = Savepoint::Used;
                    settlements.push(Settlement {
                        id,
                        lease,
                        action: Settle::Complete,
                    });
                    item.state = State::Handled { row, skipped };
                }
                Attempt::Failed(failure) => {
                    self.store.rollback_to_savepoint(conn).await?;
                    savepoint = Savepoint::Clean;
                    let retry_at = self.retry_at(&row, &failure);
                    settlements.push(Settlement {
                        id,
                        lease,
                        action: Settle::Fail {
                            error: failure.error.clone(),
                            counted: failure.counted,
                            retry_at: Some(retry_at),
                        },
                    });
                    item.state = State::HandlerFailed {
                        row,
                        failure,
                        retry_at,
                    };
                }
            }
        }
        if settlements.is_empty() {
            return Ok(());
        }
        let report = self
            .store
            .settle(conn, &self.cfg.worker, &settlements)
            .await?;
        for item in items.iter_mut() {
            match &item.state {
                State::Handled { row, .. } if report.completed.contains(&row.id()) => {}
                State::HandlerFailed { row, .. } if report.dead_lettered.contains(&row.id()) => {
                    item.out.dead_lettered = true;
                }
                State::HandlerFailed { row, .. } if report.retrying.contains(&row.id()) => {}
                State::Handled { row, .. } | State::HandlerFailed { row, .. } => {
                    // The rows are this transaction's (new) or locked by it: no other
                    // worker can have taken the lease. A store that says otherwise is
                    // not trusted with the batch.
                    return Err(StoreError::Other {
                        operation: "settle",
                        message: format!(
                            "inbox row {} was not settled: its lease was lost",
                            row.id()
                        ),
                        source: None,
                    });
                }
                _ => {}
            }
        }
        Ok(())
    }

    /// When a failed row is retried: the handler's time, else the backoff (counted) or the
    /// transient delay.
    fn retry_at(&self, row: &InboxEvent, failure: &Failure) -> DateTime<Utc> {
        failure.retry_at.unwrap_or_else(|| {
            let delay = if failure.counted {
                self.cfg.backoff.delay(row.common.attempts_made)
            } else {
                TRANSIENT_RETRY_DELAY
            };
            after(self.cfg.clock.now(), delay)
        })
    }

    /// After the commit: metrics, then acknowledge or hand back as one at a time would.
    async fn acknowledge<A: AckHandle>(&self, item: &mut Item<A>) -> Result<bool, Error> {
        let strategy = self.cfg.strategy;
        match &item.state {
            State::Handled { row, skipped } => {
                item.out.handled = true;
                if *skipped {
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
                self.ack(&mut item.slot).await
            }
            State::HandlerFailed {
                row,
                failure,
                retry_at,
            } => {
                self.metric(&Metric::Failed {
                    job: &self.cfg.job,
                    event_type: &row.common.event_type,
                    route: row.route(),
                    kind: failure.kind(),
                });
                tracing::warn!(job = %self.cfg.job, message_id = %row.message_id, counted = failure.counted, error = %failure.error, "handler failed");
                if item.out.dead_lettered {
                    self.metric(&Metric::DeadLettered {
                        job: &self.cfg.job,
                        event_type: &row.common.event_type,
                    });
                    self.ack(&mut item.slot).await
                } else if strategy.acks_when_persisted() {
                    self.ack(&mut item.slot).await
                } else {
                    let delay = (*retry_at - self.cfg.clock.now())
                        .to_std()
                        .unwrap_or(Duration::ZERO);
                    self.nack(&mut item.slot, redelivery_after(delay)).await
                }
            }
            State::Duplicate(row) => {
                item.out.duplicate = true;
                self.metric(&Metric::Duplicate {
                    job: &self.cfg.job,
                    event_type: &row.common.event_type,
                });
                self.ack(&mut item.slot).await
            }
            State::Failed => {
                item.out.dead_lettered = true;
                self.ack(&mut item.slot).await
            }
            State::Pending => self.ack(&mut item.slot).await,
            State::Busy => self.ack_or_nack_busy(&mut item.slot, strategy).await,
            // Every leased row was handled or failed above; `Follows` is the caller's.
            State::Leased(_) | State::Follows(_) | State::Received => {
                self.nack(&mut item.slot, redelivery_after(self.cfg.redelivery_delay))
                    .await
            }
        }
    }

    /// The batch's transaction failed: hand every message back (those acknowledged first
    /// stay acknowledged) and return the error.
    async fn abandon<A: AckHandle>(
        &self,
        mut items: Vec<Item<A>>,
        error: StoreError,
        first_error: Option<Error>,
    ) -> Error {
        tracing::error!(job = %self.cfg.job, error = %error, messages = items.len(), "the batch failed: handing its messages back");
        for item in &mut items {
            self.nack_after_error(&mut item.slot).await;
        }
        first_error.unwrap_or_else(|| error.into())
    }

    /// The store refused a message's data: handle each message on its own, so only that
    /// one is dead-lettered.
    async fn one_at_a_time<A: AckHandle>(
        &self,
        items: Vec<Item<A>>,
        mut outcomes: Vec<Option<ConsumeOutcome>>,
        mut first_error: Option<Error>,
    ) -> Result<Vec<ConsumeOutcome>, Error> {
        for item in items {
            match self.handle_event(item.event, item.slot).await {
                Ok(out) => outcomes[item.at] = Some(out),
                Err(e) => {
                    first_error.get_or_insert(e);
                }
            }
        }
        first_error.map_or_else(|| Ok(outcomes.into_iter().flatten().collect()), Err)
    }
}

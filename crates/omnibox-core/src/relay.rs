//! The outbox relay (omni-box's `OutboxPublisher`): claims due outbox events and
//! publishes them to a broker.
//!
//! Delivery is **at least once**: the broker call happens before the result is written, so a
//! relay that dies in between publishes the event again. Per-key order holds because a claim
//! returns at most one event per `(topic, partition_key)` and the next one becomes claimable
//! only after its predecessor completed or failed terminally.
//!
//! **Leases.** Published with no transaction open, each event is protected by its lease.
//! Before every broker call the relay checks, by the local monotonic clock, that it can still
//! prove the lease (less than `lease_ttl − lease_margin` since the claim or the last
//! successful refresh, and no refresh found it taken over); an event it cannot prove is
//! released unsent, so a relay frozen past its lease (GC pause, VM stall, `SIGSTOP`) does not
//! publish, after it resumes, events another relay now owns and may already have followed
//! with their successors. The window that remains is a freeze *inside* a broker call, after
//! the check: a message already handed to the client can still reach the broker after the
//! new owner published it and its successor (seen as a duplicate behind a later event).
//!
//! **Rows that cannot be decoded.** A store's claim fails and dead-letters a row that does
//! not form a valid event (see [`ClaimEvents`]); it is a terminal failure of that event, so
//! the later events of its key flow on, as after an event that spent its attempts.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use chrono::TimeDelta;
use tokio::sync::Semaphore;

use crate::backoff::Backoff;
use crate::clock::Clock;
use crate::error::{Error, StoreError, ValidationError};
use crate::metrics::MetricsSink;
use crate::model::{OutboxEvent, WorkerId};
use crate::pipeline::steps::{CircuitBreakerStep, DeadLetterHandler};
use crate::pipeline::{BatchResult, CommitStrategy, Processor, Step};
use crate::processors::{OutboxOptions, outbox_processor};
use crate::publisher::Publisher;
use crate::shutdown::Shutdown;
use crate::store::{ClaimEvents, EventStore, Filters, RefreshLeases, SettleEvents, Transactions};
use crate::worker::{RelayWorker, RelayWorkerBuilder};

/// Default events per batch.
pub const DEFAULT_BATCH_SIZE: u32 = 100;
/// Default publishes in flight per batch of an [`OutboxRelay`] (see
/// [`OutboxRelayBuilder::publish_concurrency`]); 1 with a step before the publish.
pub const DEFAULT_PUBLISH_CONCURRENCY: usize = 16;

/// Claims batches of outbox events and publishes them.
///
/// ```
/// use omnibox_core::memory::{MemoryBroker, MemoryDb, MemoryOutboxStore};
/// use omnibox_core::relay::OutboxRelay;
/// use omnibox_core::{Shutdown, WorkerId};
///
/// # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
/// let db = MemoryDb::new();
/// let relay = OutboxRelay::builder(MemoryOutboxStore::default(), MemoryBroker::new())
///     .batch_size(50)
///     .build()
///     .unwrap();
/// let worker = WorkerId::new("relay-1").unwrap();
/// // Claim (one short transaction), publish with no transaction open, settle (another one).
/// let result = relay.publish_batch(&db, &worker, &Shutdown::new()).await.unwrap();
/// assert_eq!(result.claimed, 0);
/// # });
/// ```
pub struct OutboxRelay<S: EventStore, P> {
    processor: Processor<S>,
    job: String,
    batch_size: u32,
    limit: Option<Arc<Semaphore>>,
    publish_timeout: Duration,
    publish_concurrency: usize,
    lease_ttl: TimeDelta,
    _publisher: std::marker::PhantomData<fn() -> P>,
}

impl<S: EventStore, P> fmt::Debug for OutboxRelay<S, P> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OutboxRelay")
            .field("job", &self.job)
            .field("batch_size", &self.batch_size)
            .field(
                "concurrency_limit",
                &self.limit.as_ref().map(|s| s.available_permits()),
            )
            .finish_non_exhaustive()
    }
}

/// Builds an [`OutboxRelay`].
#[must_use]
pub struct OutboxRelayBuilder<S: EventStore, P> {
    store: S,
    publisher: P,
    opts: OutboxOptions<S::Conn>,
    batch_size: u32,
    concurrency_limit: Option<usize>,
    /// Set by the caller; `None`: the default, which depends on the steps.
    publish_concurrency: Option<usize>,
}

impl<S: EventStore, P> fmt::Debug for OutboxRelayBuilder<S, P> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OutboxRelayBuilder")
            .field("opts", &self.opts)
            .field("batch_size", &self.batch_size)
            .field("concurrency_limit", &self.concurrency_limit)
            .field("publish_concurrency", &self.publish_concurrency)
            .finish_non_exhaustive()
    }
}

impl<S, P> OutboxRelay<S, P>
where
    S: EventStore<Event = OutboxEvent>,
    S::Conn: 'static,
    P: Publisher + 'static,
{
    /// Start building a relay over `store` publishing to `publisher`: job name
    /// `"outbox_relay"`, 100 events per batch, 30 s publish timeout, 16 publishes in flight
    /// per batch (see [`OutboxRelayBuilder::publish_concurrency`]), no limit on concurrent
    /// batches, 300 s lease, default backoff.
    pub fn builder(store: S, publisher: P) -> OutboxRelayBuilder<S, P> {
        OutboxRelayBuilder {
            store,
            publisher,
            opts: OutboxOptions::default().job_name("outbox_relay"),
            batch_size: DEFAULT_BATCH_SIZE,
            concurrency_limit: None,
            publish_concurrency: None,
        }
    }
}

impl<S, P> OutboxRelayBuilder<S, P>
where
    S: EventStore<Event = OutboxEvent>,
    S::Conn: 'static,
    P: Publisher + 'static,
{
    /// Job name (metrics label, logs).
    pub fn job_name(mut self, job: impl Into<String>) -> Self {
        self.opts = self.opts.job_name(job);
        self
    }

    /// Events per batch (≥ 1).
    pub fn batch_size(mut self, n: u32) -> Self {
        self.batch_size = n;
        self
    }

    /// Time until the broker must acknowledge a publish.
    pub fn publish_timeout(mut self, timeout: Duration) -> Self {
        self.opts = self.opts.publish_timeout(timeout);
        self
    }

    /// Publishes in flight within one batch (≥ 1; 1 = sequential). Per-key order holds
    /// either way: a claimed batch holds at most one event per key.
    ///
    /// Default [`DEFAULT_PUBLISH_CONCURRENCY`] (16): a broker that confirms each publish
    /// (RabbitMQ confirms, Kafka `acks=all`, JetStream) answers in milliseconds, so one at
    /// a time caps a relay near a few hundred events/s and queues events behind each
    /// other at 1k/s. With a [`step_before`](Self::step_before) or a
    /// [`circuit_breaker`](Self::circuit_breaker) the default is 1: concurrent publishing
    /// sends the batch before the steps run, so only sequential publishing lets such a step
    /// keep an event from the broker, and a breaker open after exactly its threshold of
    /// failures (see [`PublishStep`](crate::pipeline::steps::PublishStep)). A transient
    /// broker failure stops new publishes of the batch; up to `n` calls may have been in
    /// flight.
    pub fn publish_concurrency(mut self, n: usize) -> Self {
        self.publish_concurrency = Some(n);
        self
    }

    /// At most `n` batches of this relay run at once (a semaphore around `publish_batch`).
    pub fn concurrency_limit(mut self, n: usize) -> Self {
        self.concurrency_limit = Some(n);
        self
    }

    /// Lease length; keep it well above `publish_timeout × batch_size / publish_concurrency`.
    pub fn lease_ttl(mut self, ttl: Duration) -> Self {
        self.opts = self.opts.lease_ttl(ttl);
        self
    }

    /// Safety margin of the lease check (default a fifth of the lease length; must be
    /// below it): before each broker call the relay publishes an event only while less than
    /// `lease_ttl − margin` has passed, by the local monotonic clock, since its lease was
    /// taken or last refreshed; otherwise the event is released unsent (its lease may
    /// already belong to another relay). See [`LeaseWatch`](crate::pipeline::LeaseWatch).
    pub fn lease_margin(mut self, margin: Duration) -> Self {
        self.opts = self.opts.lease_margin(margin);
        self
    }

    /// Backoff for rejected events.
    pub fn backoff(mut self, backoff: Backoff) -> Self {
        self.opts = self.opts.backoff(backoff);
        self
    }

    /// Metrics sink.
    pub fn metrics(mut self, metrics: impl MetricsSink + 'static) -> Self {
        self.opts = self.opts.metrics(metrics);
        self
    }

    /// Clock for retry times.
    pub fn clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.opts = self.opts.clock(clock);
        self
    }

    /// Restrict claims (topics, aggregate types, event types).
    pub fn filters(mut self, filters: Filters) -> Self {
        self.opts = self.opts.filters(filters);
        self
    }

    /// How results are written.
    pub fn commit_strategy(mut self, commit: CommitStrategy) -> Self {
        self.opts = self.opts.commit_strategy(commit);
        self
    }

    /// A circuit breaker in front of the broker.
    pub fn circuit_breaker(mut self, breaker: CircuitBreakerStep) -> Self {
        self.opts = self.opts.circuit_breaker(breaker);
        self
    }

    /// Extra side effect for events that spend their last attempt.
    pub fn dead_letter(mut self, handler: impl DeadLetterHandler<OutboxEvent> + 'static) -> Self {
        self.opts = self.opts.dead_letter(handler);
        self
    }

    /// A custom step before the publish step.
    pub fn step_before(mut self, step: impl Step<OutboxEvent, S::Conn> + 'static) -> Self {
        self.opts = self.opts.step_before(step);
        self
    }

    /// A custom step after the publish step.
    pub fn step_after(mut self, step: impl Step<OutboxEvent, S::Conn> + 'static) -> Self {
        self.opts = self.opts.step_after(step);
        self
    }

    /// Build the relay and go on configuring the [`RelayWorker`] that runs it over the
    /// transactions of `db` (wake-up, poll interval, worker id): one chain from store and
    /// publisher to a running worker. Errors of either part are reported by the worker
    /// builder's `build`.
    ///
    /// ```
    /// use omnibox_core::memory::{MemoryBroker, MemoryDb, MemoryOutboxStore};
    /// use omnibox_core::relay::OutboxRelay;
    ///
    /// # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
    /// let mut worker = OutboxRelay::builder(MemoryOutboxStore::default(), MemoryBroker::new())
    ///     .batch_size(500)
    ///     .worker(MemoryDb::new())
    ///     .build()
    ///     .unwrap();
    /// let summary = worker.run_until(async {}).await; // stop at once
    /// assert_eq!(summary.claimed, 0);
    /// # });
    /// ```
    pub fn worker<T>(self, db: T) -> RelayWorkerBuilder<S, P, T> {
        RelayWorker::builder_from(self.build().map(Arc::new), db)
    }

    /// Check the settings and build.
    pub fn build(mut self) -> Result<OutboxRelay<S, P>, Error> {
        let concurrency = self.publish_concurrency.unwrap_or_else(|| {
            if self.opts.steps_before.is_empty() && self.opts.circuit_breaker.is_none() {
                DEFAULT_PUBLISH_CONCURRENCY
            } else {
                1
            }
        });
        self.opts = self.opts.publish_concurrency(concurrency);
        if self.batch_size == 0 {
            return Err(ValidationError::OutOfRange {
                field: "batch_size",
                reason: "must be at least 1".into(),
            }
            .into());
        }
        if self.concurrency_limit == Some(0) {
            return Err(ValidationError::OutOfRange {
                field: "concurrency_limit",
                reason: "must be at least 1".into(),
            }
            .into());
        }
        let job = self.opts.job_name.clone();
        let publish_timeout = self.opts.publish_timeout;
        let publish_concurrency = self.opts.publish_concurrency.max(1);
        let lease_ttl = self.opts.lease_ttl;
        Ok(OutboxRelay {
            job,
            publish_timeout,
            publish_concurrency,
            lease_ttl,
            processor: outbox_processor(self.store, self.publisher, self.opts)?,
            batch_size: self.batch_size,
            limit: self.concurrency_limit.map(|n| Arc::new(Semaphore::new(n))),
            _publisher: std::marker::PhantomData,
        })
    }
}

impl<S, P> OutboxRelay<S, P>
where
    S: ClaimEvents + SettleEvents + EventStore<Event = OutboxEvent>,
{
    /// The processor behind the relay.
    pub fn processor(&self) -> &Processor<S> {
        &self.processor
    }

    /// Events per batch.
    pub fn batch_size(&self) -> u32 {
        self.batch_size
    }

    /// Time the broker has to acknowledge one publish.
    pub fn publish_timeout(&self) -> Duration {
        self.publish_timeout
    }

    /// Publishes in flight within one batch.
    pub fn publish_concurrency(&self) -> usize {
        self.publish_concurrency
    }

    /// Lease length of claimed events.
    pub fn lease_ttl(&self) -> Duration {
        self.lease_ttl.to_std().unwrap_or(Duration::MAX)
    }

    /// Publish one batch without holding a transaction while the broker is called: the
    /// claim commits in one short transaction, the results in another, fenced by the
    /// leases (a relay whose lease expired meanwhile cannot overwrite the new owner).
    /// Returns an empty result without claiming once shutdown was requested.
    pub async fn publish_batch<T>(
        &self,
        db: &T,
        worker: &WorkerId,
        shutdown: &Shutdown,
    ) -> Result<BatchResult, StoreError>
    where
        T: Transactions<Conn = S::Conn>,
        S: RefreshLeases,
    {
        let _permit = self.permit().await;
        self.processor
            .process_leased(db, worker, self.batch_size, shutdown)
            .await
    }

    /// Publish one batch inside the caller's transaction `conn` (omni-box's mode): the
    /// claim's row locks are held while publishing; the caller commits afterwards. Simpler,
    /// but a slow broker keeps a transaction open.
    pub async fn publish_batch_in(
        &self,
        conn: &mut S::Conn,
        worker: &WorkerId,
        shutdown: &Shutdown,
    ) -> Result<BatchResult, StoreError> {
        let _permit = self.permit().await;
        self.processor
            .process_batch(conn, worker, self.batch_size, shutdown)
            .await
    }

    async fn permit(&self) -> Option<tokio::sync::SemaphorePermit<'_>> {
        match &self.limit {
            // The semaphore is never closed, so `acquire` cannot fail.
            Some(s) => s.acquire().await.ok(),
            None => None,
        }
    }
}

pub(crate) mod worker;

#[cfg(test)]
mod tests;

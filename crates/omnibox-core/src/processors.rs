//! Ready-made processors with a fixed, documented step order:
//!
//! - [`outbox_processor`]: `[circuit breaker] → before… → PublishStep → after… → MetricsStep
//!   → [DeadLetterNotifyStep]`;
//! - [`inbox_processor`]: `[circuit breaker] → before… → [SiblingDedupStep] → HandlerStep →
//!   after… → MetricsStep → [DeadLetterNotifyStep]`;
//! - [`dispatching_processor`]: the inbox processor with a [`Router`](crate::router::Router)
//!   as its handler.
//!
//! The circuit breaker sits first so that an open breaker stops the batch before any
//! broker or handler call.
//!
//! The inbox processors run every handler inside a savepoint of the store
//! ([`Savepoints`]): in a batch all handlers share the caller's one transaction, and the
//! savepoint is what keeps them apart. A handler that fails (error, `Retry`, timeout,
//! panic) has its writes rolled back to the savepoint while its failure is recorded, so the
//! retry starts from a clean slate and effects made through the connection happen
//! effectively once; in PostgreSQL a handler whose SQL failed does not abort the batch's
//! transaction, so the other handlers' work and every failure record commit (see
//! [`HandlerStep`]). Each factory has a `*_builder` twin returning the
//! [`ProcessorBuilder`], to change the fetch strategy or add more steps.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use chrono::TimeDelta;

use crate::backoff::Backoff;
use crate::clock::{Clock, SystemClock};
use crate::error::Error;
use crate::handler::Handler;
use crate::metrics::{MetricsSink, NoopMetrics};
use crate::model::{InboxEvent, OutboxEvent};
use crate::pipeline::steps::{
    CircuitBreakerStep, DEFAULT_HANDLER_TIMEOUT, DEFAULT_PUBLISH_TIMEOUT, DeadLetterHandler,
    DynDeadLetterHandler, HandlerStep, MetricsStep, PublishStep, SiblingDedupStep,
};
use crate::pipeline::{CommitStrategy, DynStep, Processor, ProcessorBuilder, Step};
use crate::publisher::Publisher;
use crate::store::{EventStore, Filters, InboxLookup, Savepoints};

/// Settings shared by both processors.
macro_rules! common_setters {
    ($event:ty) => {
        /// Job name (metrics label, logs).
        pub fn job_name(mut self, job: impl Into<String>) -> Self {
            self.job_name = job.into();
            self
        }

        /// Backoff for counted failures (default: base 10 s, cap 1 h, equal jitter).
        pub fn backoff(mut self, backoff: Backoff) -> Self {
            self.backoff = backoff;
            self
        }

        /// Lease length (default 300 s).
        pub fn lease_ttl(mut self, ttl: std::time::Duration) -> Self {
            self.lease_ttl = crate::clock::delta(ttl);
            self
        }

        /// Restrict claims (topics, sources, event types).
        pub fn filters(mut self, filters: Filters) -> Self {
            self.filters = filters;
            self
        }

        /// How results are written (default: one settle call per batch).
        pub fn commit_strategy(mut self, commit: CommitStrategy) -> Self {
            self.commit = commit;
            self
        }

        /// Metrics sink (default: discard).
        pub fn metrics(mut self, metrics: impl MetricsSink + 'static) -> Self {
            self.metrics = Arc::new(metrics);
            self
        }

        /// Clock for retry times (default: the system clock).
        pub fn clock(mut self, clock: Arc<dyn Clock>) -> Self {
            self.clock = clock;
            self
        }

        /// Put a circuit breaker first in the pipeline (clones share its state).
        pub fn circuit_breaker(mut self, breaker: CircuitBreakerStep) -> Self {
            self.circuit_breaker = Some(breaker);
            self
        }

        /// Call `handler` when an event spends its last attempt (extra side effect; the
        /// store's dead-letter row is written regardless).
        pub fn dead_letter(mut self, handler: impl DeadLetterHandler<$event> + 'static) -> Self {
            self.dead_letter = Some(Arc::new(handler));
            self
        }

        /// Add a step before the main step (after the breaker), in call order.
        pub fn step_before(mut self, step: impl Step<$event, C> + 'static) -> Self {
            self.steps_before.push(Box::new(step));
            self
        }

        /// Add a step after the main step, in call order.
        pub fn step_after(mut self, step: impl Step<$event, C> + 'static) -> Self {
            self.steps_after.push(Box::new(step));
            self
        }
    };
}

/// Options of [`outbox_processor`]; `C` is the store's connection type.
#[non_exhaustive]
pub struct OutboxOptions<C> {
    /// Job name (default `"outbox_processor"`).
    pub job_name: String,
    /// Time until the broker must acknowledge (default 30 s).
    pub publish_timeout: Duration,
    /// Publishes in flight per batch (default 1: sequential).
    pub publish_concurrency: usize,
    /// Backoff for counted failures.
    pub backoff: Backoff,
    /// Lease length.
    pub lease_ttl: TimeDelta,
    /// Safety margin of the lease check before each broker call (default `None`: a fifth
    /// of the lease; see [`ProcessorBuilder::lease_margin`]).
    pub lease_margin: Option<Duration>,
    /// Claim restrictions.
    pub filters: Filters,
    /// Commit strategy.
    pub commit: CommitStrategy,
    /// Metrics sink.
    pub metrics: Arc<dyn MetricsSink>,
    /// Clock.
    pub clock: Arc<dyn Clock>,
    /// Optional breaker (first step).
    pub circuit_breaker: Option<CircuitBreakerStep>,
    /// Optional dead-letter side effect (last step).
    pub dead_letter: Option<Arc<dyn DynDeadLetterHandler<OutboxEvent>>>,
    /// Steps before the publish step.
    pub steps_before: Vec<Box<dyn DynStep<OutboxEvent, C>>>,
    /// Steps after the publish step.
    pub steps_after: Vec<Box<dyn DynStep<OutboxEvent, C>>>,
}

impl<C> Default for OutboxOptions<C> {
    fn default() -> Self {
        Self {
            job_name: "outbox_processor".into(),
            publish_timeout: DEFAULT_PUBLISH_TIMEOUT,
            publish_concurrency: 1,
            backoff: Backoff::default(),
            lease_ttl: crate::domain::DEFAULT_LEASE_TTL,
            lease_margin: None,
            filters: Filters::default(),
            commit: CommitStrategy::Bulk,
            metrics: Arc::new(NoopMetrics),
            clock: Arc::new(SystemClock),
            circuit_breaker: None,
            dead_letter: None,
            steps_before: Vec::new(),
            steps_after: Vec::new(),
        }
    }
}

impl<C> fmt::Debug for OutboxOptions<C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OutboxOptions")
            .field("job_name", &self.job_name)
            .field("publish_timeout", &self.publish_timeout)
            .field("publish_concurrency", &self.publish_concurrency)
            .field("backoff", &self.backoff)
            .field("lease_ttl", &self.lease_ttl)
            .field("lease_margin", &self.lease_margin)
            .field("filters", &self.filters)
            .field("commit", &self.commit)
            .field("circuit_breaker", &self.circuit_breaker.is_some())
            .field("dead_letter", &self.dead_letter.is_some())
            .field("steps_before", &self.steps_before.len())
            .field("steps_after", &self.steps_after.len())
            .finish_non_exhaustive()
    }
}

impl<C> OutboxOptions<C> {
    /// Safety margin of the lease check before each broker call (default a fifth of the
    /// lease; must be below it). See [`ProcessorBuilder::lease_margin`].
    pub fn lease_margin(mut self, margin: Duration) -> Self {
        self.lease_margin = Some(margin);
        self
    }

    /// The defaults.
    pub fn new() -> Self {
        Self::default()
    }

    common_setters!(OutboxEvent);

    /// Time until the broker must acknowledge (must be positive).
    pub fn publish_timeout(mut self, timeout: Duration) -> Self {
        self.publish_timeout = timeout;
        self
    }

    /// Publishes in flight per batch (≥ 1; 1 = sequential).
    pub fn publish_concurrency(mut self, n: usize) -> Self {
        self.publish_concurrency = n;
        self
    }
}

/// Options of [`inbox_processor`]; `C` is the store's connection type.
#[non_exhaustive]
pub struct InboxOptions<C> {
    /// Job name (default `"inbox_processor"`).
    pub job_name: String,
    /// Time a handler may run (default 30 s).
    pub handler_timeout: Duration,
    /// Complete events whose `(message_id, consumer_group)` sibling already completed
    /// (default on).
    pub skip_duplicate_siblings: bool,
    /// Backoff for counted failures.
    pub backoff: Backoff,
    /// Lease length.
    pub lease_ttl: TimeDelta,
    /// Claim restrictions (e.g. sources).
    pub filters: Filters,
    /// Commit strategy.
    pub commit: CommitStrategy,
    /// Metrics sink.
    pub metrics: Arc<dyn MetricsSink>,
    /// Clock.
    pub clock: Arc<dyn Clock>,
    /// Optional breaker (first step).
    pub circuit_breaker: Option<CircuitBreakerStep>,
    /// Optional dead-letter side effect (last step).
    pub dead_letter: Option<Arc<dyn DynDeadLetterHandler<InboxEvent>>>,
    /// Steps before the dedup/handler steps.
    pub steps_before: Vec<Box<dyn DynStep<InboxEvent, C>>>,
    /// Steps after the handler step.
    pub steps_after: Vec<Box<dyn DynStep<InboxEvent, C>>>,
}

impl<C> Default for InboxOptions<C> {
    fn default() -> Self {
        Self {
            job_name: "inbox_processor".into(),
            handler_timeout: DEFAULT_HANDLER_TIMEOUT,
            skip_duplicate_siblings: true,
            backoff: Backoff::default(),
            lease_ttl: crate::domain::DEFAULT_LEASE_TTL,
            filters: Filters::default(),
            commit: CommitStrategy::Bulk,
            metrics: Arc::new(NoopMetrics),
            clock: Arc::new(SystemClock),
            circuit_breaker: None,
            dead_letter: None,
            steps_before: Vec::new(),
            steps_after: Vec::new(),
        }
    }
}

impl<C> fmt::Debug for InboxOptions<C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("InboxOptions")
            .field("job_name", &self.job_name)
            .field("handler_timeout", &self.handler_timeout)
            .field("skip_duplicate_siblings", &self.skip_duplicate_siblings)
            .field("backoff", &self.backoff)
            .field("lease_ttl", &self.lease_ttl)
            .field("filters", &self.filters)
            .field("commit", &self.commit)
            .field("circuit_breaker", &self.circuit_breaker.is_some())
            .field("dead_letter", &self.dead_letter.is_some())
            .field("steps_before", &self.steps_before.len())
            .field("steps_after", &self.steps_after.len())
            .finish_non_exhaustive()
    }
}

impl<C> InboxOptions<C> {
    /// The defaults.
    pub fn new() -> Self {
        Self::default()
    }

    common_setters!(InboxEvent);

    /// Time a handler may run (must be positive).
    pub fn handler_timeout(mut self, timeout: Duration) -> Self {
        self.handler_timeout = timeout;
        self
    }

    /// Turn the duplicate-sibling check on or off.
    pub fn skip_duplicate_siblings(mut self, on: bool) -> Self {
        self.skip_duplicate_siblings = on;
        self
    }
}

fn positive(field: &'static str, d: Duration) -> Result<(), Error> {
    if d.is_zero() {
        return Err(crate::error::ValidationError::OutOfRange {
            field,
            reason: "must be positive".into(),
        }
        .into());
    }
    Ok(())
}

/// The outbox pipeline as a builder (see the [module docs](self) for the step order).
pub fn outbox_processor_builder<S, P>(
    store: S,
    publisher: P,
    opts: OutboxOptions<S::Conn>,
) -> Result<ProcessorBuilder<S>, Error>
where
    S: EventStore<Event = OutboxEvent>,
    S::Conn: 'static,
    P: Publisher + 'static,
{
    positive("publish_timeout", opts.publish_timeout)?;
    if opts.publish_concurrency == 0 {
        return Err(crate::error::ValidationError::OutOfRange {
            field: "publish_concurrency",
            reason: "must be at least 1".into(),
        }
        .into());
    }
    let mut b = ProcessorBuilder::new(store)
        .job_name(opts.job_name)
        .lease_ttl_delta(opts.lease_ttl)
        .filters(opts.filters)
        .commit_strategy(opts.commit)
        .metrics(opts.metrics)
        .clock(opts.clock);
    if let Some(margin) = opts.lease_margin {
        b = b.lease_margin(margin);
    }
    if let Some(cb) = opts.circuit_breaker {
        b = b.add_step(cb);
    }
    for s in opts.steps_before {
        b = b.add_boxed_step(s);
    }
    b = b.add_step(
        PublishStep::new(publisher)
            .timeout(opts.publish_timeout)
            .backoff(opts.backoff)
            .concurrency(opts.publish_concurrency),
    );
    for s in opts.steps_after {
        b = b.add_boxed_step(s);
    }
    b = b.add_step(MetricsStep);
    if let Some(d) = opts.dead_letter {
        b = b.add_step(crate::pipeline::steps::DeadLetterNotifyStep::new(d));
    }
    Ok(b)
}

/// An outbox processor publishing to `publisher`.
///
/// ```
/// use omnibox_core::processors::{outbox_processor, OutboxOptions};
/// use omnibox_core::memory::{MemoryBroker, MemoryDb, MemoryOutboxStore};
///
/// let processor = outbox_processor(
///     MemoryOutboxStore::default(),
///     MemoryBroker::new(),
///     OutboxOptions::new().job_name("orders_relay"),
/// )
/// .unwrap();
/// assert_eq!(processor.job(), "orders_relay");
/// ```
pub fn outbox_processor<S, P>(
    store: S,
    publisher: P,
    opts: OutboxOptions<S::Conn>,
) -> Result<Processor<S>, Error>
where
    S: EventStore<Event = OutboxEvent>,
    S::Conn: 'static,
    P: Publisher + 'static,
{
    outbox_processor_builder(store, publisher, opts)?.build()
}

/// The inbox pipeline as a builder (see the [module docs](self) for the step order).
pub fn inbox_processor_builder<S, H>(
    store: S,
    handler: H,
    opts: InboxOptions<S::Conn>,
) -> Result<ProcessorBuilder<S>, Error>
where
    S: InboxLookup + Savepoints + Clone + 'static,
    S::Conn: 'static,
    H: Handler<InboxEvent, S::Conn> + 'static,
{
    positive("handler_timeout", opts.handler_timeout)?;
    let mut b = ProcessorBuilder::new(store.clone())
        .job_name(opts.job_name)
        .lease_ttl_delta(opts.lease_ttl)
        .filters(opts.filters)
        .commit_strategy(opts.commit)
        .metrics(opts.metrics)
        .clock(opts.clock);
    if let Some(cb) = opts.circuit_breaker {
        b = b.add_step(cb);
    }
    for s in opts.steps_before {
        b = b.add_boxed_step(s);
    }
    if opts.skip_duplicate_siblings {
        b = b.add_step(SiblingDedupStep::new(store.clone()).backoff(opts.backoff));
    }
    b = b.add_step(
        HandlerStep::new(handler)
            .timeout(opts.handler_timeout)
            .backoff(opts.backoff)
            .savepoints(store),
    );
    for s in opts.steps_after {
        b = b.add_boxed_step(s);
    }
    b = b.add_step(MetricsStep);
    if let Some(d) = opts.dead_letter {
        b = b.add_step(crate::pipeline::steps::DeadLetterNotifyStep::new(d));
    }
    Ok(b)
}

/// An inbox processor running `handler` for each event, with the batch's connection. Run
/// it with [`Processor::process_batch`] inside a transaction, so the handler's writes
/// commit together with the events' completion. Each handler runs inside a savepoint:
/// a failed handler's writes are rolled back, a successful one's kept (see the
/// [module docs](self)).
pub fn inbox_processor<S, H>(
    store: S,
    handler: H,
    opts: InboxOptions<S::Conn>,
) -> Result<Processor<S>, Error>
where
    S: InboxLookup + Savepoints + Clone + 'static,
    S::Conn: 'static,
    H: Handler<InboxEvent, S::Conn> + 'static,
{
    inbox_processor_builder(store, handler, opts)?.build()
}

/// An inbox processor dispatching each event through `router`
/// ([`Router`](crate::router::Router) is a [`Handler`]; any other dispatching handler works
/// too). Default job name `"dispatching_processor"` unless `opts` sets another.
pub fn dispatching_processor<S, R>(
    store: S,
    router: R,
    mut opts: InboxOptions<S::Conn>,
) -> Result<Processor<S>, Error>
where
    S: InboxLookup + Savepoints + Clone + 'static,
    S::Conn: 'static,
    R: Handler<InboxEvent, S::Conn> + 'static,
{
    if opts.job_name == "inbox_processor" {
        opts.job_name = "dispatching_processor".into();
    }
    inbox_processor(store, router, opts)
}

#[cfg(test)]
mod tests;

//! Configuration of the inbox runner: [`InboxRunnerBuilder`].

use std::sync::Arc;
use std::time::Duration;

use chrono::TimeDelta;

use super::runner::InboxRunner;
use super::strategy::AckStrategy;
use crate::backoff::Backoff;
use crate::clock::{Clock, SystemClock};
use crate::error::{Error, FailureKind, ValidationError};
use crate::handler::{Handler, HandlerResult};
use crate::metrics::{MetricsSink, NoopMetrics};
use crate::model::limits::NAME_MAX;
use crate::model::{InboxEvent, Limits, WorkerId};

/// Default bound on one handler call (omni-box's `DEFAULT_PROCESS_TIMEOUT_SECONDS`).
pub const DEFAULT_PROCESS_TIMEOUT: Duration = Duration::from_secs(30);
/// First pause of [`InboxRunner::run`] after an error or an unacknowledged message.
pub const DEFAULT_IDLE_BACKOFF_MIN: Duration = Duration::from_millis(100);
/// Longest pause of [`InboxRunner::run`] (the pause doubles up to this).
pub const DEFAULT_IDLE_BACKOFF_MAX: Duration = Duration::from_secs(5);
/// The largest [`InboxRunnerBuilder::batch_size`].
pub const MAX_BATCH_SIZE: usize = 10_000;
/// The largest [`InboxRunnerBuilder::concurrency`].
pub const MAX_CONCURRENCY: usize = 1_024;
/// Default redelivery delay for messages handed back without a retry time of their own
/// (row leased by another worker, storage failure).
pub const DEFAULT_REDELIVERY_DELAY: Duration = Duration::from_secs(1);

/// The handler type of a runner without a handler: messages are only stored (pending) for
/// a batch inbox processor. Never called.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoHandler;

impl<C: Send> Handler<InboxEvent, C> for NoHandler {
    async fn handle(&self, _event: &InboxEvent, _conn: &mut C) -> HandlerResult {
        Ok(crate::handler::HandlerOutcome::Completed)
    }
}

/// Settings shared by every call of a runner.
#[derive(Clone)]
pub(crate) struct RunnerConfig {
    pub(crate) worker: WorkerId,
    pub(crate) group: String,
    pub(crate) strategy: AckStrategy,
    pub(crate) limits: Limits,
    pub(crate) process_timeout: Duration,
    pub(crate) process_timeout_kind: FailureKind,
    pub(crate) lease_ttl: TimeDelta,
    pub(crate) metrics: Arc<dyn MetricsSink>,
    pub(crate) backoff: Backoff,
    pub(crate) clock: Arc<dyn Clock>,
    pub(crate) job: String,
    pub(crate) redelivery_delay: Duration,
    pub(crate) idle_min: Duration,
    pub(crate) idle_max: Duration,
    pub(crate) batch_size: usize,
    pub(crate) batch_linger: Duration,
    pub(crate) concurrency: usize,
}

impl std::fmt::Debug for RunnerConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RunnerConfig")
            .field("worker", &self.worker)
            .field("group", &self.group)
            .field("strategy", &self.strategy)
            .field("limits", &self.limits)
            .field("process_timeout", &self.process_timeout)
            .field("process_timeout_kind", &self.process_timeout_kind)
            .field("lease_ttl", &self.lease_ttl)
            .field("backoff", &self.backoff)
            .field("clock", &self.clock)
            .field("job", &self.job)
            .field("redelivery_delay", &self.redelivery_delay)
            .field("idle_min", &self.idle_min)
            .field("idle_max", &self.idle_max)
            .field("batch_size", &self.batch_size)
            .field("batch_linger", &self.batch_linger)
            .field("concurrency", &self.concurrency)
            .finish_non_exhaustive()
    }
}

/// Builds an [`InboxRunner`]; start with [`InboxRunner::builder`].
///
/// Defaults: [`AckStrategy::ExactlyOnceInbox`], a generated worker id (`inbox:<pid>:<rand>`),
/// [`Limits::default`] (6 attempts), a 30 s process timeout, a 300 s lease, the default
/// [`Backoff`] for retry times, no metrics, the system clock, job name `"inbox_consumer"`,
/// a 1 s redelivery delay and a 0.1 s → 5 s pause in [`InboxRunner::run`].
#[must_use]
pub struct InboxRunnerBuilder<C, T, S, H = NoHandler> {
    consumer: C,
    db: T,
    store: S,
    handler: Option<H>,
    worker: Option<WorkerId>,
    cfg: PartialConfig,
}

struct PartialConfig {
    group: String,
    strategy: AckStrategy,
    limits: Limits,
    process_timeout: Duration,
    process_timeout_kind: FailureKind,
    lease_ttl: TimeDelta,
    metrics: Arc<dyn MetricsSink>,
    backoff: Backoff,
    clock: Arc<dyn Clock>,
    job: String,
    redelivery_delay: Duration,
    idle_min: Duration,
    idle_max: Duration,
    batch_size: usize,
    batch_linger: Duration,
    concurrency: usize,
}

impl<C, T, S> InboxRunnerBuilder<C, T, S, NoHandler> {
    pub(crate) fn new(consumer: C, db: T, store: S, consumer_group: String) -> Self {
        Self {
            consumer,
            db,
            store,
            handler: None,
            worker: None,
            cfg: PartialConfig {
                group: consumer_group,
                strategy: AckStrategy::default(),
                limits: Limits::default(),
                process_timeout: DEFAULT_PROCESS_TIMEOUT,
                process_timeout_kind: FailureKind::Permanent,
                lease_ttl: crate::domain::DEFAULT_LEASE_TTL,
                metrics: Arc::new(NoopMetrics),
                backoff: Backoff::default(),
                clock: Arc::new(SystemClock),
                job: "inbox_consumer".into(),
                redelivery_delay: DEFAULT_REDELIVERY_DELAY,
                idle_min: DEFAULT_IDLE_BACKOFF_MIN,
                idle_max: DEFAULT_IDLE_BACKOFF_MAX,
                batch_size: 1,
                batch_linger: Duration::ZERO,
                concurrency: 1,
            },
        }
    }
}

impl<C, T, S, H> InboxRunnerBuilder<C, T, S, H> {
    /// Handle messages with `handler`, inside the transaction that stores and completes
    /// the row. Without a handler, messages are stored pending for a batch processor.
    pub fn handler<H2>(self, handler: H2) -> InboxRunnerBuilder<C, T, S, H2> {
        InboxRunnerBuilder {
            consumer: self.consumer,
            db: self.db,
            store: self.store,
            handler: Some(handler),
            worker: self.worker,
            cfg: self.cfg,
        }
    }

    /// The worker id that leases rows (default: `inbox:<pid>:<random>`, unique per process
    /// and per runner).
    pub fn worker_id(mut self, worker: WorkerId) -> Self {
        self.worker = Some(worker);
        self
    }

    /// The acknowledgement strategy.
    pub fn ack_strategy(mut self, strategy: AckStrategy) -> Self {
        self.cfg.strategy = strategy;
        self
    }

    /// Limits for building inbox events (attempt budget, header and payload limits).
    pub fn limits(mut self, limits: Limits) -> Self {
        self.cfg.limits = limits;
        self
    }

    /// Bound on one handler call; a call that takes longer is a counted failure (see
    /// [`process_timeout_kind`](Self::process_timeout_kind)).
    pub fn process_timeout(mut self, timeout: Duration) -> Self {
        self.cfg.process_timeout = timeout;
        self
    }

    /// What a handler call cut off by the process timeout counts as (default
    /// [`FailureKind::Permanent`]: it spends an attempt, so a handler that hangs on every
    /// try ends dead-lettered). [`FailureKind::Transient`] when a timeout means a slow
    /// downstream rather than a bad message: retried without spending an attempt.
    pub fn process_timeout_kind(mut self, kind: FailureKind) -> Self {
        self.cfg.process_timeout_kind = kind;
        self
    }

    /// Lease taken on a row while its handler runs; another worker's lease older than this
    /// is taken over (spending one attempt).
    pub fn lease_ttl(mut self, ttl: Duration) -> Self {
        self.cfg.lease_ttl = crate::clock::delta(ttl);
        self
    }

    /// Metrics sink.
    pub fn metrics(mut self, metrics: impl MetricsSink + 'static) -> Self {
        self.cfg.metrics = Arc::new(metrics);
        self
    }

    /// Backoff for the retry time of a counted failure (`now + backoff.delay(attempts)`).
    pub fn backoff(mut self, backoff: Backoff) -> Self {
        self.cfg.backoff = backoff;
        self
    }

    /// Clock for retry times and dead-letter timestamps (tests).
    pub fn clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.cfg.clock = clock;
        self
    }

    /// Job name (metrics label, logs).
    pub fn job_name(mut self, job: impl Into<String>) -> Self {
        self.cfg.job = job.into();
        self
    }

    /// Redelivery delay asked of the broker when a message is handed back without a retry
    /// time of its own (row leased by another worker, storage failure).
    pub fn redelivery_delay(mut self, delay: Duration) -> Self {
        self.cfg.redelivery_delay = delay;
        self
    }

    /// Pause of [`InboxRunner::run`] after an error or an unacknowledged message: starts at
    /// `min`, doubles up to `max`, resets after an acknowledged message.
    pub fn idle_backoff(mut self, min: Duration, max: Duration) -> Self {
        self.cfg.idle_min = min;
        self.cfg.idle_max = max;
        self
    }

    /// Handle up to `size` messages per transaction (default 1: one transaction per
    /// message). [`InboxRunner::run`] then takes a message, adds those that arrive within
    /// the [`batch_linger`](Self::batch_linger), and stores, handles and completes them in
    /// one transaction, each handler in its own savepoint (a failure undoes only its own
    /// writes and is recorded on its row in the same transaction); every message is
    /// acknowledged or handed back only after that transaction committed. One commit
    /// (one WAL flush) then serves the whole batch. The acknowledgement of each message
    /// follows its strategy exactly as one at a time. See
    /// [`InboxRunner::handle_batch`]. `size` must be 1 to [`MAX_BATCH_SIZE`].
    pub fn batch_size(mut self, size: usize) -> Self {
        self.cfg.batch_size = size;
        self
    }

    /// How long a batch waits for more messages after its first one (default zero: it
    /// takes only the messages the consumer already holds, so a quiet stream loses no
    /// latency). Only with [`batch_size`](Self::batch_size) above 1.
    pub fn batch_linger(mut self, linger: Duration) -> Self {
        self.cfg.batch_linger = linger;
        self
    }

    /// Handle up to `n` messages at once in [`InboxRunner::run`] (default 1: one after
    /// another), each in its own transaction, **keeping the broker's order** per
    /// [`Delivery::order_key`](crate::consumer::Delivery::order_key) (Kafka partition,
    /// RabbitMQ routing key, NATS subject): deliveries are spread over `n` lanes by that key
    /// and a lane handles one at a time, so two messages of one key never overlap and are
    /// handled in the order received. When a message is handed back (a failed handler,
    /// a storage error), the messages of its key already received behind it are handed back
    /// unhandled, so none overtakes it. At most `2 × n` deliveries are held at once.
    /// Each lane takes its own connection: give the store's pool at least `n`.
    /// `n` must be 1 to [`MAX_CONCURRENCY`]; above 1 it cannot be combined with a
    /// [`batch_size`](Self::batch_size) above 1 (batches already pack many messages into
    /// one transaction; run several runners for both).
    pub fn concurrency(mut self, n: usize) -> Self {
        self.cfg.concurrency = n;
        self
    }

    /// Build the runner and go on configuring the [`InboxWorker`] that keeps it running
    /// (restart backoff): one chain from consumer to a running worker. Errors of either
    /// part are reported by the worker builder's `build`.
    ///
    /// [`InboxWorker`]: crate::worker::InboxWorker
    pub fn worker(self) -> crate::worker::InboxWorkerBuilder<C, T, S, H> {
        crate::worker::InboxWorker::builder_from(self.build())
    }

    /// Check the configuration and build.
    pub fn build(self) -> Result<InboxRunner<C, T, S, H>, Error> {
        let c = self.cfg;
        let group = c.group.trim().to_owned();
        if group.is_empty() {
            return Err(ValidationError::Blank {
                field: "consumer_group",
            }
            .into());
        }
        let len = group.chars().count();
        if len > NAME_MAX {
            return Err(ValidationError::TooLong {
                field: "consumer_group",
                max: NAME_MAX,
                actual: len,
            }
            .into());
        }
        c.limits.validate()?;
        if c.process_timeout.is_zero() {
            return Err(Error::Config("process_timeout must be positive".into()));
        }
        if c.lease_ttl <= TimeDelta::zero() {
            return Err(Error::Config("lease_ttl must be positive".into()));
        }
        if c.job.trim().is_empty() {
            return Err(Error::Config("job name must not be blank".into()));
        }
        if c.idle_min.is_zero() || c.idle_max < c.idle_min {
            return Err(Error::Config("idle backoff needs 0 < min <= max".into()));
        }
        if !(1..=MAX_BATCH_SIZE).contains(&c.batch_size) {
            return Err(Error::Config(format!(
                "batch_size must be 1 to {MAX_BATCH_SIZE}, not {}",
                c.batch_size
            )));
        }
        if !(1..=MAX_CONCURRENCY).contains(&c.concurrency) {
            return Err(Error::Config(format!(
                "concurrency must be 1 to {MAX_CONCURRENCY}, not {}",
                c.concurrency
            )));
        }
        if c.concurrency > 1 && c.batch_size > 1 {
            return Err(Error::Config(format!(
                "concurrency ({}) and batch_size ({}) cannot both be above 1: \
                 choose one, or run several runners",
                c.concurrency, c.batch_size
            )));
        }
        let worker = match self.worker {
            Some(w) => w,
            None => WorkerId::generate("inbox")?,
        };
        Ok(InboxRunner::from_parts(
            self.consumer,
            self.db,
            self.store,
            self.handler,
            RunnerConfig {
                worker,
                group,
                strategy: c.strategy,
                limits: c.limits,
                process_timeout: c.process_timeout,
                process_timeout_kind: c.process_timeout_kind,
                lease_ttl: c.lease_ttl,
                metrics: c.metrics,
                backoff: c.backoff,
                clock: c.clock,
                job: c.job,
                redelivery_delay: c.redelivery_delay,
                idle_min: c.idle_min,
                idle_max: c.idle_max,
                batch_size: c.batch_size,
                batch_linger: c.batch_linger,
                concurrency: c.concurrency,
            },
        ))
    }
}

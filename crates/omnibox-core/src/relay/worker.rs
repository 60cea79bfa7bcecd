//! [`RelayWorker`]: the outbox relay as a loop that runs for the life of the process.

use std::sync::Arc;
use std::time::Duration;

use crate::backoff::{Backoff, Jitter};
use crate::error::{Error, ValidationError};
use crate::model::WorkerId;
use crate::pipeline::BatchResult;
use crate::publisher::Publisher;
use crate::relay::OutboxRelay;
use crate::shutdown::Shutdown;
use crate::store::{EventStore, OutboxStore, Transactions};
use crate::wake::{Poll, Wakeup, Woken};
use crate::worker::Stopped;

/// Default wait after an empty claim when no notification arrives.
pub const DEFAULT_POLL_INTERVAL: Duration = Duration::from_secs(1);
/// First pause after a broker outage or a database error.
pub const DEFAULT_ERROR_BACKOFF_MIN: Duration = Duration::from_millis(500);
/// Longest pause after repeated outages or errors.
pub const DEFAULT_ERROR_BACKOFF_MAX: Duration = Duration::from_secs(30);

/// What a [`RelayWorker`] did while it ran.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct RelaySummary {
    /// Batches that claimed at least one event.
    pub batches: u64,
    /// Events claimed.
    pub claimed: u64,
    /// Events the broker acknowledged (including any whose completion was then refused
    /// because the lease was lost: those are counted in `lease_lost` too, and will be
    /// published again by the lease's new owner — at least once).
    pub published: u64,
    /// Events whose publish failed and spent an attempt.
    pub failed: u64,
    /// Events whose publish failed transiently (broker down; no attempt spent).
    pub transient_failures: u64,
    /// Events given back untouched (shutdown, outage probe, breaker).
    pub released: u64,
    /// Events that spent their last attempt.
    pub dead_lettered: u64,
    /// Results not applied because the lease was lost meanwhile.
    pub lease_lost: u64,
    /// Database errors (claim or settle failed); the loop backed off and went on.
    pub store_errors: u64,
    /// How the run ended.
    pub stopped: Stopped,
}

impl RelaySummary {
    fn add(&mut self, r: &BatchResult) {
        if r.claimed > 0 {
            self.batches += 1;
        }
        self.claimed += r.claimed as u64;
        if r.committed() {
            self.published += (r.completed.len() - r.skipped.len()) as u64;
            self.failed += r.failed_counted.len() as u64;
            self.transient_failures += r.failed_transient.len() as u64;
            self.released += r.released.len() as u64;
            self.dead_lettered += r.dead_lettered.len() as u64;
            self.lease_lost += r.lease_lost.len() as u64;
        } else {
            self.store_errors += 1;
        }
    }
}

/// Runs an [`OutboxRelay`] until shutdown: claim → publish → settle, in a loop.
///
/// - A batch that claimed events is followed by the next claim at once (the successor of a
///   published event on the same `(topic, partition_key)` becomes claimable only now).
/// - An empty claim waits on the [`Wakeup`]: a notification (PostgreSQL LISTEN, or
///   [`LocalWakeup`](crate::wake::LocalWakeup)) ends the wait at once, otherwise the poll
///   interval (default 1 s) does.
/// - A batch with a transient publish failure (broker down: the publish step probes with
///   one event and releases the rest without spending attempts) or a database error
///   (claim or settle failed) backs off exponentially, 0.5 s doubling to 30 s by default,
///   reset by the next clean batch. The worker never exits on an error.
///
/// **Leases.** While a batch publishes, its leases are refreshed every third of the lease
/// length (see [`Processor::process_leased`](crate::pipeline::Processor::process_leased)), so
/// a slow broker cannot make a lease expire under a batch that is still working; a worker
/// that dies stops refreshing, and its leases expire and are taken over. A worker that is
/// frozen instead (and resumes) checks each lease by its monotonic clock before every broker
/// call and releases the events it can no longer prove it owns (see the
/// [relay module](crate::relay)).
///
/// Shutdown: see the [worker module docs](crate::worker). Run several workers (each with its own
/// [`WorkerId`]) for more throughput; they never claim the same event.
///
/// ```
/// use std::time::Duration;
/// use omnibox_core::memory::{MemoryBroker, MemoryDb, MemoryOutboxStore};
/// use omnibox_core::relay::OutboxRelay;
/// use omnibox_core::worker::RelayWorker;
/// use omnibox_core::{Shutdown, WorkerId};
///
/// # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
/// let relay = OutboxRelay::builder(MemoryOutboxStore::default(), MemoryBroker::new())
///     .publish_timeout(Duration::from_secs(1))
///     .build()
///     .unwrap();
/// let mut worker = RelayWorker::builder(relay, MemoryDb::new()).worker_id(WorkerId::new("relay-1").unwrap())
///     .build()
///     .unwrap();
/// let shutdown = Shutdown::new();
/// shutdown.trigger(); // normally from a signal handler
/// let summary = worker.run(&shutdown).await;
/// assert_eq!(summary.published, 0);
/// # });
/// ```
pub struct RelayWorker<S: EventStore, P, T, W = Poll> {
    relay: Arc<OutboxRelay<S, P>>,
    db: T,
    worker: WorkerId,
    wakeup: W,
    poll_interval: Duration,
    backoff: Backoff,
}

impl<S: EventStore, P, T, W> std::fmt::Debug for RelayWorker<S, P, T, W> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RelayWorker")
            .field("relay", &self.relay)
            .field("worker", &self.worker)
            .field("poll_interval", &self.poll_interval)
            .field("backoff", &self.backoff)
            .finish_non_exhaustive()
    }
}

/// Builds a [`RelayWorker`]; start with [`RelayWorker::builder`].
#[must_use]
pub struct RelayWorkerBuilder<S: EventStore, P, T, W = Poll> {
    /// The relay, or why building it failed (reported by `build`).
    relay: Result<Arc<OutboxRelay<S, P>>, Error>,
    db: T,
    worker: Option<WorkerId>,
    wakeup: W,
    poll_interval: Duration,
    backoff_min: Duration,
    backoff_max: Duration,
    jitter: Jitter,
}

impl<S: EventStore, P, T, W> std::fmt::Debug for RelayWorkerBuilder<S, P, T, W> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RelayWorkerBuilder")
            .field("worker", &self.worker)
            .field("poll_interval", &self.poll_interval)
            .field("backoff_min", &self.backoff_min)
            .field("backoff_max", &self.backoff_max)
            .finish_non_exhaustive()
    }
}

impl<S: EventStore, P, T> RelayWorker<S, P, T, Poll> {
    /// A worker running `relay` (owned, or an `Arc` shared with other workers) over the
    /// transactions of `db`: a worker id generated unique to this process, polling every
    /// second, backing off 0.5 s → 30 s. [`OutboxRelayBuilder::worker`] builds the relay
    /// and its worker in one chain.
    ///
    /// [`OutboxRelayBuilder::worker`]: crate::relay::OutboxRelayBuilder::worker
    pub fn builder(
        relay: impl Into<Arc<OutboxRelay<S, P>>>,
        db: T,
    ) -> RelayWorkerBuilder<S, P, T, Poll> {
        Self::builder_from(Ok(relay.into()), db)
    }

    /// The builder over a relay that may have failed to build (reported by `build`).
    pub(crate) fn builder_from(
        relay: Result<Arc<OutboxRelay<S, P>>, Error>,
        db: T,
    ) -> RelayWorkerBuilder<S, P, T, Poll> {
        RelayWorkerBuilder {
            relay,
            db,
            worker: None,
            wakeup: Poll,
            poll_interval: DEFAULT_POLL_INTERVAL,
            backoff_min: DEFAULT_ERROR_BACKOFF_MIN,
            backoff_max: DEFAULT_ERROR_BACKOFF_MAX,
            jitter: Jitter::Equal,
        }
    }
}

impl<S: EventStore, P, T, W> RelayWorkerBuilder<S, P, T, W> {
    /// Wake up on notifications (e.g. PostgreSQL LISTEN) instead of polling only; the poll
    /// interval stays the fallback.
    pub fn wakeup<W2: Wakeup>(self, wakeup: W2) -> RelayWorkerBuilder<S, P, T, W2> {
        RelayWorkerBuilder {
            relay: self.relay,
            db: self.db,
            worker: self.worker,
            wakeup,
            poll_interval: self.poll_interval,
            backoff_min: self.backoff_min,
            backoff_max: self.backoff_max,
            jitter: self.jitter,
        }
    }

    /// The id this worker leases events under (default: `relay:<pid>:<random>`, unique per
    /// process and per worker). Give each worker its own.
    pub fn worker_id(mut self, worker: WorkerId) -> Self {
        self.worker = Some(worker);
        self
    }

    /// Longest wait after an empty claim (default 1 s).
    pub fn poll_interval(mut self, interval: Duration) -> Self {
        self.poll_interval = interval;
        self
    }

    /// Pause after a broker outage or a database error: starts at `min`, doubles up to
    /// `max`, resets after a clean batch (default 0.5 s → 30 s, equal jitter).
    pub fn error_backoff(mut self, min: Duration, max: Duration) -> Self {
        self.backoff_min = min;
        self.backoff_max = max;
        self
    }

    /// Randomness of the error pause (default [`Jitter::Equal`]).
    pub fn error_jitter(mut self, jitter: Jitter) -> Self {
        self.jitter = jitter;
        self
    }

    /// Check the settings and build. Refuses a zero poll interval and an empty or inverted
    /// backoff range.
    pub fn build(self) -> Result<RelayWorker<S, P, T, W>, Error>
    where
        S: OutboxStore,
    {
        if self.poll_interval.is_zero() {
            return Err(ValidationError::OutOfRange {
                field: "poll_interval",
                reason: "must be positive".into(),
            }
            .into());
        }
        if self.backoff_min.is_zero() || self.backoff_max < self.backoff_min {
            return Err(ValidationError::OutOfRange {
                field: "error_backoff",
                reason: "needs 0 < min <= max".into(),
            }
            .into());
        }
        let backoff = Backoff::new(self.backoff_min, self.backoff_max, self.jitter)?;
        let worker = match self.worker {
            Some(w) => w,
            None => WorkerId::generate("relay")?,
        };
        Ok(RelayWorker {
            relay: self.relay?,
            db: self.db,
            worker,
            wakeup: self.wakeup,
            poll_interval: self.poll_interval,
            backoff,
        })
    }
}

/// What the loop does after a batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Next {
    /// Claim again at once.
    Again,
    /// Nothing to do: wait for a notification or the poll interval.
    Idle,
    /// Broker or database trouble: back off.
    BackOff,
}

/// Back off only when a batch made no progress: settling failed (database trouble), or every
/// claimed event came back untouched — transient failures (the broker is down: one probe, the
/// rest released) or releases (an open circuit breaker). A batch that published anything goes
/// on at once, even if some of its events failed transiently, so sporadic broker hiccups do
/// not throttle the relay, and an open breaker does not make it spin claiming and releasing.
fn next_step(r: &BatchResult) -> Next {
    if !r.committed() {
        return Next::BackOff;
    }
    if r.claimed == 0 {
        return Next::Idle;
    }
    let progressed = !r.completed.is_empty() || !r.failed_counted.is_empty();
    if progressed {
        Next::Again
    } else {
        Next::BackOff
    }
}

impl<S, P, T, W> RelayWorker<S, P, T, W>
where
    S: OutboxStore,
    P: Publisher,
    T: Transactions<Conn = S::Conn>,
    W: Wakeup,
{
    /// The relay.
    pub fn relay(&self) -> &OutboxRelay<S, P> {
        &self.relay
    }

    /// The worker id.
    pub fn worker(&self) -> &WorkerId {
        &self.worker
    }

    /// Loop until `shutdown` is requested; returns what was done. Never returns early on
    /// an error: errors are logged and backed off. Takes a [`Shutdown`] (or `&Shutdown`),
    /// or the application's [`CancellationToken`](crate::CancellationToken).
    pub async fn run(&mut self, shutdown: impl Into<Shutdown>) -> RelaySummary {
        let shutdown = &shutdown.into();
        let mut summary = RelaySummary::default();
        let mut failures: u32 = 0;
        let job = self.relay.processor().job().to_owned();
        tracing::info!(job = %job, worker = %self.worker, "relay worker started");
        while !shutdown.is_requested() {
            let batch = tokio::select! {
                biased;
                () = shutdown.abort_requested() => {
                    summary.stopped = Stopped::Aborted;
                    break;
                }
                r = self.relay.publish_batch(&self.db, &self.worker, shutdown) => r,
            };
            let next = match batch {
                Ok(r) => {
                    summary.add(&r);
                    if !r.failed_transient.is_empty() {
                        tracing::warn!(job = %job, transient = r.failed_transient.len(), released = r.released.len(), "transient publish failures");
                    }
                    next_step(&r)
                }
                Err(e) => {
                    summary.store_errors += 1;
                    tracing::error!(job = %job, error = %e, "claiming a batch failed; backing off");
                    Next::BackOff
                }
            };
            match next {
                Next::Again => failures = 0,
                Next::Idle => {
                    failures = 0;
                    let woken = tokio::select! {
                        biased;
                        () = shutdown.requested() => break,
                        w = self.wakeup.wait(self.poll_interval) => w,
                    };
                    if woken == Woken::Notified {
                        tracing::trace!(job = %job, "woken by a notification");
                    }
                }
                Next::BackOff => {
                    let pause = self.backoff.delay(failures);
                    failures = failures.saturating_add(1);
                    tracing::debug!(job = %job, pause_ms = pause.as_millis() as u64, "relay pausing");
                    tokio::select! {
                        biased;
                        () = shutdown.requested() => break,
                        () = tokio::time::sleep(pause) => {}
                    }
                }
            }
        }
        tracing::info!(job = %job, worker = %self.worker, ?summary, "relay worker stopped");
        summary
    }

    /// [`run`](Self::run), owning the worker: a `'static` future to `tokio::spawn`
    /// (`tokio::spawn(worker.serve(token.clone()))`).
    pub async fn serve(mut self, shutdown: impl Into<Shutdown>) -> RelaySummary {
        self.run(shutdown).await
    }

    /// [`run`](Self::run) until `signal` completes (any future: a signal handler, a
    /// oneshot, …), then drain gracefully.
    pub async fn run_until(&mut self, signal: impl Future) -> RelaySummary {
        let shutdown = Shutdown::new();
        crate::worker::until(&shutdown, signal, self.run(&shutdown)).await
    }
}

#[cfg(test)]
mod next_step_tests {
    use super::*;
    use uuid::Uuid;

    fn batch(completed: usize, counted: usize, transient: usize, released: usize) -> BatchResult {
        let ids = |n| (0..n).map(|_| Uuid::now_v7()).collect::<Vec<_>>();
        BatchResult {
            claimed: completed + counted + transient + released,
            completed: ids(completed),
            failed_counted: ids(counted),
            failed_transient: ids(transient),
            released: ids(released),
            ..BatchResult::default()
        }
    }

    #[test]
    fn progress_goes_on_and_no_progress_backs_off() {
        assert_eq!(next_step(&batch(0, 0, 0, 0)), Next::Idle);
        assert_eq!(next_step(&batch(10, 0, 0, 0)), Next::Again);
        // A sporadic transient failure in a batch that published: go on at once.
        assert_eq!(next_step(&batch(9, 0, 1, 5)), Next::Again);
        assert_eq!(next_step(&batch(0, 3, 0, 0)), Next::Again);
        // Broker down: one probe failed, the rest released.
        assert_eq!(next_step(&batch(0, 0, 1, 9)), Next::BackOff);
        // Breaker open: everything released; claiming again at once would spin.
        assert_eq!(next_step(&batch(0, 0, 0, 10)), Next::BackOff);
        let mut failed_settle = batch(10, 0, 0, 0);
        failed_settle.commit_error = Some(crate::StoreError::InvalidRequest("x".into()));
        assert_eq!(next_step(&failed_settle), Next::BackOff);
    }
}

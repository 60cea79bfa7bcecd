//! [`MaintenanceWorker`]: stale-lease release and retention cleanup on a schedule.

use std::time::Duration;

use chrono::TimeDelta;

use crate::error::{Error, ValidationError};
use crate::maintenance::{DEFAULT_CLEANUP_BATCH_SIZE, Maintenance};
use crate::shutdown::Shutdown;
use crate::store::{CleanupCompleted, EventStore, ReleaseStale, Transactions};
use crate::worker::Stopped;

/// Default age after which a lease is stale.
pub const DEFAULT_STALE_AFTER: TimeDelta = TimeDelta::minutes(10);
/// Default time between rounds.
pub const DEFAULT_INTERVAL: Duration = Duration::from_secs(60);
/// Default rows per stale-lease release transaction.
pub const DEFAULT_STALE_BATCH: u32 = 500;
/// Default cap on cleanup transactions per round.
pub const DEFAULT_CLEANUP_ITERATIONS: u32 = 100;

/// What a [`MaintenanceWorker`] did while it ran.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct MaintenanceSummary {
    /// Rounds started.
    pub rounds: u64,
    /// Stale leases released (the event is pending again, one attempt spent).
    pub released: u64,
    /// Stale events whose last attempt that was (failed and dead-lettered).
    pub failed: u64,
    /// Completed events deleted by the retention cleanup.
    pub deleted: u64,
    /// Jobs that returned an error (logged; the next round tries again).
    pub errors: u64,
    /// How the run ended.
    pub stopped: Stopped,
}

/// Every `interval` (default 60 s, first round at once): release leases older than
/// `stale_after` and — when a retention is configured — delete completed events older than
/// it. Errors are logged and counted; the worker goes on with the next round.
///
/// Set `stale_after` well above the lease ttl of the workers of the same table (a lease is
/// stale only when its worker died or hung): releasing a live lease makes its batch's
/// results fenced out and the events published again.
///
/// ```
/// use std::time::Duration;
/// use chrono::TimeDelta;
/// use omnibox_core::maintenance::Maintenance;
/// use omnibox_core::memory::{MemoryDb, MemoryOutboxStore};
/// use omnibox_core::worker::MaintenanceWorker;
/// use omnibox_core::Shutdown;
///
/// # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
/// let worker = MaintenanceWorker::builder(Maintenance::new(MemoryOutboxStore::default()), MemoryDb::new())
///     .interval(Duration::from_secs(30))
///     .stale_after(Duration::from_secs(10 * 60))
///     .retention(Duration::from_secs(7 * 86400))
///     .build()
///     .unwrap();
/// let shutdown = Shutdown::new();
/// shutdown.trigger();
/// let summary = worker.run(&shutdown).await;
/// assert_eq!(summary.rounds, 0);
/// # });
/// ```
#[derive(Debug)]
pub struct MaintenanceWorker<S, T> {
    maintenance: Maintenance<S>,
    db: T,
    interval: Duration,
    stale_after: TimeDelta,
    stale_batch: u32,
    retention: Option<TimeDelta>,
    cleanup_batch: u32,
    cleanup_iterations: u32,
}

/// Builds a [`MaintenanceWorker`].
#[derive(Debug)]
#[must_use]
pub struct MaintenanceWorkerBuilder<S, T> {
    inner: MaintenanceWorker<S, T>,
}

impl<S: EventStore, T> MaintenanceWorker<S, T> {
    /// Maintenance of `maintenance`'s store over `db`: every 60 s release leases older than
    /// 10 minutes, 500 per transaction; no retention cleanup until
    /// [`retention`](MaintenanceWorkerBuilder::retention) is set.
    pub fn builder(maintenance: Maintenance<S>, db: T) -> MaintenanceWorkerBuilder<S, T> {
        MaintenanceWorkerBuilder {
            inner: MaintenanceWorker {
                maintenance,
                db,
                interval: DEFAULT_INTERVAL,
                stale_after: DEFAULT_STALE_AFTER,
                stale_batch: DEFAULT_STALE_BATCH,
                retention: None,
                cleanup_batch: DEFAULT_CLEANUP_BATCH_SIZE,
                cleanup_iterations: DEFAULT_CLEANUP_ITERATIONS,
            },
        }
    }
}

impl<S, T> MaintenanceWorkerBuilder<S, T> {
    /// Time between rounds.
    pub fn interval(mut self, interval: Duration) -> Self {
        self.inner.interval = interval;
        self
    }

    /// Age after which a lease is stale.
    pub fn stale_after(mut self, ttl: std::time::Duration) -> Self {
        self.inner.stale_after = crate::clock::delta(ttl);
        self
    }

    /// Rows per stale-lease release transaction.
    pub fn stale_batch(mut self, n: u32) -> Self {
        self.inner.stale_batch = n;
        self
    }

    /// Delete completed events older than `retention` every round.
    pub fn retention(mut self, retention: std::time::Duration) -> Self {
        self.inner.retention = Some(crate::clock::delta(retention));
        self
    }

    /// Rows per cleanup transaction and the cap on transactions per round.
    pub fn cleanup_batches(mut self, batch: u32, max_iterations: u32) -> Self {
        self.inner.cleanup_batch = batch;
        self.inner.cleanup_iterations = max_iterations;
        self
    }

    /// Check the settings and build.
    pub fn build(self) -> Result<MaintenanceWorker<S, T>, Error> {
        let w = &self.inner;
        let bad = |field: &'static str, reason: &str| -> Error {
            ValidationError::OutOfRange {
                field,
                reason: reason.into(),
            }
            .into()
        };
        if w.interval.is_zero() {
            return Err(bad("interval", "must be positive"));
        }
        if w.stale_after <= TimeDelta::zero() {
            return Err(bad("stale_after", "must be positive"));
        }
        if w.stale_batch == 0 || w.cleanup_batch == 0 || w.cleanup_iterations == 0 {
            return Err(bad(
                "batch",
                "batch sizes and iterations must be at least 1",
            ));
        }
        if w.retention.is_some_and(|r| r < TimeDelta::zero()) {
            return Err(bad("retention", "must not be negative"));
        }
        Ok(self.inner)
    }
}

impl<S, T> MaintenanceWorker<S, T>
where
    S: EventStore + ReleaseStale + CleanupCompleted,
    T: Transactions<Conn = S::Conn>,
{
    /// One round: release stale leases, then clean up (when a retention is set).
    #[tracing::instrument(name = "omnibox.maintenance", skip_all)]
    pub async fn run_once(&self, summary: &mut MaintenanceSummary) {
        summary.rounds += 1;
        match self
            .maintenance
            .release_stale(&self.db, self.stale_after, self.stale_batch)
            .await
        {
            Ok(r) => {
                summary.released += r.released;
                summary.failed += r.failed;
            }
            // Already logged by `Maintenance`.
            Err(_) => summary.errors += 1,
        }
        if let Some(retention) = self.retention {
            match self
                .maintenance
                .cleanup(
                    &self.db,
                    retention,
                    self.cleanup_batch,
                    self.cleanup_iterations,
                )
                .await
            {
                Ok(n) => summary.deleted += n,
                Err(_) => summary.errors += 1,
            }
        }
    }

    /// Run rounds until `shutdown`: the first at once, then every interval. A graceful
    /// stop lets the round in progress finish (each of its transactions is short); an
    /// abort drops it (its open transaction rolls back).
    pub async fn run(&self, shutdown: impl Into<Shutdown>) -> MaintenanceSummary {
        let shutdown = &shutdown.into();
        let mut summary = MaintenanceSummary::default();
        while !shutdown.is_requested() {
            let aborted = tokio::select! {
                biased;
                () = shutdown.abort_requested() => true,
                () = self.run_once(&mut summary) => false,
            };
            if aborted {
                summary.stopped = Stopped::Aborted;
                break;
            }
            tokio::select! {
                biased;
                () = shutdown.requested() => break,
                () = tokio::time::sleep(self.interval) => {}
            }
        }
        summary
    }

    /// [`run`](Self::run), owning the worker: a `'static` future to `tokio::spawn`.
    pub async fn serve(self, shutdown: impl Into<Shutdown>) -> MaintenanceSummary {
        self.run(shutdown).await
    }

    /// [`run`](Self::run) until `signal` completes (any future), then stop gracefully.
    pub async fn run_until(&self, signal: impl Future) -> MaintenanceSummary {
        let shutdown = Shutdown::new();
        crate::worker::until(&shutdown, signal, self.run(&shutdown)).await
    }
}

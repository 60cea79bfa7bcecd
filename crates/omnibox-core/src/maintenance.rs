//! Maintenance: release stale leases and delete old completed
//! events, in bounded batches, each batch in its own short transaction. There is no
//! scheduler: call these at the cadence you want (e.g. every minute / every hour).

use std::sync::Arc;

use chrono::TimeDelta;

use crate::error::{Error, StoreError, ValidationError};
use crate::metrics::{Metric, MetricsSink, NoopMetrics};
use crate::store::{CleanupCompleted, EventStore, ReleaseStale, StaleReport, Transactions};

/// Default rows per cleanup batch (omni-box's).
pub const DEFAULT_CLEANUP_BATCH_SIZE: u32 = 1000;
/// Default cap on batches per call (omni-box's).
pub const DEFAULT_MAX_ITERATIONS: u32 = 10_000;

/// Maintenance jobs over one store.
///
/// ```
/// use chrono::TimeDelta;
/// use omnibox_core::maintenance::Maintenance;
/// use omnibox_core::memory::{MemoryDb, MemoryOutboxStore};
///
/// # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
/// let db = MemoryDb::new();
/// let maintenance = Maintenance::new(MemoryOutboxStore::default());
/// let stale = maintenance.release_stale(&db, TimeDelta::minutes(5), 500).await.unwrap();
/// let deleted = maintenance.cleanup(&db, TimeDelta::days(7), 1000, 100).await.unwrap();
/// assert_eq!((stale.released, deleted), (0, 0));
/// # });
/// ```
#[derive(Clone)]
pub struct Maintenance<S> {
    store: S,
    job: String,
    metrics: Arc<dyn MetricsSink>,
    max_iterations: u32,
}

impl<S: std::fmt::Debug> std::fmt::Debug for Maintenance<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Maintenance")
            .field("store", &self.store)
            .field("job", &self.job)
            .field("max_iterations", &self.max_iterations)
            .finish_non_exhaustive()
    }
}

fn out_of_range(field: &'static str, reason: &str) -> Error {
    ValidationError::OutOfRange {
        field,
        reason: reason.into(),
    }
    .into()
}

impl<S: EventStore> Maintenance<S> {
    /// Maintenance over `store`, job name `"maintenance"`, no metrics, at most 10 000
    /// batches per [`release_stale`](Self::release_stale) call.
    pub fn new(store: S) -> Self {
        Self {
            store,
            job: "maintenance".into(),
            metrics: Arc::new(NoopMetrics),
            max_iterations: DEFAULT_MAX_ITERATIONS,
        }
    }

    /// Job name (metrics label, logs).
    pub fn job_name(mut self, job: impl Into<String>) -> Self {
        self.job = job.into();
        self
    }

    /// Metrics sink ([`Metric::StaleReleased`], [`Metric::Cleaned`]).
    pub fn metrics(mut self, metrics: impl MetricsSink + 'static) -> Self {
        self.metrics = Arc::new(metrics);
        self
    }

    /// Cap on batches per `release_stale` call (≥ 1; a warning is logged when reached).
    pub fn max_iterations(mut self, n: u32) -> Self {
        self.max_iterations = n;
        self
    }

    /// The store.
    pub fn store(&self) -> &S {
        &self.store
    }

    /// Release leases older than `ttl`, up to `batch` per transaction, until a batch finds
    /// fewer than `batch` (or the iteration cap is hit). Each release **spends one attempt**
    /// (a crash-looping event ends `failed` and dead-lettered instead of retrying forever);
    /// `StaleReport::failed` counts those.
    ///
    /// Batches already committed stay committed when a later one fails; the error is
    /// returned and the partial totals are logged and reported as metrics.
    pub async fn release_stale<T>(
        &self,
        db: &T,
        ttl: TimeDelta,
        batch: u32,
    ) -> Result<StaleReport, Error>
    where
        S: ReleaseStale,
        T: Transactions<Conn = S::Conn>,
    {
        if ttl <= TimeDelta::zero() {
            return Err(out_of_range("ttl", "must be positive"));
        }
        if batch == 0 {
            return Err(out_of_range("batch", "must be at least 1"));
        }
        if self.max_iterations == 0 {
            return Err(out_of_range("max_iterations", "must be at least 1"));
        }
        let mut total = StaleReport::default();
        let mut outcome = Ok(());
        let mut capped = true;
        for _ in 0..self.max_iterations {
            match self.release_once(db, ttl, batch).await {
                Ok(r) => {
                    total.released += r.released;
                    total.failed += r.failed;
                    if r.released + r.failed < u64::from(batch) {
                        capped = false;
                        break;
                    }
                }
                Err(e) => {
                    outcome = Err(e);
                    capped = false;
                    break;
                }
            }
        }
        if capped {
            tracing::warn!(job = %self.job, iterations = self.max_iterations, "release_stale stopped at its iteration cap; stale leases may remain");
        }
        let count = total.released + total.failed;
        if count > 0 {
            self.metrics.record(&Metric::StaleReleased {
                job: &self.job,
                count,
            });
        }
        match outcome {
            Ok(()) => {
                tracing::info!(job = %self.job, released = total.released, failed = total.failed, "stale leases released");
                Ok(total)
            }
            Err(e) => {
                tracing::error!(job = %self.job, released = total.released, failed = total.failed, error = %e, "releasing stale leases failed");
                Err(e.into())
            }
        }
    }

    async fn release_once<T>(
        &self,
        db: &T,
        ttl: TimeDelta,
        batch: u32,
    ) -> Result<StaleReport, StoreError>
    where
        S: ReleaseStale,
        T: Transactions<Conn = S::Conn>,
    {
        let mut tx = db.begin().await?;
        match self.store.release_stale(&mut tx, ttl, batch).await {
            Ok(r) => {
                db.commit(tx).await?;
                Ok(r)
            }
            Err(e) => {
                let _ = db.rollback(tx).await;
                Err(e)
            }
        }
    }

    async fn delete_once<T>(
        &self,
        db: &T,
        retention: TimeDelta,
        batch: u32,
    ) -> Result<u64, StoreError>
    where
        S: CleanupCompleted,
        T: Transactions<Conn = S::Conn>,
    {
        let mut tx = db.begin().await?;
        match self.store.delete_completed(&mut tx, retention, batch).await {
            Ok(n) => {
                db.commit(tx).await?;
                Ok(n)
            }
            Err(e) => {
                let _ = db.rollback(tx).await;
                Err(e)
            }
        }
    }

    /// Delete events completed more than `retention` ago (`retention` ≥ 0), `batch` per
    /// transaction, until a batch deletes nothing or `max_iterations` batches ran (then a
    /// warning is logged). Failed events are kept (they are the operator's to inspect).
    /// Returns the number deleted.
    pub async fn cleanup<T>(
        &self,
        db: &T,
        retention: TimeDelta,
        batch: u32,
        max_iterations: u32,
    ) -> Result<u64, Error>
    where
        S: CleanupCompleted,
        T: Transactions<Conn = S::Conn>,
    {
        if retention < TimeDelta::zero() {
            return Err(out_of_range("retention", "must not be negative"));
        }
        if batch == 0 {
            return Err(out_of_range("batch", "must be at least 1"));
        }
        if max_iterations == 0 {
            return Err(out_of_range("max_iterations", "must be at least 1"));
        }
        let mut total = 0u64;
        let mut outcome = Ok(());
        let mut capped = true;
        for _ in 0..max_iterations {
            match self.delete_once(db, retention, batch).await {
                Ok(0) => {
                    capped = false;
                    break;
                }
                Ok(n) => total += n,
                Err(e) => {
                    outcome = Err(e);
                    capped = false;
                    break;
                }
            }
        }
        if capped {
            tracing::warn!(job = %self.job, iterations = max_iterations, "cleanup stopped at its iteration cap; old events may remain");
        }
        if total > 0 {
            self.metrics.record(&Metric::Cleaned {
                job: &self.job,
                count: total,
            });
        }
        match outcome {
            Ok(()) => {
                tracing::info!(job = %self.job, deleted = total, "old completed events deleted");
                Ok(total)
            }
            Err(e) => {
                tracing::error!(job = %self.job, deleted = total, error = %e, "cleanup failed");
                Err(e.into())
            }
        }
    }
}

pub(crate) mod worker;

#[cfg(test)]
mod tests;

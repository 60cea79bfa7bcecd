//! Per-batch context handed to every step.

use std::any::{Any, TypeId};
use std::collections::HashMap;

use chrono::{DateTime, Utc};
use uuid::Uuid;

use super::lease::LeaseWatch;
use crate::clock::Clock;
use crate::error::FailureKind;
use crate::metrics::MetricsSink;
use crate::model::WorkerId;
use crate::shutdown::Shutdown;

/// The decision for one event of a batch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Processed.
    Completed,
    /// Completed without handling (handler skip, duplicate sibling).
    Skipped {
        /// Why.
        reason: String,
    },
    /// Failed.
    Failed {
        /// The error.
        error: String,
        /// Counted or not.
        kind: FailureKind,
        /// Next try (`None` keeps the schedule).
        retry_at: Option<DateTime<Utc>>,
    },
    /// Lease given back untouched.
    Released,
}

/// Borrowed, per-batch state: the caller's connection (when the batch runs inside one
/// transaction), the worker, metrics, the shutdown signal and each event's verdict.
pub struct BatchCtx<'c, E, C> {
    conn: Option<&'c mut C>,
    worker: &'c WorkerId,
    job: &'c str,
    metrics: &'c dyn MetricsSink,
    clock: &'c dyn Clock,
    shutdown: &'c Shutdown,
    leases: Option<LeaseWatch>,
    verdicts: HashMap<Uuid, Verdict>,
    extensions: HashMap<TypeId, Box<dyn Any + Send + Sync>>,
    _event: std::marker::PhantomData<fn() -> E>,
}

impl<'c, E, C> BatchCtx<'c, E, C> {
    /// A context (the processor builds these; tests of single steps can too).
    pub fn new(
        conn: Option<&'c mut C>,
        worker: &'c WorkerId,
        job: &'c str,
        metrics: &'c dyn MetricsSink,
        clock: &'c dyn Clock,
        shutdown: &'c Shutdown,
    ) -> Self {
        Self {
            conn,
            worker,
            job,
            metrics,
            clock,
            shutdown,
            leases: None,
            verdicts: HashMap::new(),
            extensions: HashMap::new(),
            _event: std::marker::PhantomData,
        }
    }

    /// The caller's connection, when the batch runs inside one transaction.
    pub fn conn(&mut self) -> Option<&mut C> {
        self.conn.as_deref_mut()
    }

    /// The worker.
    pub fn worker(&self) -> &WorkerId {
        self.worker
    }

    /// The job name.
    pub fn job(&self) -> &str {
        self.job
    }

    /// The metrics sink.
    pub fn metrics(&self) -> &dyn MetricsSink {
        self.metrics
    }

    /// Now, from the pipeline's clock.
    pub fn now(&self) -> DateTime<Utc> {
        self.clock.now()
    }

    /// `true` once shutdown was requested.
    pub fn shutdown_requested(&self) -> bool {
        self.shutdown.is_requested()
    }

    /// Watch the batch's leases (lease mode): [`Self::lease_held`] then answers from it.
    pub fn set_lease_watch(&mut self, watch: LeaseWatch) {
        self.leases = Some(watch);
    }

    /// The batch's lease watch, in lease mode (`None` when the batch runs inside the
    /// caller's transaction, whose row locks hold its events for as long as it is open).
    pub fn lease_watch(&self) -> Option<&LeaseWatch> {
        self.leases.as_ref()
    }

    /// `true` while this worker can still prove it holds the lease of `id`, so work that
    /// cannot be undone (a broker call) may start; always `true` without a lease watch.
    /// See [`LeaseWatch`].
    pub fn lease_held(&self, id: Uuid) -> bool {
        self.leases.as_ref().is_none_or(|w| w.held(id))
    }

    /// The shutdown signal itself (to hand to work that runs concurrently with the batch).
    pub fn shutdown(&self) -> &Shutdown {
        self.shutdown
    }

    /// Store per-batch state of type `T` (one value per type, replacing any earlier one).
    /// Steps are shared by concurrent batches, so state that belongs to one batch lives here.
    pub fn insert_extension<T: Any + Send + Sync>(&mut self, value: T) {
        self.extensions.insert(TypeId::of::<T>(), Box::new(value));
    }

    /// Per-batch state of type `T`, if a step stored one.
    pub fn extension<T: Any + Send + Sync>(&self) -> Option<&T> {
        self.extensions
            .get(&TypeId::of::<T>())
            .and_then(|b| b.downcast_ref::<T>())
    }

    /// Per-batch state of type `T`, mutably.
    pub fn extension_mut<T: Any + Send + Sync>(&mut self) -> Option<&mut T> {
        self.extensions
            .get_mut(&TypeId::of::<T>())
            .and_then(|b| b.downcast_mut::<T>())
    }

    /// Remove and return per-batch state of type `T`.
    pub fn remove_extension<T: Any + Send + Sync>(&mut self) -> Option<T> {
        self.extensions
            .remove(&TypeId::of::<T>())
            .and_then(|b| b.downcast::<T>().ok())
            .map(|b| *b)
    }

    /// Record that the event was processed.
    pub fn complete(&mut self, id: Uuid) {
        self.verdicts.insert(id, Verdict::Completed);
    }

    /// Record that the event is completed without handling.
    pub fn skip(&mut self, id: Uuid, reason: impl Into<String>) {
        self.verdicts.insert(
            id,
            Verdict::Skipped {
                reason: reason.into(),
            },
        );
    }

    /// Record a failure.
    pub fn fail(
        &mut self,
        id: Uuid,
        error: impl Into<String>,
        kind: FailureKind,
        retry_at: Option<DateTime<Utc>>,
    ) {
        self.verdicts.insert(
            id,
            Verdict::Failed {
                error: error.into(),
                kind,
                retry_at,
            },
        );
    }

    /// Record that the lease should be given back untouched.
    pub fn release(&mut self, id: Uuid) {
        self.verdicts.insert(id, Verdict::Released);
    }

    /// The verdict so far.
    pub fn verdict(&self, id: Uuid) -> Option<&Verdict> {
        self.verdicts.get(&id)
    }

    /// Take every verdict (the processor does this when the batch ends).
    pub fn take_verdicts(&mut self) -> HashMap<Uuid, Verdict> {
        std::mem::take(&mut self.verdicts)
    }
}

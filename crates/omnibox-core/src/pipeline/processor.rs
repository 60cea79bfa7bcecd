//! The batch processor: claim → run the steps for each event → settle every event.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use chrono::{DateTime, TimeDelta, Utc};
use uuid::Uuid;

use super::context::{BatchCtx, Verdict};
use super::fetch::{FetchStrategy, SkipLockedClaim};
use super::lease::LeaseWatch;
use super::step::{DynStep, Step, StepResult};
use crate::clock::{Clock, SystemClock};
use crate::error::{Error, FailureKind, StoreError};
use crate::metrics::{Metric, MetricsSink, NoopMetrics};
use crate::model::{Event, WorkerId};
use crate::shutdown::Shutdown;
use crate::store::{
    ClaimRequest, EventStore, Filters, RefreshLeases, Settle, SettleEvents, SettleReport,
    Settlement, Transactions,
};

/// How results are written back.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum CommitStrategy {
    /// One settle call for the whole batch (one round trip in SQL stores).
    #[default]
    Bulk,
    /// One settle call per event; for stores whose settle is not batched.
    PerEvent,
}

/// What one batch did. Every claimed event appears in exactly one of `completed`,
/// `failed_counted`, `failed_transient` or `released` (`skipped` and `dead_lettered` are
/// subsets of `completed` and `failed_counted`). Those lists hold the *verdicts*: an event
/// in `lease_lost` is also in one of them, but its verdict was not written.
#[derive(Debug, Default)]
#[non_exhaustive]
pub struct BatchResult {
    /// Events claimed.
    pub claimed: usize,
    /// Completed (processed or skipped).
    pub completed: Vec<Uuid>,
    /// Completed without handling.
    pub skipped: Vec<Uuid>,
    /// Failed, attempt spent.
    pub failed_counted: Vec<Uuid>,
    /// Failed, no attempt spent.
    pub failed_transient: Vec<Uuid>,
    /// Lease given back untouched (shutdown, breaker open, batch stopped): the "remaining" events.
    pub released: Vec<Uuid>,
    /// Spent their last attempt and were dead-lettered.
    pub dead_lettered: Vec<Uuid>,
    /// Results not applied because the lease was lost meanwhile.
    pub lease_lost: Vec<Uuid>,
    /// Writing the results failed; nothing of this batch is recorded (the leases expire).
    pub commit_error: Option<StoreError>,
}

impl BatchResult {
    /// `true` when the results were written.
    pub fn committed(&self) -> bool {
        self.commit_error.is_none()
    }
}

/// Processes batches of one store's events through a pipeline of steps.
pub struct Processor<S: EventStore, F = SkipLockedClaim> {
    store: S,
    fetch: F,
    steps: Vec<Box<dyn DynStep<S::Event, S::Conn>>>,
    commit: CommitStrategy,
    lease_ttl: TimeDelta,
    lease_margin: Option<std::time::Duration>,
    job: String,
    filters: Filters,
    metrics: Arc<dyn MetricsSink>,
    clock: Arc<dyn Clock>,
}

impl<S: EventStore + std::fmt::Debug, F: std::fmt::Debug> std::fmt::Debug for Processor<S, F> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Processor")
            .field("store", &self.store)
            .field("fetch", &self.fetch)
            .field("steps", &self.steps.len())
            .field("commit", &self.commit)
            .field("lease_ttl", &self.lease_ttl)
            .field("job", &self.job)
            .finish_non_exhaustive()
    }
}

/// Builds a [`Processor`].
#[must_use]
pub struct ProcessorBuilder<S: EventStore, F = SkipLockedClaim> {
    inner: Processor<S, F>,
}

impl<S: EventStore> ProcessorBuilder<S, SkipLockedClaim> {
    /// A builder with the skip-locked claim, bulk commit, a 300 s lease and job name
    /// `"event_processor"`.
    pub fn new(store: S) -> Self {
        Self {
            inner: Processor {
                store,
                fetch: SkipLockedClaim,
                steps: Vec::new(),
                commit: CommitStrategy::Bulk,
                lease_ttl: crate::domain::DEFAULT_LEASE_TTL,
                lease_margin: None,
                job: "event_processor".into(),
                filters: Filters::default(),
                metrics: Arc::new(NoopMetrics),
                clock: Arc::new(SystemClock),
            },
        }
    }
}

impl<S: EventStore, F> ProcessorBuilder<S, F> {
    /// Append a step (steps run in the order they were added).
    pub fn add_step(mut self, step: impl Step<S::Event, S::Conn> + 'static) -> Self {
        self.inner.steps.push(Box::new(step));
        self
    }

    /// Append an already boxed step.
    pub fn add_boxed_step(mut self, step: Box<dyn DynStep<S::Event, S::Conn>>) -> Self {
        self.inner.steps.push(step);
        self
    }

    /// Choose the fetch strategy.
    pub fn fetch_strategy<F2>(self, fetch: F2) -> ProcessorBuilder<S, F2> {
        let p = self.inner;
        ProcessorBuilder {
            inner: Processor {
                store: p.store,
                fetch,
                steps: p.steps,
                commit: p.commit,
                lease_ttl: p.lease_ttl,
                lease_margin: p.lease_margin,
                job: p.job,
                filters: p.filters,
                metrics: p.metrics,
                clock: p.clock,
            },
        }
    }

    /// Choose the commit strategy.
    pub fn commit_strategy(mut self, commit: CommitStrategy) -> Self {
        self.inner.commit = commit;
        self
    }

    /// Lease length (must be positive).
    pub fn lease_ttl(mut self, ttl: std::time::Duration) -> Self {
        self.inner.lease_ttl = crate::clock::delta(ttl);
        self
    }

    /// Lease length, as the processors hold it.
    pub(crate) fn lease_ttl_delta(mut self, ttl: TimeDelta) -> Self {
        self.inner.lease_ttl = ttl;
        self
    }

    /// Safety margin of the lease check in lease mode (default a fifth of the lease
    /// length): a step may start irreversible work (a broker call) for an event only while
    /// less than `lease_ttl − margin` has passed, by the local monotonic clock, since its
    /// lease was taken or last refreshed. Must be below the lease length. See [`LeaseWatch`].
    pub fn lease_margin(mut self, margin: std::time::Duration) -> Self {
        self.inner.lease_margin = Some(margin);
        self
    }

    /// Job name (metrics label, logs).
    pub fn job_name(mut self, job: impl Into<String>) -> Self {
        self.inner.job = job.into();
        self
    }

    /// Restrict claims.
    pub fn filters(mut self, filters: Filters) -> Self {
        self.inner.filters = filters;
        self
    }

    /// Metrics sink.
    pub fn metrics(mut self, metrics: impl MetricsSink + 'static) -> Self {
        self.inner.metrics = Arc::new(metrics);
        self
    }

    /// Clock for backoff times (tests).
    pub fn clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.inner.clock = clock;
        self
    }

    /// Check the configuration and build.
    pub fn build(self) -> Result<Processor<S, F>, Error> {
        if self.inner.lease_ttl <= TimeDelta::zero() {
            return Err(Error::Config("lease_ttl must be positive".into()));
        }
        if let (Some(margin), Ok(ttl)) = (self.inner.lease_margin, self.inner.lease_ttl.to_std())
            && margin >= ttl
        {
            return Err(Error::Config("lease_margin must be below lease_ttl".into()));
        }
        if self.inner.job.trim().is_empty() {
            return Err(Error::Config("job name must not be blank".into()));
        }
        Ok(self.inner)
    }
}

impl<S, F> Processor<S, F>
where
    S: SettleEvents,
    F: FetchStrategy<S>,
{
    /// The store.
    pub fn store(&self) -> &S {
        &self.store
    }

    /// The job name.
    pub fn job(&self) -> &str {
        &self.job
    }

    /// Claim, run and settle one batch, all on `conn` — one transaction the caller owns and
    /// commits. Handlers see `conn`, so their writes commit with the event's completion.
    /// Returns an empty result without claiming when shutdown was requested.
    #[tracing::instrument(name = "omnibox.batch", skip_all,
        fields(job = %self.job, worker = %worker.as_str(), mode = "transaction"))]
    pub async fn process_batch(
        &self,
        conn: &mut S::Conn,
        worker: &WorkerId,
        batch_size: u32,
        shutdown: &Shutdown,
    ) -> Result<BatchResult, StoreError> {
        if shutdown.is_requested() {
            return Ok(BatchResult::default());
        }
        let started = Instant::now();
        let events = self.claim(conn, worker, batch_size).await?;
        if events.is_empty() {
            return Ok(BatchResult::default());
        }
        let verdicts = self.run(&events, Some(&mut *conn), worker, shutdown).await;
        let result = self.settle(conn, worker, &events, verdicts).await;
        self.finish_metrics(&result, started);
        Ok(result)
    }

    /// Lease mode, for work that must not hold a transaction open (publishing): claim and
    /// commit the leases, run the steps with no connection, then settle in a second
    /// transaction, fenced by the leases.
    ///
    /// While the steps run, the leases are refreshed every third of the lease length (each
    /// refresh in its own short transaction), so a slow broker cannot make a lease expire
    /// under a batch that is still publishing. Settling is fenced by the latest lease
    /// tokens; an event whose refresh failed and whose lease was taken over is reported in
    /// [`BatchResult::lease_lost`].
    #[tracing::instrument(name = "omnibox.batch", skip_all,
        fields(job = %self.job, worker = %worker.as_str(), mode = "leased"))]
    pub async fn process_leased<T>(
        &self,
        db: &T,
        worker: &WorkerId,
        batch_size: u32,
        shutdown: &Shutdown,
    ) -> Result<BatchResult, StoreError>
    where
        T: Transactions<Conn = S::Conn>,
        S: RefreshLeases,
    {
        if shutdown.is_requested() {
            return Ok(BatchResult::default());
        }
        let started = Instant::now();
        // Before the claim's transaction begins: the database's `now()` of the lease is no
        // earlier than this.
        let taken = tokio::time::Instant::now();
        let mut tx = db.begin().await?;
        let events = match self.claim_with(&mut tx, worker, batch_size, true).await {
            Ok(e) => e,
            Err(e) => {
                let _ = db.rollback(tx).await;
                return Err(e);
            }
        };
        db.commit(tx).await?;
        if events.is_empty() {
            return Ok(BatchResult::default());
        }
        let leases: Mutex<HashMap<Uuid, DateTime<Utc>>> = Mutex::new(
            events
                .iter()
                .filter_map(|e| e.common().locked_at.map(|at| (e.id(), at)))
                .collect(),
        );
        // The refresh loop is told to stop once the steps are done and is then awaited, never
        // dropped: a refresh cancelled after its commit reached the database would leave the
        // map with a superseded token, and the settle below would then lose every lease it
        // renewed (the published events would be published again, spending an attempt).
        let steps_done = tokio::sync::Notify::new();
        let (ttl, margin) = self.lease_times();
        let watch = LeaseWatch::new(
            leases
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .keys()
                .copied(),
            taken,
            ttl,
            margin,
        );
        let (verdicts, ()) = tokio::join!(
            async {
                let verdicts = self
                    .run_watched(&events, None, worker, shutdown, Some(watch.clone()))
                    .await;
                steps_done.notify_one();
                verdicts
            },
            self.refresh_leases(db, worker, &leases, &watch, &steps_done),
        );
        let leases = leases.into_inner().unwrap_or_else(|p| p.into_inner());
        let mut result = match db.begin().await {
            Ok(mut tx) => {
                let mut r = self
                    .settle_fenced(&mut tx, worker, &events, verdicts, Some(&leases))
                    .await;
                if r.commit_error.is_none() {
                    if let Err(e) = db.commit(tx).await {
                        r.commit_error = Some(e);
                    }
                } else {
                    let _ = db.rollback(tx).await;
                }
                r
            }
            Err(e) => {
                let mut r = BatchResult {
                    claimed: events.len(),
                    ..Default::default()
                };
                r.commit_error = Some(e);
                r
            }
        };
        if let Some(e) = &result.commit_error {
            tracing::error!(job = %self.job, error = %e, "settling the batch failed; its leases will expire");
        }
        result.claimed = events.len();
        self.finish_metrics(&result, started);
        Ok(result)
    }

    /// Lease up to `batch_size` events with this processor's fetch strategy.
    pub async fn claim(
        &self,
        conn: &mut S::Conn,
        worker: &WorkerId,
        batch_size: u32,
    ) -> Result<Vec<S::Event>, StoreError> {
        self.claim_with(conn, worker, batch_size, false).await
    }

    /// [`Self::claim`]; `exclusive` when the transaction commits right after it
    /// ([`ClaimRequest::exclusive`]).
    async fn claim_with(
        &self,
        conn: &mut S::Conn,
        worker: &WorkerId,
        batch_size: u32,
        exclusive: bool,
    ) -> Result<Vec<S::Event>, StoreError> {
        if batch_size == 0 {
            return Err(StoreError::InvalidRequest(
                "batch_size must be at least 1".into(),
            ));
        }
        let req = ClaimRequest::new(worker.clone(), batch_size)
            .lease_ttl(self.lease_ttl)
            .filters(self.filters.clone())
            .exclusive(exclusive);
        let events = self.fetch.fetch(&self.store, conn, &req).await?;
        self.metrics.record(&Metric::BatchClaimed {
            job: &self.job,
            size: events.len(),
        });
        Ok(events)
    }

    /// The lease length and the safety margin of the lease check.
    fn lease_times(&self) -> (std::time::Duration, std::time::Duration) {
        let ttl = self
            .lease_ttl
            .to_std()
            .unwrap_or(std::time::Duration::from_secs(1));
        (ttl, self.lease_margin.unwrap_or(ttl / 5))
    }

    /// Run the steps over leased events and return every event's verdict. Events without a
    /// verdict (stopped batch, shutdown, a step that decided nothing) are `Released`.
    pub async fn run(
        &self,
        events: &[S::Event],
        conn: Option<&mut S::Conn>,
        worker: &WorkerId,
        shutdown: &Shutdown,
    ) -> HashMap<Uuid, Verdict> {
        self.run_watched(events, conn, worker, shutdown, None).await
    }

    async fn run_watched(
        &self,
        events: &[S::Event],
        conn: Option<&mut S::Conn>,
        worker: &WorkerId,
        shutdown: &Shutdown,
        watch: Option<LeaseWatch>,
    ) -> HashMap<Uuid, Verdict> {
        let mut ctx = BatchCtx::new(
            conn,
            worker,
            &self.job,
            &*self.metrics,
            &*self.clock,
            shutdown,
        );
        if let Some(w) = watch {
            ctx.set_lease_watch(w);
        }
        for s in &self.steps {
            s.on_batch_start_boxed(events, &mut ctx).await;
        }
        let mut stopped = false;
        for event in events {
            if stopped || ctx.shutdown_requested() {
                if ctx.verdict(event.id()).is_none() {
                    ctx.release(event.id());
                }
                continue;
            }
            for s in &self.steps {
                s.on_event_start_boxed(event, &mut ctx).await;
            }
            for s in &self.steps {
                match s.execute_boxed(event, &mut ctx).await {
                    StepResult::Continue => {}
                    StepResult::SkipEvent => break,
                    StepResult::StopBatch => {
                        tracing::info!(job = %self.job, event_id = %event.id(), "batch stopped by a step");
                        stopped = true;
                        break;
                    }
                }
            }
            for s in &self.steps {
                s.on_event_end_boxed(event, &mut ctx).await;
            }
        }
        for s in &self.steps {
            s.on_batch_end_boxed(events, &mut ctx).await;
        }
        let mut verdicts = ctx.take_verdicts();
        for e in events {
            verdicts.entry(e.id()).or_insert(Verdict::Released);
        }
        verdicts
    }

    /// Refresh the batch's leases every third of the lease length until `done` is notified.
    /// A refresh in flight is always finished (and its new tokens recorded) before this
    /// returns, so the settle that follows is fenced by the tokens the database holds.
    /// Each outcome reaches `watch`: a renewed lease is provable again from the instant the
    /// refresh was sent, one the refresh did not find is lost (its unsent publishes are
    /// cancelled: the publish step asks the watch before each broker call).
    async fn refresh_leases<T>(
        &self,
        db: &T,
        worker: &WorkerId,
        leases: &Mutex<HashMap<Uuid, DateTime<Utc>>>,
        watch: &LeaseWatch,
        done: &tokio::sync::Notify,
    ) where
        T: Transactions<Conn = S::Conn>,
        S: RefreshLeases,
    {
        let every = (self.lease_ttl / 3)
            .to_std()
            .unwrap_or(std::time::Duration::from_secs(1))
            .max(std::time::Duration::from_millis(10));
        loop {
            tokio::select! {
                biased;
                () = done.notified() => return,
                () = tokio::time::sleep(every) => {}
            }
            let current: Vec<(Uuid, DateTime<Utc>)> = leases
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .iter()
                .map(|(id, at)| (*id, *at))
                .collect();
            let sent = tokio::time::Instant::now();
            match self.refresh_once(db, worker, &current).await {
                Ok(renewed) => {
                    let mut map = leases.lock().unwrap_or_else(|p| p.into_inner());
                    if renewed.len() < current.len() {
                        tracing::warn!(job = %self.job, lost = current.len() - renewed.len(), "leases lost during the batch; their unsent publishes are cancelled");
                        let kept: std::collections::HashSet<Uuid> =
                            renewed.iter().map(|(id, _)| *id).collect();
                        for (id, _) in &current {
                            if !kept.contains(id) {
                                watch.lost(*id);
                            }
                        }
                    }
                    for (id, at) in renewed {
                        watch.renewed(id, sent);
                        map.insert(id, at);
                    }
                }
                Err(e) => {
                    tracing::warn!(job = %self.job, error = %e, "refreshing leases failed; retrying");
                }
            }
        }
    }

    async fn refresh_once<T>(
        &self,
        db: &T,
        worker: &WorkerId,
        current: &[(Uuid, DateTime<Utc>)],
    ) -> Result<Vec<(Uuid, DateTime<Utc>)>, StoreError>
    where
        T: Transactions<Conn = S::Conn>,
        S: RefreshLeases,
    {
        let mut tx = db.begin().await?;
        match self.store.refresh(&mut tx, worker, current).await {
            Ok(renewed) => {
                db.commit(tx).await?;
                Ok(renewed)
            }
            Err(e) => {
                let _ = db.rollback(tx).await;
                Err(e)
            }
        }
    }

    /// Write verdicts back, fenced by each event's lease (its `locked_at` as claimed).
    pub async fn settle(
        &self,
        conn: &mut S::Conn,
        worker: &WorkerId,
        events: &[S::Event],
        verdicts: HashMap<Uuid, Verdict>,
    ) -> BatchResult {
        self.settle_fenced(conn, worker, events, verdicts, None)
            .await
    }

    async fn settle_fenced(
        &self,
        conn: &mut S::Conn,
        worker: &WorkerId,
        events: &[S::Event],
        verdicts: HashMap<Uuid, Verdict>,
        leases: Option<&HashMap<Uuid, DateTime<Utc>>>,
    ) -> BatchResult {
        let mut result = BatchResult {
            claimed: events.len(),
            ..Default::default()
        };
        let mut settlements = Vec::with_capacity(events.len());
        for e in events {
            let id = e.id();
            let refreshed = leases.and_then(|m| m.get(&id).copied());
            let Some(lease) = refreshed.or(e.common().locked_at) else {
                tracing::error!(job = %self.job, event_id = %id, "claimed event carries no lease; skipped");
                continue;
            };
            let verdict = verdicts.get(&id).cloned().unwrap_or(Verdict::Released);
            let action = match verdict {
                Verdict::Completed => {
                    result.completed.push(id);
                    Settle::Complete
                }
                Verdict::Skipped { reason } => {
                    tracing::debug!(job = %self.job, event_id = %id, %reason, "event skipped");
                    result.completed.push(id);
                    result.skipped.push(id);
                    Settle::Complete
                }
                Verdict::Failed {
                    error,
                    kind,
                    retry_at,
                } => {
                    match kind {
                        FailureKind::Permanent => result.failed_counted.push(id),
                        FailureKind::Transient => result.failed_transient.push(id),
                    }
                    Settle::Fail {
                        error,
                        counted: kind.counts_attempt(),
                        retry_at,
                    }
                }
                Verdict::Released => {
                    result.released.push(id);
                    Settle::Release
                }
            };
            settlements.push(Settlement { id, lease, action });
        }
        settlements.sort_by_key(|s| s.id);
        let report = match self.commit {
            CommitStrategy::Bulk => self.store.settle(conn, worker, &settlements).await,
            CommitStrategy::PerEvent => {
                let mut total = SettleReport::default();
                let mut outcome = Ok(());
                for s in &settlements {
                    match self
                        .store
                        .settle(conn, worker, std::slice::from_ref(s))
                        .await
                    {
                        Ok(r) => merge(&mut total, r),
                        Err(e) => {
                            outcome = Err(e);
                            break;
                        }
                    }
                }
                outcome.map(|()| total)
            }
        };
        match report {
            Ok(r) => {
                for id in &r.dead_lettered {
                    if let Some(e) = events.iter().find(|e| e.id() == *id) {
                        self.metrics.record(&Metric::DeadLettered {
                            job: &self.job,
                            event_type: &e.common().event_type,
                        });
                    }
                }
                result.dead_lettered = r.dead_lettered;
                result.lease_lost = r.lease_lost;
                if !result.lease_lost.is_empty() {
                    tracing::warn!(job = %self.job, count = result.lease_lost.len(), "results not applied: lease lost");
                }
            }
            Err(e) => {
                tracing::error!(job = %self.job, error = %e, "settling the batch failed");
                result.commit_error = Some(e);
            }
        }
        result
    }

    fn finish_metrics(&self, r: &BatchResult, started: Instant) {
        let job = &self.job;
        if !r.released.is_empty() {
            self.metrics.record(&Metric::Released {
                job,
                count: r.released.len() as u64,
            });
        }
        if !r.lease_lost.is_empty() {
            self.metrics.record(&Metric::LeaseLost {
                job,
                count: r.lease_lost.len() as u64,
            });
        }
        self.metrics.record(&Metric::BatchFinished {
            job,
            duration: started.elapsed(),
        });
    }
}

fn merge(total: &mut SettleReport, r: SettleReport) {
    total.completed.extend(r.completed);
    total.retrying.extend(r.retrying);
    total.dead_lettered.extend(r.dead_lettered);
    total.released.extend(r.released);
    total.lease_lost.extend(r.lease_lost);
}

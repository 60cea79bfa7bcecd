//! [`BacklogObserver`]: a periodic task that reads a table's backlog and reports it as
//! gauges.

use std::sync::Arc;
use std::time::Duration;

use omnibox_core::Shutdown;
use omnibox_core::error::StoreError;
use omnibox_core::metrics::{Metric, MetricsSink};
use omnibox_core::model::Event;
use omnibox_core::store::{Backlog, BacklogStats, EventStore, Transactions};

/// The default time between two readings.
pub const DEFAULT_INTERVAL: Duration = Duration::from_secs(15);

/// Reads one table's [`Backlog`] every interval, in a short read-only transaction (rolled
/// back), and records it as [`Metric::Backlog`] — with [`crate::FacadeMetrics`] that sets
/// the `backlog_*` gauges labelled by `table`.
///
/// Run one observer per table (outbox, inbox): the stores differ in type. A failed reading
/// is logged and retried at the next tick; the gauges keep their last value meanwhile.
///
/// ```no_run
/// # use std::sync::Arc;
/// # use omnibox_core::store::{BacklogStats, Transactions};
/// # fn wire<S, D>(store: S, db: D) where S: BacklogStats + 'static, D: Transactions<Conn = S::Conn> + 'static {
/// use std::time::Duration;
/// use omnibox_core::Shutdown;
/// use omnibox_metrics::{BacklogObserver, FacadeMetrics};
///
/// let shutdown = Shutdown::new();
/// let task = BacklogObserver::new(store, db, Arc::new(FacadeMetrics::new()))
///     .table("orders_outbox")
///     .interval(Duration::from_secs(10))
///     .spawn(shutdown.clone());
/// # }
/// ```
pub struct BacklogObserver<S, D> {
    store: S,
    db: D,
    sink: Arc<dyn MetricsSink>,
    table: String,
    interval: Duration,
}

impl<S, D> std::fmt::Debug for BacklogObserver<S, D> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BacklogObserver")
            .field("table", &self.table)
            .field("interval", &self.interval)
            .finish_non_exhaustive()
    }
}

impl<S, D> BacklogObserver<S, D>
where
    S: BacklogStats,
    D: Transactions<Conn = <S as EventStore>::Conn>,
{
    /// An observer labelling its gauges with the event kind (`"outbox"` / `"inbox"`) and
    /// reading every [`DEFAULT_INTERVAL`].
    pub fn new(store: S, db: D, sink: impl MetricsSink + 'static) -> Self {
        Self {
            store,
            db,
            sink: Arc::new(sink),
            table: <S::Event as Event>::KIND.as_str().to_owned(),
            interval: DEFAULT_INTERVAL,
        }
    }

    /// The `table` label (use the configured table name; never an id).
    #[must_use]
    pub fn table(mut self, table: impl Into<String>) -> Self {
        self.table = table.into();
        self
    }

    /// Time between two readings (at least one millisecond).
    #[must_use]
    pub fn interval(mut self, interval: Duration) -> Self {
        self.interval = interval.max(Duration::from_millis(1));
        self
    }

    /// The `table` label.
    pub fn table_label(&self) -> &str {
        &self.table
    }

    /// Read the backlog once and record it.
    pub async fn observe(&self) -> Result<Backlog, StoreError> {
        let mut tx = self.db.begin().await?;
        let read = self.store.backlog(&mut tx).await;
        if let Err(e) = self.db.rollback(tx).await {
            tracing::debug!(table = %self.table, error = %e, "rolling back the backlog reading failed");
        }
        let backlog = read?;
        self.sink.record(&Metric::Backlog {
            table: &self.table,
            backlog: &backlog,
        });
        Ok(backlog)
    }

    /// Observe at once, then every interval, until `shutdown` is requested.
    pub async fn run(&self, shutdown: &Shutdown) {
        let mut ticker = tokio::time::interval(self.interval);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                biased;
                () = shutdown.requested() => break,
                _ = ticker.tick() => {}
            }
            if let Err(e) = self.observe().await {
                tracing::warn!(table = %self.table, error = %e, "reading the backlog failed");
            }
        }
        tracing::debug!(table = %self.table, "backlog observer stopped");
    }
}

impl<S, D> BacklogObserver<S, D>
where
    S: BacklogStats + 'static,
    D: Transactions<Conn = <S as EventStore>::Conn> + 'static,
{
    /// Run on the current Tokio runtime until `shutdown` is requested.
    pub fn spawn(self, shutdown: Shutdown) -> tokio::task::JoinHandle<()> {
        tokio::spawn(async move { self.run(&shutdown).await })
    }
}

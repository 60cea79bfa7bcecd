//! `BacklogObserver` reads the backlog in a short, rolled-back transaction and sets gauges.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::TimeDelta;
use common::gauge;
use metrics_util::debugging::DebuggingRecorder;
use omnibox_core::error::StoreError;
use omnibox_core::metrics::{Metric, MetricsSink};
use omnibox_core::store::{Backlog, BacklogStats, EventStore, Transactions};
use omnibox_core::{OutboxEvent, Shutdown};
use omnibox_metrics::{BacklogObserver, FacadeMetrics};

/// The "connection": records what happened in the transaction.
#[derive(Debug, Default)]
struct Conn {
    reads: usize,
}

#[derive(Debug, Default)]
struct Log {
    begun: AtomicUsize,
    committed: AtomicUsize,
    rolled_back: AtomicUsize,
    reads: AtomicUsize,
}

#[derive(Clone, Default)]
struct Db(Arc<Log>);

impl Transactions for Db {
    type Conn = Conn;
    type Tx = Box<Conn>;
    async fn begin(&self) -> Result<Box<Conn>, StoreError> {
        self.0.begun.fetch_add(1, Ordering::SeqCst);
        Ok(Box::default())
    }
    async fn commit(&self, _tx: Box<Conn>) -> Result<(), StoreError> {
        self.0.committed.fetch_add(1, Ordering::SeqCst);
        Ok(())
    }
    async fn rollback(&self, tx: Box<Conn>) -> Result<(), StoreError> {
        self.0.reads.fetch_add(tx.reads, Ordering::SeqCst);
        self.0.rolled_back.fetch_add(1, Ordering::SeqCst);
        Ok(())
    }
}

/// A store whose backlog figures the test sets; `None` answers with a connection error.
#[derive(Clone, Default)]
struct Store(Arc<Mutex<Option<Backlog>>>);

impl Store {
    fn set(&self, b: Option<Backlog>) {
        *self.0.lock().unwrap() = b;
    }
}

impl EventStore for Store {
    type Event = OutboxEvent;
    type Conn = Conn;
}

impl BacklogStats for Store {
    async fn backlog(&self, conn: &mut Conn) -> Result<Backlog, StoreError> {
        conn.reads += 1;
        let current = *self.0.lock().unwrap();
        current.ok_or_else(|| StoreError::Connection {
            message: "database restarting".into(),
            source: None,
        })
    }
}

fn backlog(pending: u64, claimable_secs: Option<i64>, pending_secs: Option<i64>) -> Backlog {
    let mut b = Backlog::default();
    b.pending = pending;
    b.oldest_claimable_age = claimable_secs.map(TimeDelta::seconds);
    b.oldest_pending_age = pending_secs.map(TimeDelta::seconds);
    b.leased = 1;
    b.failed = 4;
    b.dead_letters = 4;
    b
}

#[test]
fn observe_sets_the_gauges_from_a_rolled_back_read() {
    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    let store = Store::default();
    let db = Db::default();
    // The oldest pending row waits in retry backoff: it is older than the oldest claimable.
    store.set(Some(backlog(12, Some(30), Some(600))));
    let observer = BacklogObserver::new(store.clone(), db.clone(), Arc::new(FacadeMetrics::new()))
        .table("orders_outbox");
    assert_eq!(observer.table_label(), "orders_outbox");
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let read = metrics::with_local_recorder(&recorder, || rt.block_on(observer.observe())).unwrap();
    assert_eq!(read.pending, 12);

    let s = common::snapshot(&snapshotter);
    let t = [("table", "orders_outbox")];
    assert_eq!(gauge(&s, "omnibox_backlog_pending", &t), 12.0);
    assert_eq!(
        gauge(&s, "omnibox_backlog_oldest_claimable_age_seconds", &t),
        30.0
    );
    assert_eq!(
        gauge(&s, "omnibox_backlog_oldest_pending_age_seconds", &t),
        600.0
    );
    assert_eq!(gauge(&s, "omnibox_backlog_leased", &t), 1.0);
    assert_eq!(gauge(&s, "omnibox_backlog_failed", &t), 4.0);
    assert_eq!(gauge(&s, "omnibox_backlog_dead_letters", &t), 4.0);

    // one short transaction, read-only: rolled back, never committed
    assert_eq!(db.0.begun.load(Ordering::SeqCst), 1);
    assert_eq!(db.0.reads.load(Ordering::SeqCst), 1);
    assert_eq!(db.0.rolled_back.load(Ordering::SeqCst), 1);
    assert_eq!(db.0.committed.load(Ordering::SeqCst), 0);
}

#[test]
fn default_table_label_is_the_event_kind_and_errors_leave_the_gauges_alone() {
    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    let store = Store::default();
    let db = Db::default();
    let observer = BacklogObserver::new(store.clone(), db.clone(), Arc::new(FacadeMetrics::new()));
    assert_eq!(observer.table_label(), "outbox");
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();

    store.set(None);
    let err = metrics::with_local_recorder(&recorder, || rt.block_on(observer.observe()));
    assert!(matches!(err, Err(StoreError::Connection { .. })));
    assert!(
        common::snapshot(&snapshotter).is_empty(),
        "a failed read records nothing"
    );
    assert_eq!(
        db.0.rolled_back.load(Ordering::SeqCst),
        1,
        "the transaction is closed on error too"
    );

    store.set(Some(backlog(0, None, None)));
    metrics::with_local_recorder(&recorder, || rt.block_on(observer.observe())).unwrap();
    let s = common::snapshot(&snapshotter);
    let t = [("table", "outbox")];
    assert_eq!(gauge(&s, "omnibox_backlog_pending", &t), 0.0);
    assert_eq!(
        gauge(&s, "omnibox_backlog_oldest_claimable_age_seconds", &t),
        0.0
    );
}

/// Collects the pending counts the observer reported.
#[derive(Default)]
struct Readings(Mutex<Vec<(String, u64)>>);

impl MetricsSink for Readings {
    fn record(&self, metric: &Metric<'_>) {
        if let Metric::Backlog { table, backlog } = metric {
            self.0
                .lock()
                .unwrap()
                .push(((*table).to_owned(), backlog.pending));
        }
    }
}

#[tokio::test(start_paused = true)]
async fn run_reads_every_interval_survives_errors_and_stops_on_shutdown() {
    let store = Store::default();
    let db = Db::default();
    let readings = Arc::new(Readings::default());
    store.set(Some(backlog(5, Some(1), Some(1))));
    let shutdown = Shutdown::new();
    let task = BacklogObserver::new(store.clone(), db.clone(), readings.clone())
        .table("inbox")
        .interval(Duration::from_secs(10))
        .spawn(shutdown.clone());

    let wait_for = |n: usize| {
        let readings = readings.clone();
        async move {
            tokio::time::timeout(Duration::from_secs(3600), async {
                while readings.0.lock().unwrap().len() < n {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            })
            .await
            .expect("observer did not report in time");
        }
    };
    wait_for(2).await;
    // a failing read is logged and skipped; the loop keeps going
    store.set(None);
    let begun = db.0.begun.load(Ordering::SeqCst);
    tokio::time::timeout(Duration::from_secs(3600), async {
        while db.0.begun.load(Ordering::SeqCst) < begun + 2 {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await
    .unwrap();
    store.set(Some(backlog(9, None, Some(3))));
    let before = readings.0.lock().unwrap().len();
    wait_for(before + 1).await;

    shutdown.trigger();
    tokio::time::timeout(Duration::from_secs(60), task)
        .await
        .unwrap()
        .unwrap();
    let r = readings.0.lock().unwrap().clone();
    assert!(r.iter().all(|(t, _)| t == "inbox"));
    assert_eq!(r.first().map(|x| x.1), Some(5));
    assert_eq!(r.last().map(|x| x.1), Some(9));
    assert_eq!(db.0.committed.load(Ordering::SeqCst), 0);
}

//! The core conformance suites against the PostgreSQL stores, plain and partitioned.
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests and benches may panic

mod common;

use std::sync::{Arc, Mutex};

use common::TestDb;
use omnibox_postgres::{PgDatabase, PgInboxStore, PgOutboxStore};

/// Each check gets a fresh schema; the previous check's schema is dropped when the next
/// one starts, and the last one when the test ends (or unwinds).
type Guards = Arc<Mutex<Option<TestDb>>>;

async fn fresh(
    guards: &Guards,
    partitioned: bool,
) -> (PgDatabase, omnibox_postgres::PgStoreConfig) {
    let old = guards.lock().unwrap().take();
    drop(old);
    let (db, cfg) = TestDb::migrated(partitioned).await;
    let handle = PgDatabase::new(db.pool.clone());
    *guards.lock().unwrap() = Some(db);
    (handle, cfg)
}

#[tokio::test]
async fn outbox_store_conformance_plain() {
    let guards = Guards::default();
    omnibox_testing::outbox_store_conformance(|| async {
        let (db, cfg) = fresh(&guards, false).await;
        (db, PgOutboxStore::new(&cfg).unwrap())
    })
    .await;
}

#[tokio::test]
async fn outbox_store_conformance_partitioned() {
    let guards = Guards::default();
    omnibox_testing::outbox_store_conformance(|| async {
        let (db, cfg) = fresh(&guards, true).await;
        (db, PgOutboxStore::new(&cfg).unwrap())
    })
    .await;
}

#[tokio::test]
async fn inbox_store_conformance_plain() {
    let guards = Guards::default();
    omnibox_testing::inbox_store_conformance(|| async {
        let (db, cfg) = fresh(&guards, false).await;
        (db, PgInboxStore::new(&cfg).unwrap())
    })
    .await;
}

#[tokio::test]
async fn inbox_store_conformance_partitioned() {
    let guards = Guards::default();
    omnibox_testing::inbox_store_conformance(|| async {
        let (db, cfg) = fresh(&guards, true).await;
        (db, PgInboxStore::new(&cfg).unwrap())
    })
    .await;
}

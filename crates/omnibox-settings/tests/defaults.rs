//! An empty settings file gives exactly the builders' defaults: each section applied to
//! a bare builder builds the same thing as the bare builder.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use omnibox_core::WorkerId;
use omnibox_core::inbox::InboxRunner;
use omnibox_core::maintenance::Maintenance;
use omnibox_core::memory::{MemoryBroker, MemoryDb, MemoryInboxStore, MemoryOutboxStore};
use omnibox_core::relay::OutboxRelay;
use omnibox_core::worker::{MaintenanceWorker, RelayWorker};
use omnibox_settings::{Loader, Settings};

fn empty() -> Settings {
    let s = Settings::from_toml_str("").expect("an empty file loads");
    assert_eq!(s, Settings::default());
    s
}

#[test]
fn an_empty_file_is_settings_default_even_with_the_loader() {
    let s = Loader::new()
        .toml("# nothing\n")
        .env_prefix(Some("OMNIBOX_TEST_NEVER_SET_"))
        .database_url_env(None)
        .load()
        .unwrap();
    assert_eq!(s, Settings::default());
}

#[test]
fn relay_and_relay_worker_defaults_are_the_builders() {
    let s = empty();
    let bare = OutboxRelay::builder(MemoryOutboxStore::default(), MemoryBroker::new());
    let applied = s
        .relay
        .apply(OutboxRelay::builder(
            MemoryOutboxStore::default(),
            MemoryBroker::new(),
        ))
        .unwrap();
    assert_eq!(format!("{bare:?}"), format!("{applied:?}"));

    let id = WorkerId::new("w-1").unwrap();
    let relay = || {
        OutboxRelay::builder(MemoryOutboxStore::default(), MemoryBroker::new())
            .build()
            .unwrap()
    };
    let bare = RelayWorker::builder(relay(), MemoryDb::new())
        .worker_id(id.clone())
        .build()
        .unwrap();
    let applied = s
        .relay
        .apply_worker(RelayWorker::builder(relay(), MemoryDb::new()).worker_id(id))
        .build()
        .unwrap();
    assert_eq!(format!("{bare:?}"), format!("{applied:?}"));
}

#[test]
#[cfg(feature = "postgres")]
fn transaction_bounds_default_to_the_databases_and_zero_turns_one_off() {
    use std::time::Duration;
    assert_eq!(
        empty().store.timeouts(),
        omnibox_postgres::PgTimeouts::default()
    );
    let mut s = empty();
    s.store.statement_timeout = Some(Duration::ZERO);
    s.store.lock_timeout = Some(Duration::from_millis(250));
    let t = s.store.timeouts();
    assert_eq!(t.statement, None);
    assert_eq!(t.lock, Some(Duration::from_millis(250)));
    assert_eq!(
        t.idle_in_transaction,
        omnibox_postgres::PgTimeouts::default().idle_in_transaction
    );
}

#[test]
fn inbox_defaults_are_the_runner_builders() {
    let s = empty();
    let broker = MemoryBroker::new();
    let build = |apply: bool| {
        let b = InboxRunner::builder(
            broker.consumer(["t"], "g"),
            MemoryDb::new(),
            MemoryInboxStore::new(),
            "g",
        )
        .worker_id(WorkerId::new("w-1").unwrap());
        let b = if apply { s.inbox.apply(b).unwrap() } else { b };
        format!("{:?}", b.build().unwrap())
    };
    assert_eq!(build(false), build(true));
}

#[test]
fn maintenance_defaults_are_the_workers() {
    let s = empty();
    let bare = MaintenanceWorker::builder(
        Maintenance::new(MemoryOutboxStore::default()),
        MemoryDb::new(),
    )
    .build()
    .unwrap();
    let applied = s
        .maintenance
        .apply(MaintenanceWorker::builder(
            Maintenance::new(MemoryOutboxStore::default()),
            MemoryDb::new(),
        ))
        .unwrap()
        .build()
        .unwrap();
    assert_eq!(format!("{bare:?}"), format!("{applied:?}"));
}

#[cfg(feature = "postgres")]
#[test]
fn store_defaults_are_pg_store_config_default() {
    let s = empty();
    assert_eq!(
        format!("{:?}", s.store.to_config()),
        format!("{:?}", omnibox_postgres::PgStoreConfig::default())
    );
}

#[cfg(feature = "rabbitmq")]
#[test]
fn rabbitmq_defaults_are_the_options_defaults() {
    let s = empty();
    assert_eq!(
        format!("{:?}", s.rabbitmq.publisher_options()),
        format!("{:?}", omnibox_rabbitmq::PublisherOptions::default())
    );
    assert_eq!(
        format!("{:?}", s.rabbitmq.consumer.consumer_options()),
        format!("{:?}", omnibox_rabbitmq::ConsumerOptions::default())
    );
}

#[cfg(feature = "nats")]
#[test]
fn nats_defaults_are_the_options_defaults() {
    let s = empty();
    assert_eq!(
        format!("{:?}", s.nats.publisher_options()),
        format!("{:?}", omnibox_nats::PublisherOptions::default())
    );
    assert_eq!(
        format!("{:?}", s.nats.consumer.consumer_options()),
        format!("{:?}", omnibox_nats::ConsumerOptions::default())
    );
}

#[cfg(feature = "prometheus")]
#[test]
fn metrics_defaults_are_the_sinks() {
    let s = empty();
    assert_eq!(
        s.metrics.sink().unwrap().prefix(),
        omnibox_metrics::DEFAULT_PREFIX
    );
    assert!(s.metrics.prometheus_options().unwrap().is_none());
}

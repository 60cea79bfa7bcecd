//! PostgreSQL storage for omnibox (sqlx): migrations, transactional writes, skip-locked
//! claiming, dead letters, wake-up.
//!
//! # Quick example: enqueue in the caller's transaction
//!
//! ```no_run
//! use omnibox_core::model::OutboxEvent;
//! use omnibox_postgres::{PgOutboxStore, PgStoreConfig, migrate};
//! use uuid::Uuid;
//!
//! # async fn run(pool: sqlx::PgPool) -> Result<(), Box<dyn std::error::Error>> {
//! let config = PgStoreConfig::new(); // public.outbox_events / public.inbox_events
//! migrate(&pool, &config).await?;     // history in public.omnibox_migrations
//! let outbox = PgOutboxStore::new(&config)?;
//!
//! let mut tx = pool.begin().await?;
//! let order = Uuid::now_v7();
//! sqlx::query("INSERT INTO orders (id) VALUES ($1)").bind(order).execute(&mut *tx).await?;
//! let event = OutboxEvent::builder("order", order, "order.placed", "orders", order.to_string())
//!     .payload(serde_json::json!({ "id": order }))
//!     .idempotency_key(format!("order-placed-{order}"))
//!     .build()?;
//! let inserted = outbox.enqueue(&mut *tx, &event).await?; // Inserted::New or ::Duplicate
//! assert!(!inserted.is_duplicate());
//! tx.commit().await?; // the order and its event commit (or roll back) together
//! # Ok(()) }
//! ```
//!
//! Delivery to the broker is at-least-once; effects made inside the inbox transaction are
//! effectively-once. Nothing here promises exactly-once delivery.
//!
//! # Tables and migrations
//!
//! [`migrate`] creates (or upgrades) the configured outbox, inbox and dead-letter tables
//! and records its history in `<schema>.omnibox_migrations` — never in the application's
//! `_sqlx_migrations`. The same DDL for the default names ships as plain SQL in
//! `migrations/` for users of another migration tool ([`migration_sql`] renders it for any
//! configured names). The default tables are column-compatible with the Python omni-box
//! 0.3.1 models (same types, check constraints and indexes), so a Python service and a Rust
//! service can share them; the dead-letter tables are additive (see *Index differences*
//! below for the one deliberate deviation). Schema and table names are
//! validated identifiers: `x; DROP TABLE y` is [`StoreError::InvalidIdentifier`], never SQL.
//!
//! With [`PgStoreConfig::partitioned`] the tables are `PARTITION BY RANGE (created_at)`
//! (primary key and unique indexes extended with `created_at`); dedup across partitions is
//! kept by the reference's transaction-scoped advisory lock on the key. [`partition::maintain`]
//! creates upcoming partitions and drops expired ones.
//!
//! ## Index differences from omni-box 0.3.1 (migration version 3)
//!
//! Version 3 of each event table redefines two claim indexes under the reference's names
//! and with the reference's `WHERE` predicates, with more columns:
//!
//! | index | omni-box 0.3.1 / our v1 | v3 |
//! |---|---|---|
//! | `idx_<prefix>_pending_fetch` (outbox and inbox) | `(scheduled_at)` | `(scheduled_at, created_at, id)` |
//! | `idx_<prefix>_pending_key_order` (outbox) | `(topic, partition_key, created_at)` | `(topic, partition_key, created_at, id)` |
//!
//! The claim orders by `(scheduled_at, created_at, id)` and the per-key check compares
//! `(created_at, id)`: with the full key in the index the claim walks the index and stops at
//! its limit even on a table that was never analyzed (a fresh table after a burst, or
//! autovacuum off), instead of reading, checking and sorting every pending row. omni-box
//! only needs indexes of these names and predicates to exist, so it runs unchanged on v3
//! tables (its own queries use a prefix of the new columns). v3 is `DROP INDEX IF EXISTS`
//! plus `CREATE INDEX` in [`migrate`]'s transaction: the table is write-locked while the
//! indexes build, which on a large table can take a while. To avoid that, apply v3 by hand
//! first: `CREATE INDEX CONCURRENTLY` each new definition under a temporary name,
//! `DROP INDEX CONCURRENTLY` the old one, `ALTER INDEX … RENAME` the new one to the old
//! name, then record `(table_name, 3, description)` in `<schema>.omnibox_migrations` so
//! `migrate` skips it. (Plain tables only: a partitioned table's index cannot be built
//! concurrently.)
//!
//! # Claiming
//!
//! A claim is one statement: `FOR UPDATE SKIP LOCKED` picks due rows in
//! `scheduled_at, created_at, id` order (outbox: only the head of each
//! `(topic, partition_key)` line), writes the lease and returns the rows. An expired lease is
//! taken over and counts an attempt; a row whose last attempt that was becomes `failed` and
//! is dead-lettered in the same statement. Settling a batch is one statement too (`UNNEST`),
//! fenced by the lease (`locked_by` and `locked_at`), so a worker that lost its lease cannot
//! overwrite the new owner's result. All timestamps come from the database clock.
//! [`PgStoreConfig::claim_timeout`] bounds each claim with `SET LOCAL statement_timeout`.
//! The optimistic strategy uses [`FetchPending`](omnibox_core::store::FetchPending) plus
//! [`LockEvent`](omnibox_core::store::LockEvent) (a conditional `UPDATE`, no row lock held
//! between the two).
//!
//! # PgBouncer (transaction pooling)
//!
//! `PgStoreConfig::new().pgbouncer(true)` makes every statement unnamed
//! (`persistent(false)`), so no prepared statement is left on a server connection, and
//! makes [`PgWakeup`] poll-only (LISTEN needs a session). Use a pool whose connections go
//! through PgBouncer as usual; nothing else changes.
//!
//! # Completion modes and table settings
//!
//! [`CompletionMode::MarkCompleted`] (default, compatible with the reference) keeps
//! completed rows until [`CleanupCompleted`](omnibox_core::store::CleanupCompleted) deletes
//! them in bounded batches. Every state change updates indexed columns (`status`,
//! `locked_at`, `updated_at`), so updates are never HOT: each claim and each completion
//! writes a new row version and index entries, and the table needs vacuum to keep up. For
//! busy tables set, for example:
//!
//! ```sql
//! ALTER TABLE outbox_events SET (autovacuum_vacuum_scale_factor = 0.01,
//!     autovacuum_vacuum_insert_scale_factor = 0.01, autovacuum_vacuum_cost_limit = 2000);
//! ```
//!
//! (`fillfactor` below 100 helps only HOT updates, which these are not, so keep the
//! default.) [`CompletionMode::Delete`] deletes outbox rows in the settling statement: one
//! dead tuple per event instead of two plus the later retention delete, and no retention
//! job, at the price of no completed history (and a Python service sharing the table sees
//! no completed rows). The inbox always marks completed: its rows are the dedup records.
//!
//! # Wake-up
//!
//! With [`PgStoreConfig::notify_channel`] set, enqueue calls `pg_notify` in the caller's
//! transaction (so only committed events wake anyone; PostgreSQL folds repeats within one
//! transaction, and NOTIFY's commit-time lock is taken once per transaction). [`PgWakeup`]
//! waits on LISTEN with a polling fallback. NOTIFY serialises committing transactions on a
//! database-wide lock, which is why it is off by default; the `claim` benchmark reports
//! enqueue throughput with and without it.
#![forbid(unsafe_code)]
#![deny(missing_docs)]

pub mod admin;
mod config;
mod database;
mod ddl;
mod dead_letter_columns;
pub mod dead_letters;
mod error;
mod ident;
mod isolation;
mod migrate;
pub mod partition;
mod row;
mod savepoint;
mod sql;
mod store;
pub mod timeouts;
mod wakeup;

pub use admin::{CancelReport, Status};
pub use config::{CompletionMode, PgStoreConfig, TableNames, Tables};
pub use database::PgDatabase;
pub use ddl::Migration;
pub use dead_letters::{DeadLetterGroup, DeadLetterSelector, ReplayReport};
pub use error::{classify, handler_error};
pub use ident::Ident;
pub use migrate::{migrate, migration_sql};
pub use omnibox_core::error::StoreError;
pub use row::PgEvent;
/// The sqlx this crate is built on, so applications write their business rows with the
/// same version (`omnibox::postgres::sqlx`).
pub use sqlx;
pub use store::{PgEventStore, PgInboxStore, PgOutboxStore};
pub use timeouts::PgTimeouts;
pub use wakeup::PgWakeup;

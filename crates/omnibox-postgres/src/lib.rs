//! PostgreSQL storage for omnibox (sqlx): migrations, transactional writes, skip-locked claiming, dead letters, wake-up
#![forbid(unsafe_code)]
#![deny(missing_docs)]

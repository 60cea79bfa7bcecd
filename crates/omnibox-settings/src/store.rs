//! `[store]`: which tables, their layout, and the store's switches.

use std::time::Duration;

use serde::{Deserialize, Serialize};

/// What completing an outbox event does: `mark_completed` (default) or `delete`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum CompletionSetting {
    /// Keep the row as `completed` (compatible with omni-box).
    #[default]
    MarkCompleted,
    /// Delete the row when it completes.
    Delete,
}

/// `[store]`. Defaults are those of `PgStoreConfig::default()`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
#[non_exhaustive]
pub struct StoreSettings {
    /// Schema of the tables (default `public`).
    pub schema: String,
    /// Outbox table (default `outbox_events`, or `outbox_events_partitioned`).
    pub outbox_table: Option<String>,
    /// Inbox table (default `inbox_events`, or `inbox_events_partitioned`).
    pub inbox_table: Option<String>,
    /// Range-partitioned tables (default `false`).
    pub partitioned: bool,
    /// What completing an outbox event does.
    pub completion: CompletionSetting,
    /// `statement_timeout` of each claim (default none).
    #[serde(with = "humantime_serde")]
    pub claim_timeout: Option<Duration>,
    /// Commit the relay's claims without waiting for the disk (default `false`; see
    /// `PgStoreConfig::asynchronous_claims` for what it changes after a server crash).
    pub asynchronous_claims: bool,
    /// PgBouncer transaction-pooling mode (default `false`).
    pub pgbouncer: bool,
    /// NOTIFY channel of enqueues; a relay LISTENs on it (default none: poll only).
    pub notify_channel: Option<String>,
    /// Attempt budget of new events (default 6).
    pub max_attempts: u32,
    /// Largest payload, in bytes of compact JSON (default 1 000 000).
    pub payload_max_bytes: usize,
    /// `statement_timeout` of every statement in the library's transactions (absent: the
    /// library's default, 10 s; `"0s"`: no bound).
    #[serde(with = "humantime_serde")]
    pub statement_timeout: Option<Duration>,
    /// `idle_in_transaction_session_timeout` of the library's transactions (absent: the
    /// library's default, 60 s; `"0s"`: no bound).
    #[serde(with = "humantime_serde")]
    pub idle_in_transaction_timeout: Option<Duration>,
    /// `lock_timeout` of the library's transactions (absent or `"0s"`: none).
    #[serde(with = "humantime_serde")]
    pub lock_timeout: Option<Duration>,
}

impl Default for StoreSettings {
    fn default() -> Self {
        let limits = omnibox_core::model::Limits::default();
        Self {
            schema: "public".into(),
            outbox_table: None,
            inbox_table: None,
            partitioned: false,
            completion: CompletionSetting::MarkCompleted,
            claim_timeout: None,
            asynchronous_claims: false,
            pgbouncer: false,
            notify_channel: None,
            max_attempts: limits.max_attempts,
            payload_max_bytes: limits.payload_max_bytes,
            statement_timeout: None,
            idle_in_transaction_timeout: None,
            lock_timeout: None,
        }
    }
}

#[cfg(feature = "postgres")]
mod pg {
    use std::time::Duration;

    use omnibox_postgres::{CompletionMode, PgStoreConfig, PgTimeouts};

    use super::{CompletionSetting, StoreSettings};

    /// Absent: keep `default`; zero: no bound; else the value.
    fn bound(setting: Option<Duration>, default: Option<Duration>) -> Option<Duration> {
        match setting {
            None => default,
            Some(d) if d.is_zero() => None,
            Some(d) => Some(d),
        }
    }

    impl StoreSettings {
        /// The bounds for [`PgDatabase::with_timeouts`](omnibox_postgres::PgDatabase::with_timeouts).
        pub fn timeouts(&self) -> PgTimeouts {
            let d = PgTimeouts::default();
            PgTimeouts::default()
                .statement(bound(self.statement_timeout, d.statement))
                .idle_in_transaction(bound(
                    self.idle_in_transaction_timeout,
                    d.idle_in_transaction,
                ))
                .lock(bound(self.lock_timeout, d.lock))
        }

        /// The store configuration (names are validated when a store is built from it).
        pub fn to_config(&self) -> PgStoreConfig {
            let mut c = PgStoreConfig::new()
                .schema(self.schema.clone())
                .partitioned(self.partitioned)
                .pgbouncer(self.pgbouncer)
                .asynchronous_claims(self.asynchronous_claims)
                .completion(match self.completion {
                    CompletionSetting::MarkCompleted => CompletionMode::MarkCompleted,
                    CompletionSetting::Delete => CompletionMode::Delete,
                })
                .limits(
                    omnibox_core::model::Limits::default()
                        .max_attempts(self.max_attempts)
                        .payload_max_bytes(self.payload_max_bytes),
                );
            if let Some(t) = &self.outbox_table {
                c = c.outbox_table(t.clone());
            }
            if let Some(t) = &self.inbox_table {
                c = c.inbox_table(t.clone());
            }
            if let Some(t) = self.claim_timeout {
                c = c.claim_timeout(t);
            }
            if let Some(ch) = &self.notify_channel {
                c = c.notify_channel(ch.clone());
            }
            c
        }
    }
}

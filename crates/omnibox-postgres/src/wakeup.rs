//! Waking the relay when events are enqueued: LISTEN, with polling as the fallback.
//!
//! Enqueue calls `pg_notify(channel, '')` inside the caller's transaction when a channel is
//! configured, so only committed events wake anyone, and PostgreSQL folds identical
//! notifications of one transaction into one. NOTIFY takes a database-wide lock at commit:
//! it is off by default; switch it on with [`crate::PgStoreConfig::notify_channel`].
//! In PgBouncer mode (or without a channel) waiting is poll-only: LISTEN needs a session.
//!
//! [`PgWakeup`] is a core [`Wakeup`]: give it to
//! [`RelayWorkerBuilder::wakeup`](omnibox_core::worker::RelayWorkerBuilder::wakeup). The
//! worker's poll interval bounds every wait, so it is set in one place. A lost LISTEN
//! connection (database restart) degrades to polling and sqlx reconnects it on a later
//! wait; a notification that arrives while no wait is running stays buffered.

use std::time::Duration;

use omnibox_core::error::StoreError;
use omnibox_core::wake::{Wakeup, Woken};
use sqlx::PgPool;
use sqlx::postgres::PgListener;

use crate::config::PgStoreConfig;
use crate::error::ResultExt;

/// Wait for new events: a dedicated LISTEN connection when possible, polling otherwise.
#[derive(Debug)]
pub struct PgWakeup {
    listener: Option<PgListener>,
}

impl PgWakeup {
    /// LISTEN on the configured channel (poll-only in PgBouncer mode or without a channel).
    pub async fn connect(pool: &PgPool, config: &PgStoreConfig) -> Result<Self, StoreError> {
        let tables = config.tables()?;
        let listener = match (&tables.notify, config.pgbouncer) {
            (Some(channel), false) => {
                let mut l = PgListener::connect_with(pool).await.op("listen")?;
                l.listen(channel.as_str()).await.op("listen")?;
                Some(l)
            }
            _ => None,
        };
        Ok(Self { listener })
    }

    /// Poll-only waiting.
    pub fn polling() -> Self {
        Self { listener: None }
    }

    /// `true` when a LISTEN connection is in use.
    pub fn is_listening(&self) -> bool {
        self.listener.is_some()
    }
}

impl Wakeup for PgWakeup {
    /// Wait until a notification arrives or `timeout` passes. A broken listener connection
    /// waits out the timeout (sqlx reconnects it on the next wait).
    async fn wait(&mut self, timeout: Duration) -> Woken {
        let Some(l) = self.listener.as_mut() else {
            tokio::time::sleep(timeout).await;
            return Woken::Timeout;
        };
        match tokio::time::timeout(timeout, l.recv()).await {
            Ok(Ok(_)) => {
                // Drain what else is buffered: one wake-up per burst.
                while l.next_buffered().is_some() {}
                Woken::Notified
            }
            Ok(Err(e)) => {
                tracing::warn!(error = %crate::error::classify("listen", e), "LISTEN connection failed; polling");
                tokio::time::sleep(timeout).await;
                Woken::Timeout
            }
            Err(_) => Woken::Timeout,
        }
    }
}

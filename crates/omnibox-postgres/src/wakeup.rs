//! Waking the relay when events are enqueued: LISTEN with a polling fallback.
//!
//! Enqueue calls `pg_notify(channel, '')` inside the caller's transaction when a channel is
//! configured, so only committed events wake anyone, and PostgreSQL folds identical
//! notifications of one transaction into one. NOTIFY takes a database-wide lock at commit:
//! it is off by default; switch it on with [`crate::PgStoreConfig::notify_channel`].
//! In PgBouncer mode (or without a channel) waiting is poll-only: LISTEN needs a session.

use std::time::Duration;

use omnibox_core::error::StoreError;
use sqlx::PgPool;
use sqlx::postgres::PgListener;

use crate::config::PgStoreConfig;
use crate::error::ResultExt;

/// Why [`Wakeup::wait`] returned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Woken {
    /// A notification arrived: events were committed.
    Notified,
    /// The poll interval passed (poll anyway: notifications are a hint, not a guarantee).
    Poll,
}

/// Wait for new events: a dedicated LISTEN connection when possible, polling otherwise.
#[derive(Debug)]
pub struct Wakeup {
    listener: Option<PgListener>,
    poll: Duration,
}

impl Wakeup {
    /// LISTEN on the configured channel (poll-only in PgBouncer mode or without a channel).
    pub async fn connect(
        pool: &PgPool,
        config: &PgStoreConfig,
        poll: Duration,
    ) -> Result<Self, StoreError> {
        let tables = config.tables()?;
        let listener = match (&tables.notify, config.pgbouncer) {
            (Some(channel), false) => {
                let mut l = PgListener::connect_with(pool).await.op("listen")?;
                l.listen(channel.as_str()).await.op("listen")?;
                Some(l)
            }
            _ => None,
        };
        Ok(Self { listener, poll })
    }

    /// Poll-only waiting.
    pub fn polling(poll: Duration) -> Self {
        Self {
            listener: None,
            poll,
        }
    }

    /// `true` when a LISTEN connection is in use.
    pub fn is_listening(&self) -> bool {
        self.listener.is_some()
    }

    /// Wait until a notification arrives or the poll interval passes. A broken listener
    /// connection falls back to the poll interval (sqlx reconnects it on the next wait).
    pub async fn wait(&mut self) -> Woken {
        let poll = self.poll;
        match self.listener.as_mut() {
            None => {
                tokio::time::sleep(poll).await;
                Woken::Poll
            }
            Some(l) => match tokio::time::timeout(poll, l.recv()).await {
                Ok(Ok(_)) => {
                    // Drain what else is buffered: one wake-up per burst.
                    while l.next_buffered().is_some() {}
                    Woken::Notified
                }
                Ok(Err(e)) => {
                    tracing::warn!(error = %crate::error::classify("listen", e), "LISTEN connection failed; polling");
                    tokio::time::sleep(poll).await;
                    Woken::Poll
                }
                Err(_) => Woken::Poll,
            },
        }
    }
}

//! Wake-up signals for long-running workers: wait for "new work may be there" or a timeout,
//! whichever comes first. The PostgreSQL crate implements this with LISTEN/NOTIFY; polling
//! is the fallback (and the only mode behind a transaction-pooling PgBouncer).

use std::future::Future;
use std::time::Duration;

/// Why a wait ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Woken {
    /// A notification arrived (new work was committed).
    Notified,
    /// The timeout passed (poll).
    Timeout,
}

/// Waits for new work.
pub trait Wakeup: Send {
    /// Wait until notified or `timeout` passed. Implementations must never wait longer than
    /// `timeout`, and a lost notification channel must degrade to polling, not to a hang.
    fn wait(&mut self, timeout: Duration) -> impl Future<Output = Woken> + Send;
}

/// Polling only: every wait lasts the full timeout.
#[derive(Debug, Clone, Copy, Default)]
pub struct Poll;

impl Wakeup for Poll {
    async fn wait(&mut self, timeout: Duration) -> Woken {
        tokio::time::sleep(timeout).await;
        Woken::Timeout
    }
}

/// In-process notifications (tests, in-memory setups): `notify()` wakes one waiter.
#[derive(Debug, Clone, Default)]
pub struct LocalWakeup(std::sync::Arc<tokio::sync::Notify>);

impl LocalWakeup {
    /// A new channel.
    pub fn new() -> Self {
        Self::default()
    }

    /// Signal new work.
    pub fn notify(&self) {
        self.0.notify_one();
    }
}

impl Wakeup for LocalWakeup {
    async fn wait(&mut self, timeout: Duration) -> Woken {
        match tokio::time::timeout(timeout, self.0.notified()).await {
            Ok(()) => Woken::Notified,
            Err(_) => Woken::Timeout,
        }
    }
}

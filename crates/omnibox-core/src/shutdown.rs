//! A cloneable shutdown signal.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use tokio::sync::Notify;

#[derive(Debug, Default)]
struct Inner {
    requests: AtomicUsize,
    notify: Notify,
}

/// Cloneable shutdown signal: the first [`Shutdown::trigger`] asks workers to stop claiming
/// and finish (or release) what they hold; a second one asks them to abort.
#[derive(Debug, Clone, Default)]
pub struct Shutdown(Arc<Inner>);

impl Shutdown {
    /// A signal that was not triggered.
    pub fn new() -> Self {
        Self::default()
    }

    /// Request shutdown (a second call requests an abort).
    pub fn trigger(&self) {
        self.0.requests.fetch_add(1, Ordering::SeqCst);
        self.0.notify.notify_waiters();
    }

    /// `true` once triggered.
    pub fn is_requested(&self) -> bool {
        self.0.requests.load(Ordering::SeqCst) > 0
    }

    /// `true` once triggered twice.
    pub fn is_abort_requested(&self) -> bool {
        self.0.requests.load(Ordering::SeqCst) > 1
    }

    /// Wait until triggered.
    pub async fn requested(&self) {
        loop {
            let notified = self.0.notify.notified();
            if self.is_requested() {
                return;
            }
            notified.await;
        }
    }

    /// Wait until triggered twice.
    pub async fn abort_requested(&self) {
        loop {
            let notified = self.0.notify.notified();
            if self.is_abort_requested() {
                return;
            }
            notified.await;
        }
    }
}

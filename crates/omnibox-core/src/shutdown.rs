//! A cloneable shutdown signal: drain first, abort on a second request.

use std::sync::{Arc, OnceLock};
use std::time::Duration;

pub use tokio_util::sync::CancellationToken;

#[derive(Debug)]
struct Inner {
    /// Cancelled by the first request: stop taking work, finish what is in flight.
    drain: CancellationToken,
    /// Cancelled by the second request (or when the drain deadline passes): drop the work
    /// in flight.
    abort: CancellationToken,
    /// Abort on its own this long after the drain began.
    drain_timeout: Option<Duration>,
    /// When the drain deadline passes: set by the first waiter that sees the drain, so
    /// every waiter, early or late, aborts at the same moment.
    deadline: OnceLock<tokio::time::Instant>,
}

/// Cloneable shutdown signal shared by every worker of a process.
///
/// The first request ([`trigger`](Self::trigger), or cancelling the application's
/// [`CancellationToken`] it was made [`from`](#impl-From<CancellationToken>-for-Shutdown))
/// asks workers to stop claiming and finish — or release — what they hold; a second
/// [`trigger`](Self::trigger), [`abort`](Self::abort) or the
/// [`drain_timeout`](Self::drain_timeout) asks them to abort.
///
/// ```
/// use std::time::Duration;
/// use omnibox_core::Shutdown;
/// use tokio_util::sync::CancellationToken;
///
/// # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
/// // The application's own token (also given to axum, other tasks, …).
/// let token = CancellationToken::new();
/// let shutdown = Shutdown::from(token.clone()).drain_timeout(Duration::from_millis(10));
/// assert!(!shutdown.is_requested());
/// token.cancel(); // e.g. on SIGTERM
/// assert!(shutdown.is_requested());
/// shutdown.abort_requested().await; // the drain took too long: abort
/// assert!(shutdown.is_abort_requested());
/// # });
/// ```
#[derive(Debug, Clone)]
pub struct Shutdown(Arc<Inner>);

impl Default for Shutdown {
    fn default() -> Self {
        Self::from(CancellationToken::new())
    }
}

impl From<CancellationToken> for Shutdown {
    /// A signal whose drain starts when `token` is cancelled.
    fn from(token: CancellationToken) -> Self {
        Self(Arc::new(Inner {
            drain: token,
            abort: CancellationToken::new(),
            drain_timeout: None,
            deadline: OnceLock::new(),
        }))
    }
}

impl From<&Shutdown> for Shutdown {
    fn from(shutdown: &Shutdown) -> Self {
        shutdown.clone()
    }
}

impl From<&CancellationToken> for Shutdown {
    fn from(token: &CancellationToken) -> Self {
        Self::from(token.clone())
    }
}

impl Shutdown {
    /// A signal that was not triggered.
    pub fn new() -> Self {
        Self::default()
    }

    /// The same signal, aborting on its own when a drain has not finished `timeout` after
    /// it began (workers then drop the work in flight, as on a second trigger).
    pub fn drain_timeout(self, timeout: Duration) -> Self {
        Self(Arc::new(Inner {
            drain: self.0.drain.clone(),
            abort: self.0.abort.clone(),
            drain_timeout: Some(timeout),
            deadline: OnceLock::new(),
        }))
    }

    /// Request shutdown: the first call drains, a later one aborts.
    pub fn trigger(&self) {
        if self.0.drain.is_cancelled() {
            self.0.abort.cancel();
        } else {
            self.0.drain.cancel();
        }
    }

    /// Request an abort at once (a drain is implied).
    pub fn abort(&self) {
        self.0.drain.cancel();
        self.0.abort.cancel();
    }

    /// `true` once shutdown was requested.
    pub fn is_requested(&self) -> bool {
        self.0.drain.is_cancelled()
    }

    /// `true` once an abort was requested.
    pub fn is_abort_requested(&self) -> bool {
        self.0.abort.is_cancelled()
    }

    /// Wait until shutdown is requested.
    pub async fn requested(&self) {
        self.0.drain.cancelled().await;
    }

    /// Wait until an abort is requested, or the drain timeout passes after the drain began.
    pub async fn abort_requested(&self) {
        match self.0.drain_timeout {
            None => self.0.abort.cancelled().await,
            Some(timeout) => {
                tokio::select! {
                    () = self.0.abort.cancelled() => {}
                    () = async {
                        self.0.drain.cancelled().await;
                        let deadline = *self
                            .0
                            .deadline
                            .get_or_init(|| tokio::time::Instant::now() + timeout);
                        tokio::time::sleep_until(deadline).await;
                    } => {
                        tracing::warn!(timeout_ms = timeout.as_millis() as u64, "drain timeout passed: aborting");
                        self.0.abort.cancel();
                    }
                }
            }
        }
    }

    /// The token cancelled when shutdown is requested: hand it to other parts of the
    /// application (an HTTP server's graceful shutdown, other tasks).
    pub fn token(&self) -> CancellationToken {
        self.0.drain.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_trigger_drains_second_aborts() {
        let s = Shutdown::new();
        let clone = s.clone();
        assert!(!s.is_requested());
        s.trigger();
        assert!(clone.is_requested() && !clone.is_abort_requested());
        clone.trigger();
        assert!(s.is_abort_requested());
    }

    #[test]
    fn the_applications_token_starts_the_drain_and_abort_stays_separate() {
        let token = CancellationToken::new();
        let s = Shutdown::from(&token);
        token.cancel();
        assert!(s.is_requested());
        assert!(!s.is_abort_requested(), "cancelling the token only drains");
        assert!(s.token().is_cancelled());
        s.trigger();
        assert!(s.is_abort_requested());
    }

    #[test]
    fn abort_implies_drain() {
        let s = Shutdown::new();
        s.abort();
        assert!(s.is_requested() && s.is_abort_requested());
    }

    #[tokio::test(start_paused = true)]
    async fn the_drain_timeout_aborts_only_after_the_drain_began() {
        let s = Shutdown::new().drain_timeout(Duration::from_secs(5));
        let waiting = tokio::time::timeout(Duration::from_secs(60), s.abort_requested()).await;
        assert!(waiting.is_err(), "no drain, no abort");
        s.trigger();
        let started = tokio::time::Instant::now();
        s.abort_requested().await;
        assert!(started.elapsed() >= Duration::from_secs(5));
        assert!(s.is_abort_requested());
    }

    #[tokio::test(start_paused = true)]
    async fn a_late_waiter_aborts_at_the_same_deadline() {
        let s = Shutdown::new().drain_timeout(Duration::from_secs(5));
        s.trigger();
        let early = {
            let s = s.clone();
            tokio::spawn(async move { s.abort_requested().await })
        };
        tokio::time::sleep(Duration::from_secs(3)).await;
        let started = tokio::time::Instant::now();
        s.abort_requested().await; // a waiter created 3 s into the drain
        assert!(
            started.elapsed() <= Duration::from_secs(2),
            "the deadline must not restart"
        );
        early.await.unwrap();
    }
}

//! [`LeaseWatch`]: which leases of a batch its worker can still prove it holds, by the
//! local monotonic clock.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::time::Instant;
use uuid::Uuid;

/// The leases of one batch run in lease mode
/// ([`Processor::process_leased`](super::Processor::process_leased)), each with the local
/// monotonic instant until which this worker can prove it still holds it.
///
/// A lease taken (or refreshed) by a statement sent at local instant `t` started, by the
/// database clock, no earlier than `t`, so it lasts at least until `t + ttl` — the moment
/// another worker may take it over. The watch answers "held" only until
/// `t + ttl − margin`: the margin covers the clocks' rate difference and the time a
/// message takes to leave the process once the call is made. A refresh that finds a lease
/// gone (taken over) marks it lost at once. A process frozen past its lease (GC pause, VM
/// stall, `SIGSTOP`) therefore finds, when it resumes, that it can no longer prove the
/// lease, and must not publish: the monotonic clock kept running while it was frozen.
///
/// Cheap to clone (shared state); the publish step asks it before every broker call.
#[derive(Debug, Clone)]
pub struct LeaseWatch {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    ttl: Duration,
    margin: Duration,
    until: Mutex<HashMap<Uuid, Instant>>,
}

impl LeaseWatch {
    /// Watch the leases of `ids`, taken by a statement sent at `taken` (before the claim's
    /// transaction began), of length `ttl`, proven only until `ttl − margin` after that.
    pub fn new(
        ids: impl IntoIterator<Item = Uuid>,
        taken: Instant,
        ttl: Duration,
        margin: Duration,
    ) -> Self {
        let valid = ttl.saturating_sub(margin);
        let until = ids.into_iter().map(|id| (id, taken + valid)).collect();
        Self {
            inner: Arc::new(Inner {
                ttl,
                margin,
                until: Mutex::new(until),
            }),
        }
    }

    /// `true` while this worker can still prove it holds the lease of `id` (`false` for an
    /// id the watch does not know).
    pub fn held(&self, id: Uuid) -> bool {
        self.lock()
            .get(&id)
            .is_some_and(|until| Instant::now() < *until)
    }

    /// The lease of `id` was refreshed by a statement sent at `sent`.
    pub fn renewed(&self, id: Uuid, sent: Instant) {
        let valid = self.inner.ttl.saturating_sub(self.inner.margin);
        if let Some(until) = self.lock().get_mut(&id) {
            *until = (*until).max(sent + valid);
        }
    }

    /// The lease of `id` is gone (a refresh did not find it): never held again.
    pub fn lost(&self, id: Uuid) {
        self.lock().remove(&id);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<Uuid, Instant>> {
        self.inner.until.lock().unwrap_or_else(|p| p.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn held_until_ttl_minus_margin_renewed_by_refreshes_and_never_after_a_loss() {
        let (a, b) = (Uuid::now_v7(), Uuid::now_v7());
        let start = Instant::now();
        let w = LeaseWatch::new(
            [a, b],
            start,
            Duration::from_secs(10),
            Duration::from_secs(2),
        );
        assert!(w.held(a) && w.held(b));
        assert!(!w.held(Uuid::now_v7()));
        tokio::time::advance(Duration::from_millis(7_999)).await;
        assert!(w.held(a));
        tokio::time::advance(Duration::from_millis(1)).await;
        assert!(!w.held(a), "8 s after the claim: no longer provable");
        // A refresh sent at 3 s extends to 11 s; one sent earlier than the last never shortens.
        w.renewed(a, start + Duration::from_secs(3));
        w.renewed(a, start + Duration::from_secs(1));
        assert!(w.held(a));
        tokio::time::advance(Duration::from_secs(3)).await;
        assert!(!w.held(a));
        w.renewed(b, Instant::now());
        assert!(w.held(b));
        w.lost(b);
        w.renewed(b, Instant::now());
        assert!(!w.held(b), "a lost lease stays lost");
    }
}

//! Fetch strategies: how a batch gets its leased events.

use std::future::Future;

use crate::error::StoreError;
use crate::model::Event;
use crate::store::{ClaimEvents, ClaimRequest, EventStore, FetchPending, LockEvent, LockOutcome};

/// How a processor obtains leased events.
pub trait FetchStrategy<S: EventStore>: Send + Sync {
    /// Lease up to `req.limit` events.
    fn fetch(
        &self,
        store: &S,
        conn: &mut S::Conn,
        req: &ClaimRequest,
    ) -> impl Future<Output = Result<Vec<S::Event>, StoreError>> + Send;
}

/// One statement that locks with `FOR UPDATE SKIP LOCKED` and writes the lease (the default
/// for stores that implement [`ClaimEvents`]); honours per-key ordering.
#[derive(Debug, Clone, Copy, Default)]
pub struct SkipLockedClaim;

impl<S: ClaimEvents> FetchStrategy<S> for SkipLockedClaim {
    fn fetch(
        &self,
        store: &S,
        conn: &mut S::Conn,
        req: &ClaimRequest,
    ) -> impl Future<Output = Result<Vec<S::Event>, StoreError>> + Send {
        store.claim(conn, req)
    }
}

/// Read candidates without row locks, then lease each by id; losers of a race are dropped.
/// For stores without `SKIP LOCKED`. It does not enforce per-key ordering across workers.
#[derive(Debug, Clone, Copy, Default)]
pub struct Optimistic;

impl<S: FetchPending + LockEvent> FetchStrategy<S> for Optimistic {
    async fn fetch(
        &self,
        store: &S,
        conn: &mut S::Conn,
        req: &ClaimRequest,
    ) -> Result<Vec<S::Event>, StoreError> {
        let candidates = store.fetch_pending(conn, &req.filters, req.limit).await?;
        let mut out = Vec::with_capacity(candidates.len());
        let mut keys = std::collections::HashSet::new();
        for c in candidates {
            if let Some((t, k)) = c.ordering_key()
                && !keys.insert((t.to_owned(), k.to_owned()))
            {
                continue;
            }
            if let LockOutcome::Locked(e) = store
                .try_lock(conn, c.id(), &req.worker, req.lease_ttl, false)
                .await?
            {
                out.push(e);
            }
        }
        Ok(out)
    }
}

//! The outbox store conformance suite.

use std::future::Future;

use chrono::{TimeDelta, Utc};
use omnibox_core::model::{Event, OutboxEvent};
use omnibox_core::store::{Filters, Inserted, Settle, Transactions};

use crate::fixtures::{SampleEvent, past};
use crate::harness::{FullStore, Harness, ids, settlement};
#[allow(clippy::wildcard_imports)]
use crate::store_checks::*;

const SUITE: &str = "outbox store";

/// Run every outbox store check. `make` returns a fresh, isolated database handle and
/// store (e.g. a new schema) for each check. Panics naming the failed check.
///
/// Checks: claim order and lease, limit and filters, schedule, disjoint concurrent claims,
/// per-key ordering, lease fencing, expired-lease takeover by claim and by `try_lock`
/// (counted; failed and dead-lettered at the budget), stale-lease release, failures and
/// `retry_at`, terminal failure with its dead letter in the same transaction, release,
/// refresh, idempotent inserts that do not abort the transaction, rollback, bounded
/// cleanup, backlog figures, dead letters, invalid requests. Lease expiry is tested with
/// real time (200 ms leases), because SQL stores use the database clock.
///
/// ```
/// # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
/// use omnibox_core::memory::{MemoryDb, MemoryOutboxStore};
/// omnibox_testing::outbox_store_conformance(|| async {
///     (MemoryDb::new(), MemoryOutboxStore::new())
/// })
/// .await;
/// # });
/// ```
pub async fn outbox_store_conformance<T, S, F, Fut>(make: F)
where
    T: Transactions,
    S: FullStore<T::Conn, Event = OutboxEvent>,
    F: Fn() -> Fut,
    Fut: Future<Output = (T, S)>,
{
    run_generic!(SUITE, make);
    run_each!(
        SUITE,
        make,
        per_key_ordering,
        fetch_pending_returns_key_heads,
        idempotent_insert
    );
}

/// The optimistic path's `fetch_pending` hands out only the head of each
/// `(topic, partition_key)` too (omni-box ordered on one fetch path only).
async fn fetch_pending_returns_key_heads<T, S>(h: &Harness<'_, T, S>)
where
    T: Transactions,
    S: FullStore<T::Conn, Event = OutboxEvent>,
{
    let t = past();
    let a1 = OutboxEvent::sample("t", "a", t, None, 6);
    let a2 = OutboxEvent::sample("t", "a", t + TimeDelta::seconds(1), None, 6);
    let b1 = OutboxEvent::sample("t", "b", t + TimeDelta::seconds(2), None, 6);
    h.insert(&[a1.clone(), a2.clone(), b1.clone()]).await;
    let mut got = ids(&h.fetch(Filters::default(), 100).await);
    got.sort();
    let mut want = vec![a1.id(), b1.id()];
    want.sort();
    h.ctx
        .eq(got, want, "fetch_pending returns the head of each key only");
}

/// Only the head of each `(topic, partition_key)` is claimable; a key is blocked while its
/// head is due, leased or waiting for a retry; a never-tried future event does not block,
/// and failed or completed events never block.
async fn per_key_ordering<T, S>(h: &Harness<'_, T, S>)
where
    T: Transactions,
    S: FullStore<T::Conn, Event = OutboxEvent>,
{
    let t = past();
    let s = |k: &str, dt: i64, sched: Option<chrono::DateTime<Utc>>, max: u32| {
        OutboxEvent::sample("t", k, t + TimeDelta::seconds(dt), sched, max)
    };
    let a1 = s("a", 0, None, 6);
    let a2 = s("a", 1, None, 6);
    let b1 = s("b", 2, None, 6);
    let x1 = s("x", 0, Some(Utc::now() + TimeDelta::seconds(3600)), 6);
    let x2 = s("x", 1, None, 6);
    let y1 = s("y", 0, None, 1);
    let y2 = s("y", 1, None, 6);
    let other_topic = OutboxEvent::sample("u", "a", t + TimeDelta::seconds(2), None, 6);
    let all = [&a1, &a2, &b1, &x1, &x2, &y1, &y2, &other_topic].map(|e| (*e).clone());
    h.insert(&all).await;
    let got = h.claim("w1", 100).await;
    let mut got_ids = ids(&got);
    got_ids.sort();
    let mut want = vec![a1.id(), b1.id(), x2.id(), y1.id(), other_topic.id()];
    want.sort();
    h.ctx
        .eq(got_ids, want, "heads of each (topic, partition_key)");
    h.ctx.ensure(
        h.claim("w2", 100).await.is_empty(),
        "a key with a leased head was claimable",
    );

    let by_id = |id| got.iter().find(|e| e.id() == id).cloned();
    let retry = Some(Utc::now() + TimeDelta::seconds(3600));
    let mut settle = Vec::new();
    for e in got.iter() {
        let action = if e.id() == a1.id() || e.id() == y1.id() {
            Settle::Fail {
                error: "rejected".into(),
                counted: true,
                retry_at: retry,
            }
        } else {
            Settle::Complete
        };
        settle.push(settlement(&h.ctx, e, action));
    }
    let r = h.settle("w1", &settle).await;
    h.ctx
        .eq(r.dead_lettered, vec![y1.id()], "dead-lettered head");
    h.ctx.ensure(by_id(a1.id()).is_some(), "a1 claimed");
    let next = h.claim("w2", 100).await;
    h.ctx.eq(
        ids(&next),
        vec![y2.id()],
        "after settling: a waits for its head's retry, y's failed head no longer blocks",
    );
}

/// A duplicate idempotency key returns the stored event and leaves the transaction usable.
async fn idempotent_insert<T, S>(h: &Harness<'_, T, S>)
where
    T: Transactions,
    S: FullStore<T::Conn, Event = OutboxEvent>,
{
    let keyed = |key: &str| match OutboxEvent::builder(
        "order",
        uuid::Uuid::now_v7(),
        "order.placed",
        "t",
        "p",
    )
    .payload(serde_json::json!({"k": key}))
    .idempotency_key(key)
    .created_at(past())
    .build()
    {
        Ok(e) => e,
        Err(e) => h.ctx.fail(e),
    };
    let (k1, k1b, k2) = (keyed("key-1"), keyed("key-1"), keyed("key-2"));
    let mut tx = h.begin().await;
    let r = h.ctx.ok(h.store.insert(&mut tx, &k1).await, "insert");
    h.ctx.ensure(
        matches!(&r, Inserted::New(e) if e.id() == k1.id()),
        "first insert is New",
    );
    let r = h
        .ctx
        .ok(h.store.insert(&mut tx, &k1b).await, "insert duplicate");
    h.ctx.ensure(
        matches!(&r, Inserted::Duplicate(e) if e.id() == k1.id()),
        format_args!("duplicate key must return the stored event, got {r:?}"),
    );
    let r = h.ctx.ok(
        h.store.insert(&mut tx, &k2).await,
        "insert after a duplicate",
    );
    h.ctx
        .ensure(!r.is_duplicate(), "a new key after a duplicate");
    h.commit(tx).await;

    let (k3, k1c, k3b) = (keyed("key-3"), keyed("key-1"), keyed("key-3"));
    let r = h.insert(&[k3.clone(), k1c, k3b]).await;
    let shape: Vec<_> = r
        .iter()
        .map(|i| (i.is_duplicate(), i.event().id()))
        .collect();
    h.ctx.eq(
        shape,
        vec![(false, k3.id()), (true, k1.id()), (true, k3.id())],
        "insert_many results in input order, in-batch duplicates resolve to the first",
    );
    h.ctx.eq(
        h.claim("w1", 10).await.len(),
        1,
        "one head for the shared key",
    );
    h.ctx.eq(h.backlog().await.pending, 3, "stored events");
}

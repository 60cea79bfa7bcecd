//! The inbox store conformance suite.

use std::future::Future;

use omnibox_core::model::{Event, InboxEvent};
use omnibox_core::store::{InboxLookup, LockOutcome, Settle, Transactions};

use crate::fixtures::{SAMPLE_GROUP, SampleEvent, past};
use crate::harness::{FullStore, Harness, LONG_LEASE, ids, settlement};
#[allow(clippy::wildcard_imports)]
use crate::store_checks::*;

const SUITE: &str = "inbox store";

/// Run every inbox store check: the generic store checks (see
/// [`crate::outbox_store_conformance`]) plus dedup by `(message_id, consumer_group)`
/// (also within one `insert_many`), lookups, `try_lock` with
/// `ignore_schedule`, `insert_leased` (new rows leased, stored ones untouched), and the absence of per-key ordering. `make` returns a fresh,
/// isolated database handle and store for each check.
///
/// ```
/// # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
/// use omnibox_core::memory::{MemoryDb, MemoryInboxStore};
/// omnibox_testing::inbox_store_conformance(|| async {
///     (MemoryDb::new(), MemoryInboxStore::new())
/// })
/// .await;
/// # });
/// ```
pub async fn inbox_store_conformance<T, S, F, Fut>(make: F)
where
    T: Transactions,
    S: FullStore<T::Conn, Event = InboxEvent> + InboxLookup,
    F: Fn() -> Fut,
    Fut: Future<Output = (T, S)>,
{
    run_generic!(SUITE, make);
    run_each!(
        SUITE,
        make,
        dedup_by_message_and_group,
        lookups,
        try_lock_schedule,
        insert_leased_leases_new_rows,
        no_key_ordering
    );
}

fn message(id: &str, group: &str) -> InboxEvent {
    match InboxEvent::builder(id, group, "orders", "order.placed")
        .payload(serde_json::json!({"m": id}))
        .created_at(past())
        .build()
    {
        Ok(e) => e,
        Err(e) => panic!("sample inbox event is invalid: {e}"),
    }
}

async fn dedup_by_message_and_group<T, S>(h: &Harness<'_, T, S>)
where
    T: Transactions,
    S: FullStore<T::Conn, Event = InboxEvent> + InboxLookup,
{
    let m1 = message("m1", SAMPLE_GROUP);
    let mut tx = h.begin().await;
    let r = h.ctx.ok(h.store.insert(&mut tx, &m1).await, "insert");
    h.ctx.ensure(!r.is_duplicate(), "first insert");
    let r = h.ctx.ok(
        h.store.insert(&mut tx, &message("m1", SAMPLE_GROUP)).await,
        "insert",
    );
    h.ctx.ensure(
        matches!(&r, omnibox_core::store::Inserted::Duplicate(e) if e.id() == m1.id()),
        format_args!("same (message_id, group) must be the stored event, got {r:?}"),
    );
    let other = message("m1", "other-group");
    let r = h
        .ctx
        .ok(h.store.insert(&mut tx, &other).await, "insert other group");
    h.ctx
        .ensure(!r.is_duplicate(), "another group is a new event");
    let m2 = message("m2", SAMPLE_GROUP);
    let r = h.ctx.ok(
        h.store
            .insert_many(
                &mut tx,
                &[
                    m2.clone(),
                    message("m2", SAMPLE_GROUP),
                    message("m1", SAMPLE_GROUP),
                ],
            )
            .await,
        "insert_many with duplicates (reference bug 9)",
    );
    let shape: Vec<_> = r
        .iter()
        .map(|i| (i.is_duplicate(), i.event().id()))
        .collect();
    h.ctx.eq(
        shape,
        vec![(false, m2.id()), (true, m2.id()), (true, m1.id())],
        "insert_many results in input order",
    );
    h.commit(tx).await;
    h.ctx.eq(h.backlog().await.pending, 3, "stored events");
}

async fn lookups<T, S>(h: &Harness<'_, T, S>)
where
    T: Transactions,
    S: FullStore<T::Conn, Event = InboxEvent> + InboxLookup,
{
    let m1 = message("m1", SAMPLE_GROUP);
    h.insert(std::slice::from_ref(&m1)).await;
    let mut tx = h.begin().await;
    let found = h.ctx.ok(
        h.store.find_message(&mut tx, "m1", SAMPLE_GROUP).await,
        "find_message",
    );
    h.ctx
        .eq(found.map(|e| e.id()), Some(m1.id()), "find_message");
    let none = h.ctx.ok(
        h.store.find_message(&mut tx, "m1", "nobody").await,
        "find_message",
    );
    h.ctx
        .ensure(none.is_none(), "find_message for another group");
    let sib = h.ctx.ok(
        h.store
            .has_completed_sibling(&mut tx, "m1", SAMPLE_GROUP, m1.id())
            .await,
        "has_completed_sibling",
    );
    h.ctx
        .ensure(!sib, "a pending event is no completed sibling of itself");
    h.commit(tx).await;
    let got = h.claim("w1", 1).await;
    h.settle("w1", &[settlement(&h.ctx, &got[0], Settle::Complete)])
        .await;
    let mut tx = h.begin().await;
    let own = h.ctx.ok(
        h.store
            .has_completed_sibling(&mut tx, "m1", SAMPLE_GROUP, m1.id())
            .await,
        "has_completed_sibling",
    );
    let other = h.ctx.ok(
        h.store
            .has_completed_sibling(&mut tx, "m1", SAMPLE_GROUP, uuid::Uuid::now_v7())
            .await,
        "has_completed_sibling",
    );
    h.commit(tx).await;
    h.ctx
        .ensure(!own, "the excluded event itself counted as a sibling");
    h.ctx.ensure(
        other,
        "a completed event with the same key is a sibling of another id",
    );
}

async fn try_lock_schedule<T, S>(h: &Harness<'_, T, S>)
where
    T: Transactions,
    S: FullStore<T::Conn, Event = InboxEvent> + InboxLookup,
{
    let later = chrono::Utc::now() + chrono::TimeDelta::seconds(3600);
    let e = InboxEvent::sample("orders", "m1", past(), Some(later), 6);
    h.insert(std::slice::from_ref(&e)).await;
    let r = h.try_lock("w1", e.id(), LONG_LEASE, false).await;
    h.ctx.ensure(
        matches!(r, LockOutcome::NotDue(_)),
        format_args!("not due: {r:?}"),
    );
    let LockOutcome::Locked(held) = h.try_lock("w1", e.id(), LONG_LEASE, true).await else {
        h.ctx
            .fail("ignore_schedule must lock an event that is not due")
    };
    let r = h
        .settle("w1", &[settlement(&h.ctx, &held, Settle::Complete)])
        .await;
    h.ctx.eq(
        r.completed,
        vec![e.id()],
        "completing an event scheduled later",
    );
    let r = h.try_lock("w2", e.id(), LONG_LEASE, true).await;
    h.ctx.ensure(
        matches!(r, LockOutcome::Finished(_)),
        format_args!("finished: {r:?}"),
    );
}

async fn insert_leased_leases_new_rows<T, S>(h: &Harness<'_, T, S>)
where
    T: Transactions,
    S: FullStore<T::Conn, Event = InboxEvent> + InboxLookup,
{
    let stored = message("m1", SAMPLE_GROUP);
    h.insert(std::slice::from_ref(&stored)).await;
    let fresh = message("m2", SAMPLE_GROUP);
    let batch = [
        message("m1", SAMPLE_GROUP),
        fresh.clone(),
        message("m2", SAMPLE_GROUP),
    ];
    let w1 = crate::harness::worker("w1");
    let mut tx = h.begin().await;
    let got = h.ctx.ok(
        h.store
            .insert_leased(&mut tx, &batch, &w1, LONG_LEASE)
            .await,
        "insert_leased",
    );
    h.commit(tx).await;
    let [first, second, third] = got.as_slice() else {
        h.ctx
            .fail(format_args!("one result per event, got {got:?}"))
    };
    h.ctx.ensure(
        matches!(first, omnibox_core::store::Inserted::Duplicate(e)
            if e.id() == stored.id() && e.common.locked_by.is_none()),
        format_args!("a stored row comes back as it is, not leased: {first:?}"),
    );
    let omnibox_core::store::Inserted::New(leased) = second else {
        h.ctx
            .fail(format_args!("a new row comes back new: {second:?}"))
    };
    h.ctx.ensure(
        leased.id() == fresh.id()
            && leased.common.locked_by.as_deref() == Some("w1")
            && leased.common.locked_at.is_some(),
        format_args!("a new row comes back leased to w1: {leased:?}"),
    );
    h.ctx.ensure(
        matches!(third, omnibox_core::store::Inserted::Duplicate(e) if e.id() == fresh.id()),
        format_args!("a repeat within the call resolves to the first: {third:?}"),
    );
    h.ctx.eq(
        ids(&h.claim("w2", 10).await),
        vec![stored.id()],
        "the leased row is not claimable, the stored one is",
    );
    let r = h.try_lock("w2", fresh.id(), LONG_LEASE, true).await;
    h.ctx.ensure(
        matches!(r, LockOutcome::Busy(_)),
        format_args!("the lease is live: {r:?}"),
    );
    let r = h
        .settle("w1", &[settlement(&h.ctx, leased, Settle::Complete)])
        .await;
    h.ctx
        .eq(r.completed, vec![fresh.id()], "the lease fences settle");
}

async fn no_key_ordering<T, S>(h: &Harness<'_, T, S>)
where
    T: Transactions,
    S: FullStore<T::Conn, Event = InboxEvent> + InboxLookup,
{
    let t = past();
    let a = InboxEvent::sample("orders", "m1", t, None, 6);
    let b = InboxEvent::sample("orders", "m2", t + chrono::TimeDelta::seconds(1), None, 6);
    h.insert(&[a.clone(), b.clone()]).await;
    h.ctx.eq(
        ids(&h.claim("w1", 10).await),
        vec![a.id(), b.id()],
        "inbox claims are not per key",
    );
}

//! Checks every store kind (outbox and inbox) must pass.

use std::collections::BTreeSet;

use chrono::{TimeDelta, Utc};
use omnibox_core::domain::lease_expired_error;
use omnibox_core::model::{Event, EventKind, EventStatus};
use omnibox_core::store::{
    ClaimRequest, DeadLetter, Filters, LockOutcome, Settle, Settlement, Transactions,
};

use crate::fixtures::{SampleEvent, past};
use crate::harness::{
    EXPIRE, FullStore, Harness, LONG_LEASE, Peek, SHORT_LEASE, ids, lease_of, settlement, worker,
};

fn secs(n: i64) -> TimeDelta {
    TimeDelta::seconds(n)
}

fn route_filter<E: Event>(route: &str) -> Filters {
    match E::KIND {
        EventKind::Outbox => Filters::none().topics([route]),
        EventKind::Inbox => Filters::none().sources([route]),
    }
}

fn fail(error: &str, counted: bool, retry_at: Option<chrono::DateTime<Utc>>) -> Settle {
    Settle::Fail {
        error: error.into(),
        counted,
        retry_at,
    }
}

/// Claims return due events in `(scheduled_at, created_at, id)` order, leased to the caller,
/// and a second claim does not return them again.
pub(crate) async fn claim_order_and_lease<T, S>(h: &Harness<'_, T, S>)
where
    T: Transactions,
    S: FullStore<T::Conn>,
    S::Event: SampleEvent,
{
    let t = past();
    let a = S::Event::sample("r", "k1", t, Some(t + secs(3)), 6);
    let b = S::Event::sample("r", "k2", t + secs(1), Some(t + secs(1)), 6);
    let c = S::Event::sample("r", "k3", t + secs(2), Some(t + secs(1)), 6);
    h.insert(&[a.clone(), b.clone(), c.clone()]).await;
    let got = h.claim("w1", 10).await;
    h.ctx.eq(
        ids(&got),
        vec![b.id(), c.id(), a.id()],
        "claim order by (scheduled_at, created_at, id)",
    );
    for e in &got {
        let c = e.common();
        h.ctx
            .eq(c.locked_by.as_deref(), Some("w1"), "locked_by after claim");
        h.ctx
            .ensure(c.locked_at.is_some(), "locked_at is set by the claim");
        h.ctx
            .eq(c.status, EventStatus::Pending, "status after claim");
    }
    h.ctx.ensure(
        h.claim("w2", 10).await.is_empty(),
        "leased events were claimed twice",
    );
}

/// `limit` and filters restrict what a claim returns.
pub(crate) async fn claim_limit_and_filters<T, S>(h: &Harness<'_, T, S>)
where
    T: Transactions,
    S: FullStore<T::Conn>,
    S::Event: SampleEvent,
{
    let t = past();
    let evs: Vec<S::Event> = (0..3)
        .map(|i| S::Event::sample("r1", &format!("k{i}"), t, None, 6))
        .chain([S::Event::sample("r2", "k9", t, None, 6)])
        .collect();
    h.insert(&evs).await;
    let none = h
        .claim_with(
            "w1",
            10,
            LONG_LEASE,
            Filters::none().event_types(["no.such.type"]),
        )
        .await;
    h.ctx.ensure(
        none.is_empty(),
        "event_types filter matched nothing but returned events",
    );
    let r2 = h
        .claim_with("w1", 10, LONG_LEASE, route_filter::<S::Event>("r2"))
        .await;
    h.ctx.eq(ids(&r2), vec![evs[3].id()], "route filter");
    h.ctx
        .eq(h.claim("w1", 2).await.len(), 2, "claim honours the limit");
    h.ctx.eq(h.claim("w1", 2).await.len(), 1, "the rest");
}

/// An event scheduled in the future is neither claimed nor fetched.
pub(crate) async fn not_due_is_not_claimed<T, S>(h: &Harness<'_, T, S>)
where
    T: Transactions,
    S: FullStore<T::Conn>,
    S::Event: SampleEvent,
{
    let t = past();
    let later = S::Event::sample("r", "k", t, Some(Utc::now() + secs(3600)), 6);
    h.insert(std::slice::from_ref(&later)).await;
    h.ctx.ensure(
        h.claim("w1", 10).await.is_empty(),
        "claimed an event that is not due",
    );
    h.ctx.ensure(
        h.fetch(Filters::none(), 10).await.is_empty(),
        "fetch_pending returned an event that is not due",
    );
    let p = h.peek(later.id()).await;
    h.ctx.ensure(
        matches!(p, Peek::NotDue(_)),
        format_args!("try_lock: {p:?}"),
    );
}

/// Concurrent claims never return the same event, and together return every event.
pub(crate) async fn concurrent_claims_are_disjoint<T, S>(h: &Harness<'_, T, S>)
where
    T: Transactions,
    S: FullStore<T::Conn>,
    S::Event: SampleEvent,
{
    let t = past();
    let evs: Vec<S::Event> = (0..30)
        .map(|i| S::Event::sample("r", &format!("k{i}"), t, None, 6))
        .collect();
    h.insert(&evs).await;
    let workers = (0..4).map(|i| async move {
        let who = format!("w{i}");
        let mut got = Vec::new();
        loop {
            let batch = h.claim(&who, 4).await;
            if batch.is_empty() {
                return got;
            }
            got.extend(ids(&batch));
        }
    });
    let all: Vec<_> = futures_util::future::join_all(workers)
        .await
        .into_iter()
        .flatten()
        .collect();
    let distinct: BTreeSet<_> = all.iter().copied().collect();
    h.ctx
        .eq(all.len(), distinct.len(), "events claimed by two workers");
    h.ctx.eq(
        distinct,
        ids(&evs).into_iter().collect::<BTreeSet<_>>(),
        "claimed ids",
    );
}

/// A settlement applies only with the right worker and lease token.
pub(crate) async fn settle_is_fenced_by_the_lease<T, S>(h: &Harness<'_, T, S>)
where
    T: Transactions,
    S: FullStore<T::Conn>,
    S::Event: SampleEvent,
{
    let e = S::Event::sample("r", "k", past(), None, 6);
    h.insert(std::slice::from_ref(&e)).await;
    let got = h.claim("w1", 1).await;
    h.ctx.eq(got.len(), 1, "claimed");
    let lease = lease_of(&h.ctx, &got[0]);
    let wrong = Settlement {
        id: e.id(),
        lease: lease - TimeDelta::milliseconds(1),
        action: Settle::Complete,
    };
    let r = h.settle("w1", &[wrong]).await;
    h.ctx.eq(
        r.lease_lost,
        vec![e.id()],
        "wrong lease token must be lease_lost",
    );
    let right = settlement(&h.ctx, &got[0], Settle::Complete);
    let r = h.settle("w2", std::slice::from_ref(&right)).await;
    h.ctx.eq(
        r.lease_lost,
        vec![e.id()],
        "another worker must be lease_lost",
    );
    let p = h.peek(e.id()).await;
    h.ctx.ensure(
        matches!(p, Peek::Busy(_)),
        format_args!("still leased: {p:?}"),
    );
    let r = h.settle("w1", std::slice::from_ref(&right)).await;
    h.ctx
        .eq(r.completed, vec![e.id()], "completed by the holder");
    let p = h.peek(e.id()).await;
    let done = p.event(&h.ctx).common();
    h.ctx.eq(done.status, EventStatus::Completed, "status");
    h.ctx
        .ensure(done.completed_at.is_some(), "completed_at set");
    h.ctx.ensure(
        done.locked_at.is_none() && done.locked_by.is_none(),
        "lease cleared",
    );
    let r = h.settle("w1", &[right]).await;
    h.ctx
        .eq(r.lease_lost, vec![e.id()], "settling a completed event");
}

/// An expired lease is taken over by a claim; the takeover counts one attempt, and the
/// takeover that spends the budget leaves the event failed and dead-lettered.
pub(crate) async fn expired_lease_takeover_by_claim<T, S>(h: &Harness<'_, T, S>)
where
    T: Transactions,
    S: FullStore<T::Conn>,
    S::Event: SampleEvent,
{
    let e = S::Event::sample("r", "k", past(), None, 2);
    h.insert(std::slice::from_ref(&e)).await;
    let first = h.claim_with("w1", 1, SHORT_LEASE, Filters::none()).await;
    h.ctx.eq(first.len(), 1, "first claim");
    h.ctx.ensure(
        h.claim("w2", 1).await.is_empty(),
        "a live lease was taken over",
    );
    tokio::time::sleep(EXPIRE).await;
    let second = h.claim_with("w2", 1, SHORT_LEASE, Filters::none()).await;
    h.ctx
        .eq(ids(&second), vec![e.id()], "expired lease taken over");
    let c = second[0].common();
    h.ctx
        .eq(c.attempts_made, 1, "the takeover counts an attempt");
    h.ctx.eq(c.locked_by.as_deref(), Some("w2"), "new owner");
    h.ctx.eq(
        c.last_error.as_deref(),
        Some(lease_expired_error("w1").as_str()),
        "last_error of a takeover",
    );
    let r = h
        .settle("w1", &[settlement(&h.ctx, &first[0], Settle::Complete)])
        .await;
    h.ctx.eq(
        r.lease_lost,
        vec![e.id()],
        "the previous owner's settlement",
    );
    tokio::time::sleep(EXPIRE).await;
    let third = h.claim_with("w3", 1, SHORT_LEASE, Filters::none()).await;
    h.ctx.ensure(
        third.is_empty(),
        "an event whose budget the takeover spent was returned",
    );
    let p = h.peek(e.id()).await;
    h.ctx.eq(
        p.status(&h.ctx),
        EventStatus::Failed,
        "status at the budget",
    );
    h.ctx.eq(
        p.event(&h.ctx).common().attempts_made,
        2,
        "attempts at the budget",
    );
    let b = h.backlog().await;
    h.ctx
        .eq((b.failed, b.dead_letters), (1, 1), "(failed, dead_letters)");
}

/// `try_lock` reports a live lease as busy and takes over an expired one, counting it.
pub(crate) async fn expired_lease_takeover_by_try_lock<T, S>(h: &Harness<'_, T, S>)
where
    T: Transactions,
    S: FullStore<T::Conn>,
    S::Event: SampleEvent,
{
    let e = S::Event::sample("r", "k", past(), None, 3);
    h.insert(std::slice::from_ref(&e)).await;
    let r = h.try_lock("w1", e.id(), LONG_LEASE, false).await;
    h.ctx.ensure(
        matches!(r, LockOutcome::Locked(_)),
        format_args!("first lock: {r:?}"),
    );
    let r = h.try_lock("w2", e.id(), LONG_LEASE, false).await;
    h.ctx.ensure(
        matches!(r, LockOutcome::Busy(_)),
        format_args!("live lease: {r:?}"),
    );
    tokio::time::sleep(EXPIRE).await;
    match h.try_lock("w2", e.id(), SHORT_LEASE, false).await {
        LockOutcome::Locked(got) => {
            h.ctx.eq(
                got.common().attempts_made,
                1,
                "the takeover counts an attempt",
            );
            h.ctx
                .eq(got.common().locked_by.as_deref(), Some("w2"), "new owner");
        }
        other => h
            .ctx
            .fail(format_args!("expired lease not taken over: {other:?}")),
    }
    let r = h
        .try_lock("w1", uuid::Uuid::now_v7(), LONG_LEASE, false)
        .await;
    h.ctx.ensure(
        matches!(r, LockOutcome::Missing),
        format_args!("unknown id: {r:?}"),
    );
}

/// `release_stale` clears expired leases up to its limit, counting an attempt each; the
/// last attempt leaves the event failed and dead-lettered.
pub(crate) async fn release_stale_counts_attempts<T, S>(h: &Harness<'_, T, S>)
where
    T: Transactions,
    S: FullStore<T::Conn>,
    S::Event: SampleEvent,
{
    let t = past();
    let evs = vec![
        S::Event::sample("r", "k1", t, None, 6),
        S::Event::sample("r", "k2", t, None, 6),
        S::Event::sample("r", "k3", t, None, 1),
    ];
    h.insert(&evs).await;
    h.ctx.eq(h.claim("w1", 10).await.len(), 3, "claimed");
    let mut tx = h.begin().await;
    let fresh = h.ctx.ok(
        h.store.release_stale(&mut tx, LONG_LEASE, 10).await,
        "release_stale",
    );
    h.commit(tx).await;
    h.ctx.eq(
        (fresh.released, fresh.failed),
        (0, 0),
        "live leases released",
    );
    tokio::time::sleep(EXPIRE).await;
    let mut tx = h.begin().await;
    let a = h.ctx.ok(
        h.store.release_stale(&mut tx, SHORT_LEASE, 2).await,
        "release_stale",
    );
    h.commit(tx).await;
    h.ctx
        .eq(a.released + a.failed, 2, "release_stale honours its limit");
    let mut tx = h.begin().await;
    let b = h.ctx.ok(
        h.store.release_stale(&mut tx, SHORT_LEASE, 10).await,
        "release_stale",
    );
    h.commit(tx).await;
    h.ctx.eq(
        (a.released + b.released, a.failed + b.failed),
        (2, 1),
        "(released, failed) in total",
    );
    for e in &evs[..2] {
        let p = h.peek(e.id()).await;
        h.ctx.ensure(
            matches!(p, Peek::Free(_)),
            format_args!("released event: {p:?}"),
        );
        h.ctx
            .eq(p.event(&h.ctx).common().attempts_made, 1, "attempt counted");
    }
    h.ctx.eq(
        h.peek(evs[2].id()).await.status(&h.ctx),
        EventStatus::Failed,
        "status",
    );
    let bl = h.backlog().await;
    h.ctx.eq(
        (bl.leased, bl.failed, bl.dead_letters),
        (0, 1, 1),
        "(leased, failed, dead_letters)",
    );
}

/// Uncounted failures keep the schedule and the budget; counted ones spend an attempt and
/// `retry_at` becomes the schedule.
pub(crate) async fn settle_fail_and_retry_at<T, S>(h: &Harness<'_, T, S>)
where
    T: Transactions,
    S: FullStore<T::Conn>,
    S::Event: SampleEvent,
{
    let e = S::Event::sample("r", "k", past(), None, 6);
    h.insert(std::slice::from_ref(&e)).await;
    let got = h.claim("w1", 1).await;
    let r = h
        .settle(
            "w1",
            &[settlement(
                &h.ctx,
                &got[0],
                fail("broker down", false, None),
            )],
        )
        .await;
    h.ctx
        .eq(r.retrying, vec![e.id()], "uncounted failure is retrying");
    let p = h.peek(e.id()).await;
    h.ctx.ensure(
        matches!(p, Peek::Free(_)),
        format_args!("due again at once: {p:?}"),
    );
    let c = p.event(&h.ctx).common();
    h.ctx
        .eq(c.attempts_made, 0, "an uncounted failure spends no attempt");
    h.ctx
        .eq(c.last_error.as_deref(), Some("broker down"), "last_error");

    let got = h.claim("w1", 1).await;
    h.ctx.eq(ids(&got), vec![e.id()], "claimed again");
    let retry_at = Utc::now() + TimeDelta::milliseconds(300);
    let r = h
        .settle(
            "w1",
            &[settlement(
                &h.ctx,
                &got[0],
                fail("rejected", true, Some(retry_at)),
            )],
        )
        .await;
    h.ctx
        .eq(r.retrying, vec![e.id()], "counted failure with budget left");
    h.ctx
        .ensure(h.claim("w1", 1).await.is_empty(), "claimed before retry_at");
    h.ctx.ensure(
        h.fetch(Filters::none(), 10).await.is_empty(),
        "fetched before retry_at",
    );
    let p = h.peek(e.id()).await;
    h.ctx
        .eq(p.event(&h.ctx).common().attempts_made, 1, "counted attempt");
    tokio::time::sleep(std::time::Duration::from_millis(600)).await;
    h.ctx.eq(
        ids(&h.claim("w1", 1).await),
        vec![e.id()],
        "claimable after retry_at",
    );
}

/// A counted failure that spends the last attempt makes the event failed and writes a dead
/// letter in the same transaction (a rollback undoes both).
pub(crate) async fn terminal_failure_dead_letters<T, S>(h: &Harness<'_, T, S>)
where
    T: Transactions,
    S: FullStore<T::Conn>,
    S::Event: SampleEvent,
{
    let e = S::Event::sample("r", "k", past(), None, 1);
    h.insert(std::slice::from_ref(&e)).await;
    let got = h.claim("w1", 1).await;
    let s = settlement(&h.ctx, &got[0], fail("rejected", true, None));
    let mut tx = h.begin().await;
    let r = h.ctx.ok(
        h.store
            .settle(&mut tx, &worker("w1"), std::slice::from_ref(&s))
            .await,
        "settle",
    );
    h.ctx.eq(r.dead_lettered, vec![e.id()], "dead_lettered");
    h.ctx.ok(h.db.rollback(tx).await, "rollback");
    let b = h.backlog().await;
    h.ctx.eq(
        (b.failed, b.dead_letters),
        (0, 0),
        "after rollback (failed, dead_letters)",
    );
    let p = h.peek(e.id()).await;
    h.ctx.ensure(
        matches!(p, Peek::Busy(_)),
        format_args!("lease kept after rollback: {p:?}"),
    );

    let r = h.settle("w1", &[s]).await;
    h.ctx.eq(r.dead_lettered, vec![e.id()], "dead_lettered");
    let p = h.peek(e.id()).await;
    let c = p.event(&h.ctx).common();
    h.ctx.eq(c.status, EventStatus::Failed, "status");
    h.ctx.eq(c.attempts_made, 1, "attempts");
    h.ctx
        .eq(c.last_error.as_deref(), Some("rejected"), "last_error");
    let b = h.backlog().await;
    h.ctx
        .eq((b.failed, b.dead_letters), (1, 1), "(failed, dead_letters)");
    h.ctx.ensure(
        h.claim("w1", 1).await.is_empty(),
        "a failed event was claimed",
    );
}

/// `Settle::Release` gives the lease back without spending an attempt.
pub(crate) async fn settle_release<T, S>(h: &Harness<'_, T, S>)
where
    T: Transactions,
    S: FullStore<T::Conn>,
    S::Event: SampleEvent,
{
    let e = S::Event::sample("r", "k", past(), None, 6);
    h.insert(std::slice::from_ref(&e)).await;
    let got = h.claim("w1", 1).await;
    let r = h
        .settle("w1", &[settlement(&h.ctx, &got[0], Settle::Release)])
        .await;
    h.ctx.eq(r.released, vec![e.id()], "released");
    let p = h.peek(e.id()).await;
    h.ctx.ensure(
        matches!(p, Peek::Free(_)),
        format_args!("after release: {p:?}"),
    );
    let c = p.event(&h.ctx).common();
    h.ctx.eq(c.attempts_made, 0, "attempts after release");
    h.ctx.ensure(
        c.locked_at.is_none() && c.locked_by.is_none(),
        "lease cleared",
    );
    h.ctx.eq(
        ids(&h.claim("w2", 1).await),
        vec![e.id()],
        "claimable after release",
    );
}

/// `refresh` moves a held lease forward and returns the new token; the old token is fenced.
pub(crate) async fn refresh_moves_the_lease<T, S>(h: &Harness<'_, T, S>)
where
    T: Transactions,
    S: FullStore<T::Conn>,
    S::Event: SampleEvent,
{
    let e = S::Event::sample("r", "k", past(), None, 6);
    h.insert(std::slice::from_ref(&e)).await;
    let got = h.claim("w1", 1).await;
    let old = lease_of(&h.ctx, &got[0]);
    tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    let mut tx = h.begin().await;
    let other = h.ctx.ok(
        h.store
            .refresh(&mut tx, &worker("w2"), &[(e.id(), old)])
            .await,
        "refresh",
    );
    let mine = h.ctx.ok(
        h.store
            .refresh(&mut tx, &worker("w1"), &[(e.id(), old)])
            .await,
        "refresh",
    );
    h.commit(tx).await;
    h.ctx
        .ensure(other.is_empty(), "another worker refreshed the lease");
    h.ctx.eq(mine.len(), 1, "refreshed leases");
    let new = mine[0].1;
    h.ctx.ensure(
        new > old,
        format_args!("new token {new} not after old {old}"),
    );
    let stale = Settlement {
        id: e.id(),
        lease: old,
        action: Settle::Complete,
    };
    h.ctx.eq(
        h.settle("w1", &[stale]).await.lease_lost,
        vec![e.id()],
        "old token",
    );
    let fresh = Settlement {
        id: e.id(),
        lease: new,
        action: Settle::Complete,
    };
    h.ctx.eq(
        h.settle("w1", &[fresh]).await.completed,
        vec![e.id()],
        "new token",
    );
}

/// Rolled back or dropped transactions leave nothing behind.
pub(crate) async fn rollback_discards<T, S>(h: &Harness<'_, T, S>)
where
    T: Transactions,
    S: FullStore<T::Conn>,
    S::Event: SampleEvent,
{
    let a = S::Event::sample("r", "k1", past(), None, 6);
    let b = S::Event::sample("r", "k2", past(), None, 6);
    let mut tx = h.begin().await;
    h.ctx.ok(h.store.insert(&mut tx, &a).await, "insert");
    h.ctx.ok(h.db.rollback(tx).await, "rollback");
    {
        let mut tx = h.begin().await;
        h.ctx.ok(h.store.insert(&mut tx, &b).await, "insert");
    }
    h.ctx.ensure(
        matches!(h.peek(a.id()).await, Peek::Missing),
        "rolled back insert is visible",
    );
    h.ctx.ensure(
        matches!(h.peek(b.id()).await, Peek::Missing),
        "dropped insert is visible",
    );
    h.ctx
        .eq(h.backlog().await.pending, 0, "pending after rollback");
}

/// Cleanup deletes only old completed events, at most `limit` per call.
pub(crate) async fn cleanup_is_bounded<T, S>(h: &Harness<'_, T, S>)
where
    T: Transactions,
    S: FullStore<T::Conn>,
    S::Event: SampleEvent,
{
    let t = past();
    let mut evs: Vec<S::Event> = (0..3)
        .map(|i| S::Event::sample("r", &format!("k{i}"), t, None, 6))
        .collect();
    evs.push(S::Event::sample("r", "dead", t, None, 1));
    h.insert(&evs).await;
    let got = h.claim("w1", 10).await;
    let s: Vec<_> = got
        .iter()
        .map(|e| {
            let action = if e.common().max_attempts == 1 {
                fail("rejected", true, None)
            } else {
                Settle::Complete
            };
            settlement(&h.ctx, e, action)
        })
        .collect();
    let r = h.settle("w1", &s).await;
    h.ctx.eq(
        (r.completed.len(), r.dead_lettered.len()),
        (3, 1),
        "(completed, dead)",
    );
    let pending = S::Event::sample("r", "later", t, None, 6);
    h.insert(std::slice::from_ref(&pending)).await;
    let delete = |older: TimeDelta, limit: u32| async move {
        let mut tx = h.begin().await;
        let n = h.ctx.ok(
            h.store.delete_completed(&mut tx, older, limit).await,
            "delete_completed",
        );
        h.commit(tx).await;
        n
    };
    h.ctx.eq(
        delete(secs(3600), 10).await,
        0,
        "deleted recent completed events",
    );
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    let older = TimeDelta::milliseconds(100);
    h.ctx.eq(delete(older, 2).await, 2, "first bounded cleanup");
    h.ctx.eq(delete(older, 2).await, 1, "second cleanup");
    h.ctx.eq(delete(older, 2).await, 0, "nothing left");
    let b = h.backlog().await;
    h.ctx.eq(
        (b.pending, b.failed),
        (1, 1),
        "pending and failed events are kept",
    );
}

/// Backlog figures follow the table.
pub(crate) async fn backlog_figures<T, S>(h: &Harness<'_, T, S>)
where
    T: Transactions,
    S: FullStore<T::Conn>,
    S::Event: SampleEvent,
{
    let b = h.backlog().await;
    h.ctx.eq(
        (b.pending, b.leased, b.failed, b.dead_letters),
        (0, 0, 0, 0),
        "empty backlog",
    );
    h.ctx.ensure(
        b.oldest_pending_age.is_none() && b.oldest_claimable_age.is_none(),
        "ages of an empty backlog",
    );
    let t = past();
    let due = S::Event::sample("r", "k1", t, None, 6);
    let later = S::Event::sample("r", "k2", Utc::now(), Some(Utc::now() + secs(3600)), 6);
    h.insert(&[due, later]).await;
    let b = h.backlog().await;
    h.ctx.eq((b.pending, b.leased), (2, 0), "(pending, leased)");
    let claimable = b
        .oldest_claimable_age
        .unwrap_or_else(|| h.ctx.fail("no oldest_claimable_age"));
    let pending = b
        .oldest_pending_age
        .unwrap_or_else(|| h.ctx.fail("no oldest_pending_age"));
    h.ctx.ensure(
        claimable >= secs(5),
        format_args!("claimable age {claimable}"),
    );
    h.ctx.ensure(
        pending >= claimable,
        "oldest pending is at least as old as claimable",
    );
    h.claim("w1", 10).await;
    h.ctx.eq(h.backlog().await.leased, 1, "leased after claim");
}

/// `dead_letter` stores a letter in the caller's transaction.
pub(crate) async fn dead_letter_store<T, S>(h: &Harness<'_, T, S>)
where
    T: Transactions,
    S: FullStore<T::Conn>,
    S::Event: SampleEvent,
{
    let e = S::Event::sample("r", "k", past(), None, 6);
    let letter = DeadLetter::from_event(&e, "operator says no", Utc::now());
    let mut tx = h.begin().await;
    h.ctx
        .ok(h.store.dead_letter(&mut tx, &letter).await, "dead_letter");
    h.ctx.ok(h.db.rollback(tx).await, "rollback");
    h.ctx.eq(
        h.backlog().await.dead_letters,
        0,
        "dead letters after rollback",
    );
    let mut tx = h.begin().await;
    h.ctx
        .ok(h.store.dead_letter(&mut tx, &letter).await, "dead_letter");
    h.commit(tx).await;
    h.ctx.eq(
        h.backlog().await.dead_letters,
        1,
        "dead letters after commit",
    );
}

/// Invalid requests are errors, not silent no-ops.
pub(crate) async fn invalid_requests<T, S>(h: &Harness<'_, T, S>)
where
    T: Transactions,
    S: FullStore<T::Conn>,
    S::Event: SampleEvent,
{
    let e = S::Event::sample("r", "k", past(), None, 6);
    h.insert(std::slice::from_ref(&e)).await;
    let mut tx = h.begin().await;
    let req = ClaimRequest::new(worker("w1"), 0);
    h.ctx.ensure(
        h.store.claim(&mut tx, &req).await.is_err(),
        "a claim with limit 0 succeeded",
    );
    h.ctx.ok(h.db.rollback(tx).await, "rollback");
    let got = h.claim("w1", 1).await;
    let s = settlement(&h.ctx, &got[0], Settle::Complete);
    let mut tx = h.begin().await;
    let dup = h
        .store
        .settle(&mut tx, &worker("w1"), &[s.clone(), s])
        .await;
    h.ctx
        .ensure(dup.is_err(), "a settle with duplicate ids succeeded");
    h.ctx.ok(h.db.rollback(tx).await, "rollback");
}

/// Run every generic check, each on a fresh store from `make`.
macro_rules! run_generic {
    ($suite:expr, $make:expr) => {
        crate::store_checks::run_each!(
            $suite,
            $make,
            claim_order_and_lease,
            claim_limit_and_filters,
            not_due_is_not_claimed,
            concurrent_claims_are_disjoint,
            settle_is_fenced_by_the_lease,
            expired_lease_takeover_by_claim,
            expired_lease_takeover_by_try_lock,
            release_stale_counts_attempts,
            settle_fail_and_retry_at,
            terminal_failure_dead_letters,
            settle_release,
            refresh_moves_the_lease,
            rollback_discards,
            cleanup_is_bounded,
            backlog_figures,
            dead_letter_store,
            invalid_requests
        )
    };
}
pub(crate) use run_generic;

/// Run the named checks of `crate::store_checks` or the calling module, each on a fresh
/// store.
macro_rules! run_each {
    ($suite:expr, $make:expr, $($check:ident),+ $(,)?) => {
        $(
            {
                let (db, store) = $make().await;
                let h = crate::harness::Harness {
                    db: &db,
                    store: &store,
                    ctx: crate::check::Ctx::new($suite, stringify!($check)),
                };
                $check(&h).await;
            }
        )+
    };
}
pub(crate) use run_each;

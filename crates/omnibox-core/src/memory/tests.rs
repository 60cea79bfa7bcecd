use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, TimeDelta, Utc};
use serde_json::json;

use super::*;
use crate::clock::{Clock, ManualClock};
use crate::consumer::{AckHandle, Consumer, Redelivery};
use crate::domain::lease_expired_error;
use crate::error::{EnvelopeError, FailureKind, StoreError};
use crate::model::{EventStatus, InboxEvent, OutboxEvent, WorkerId};
use crate::publisher::Publisher;
use crate::store::*;

fn setup() -> (MemoryDb, ManualClock, MemoryOutboxStore) {
    let clock = ManualClock::new(truncate_micros(Utc::now()));
    let db = MemoryDb::with_clock(Arc::new(clock.clone()));
    (db, clock, MemoryOutboxStore::new())
}

fn ev(topic: &str, key: &str, at: DateTime<Utc>) -> OutboxEvent {
    OutboxEvent::builder("order", uuid::Uuid::now_v7(), "order.placed", topic, key)
        .payload(json!({"n": 1}))
        .created_at(at)
        .build()
        .unwrap()
}

fn w(name: &str) -> WorkerId {
    WorkerId::new(name).unwrap()
}

fn ms(n: i64) -> TimeDelta {
    TimeDelta::milliseconds(n)
}

async fn insert_all(db: &MemoryDb, store: &MemoryOutboxStore, events: &[OutboxEvent]) {
    let mut tx = db.begin().await.unwrap();
    store.insert_many(&mut tx, events).await.unwrap();
    db.commit(tx).await.unwrap();
}

async fn claim(db: &MemoryDb, store: &MemoryOutboxStore, who: &str, n: u32) -> Vec<OutboxEvent> {
    let mut tx = db.begin().await.unwrap();
    let got = store
        .claim(&mut tx, &ClaimRequest::new(w(who), n).lease_ttl(ms(1000)))
        .await
        .unwrap();
    db.commit(tx).await.unwrap();
    got
}

fn settle_one(e: &OutboxEvent, action: Settle) -> Settlement {
    Settlement {
        id: e.common.id,
        lease: e.common.locked_at.unwrap(),
        action,
    }
}

#[tokio::test]
async fn transactions_commit_rollback_and_drop() {
    let (db, clock, store) = setup();
    let e = ev("t", "k", clock.now());
    let mut tx = db.begin().await.unwrap();
    store.insert(&mut tx, &e).await.unwrap();
    tx.put("effect", json!(1)).await;
    assert_eq!(tx.get("effect").await, Some(json!(1)), "sees own writes");
    assert!(store.get(&mut tx, e.common.id).await.is_some());
    db.rollback(tx).await.unwrap();
    assert_eq!(db.value("effect").await, None);
    assert!(store.get(&mut db.connection(), e.common.id).await.is_none());

    {
        let mut tx = db.begin().await.unwrap();
        tx.put("effect", json!(2)).await;
    } // dropped uncommitted
    assert_eq!(db.value("effect").await, None);

    let mut tx = db.begin().await.unwrap();
    store.insert(&mut tx, &e).await.unwrap();
    tx.put("effect", json!(3)).await;
    db.commit(tx).await.unwrap();
    assert_eq!(db.value("effect").await, Some(json!(3)));
    assert!(store.get(&mut db.connection(), e.common.id).await.is_some());
}

#[tokio::test]
async fn claim_order_and_per_key_heads() {
    let (db, clock, store) = setup();
    let t0 = clock.now() - TimeDelta::seconds(10);
    let a1 = ev("t", "a", t0);
    let a2 = ev("t", "a", t0 + ms(1));
    let b1 = ev("t", "b", t0 + ms(2));
    let c1 = ev("u", "a", t0 + ms(3)); // other topic, same key: independent
    insert_all(
        &db,
        &store,
        &[a2.clone(), c1.clone(), b1.clone(), a1.clone()],
    )
    .await;

    let got = claim(&db, &store, "w1", 10).await;
    let ids: Vec<_> = got.iter().map(|e| e.common.id).collect();
    assert_eq!(ids, vec![a1.common.id, b1.common.id, c1.common.id]);
    assert!(
        got.iter()
            .all(|e| e.common.locked_by.as_deref() == Some("w1"))
    );
    // a2 is blocked while a1 is leased, even for another worker
    assert!(claim(&db, &store, "w2", 10).await.is_empty());

    // a1 fails and waits for a retry in the future: a2 stays blocked
    let mut tx = db.begin().await.unwrap();
    let retry_at = clock.now() + TimeDelta::seconds(30);
    let fail = Settle::Fail {
        error: "boom".into(),
        counted: true,
        retry_at: Some(retry_at),
    };
    let r = store
        .settle(
            &mut tx,
            &w("w1"),
            &[
                settle_one(&got[0], fail),
                settle_one(&got[1], Settle::Complete),
                settle_one(&got[2], Settle::Complete),
            ],
        )
        .await
        .unwrap();
    db.commit(tx).await.unwrap();
    assert_eq!(r.retrying, vec![a1.common.id]);
    assert_eq!(r.completed.len(), 2);
    assert!(
        claim(&db, &store, "w2", 10).await.is_empty(),
        "head waits for retry"
    );

    clock.advance(TimeDelta::seconds(31));
    let again = claim(&db, &store, "w2", 10).await;
    assert_eq!(again.len(), 1);
    assert_eq!(again[0].common.id, a1.common.id);
    assert_eq!(again[0].common.attempts_made, 1);
    let mut tx = db.begin().await.unwrap();
    store
        .settle(
            &mut tx,
            &w("w2"),
            &[settle_one(&again[0], Settle::Complete)],
        )
        .await
        .unwrap();
    db.commit(tx).await.unwrap();
    let next = claim(&db, &store, "w2", 10).await;
    assert_eq!(next.len(), 1);
    assert_eq!(next[0].common.id, a2.common.id, "a2 after a1 completed");
}

#[tokio::test]
async fn settle_is_fenced_by_the_lease() {
    let (db, clock, store) = setup();
    let e = ev("t", "k", clock.now());
    insert_all(&db, &store, std::slice::from_ref(&e)).await;
    let got = claim(&db, &store, "w1", 1).await;
    let mut conn = db.connection();
    let stale = Settlement {
        id: e.common.id,
        lease: got[0].common.locked_at.unwrap() - ms(1),
        action: Settle::Complete,
    };
    let r = store.settle(&mut conn, &w("w1"), &[stale]).await.unwrap();
    assert_eq!(r.lease_lost, vec![e.common.id]);
    let r = store
        .settle(
            &mut conn,
            &w("w2"),
            &[settle_one(&got[0], Settle::Complete)],
        )
        .await
        .unwrap();
    assert_eq!(r.lease_lost, vec![e.common.id], "other worker");
    let r = store
        .settle(&mut conn, &w("w1"), &[settle_one(&got[0], Settle::Release)])
        .await
        .unwrap();
    assert_eq!(r.released, vec![e.common.id]);
    let now = store.get(&mut conn, e.common.id).await.unwrap();
    assert_eq!(now.common.locked_at, None);
    assert_eq!(now.common.attempts_made, 0);
    let dup = [
        settle_one(&got[0], Settle::Complete),
        settle_one(&got[0], Settle::Release),
    ];
    assert!(matches!(
        store.settle(&mut conn, &w("w1"), &dup).await,
        Err(StoreError::InvalidRequest(_))
    ));
}

#[tokio::test]
async fn expired_lease_takeover_counts_and_dead_letters_at_budget() {
    let (db, clock, store) = setup();
    let e = OutboxEvent::builder("o", uuid::Uuid::now_v7(), "x", "t", "k")
        .payload(json!({"a": 1}))
        .created_at(clock.now())
        .max_attempts(2)
        .build()
        .unwrap();
    insert_all(&db, &store, std::slice::from_ref(&e)).await;
    let first = claim(&db, &store, "w1", 1).await;
    assert!(claim(&db, &store, "w2", 1).await.is_empty(), "live lease");
    clock.advance(ms(1500));
    let second = claim(&db, &store, "w2", 1).await;
    assert_eq!(second.len(), 1);
    assert_eq!(second[0].common.attempts_made, 1);
    assert_eq!(
        second[0].common.last_error.as_deref(),
        Some(lease_expired_error("w1").as_str())
    );
    // the old owner lost its lease
    let r = store
        .settle(
            &mut db.connection(),
            &w("w1"),
            &[settle_one(&first[0], Settle::Complete)],
        )
        .await
        .unwrap();
    assert_eq!(r.lease_lost, vec![e.common.id]);

    clock.advance(ms(1500));
    assert!(claim(&db, &store, "w3", 1).await.is_empty(), "budget spent");
    let mut conn = db.connection();
    let row = store.get(&mut conn, e.common.id).await.unwrap();
    assert_eq!(row.common.status, EventStatus::Failed);
    assert_eq!(row.common.attempts_made, 2);
    let dead = store.dead_letters(&mut conn).await;
    assert_eq!(dead.len(), 1);
    assert_eq!(dead[0].event_id, Some(e.common.id));

    let back = store
        .replay_dead_letter(&mut conn, dead[0].id)
        .await
        .unwrap();
    assert_eq!(back.common.status, EventStatus::Pending);
    assert_eq!(back.common.attempts_made, 0);
    assert!(store.dead_letters(&mut conn).await.is_empty());
}

#[tokio::test]
async fn counted_failure_on_last_attempt_dead_letters_in_the_transaction() {
    let (db, clock, store) = setup();
    let e = OutboxEvent::builder("o", uuid::Uuid::now_v7(), "x", "t", "k")
        .payload(json!({"a": 1}))
        .created_at(clock.now())
        .max_attempts(1)
        .build()
        .unwrap();
    insert_all(&db, &store, std::slice::from_ref(&e)).await;
    let got = claim(&db, &store, "w1", 1).await;
    let fail = Settle::Fail {
        error: "rejected".into(),
        counted: true,
        retry_at: None,
    };
    let mut tx = db.begin().await.unwrap();
    let r = store
        .settle(&mut tx, &w("w1"), &[settle_one(&got[0], fail)])
        .await
        .unwrap();
    assert_eq!(r.dead_lettered, vec![e.common.id]);
    assert_eq!(store.dead_letters(&mut tx).await.len(), 1);
    db.rollback(tx).await.unwrap();
    let mut conn = db.connection();
    assert!(
        store.dead_letters(&mut conn).await.is_empty(),
        "rolled back together"
    );
    let row = store.get(&mut conn, e.common.id).await.unwrap();
    assert_eq!(row.common.status, EventStatus::Pending);
}

#[tokio::test]
async fn release_stale_cleanup_and_backlog() {
    let (db, clock, store) = setup();
    let t0 = clock.now();
    let events: Vec<_> = (0..4).map(|i| ev("t", &format!("k{i}"), t0)).collect();
    insert_all(&db, &store, &events).await;
    let got = claim(&db, &store, "w1", 2).await;
    let mut conn = db.connection();
    let b = store.backlog(&mut conn).await.unwrap();
    assert_eq!((b.pending, b.leased, b.failed), (4, 2, 0));
    clock.advance(ms(2000));
    let r = store.release_stale(&mut conn, ms(1000), 1).await.unwrap();
    assert_eq!((r.released, r.failed), (1, 0), "bounded by limit");
    let r = store.release_stale(&mut conn, ms(1000), 10).await.unwrap();
    assert_eq!(r.released, 1);
    for e in &got {
        let row = store.get(&mut conn, e.common.id).await.unwrap();
        assert_eq!(row.common.attempts_made, 1);
        assert!(row.common.locked_at.is_none());
    }
    let all = claim(&db, &store, "w2", 10).await;
    let settle: Vec<_> = all
        .iter()
        .map(|e| settle_one(e, Settle::Complete))
        .collect();
    let r = store.settle(&mut conn, &w("w2"), &settle).await.unwrap();
    assert_eq!(r.completed.len(), 4);
    clock.advance(TimeDelta::seconds(10));
    assert_eq!(
        store
            .delete_completed(&mut conn, TimeDelta::seconds(5), 3)
            .await
            .unwrap(),
        3
    );
    assert_eq!(
        store
            .delete_completed(&mut conn, TimeDelta::seconds(5), 3)
            .await
            .unwrap(),
        1
    );
    let b = store.backlog(&mut conn).await.unwrap();
    assert_eq!(b.pending, 0);
    assert_eq!(b.oldest_pending_age, None);
}

#[tokio::test]
async fn insert_dedup_and_order() {
    let (db, clock, store) = setup();
    let keyed = |k: &str| {
        OutboxEvent::builder("o", uuid::Uuid::now_v7(), "x", "t", "p")
            .payload(json!({"a": 1}))
            .created_at(clock.now())
            .idempotency_key(k)
            .build()
            .unwrap()
    };
    let (a, b, a2) = (keyed("A"), keyed("B"), keyed("A"));
    let mut tx = db.begin().await.unwrap();
    let r = store
        .insert_many(&mut tx, &[a.clone(), b.clone(), a2.clone()])
        .await
        .unwrap();
    assert!(matches!(&r[0], Inserted::New(e) if e.common.id == a.common.id));
    assert!(matches!(&r[1], Inserted::New(e) if e.common.id == b.common.id));
    assert!(matches!(&r[2], Inserted::Duplicate(e) if e.common.id == a.common.id));
    tx.put("still", json!(true)).await;
    db.commit(tx).await.unwrap();
    assert_eq!(db.value("still").await, Some(json!(true)));

    let inbox = MemoryInboxStore::new();
    let msg = |id: &str, g: &str| {
        InboxEvent::builder(id, g, "orders", "x")
            .payload(json!({"a": 1}))
            .build()
            .unwrap()
    };
    let mut conn = db.connection();
    let first = msg("m1", "g1");
    assert!(
        !inbox
            .insert(&mut conn, &first)
            .await
            .unwrap()
            .is_duplicate()
    );
    assert!(
        inbox
            .insert(&mut conn, &msg("m1", "g1"))
            .await
            .unwrap()
            .is_duplicate()
    );
    assert!(
        !inbox
            .insert(&mut conn, &msg("m1", "g2"))
            .await
            .unwrap()
            .is_duplicate()
    );
    let found = inbox
        .find_message(&mut conn, "m1", "g1")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(found.common.id, first.common.id);
    assert!(
        !inbox
            .has_completed_sibling(&mut conn, "m1", "g1", first.common.id)
            .await
            .unwrap()
    );
}

#[tokio::test]
async fn try_lock_outcomes() {
    let (db, clock, _) = setup();
    let inbox = MemoryInboxStore::new();
    let later = clock.now() + TimeDelta::seconds(60);
    let e = InboxEvent::builder("m", "g", "s", "x")
        .payload(json!({"a": 1}))
        .created_at(clock.now())
        .scheduled_at(later)
        .build()
        .unwrap();
    let mut conn = db.connection();
    inbox.insert(&mut conn, &e).await.unwrap();
    let id = e.common.id;
    let lock = |who: &'static str, ignore| {
        let inbox = inbox.clone();
        let mut conn = db.connection();
        async move {
            inbox
                .try_lock(&mut conn, id, &w(who), ms(1000), ignore)
                .await
                .unwrap()
        }
    };
    assert!(matches!(lock("w1", false).await, LockOutcome::NotDue(_)));
    let LockOutcome::Locked(held) = lock("w1", true).await else {
        panic!("expected Locked")
    };
    assert!(matches!(lock("w2", true).await, LockOutcome::Busy(_)));
    let missing = inbox
        .try_lock(&mut conn, uuid::Uuid::now_v7(), &w("w1"), ms(1000), true)
        .await
        .unwrap();
    assert_eq!(missing, LockOutcome::Missing);
    let s = Settlement {
        id,
        lease: held.common.locked_at.unwrap(),
        action: Settle::Complete,
    };
    let r = inbox.settle(&mut conn, &w("w1"), &[s]).await.unwrap();
    assert_eq!(r.completed, vec![id]);
    assert!(matches!(lock("w2", true).await, LockOutcome::Finished(_)));
}

#[tokio::test]
async fn concurrent_claims_are_disjoint() {
    let db = MemoryDb::new();
    let store = MemoryOutboxStore::new();
    let t0 = Utc::now() - TimeDelta::seconds(5);
    let events: Vec<_> = (0..50).map(|i| ev("t", &format!("k{i}"), t0)).collect();
    insert_all(&db, &store, &events).await;
    let tasks: Vec<_> = (0..5)
        .map(|i| {
            let (db, store) = (db.clone(), store.clone());
            tokio::spawn(async move {
                let mut got = Vec::new();
                loop {
                    let batch = claim(&db, &store, &format!("w{i}"), 3).await;
                    if batch.is_empty() {
                        return got;
                    }
                    got.extend(batch.into_iter().map(|e| e.common.id));
                    tokio::task::yield_now().await;
                }
            })
        })
        .collect();
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await.unwrap());
    }
    let n = all.len();
    all.sort();
    all.dedup();
    assert_eq!((n, all.len()), (50, 50));
}

fn published_event(topic: &str) -> OutboxEvent {
    OutboxEvent::builder("order", uuid::Uuid::now_v7(), "order.placed", topic, "k")
        .payload(json!({"total": 5}))
        .header("tenant", "acme")
        .build()
        .unwrap()
}

async fn recv(c: &mut MemoryConsumer) -> crate::consumer::Delivery<MemoryAck> {
    tokio::time::timeout(Duration::from_secs(5), c.receive())
        .await
        .expect("delivery within 5 s")
        .unwrap()
}

#[tokio::test]
async fn broker_publish_ack_nack_and_redelivery() {
    let broker = MemoryBroker::new();
    let e = published_event("orders");
    broker.publish(&e).await.unwrap();
    let stored = broker.published("orders");
    assert_eq!(stored.len(), 1);
    assert_eq!(stored[0].headers["event_id"], e.common.id.to_string());
    assert_eq!(stored[0].headers["tenant"], "acme");
    assert_eq!(stored[0].json().unwrap()["payload"], json!({"total": 5}));

    let mut c = broker.consumer(["orders"], "g");
    let d = recv(&mut c).await;
    let m = d.message.as_ref().unwrap();
    assert_eq!(m.message_id, e.common.id.to_string());
    assert_eq!(m.source, "orders");
    assert_eq!(m.payload, e.common.payload);
    d.ack
        .nack(Redelivery::After(Duration::from_millis(50)))
        .await
        .unwrap();
    let d = recv(&mut c).await;
    assert_eq!(
        d.message.as_ref().unwrap().message_id,
        e.common.id.to_string()
    );
    assert_eq!(broker.in_flight("orders", "g"), 1);
    drop(c); // unacked: back to the group
    let mut c2 = broker.consumer(["orders"], "g");
    let d2 = recv(&mut c2).await;
    assert!(d.ack.ack().await.is_err(), "handle of a stopped consumer");
    d2.ack.ack().await.unwrap();
    assert_eq!(broker.acked("orders", "g"), 1);
    assert_eq!(broker.pending("orders", "g"), 0);
    // another group sees the message from the start
    let mut other = broker.consumer(["orders"], "h");
    recv(&mut other).await.ack.ack().await.unwrap();

    // storm: same message three more times
    assert_eq!(broker.deliver_again("orders", 0, 3).len(), 3);
    for _ in 0..3 {
        let d = recv(&mut c2).await;
        assert_eq!(
            d.message.as_ref().unwrap().message_id,
            e.common.id.to_string()
        );
        d.ack.ack().await.unwrap();
    }
}

#[tokio::test]
async fn broker_failures_malformed_and_waiting() {
    let broker = MemoryBroker::new();
    broker.fail_next_publishes(1, FailureKind::Transient);
    broker.fail_next_publishes(1, FailureKind::Permanent);
    let e = published_event("t");
    let r = broker.publish_batch(std::slice::from_ref(&e)).await;
    assert_eq!(r[0].as_ref().unwrap_err().kind, FailureKind::Transient);
    assert_eq!(
        broker.publish(&e).await.unwrap_err().kind,
        FailureKind::Permanent
    );
    assert!(broker.published("t").is_empty());

    let mut c = broker.consumer(["t", "u"], "g");
    let waiter = tokio::spawn(async move {
        let d = recv(&mut c).await;
        let err = d.message.unwrap_err();
        d.ack.ack().await.unwrap();
        (c, err)
    });
    tokio::time::sleep(Duration::from_millis(20)).await;
    broker.push_raw("u", b"not json".to_vec(), Default::default());
    let (mut c, err) = waiter.await.unwrap();
    assert_eq!(err.body, b"not json");
    assert_eq!(err.source, "u");
    assert_eq!(err.message_id.as_deref(), Some("u:0"));
    assert!(matches!(err.error, EnvelopeError::InvalidJson(_)));
    c.stop().await.unwrap();
    assert!(c.receive().await.is_err(), "stopped");
    c.start().await.unwrap();
    broker.publish(&e).await.unwrap();
    assert!(recv(&mut c).await.message.is_ok());
}

#[tokio::test]
async fn savepoints_restore_the_transaction_state_nest_and_need_a_transaction() {
    let (db, clock, store) = setup();
    let mut tx = db.begin().await.unwrap();
    tx.put("a", json!(1)).await;
    store.savepoint(&mut tx).await.unwrap();
    let event = ev("orders", "k", clock.now());
    store.insert(&mut tx, &event).await.unwrap();
    tx.put("b", json!(2)).await;
    // Nested: the inner savepoint shadows the outer one.
    store.savepoint(&mut tx).await.unwrap();
    tx.put("c", json!(3)).await;
    store.rollback_to_savepoint(&mut tx).await.unwrap();
    assert_eq!(tx.get("c").await, None);
    assert_eq!(tx.get("b").await, Some(json!(2)));
    store.release_savepoint(&mut tx).await.unwrap();
    // Back to the outer one: the event row and "b" go, "a" stays.
    store.rollback_to_savepoint(&mut tx).await.unwrap();
    assert!(store.get(&mut tx, event.common.id).await.is_none());
    assert_eq!(tx.get("b").await, None);
    store.release_savepoint(&mut tx).await.unwrap();
    assert!(matches!(
        store.release_savepoint(&mut tx).await,
        Err(StoreError::InvalidRequest(_))
    ));
    assert!(matches!(
        store.rollback_to_savepoint(&mut tx).await,
        Err(StoreError::InvalidRequest(_))
    ));
    db.commit(tx).await.unwrap();
    assert_eq!(db.value("a").await, Some(json!(1)));
    assert_eq!(db.value("b").await, None);

    let mut conn = db.connection();
    assert!(matches!(
        store.savepoint(&mut conn).await,
        Err(StoreError::InvalidRequest(_))
    ));
}

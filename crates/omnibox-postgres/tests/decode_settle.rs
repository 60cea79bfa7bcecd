//! Row decoding by column name (any table column order) and the completion fast path of
//! `settle`, against a real PostgreSQL (DATABASE_URL).
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests may panic

mod common;

use chrono::{DateTime, SubsecRound, TimeDelta, Utc};
use common::{TestDb, outbox, outbox_at};
use omnibox_core::error::{StoreError, ValidationError};
use omnibox_core::model::{Event, EventStatus, OutboxEvent, WorkerId};
use omnibox_core::store::*;
use omnibox_postgres::*;
use sqlx::{AssertSqlSafe, Row};
use uuid::Uuid;

fn worker(n: &str) -> WorkerId {
    WorkerId::new(n).unwrap()
}

fn settlement(e: &impl Event, action: Settle) -> Settlement {
    Settlement {
        id: e.id(),
        lease: e.common().locked_at.unwrap(),
        action,
    }
}

fn fail(error: &str) -> Settle {
    Settle::Fail {
        error: error.into(),
        counted: true,
        retry_at: None,
    }
}

/// Every column a completion may touch, as stored.
#[derive(Debug, PartialEq)]
struct Stored {
    status: String,
    attempts_made: i32,
    last_error: Option<String>,
    scheduled_at: DateTime<Utc>,
    created_at: DateTime<Utc>,
    completed_at: Option<DateTime<Utc>>,
    locked_at: Option<DateTime<Utc>>,
    locked_by: Option<String>,
    updated_at: Option<DateTime<Utc>>,
}

async fn stored(db: &TestDb, id: Uuid) -> Stored {
    let r = sqlx::query(AssertSqlSafe(format!(
        "SELECT status, attempts_made, last_error, scheduled_at, created_at, completed_at, locked_at, \
         locked_by, updated_at FROM \"{}\".outbox_events WHERE id = $1",
        db.schema
    )))
    .bind(id)
    .fetch_one(&db.pool)
    .await
    .unwrap();
    Stored {
        status: r.get(0),
        attempts_made: r.get(1),
        last_error: r.get(2),
        scheduled_at: r.get(3),
        created_at: r.get(4),
        completed_at: r.get(5),
        locked_at: r.get(6),
        locked_by: r.get(7),
        updated_at: r.get(8),
    }
}

/// The fields a round trip through the table must keep.
fn same_event(a: &OutboxEvent, b: &OutboxEvent) {
    let (x, y) = (a.common(), b.common());
    assert_eq!(a.id(), b.id());
    assert_eq!(x.event_type, y.event_type);
    assert_eq!(x.payload, y.payload);
    assert_eq!(x.headers, y.headers);
    assert_eq!(x.trace_id, y.trace_id);
    assert_eq!(x.idempotency_key, y.idempotency_key);
    assert_eq!(x.correlation_id, y.correlation_id);
    assert_eq!(x.causation_id, y.causation_id);
    assert_eq!(x.schema_version, y.schema_version);
    assert_eq!(x.max_attempts, y.max_attempts);
    // (PostgreSQL keeps microseconds)
    assert_eq!(
        x.created_at.timestamp_micros(),
        y.created_at.timestamp_micros()
    );
    assert_eq!(
        x.scheduled_at.timestamp_micros(),
        y.scheduled_at.timestamp_micros()
    );
    assert_eq!(a.aggregate_type, b.aggregate_type);
    assert_eq!(a.aggregate_id, b.aggregate_id);
    assert_eq!(a.topic, b.topic);
    assert_eq!(a.partition_key, b.partition_key);
}

#[tokio::test]
async fn events_decode_by_column_name_whatever_the_table_column_order() {
    let (db, cfg) = TestDb::migrated(false).await;
    // Rebuild the table with its columns reversed and an extra column in front (as a table
    // created by another tool, or altered by its owner, may be).
    let s = &db.schema;
    sqlx::raw_sql(AssertSqlSafe(format!(
        "CREATE TABLE \"{s}\".reordered AS SELECT 'tenant-1'::text AS tenant, partition_key, topic, aggregate_id, \
         aggregate_type, updated_at, created_at, locked_by, locked_at, completed_at, scheduled_at, last_error, \
         max_attempts, attempts_made, status, schema_version, causation_id, correlation_id, idempotency_key, \
         trace_id, headers, payload, event_type, id FROM \"{s}\".outbox_events WITH NO DATA; \
         DROP TABLE \"{s}\".outbox_events; ALTER TABLE \"{s}\".reordered RENAME TO outbox_events; \
         ALTER TABLE \"{s}\".outbox_events ADD PRIMARY KEY (id);"
    )))
    .execute(&db.pool)
    .await
    .unwrap();
    let store = PgOutboxStore::new(&cfg).unwrap();
    let full = OutboxEvent::builder("order", Uuid::now_v7(), "order.placed", "t", "k1")
        .payload(serde_json::json!({ "n": 1, "nested": { "a": [1, 2] } }))
        .header("h1", "v1")
        .trace_id("trace")
        .correlation_id("corr")
        .causation_id("cause")
        .schema_version("v2")
        .max_attempts(4)
        .idempotency_key("idem-1")
        .build()
        .unwrap();
    let plain = outbox_at("t", "k2", 1);
    let mut conn = db.pool.acquire().await.unwrap();
    let inserted = store
        .insert_many(&mut conn, &[full.clone(), plain.clone()])
        .await
        .unwrap();
    for (i, e) in inserted.iter().zip([&full, &plain]) {
        match i {
            Inserted::New(got) => same_event(got, e),
            other => panic!("not inserted: {other:?}"),
        }
    }
    let pending = store
        .fetch_pending(&mut conn, &Filters::none(), 10)
        .await
        .unwrap();
    assert_eq!(pending.len(), 2);
    let got = store
        .claim(&mut conn, &ClaimRequest::new(worker("w"), 10))
        .await
        .unwrap();
    assert_eq!(got.len(), 2);
    for g in &got {
        let want = if g.id() == full.id() { &full } else { &plain };
        same_event(g, want);
        assert_eq!(g.common().status, EventStatus::Pending);
        assert_eq!(g.common().locked_by.as_deref(), Some("w"));
        assert!(g.common().locked_at.is_some());
    }
    let r = store
        .settle(
            &mut conn,
            &worker("w"),
            &[
                settlement(&got[0], Settle::Complete),
                settlement(&got[1], Settle::Complete),
            ],
        )
        .await
        .unwrap();
    assert_eq!(r.completed.len(), 2);
    match store
        .try_lock(
            &mut conn,
            full.id(),
            &worker("w"),
            TimeDelta::seconds(30),
            false,
        )
        .await
        .unwrap()
    {
        LockOutcome::Finished(e) => {
            same_event(&e, &full);
            assert_eq!(e.common().status, EventStatus::Completed);
        }
        other => panic!("expected Finished: {other:?}"),
    }
}

/// Lock `id` by id (a read that returns the row to the caller) in a transaction that is
/// rolled back, and return the decode error it reports.
async fn read_by_id(db: &TestDb, store: &PgOutboxStore, id: Uuid) -> StoreError {
    let mut tx = db.pool.begin().await.unwrap();
    let err = store
        .try_lock(&mut tx, id, &worker("w"), TimeDelta::seconds(30), true)
        .await
        .map(|_| ())
        .unwrap_err();
    tx.rollback().await.unwrap();
    err
}

#[tokio::test]
async fn rows_that_are_not_valid_events_are_reported_not_returned() {
    let (db, cfg) = TestDb::migrated(false).await;
    let store = PgOutboxStore::new(&cfg).unwrap();
    let mut conn = db.pool.acquire().await.unwrap();
    let e = outbox("t", "k");
    store.enqueue(&mut conn, &e).await.unwrap();
    let corrupt = |set: &str| {
        format!(
            "UPDATE \"{}\".outbox_events SET {set} WHERE id = '{}'",
            db.schema,
            e.id()
        )
    };
    sqlx::query(AssertSqlSafe(corrupt("payload = '[1, 2]'")))
        .execute(&mut *conn)
        .await
        .unwrap();
    let err = read_by_id(&db, &store, e.id()).await;
    assert!(
        matches!(&err, StoreError::InvalidRow { id, source: ValidationError::PayloadNotObject { .. } } if *id == e.id()),
        "{err:?}"
    );
    sqlx::query(AssertSqlSafe(corrupt(
        "payload = '{\"a\": 1}', headers = '{\"h\": 1}'",
    )))
    .execute(&mut *conn)
    .await
    .unwrap();
    let err = read_by_id(&db, &store, e.id()).await;
    assert!(
        matches!(&err, StoreError::InvalidRow { id, .. } if *id == e.id()),
        "{err:?}"
    );
    sqlx::query(AssertSqlSafe(corrupt("headers = NULL, event_type = '   '")))
        .execute(&mut *conn)
        .await
        .unwrap();
    let err = read_by_id(&db, &store, e.id()).await;
    assert!(
        matches!(
            &err,
            StoreError::InvalidRow {
                source: ValidationError::Blank {
                    field: "event_type"
                },
                ..
            }
        ),
        "{err:?}"
    );
    // A claim does not fail on it: the row is failed and dead-lettered with the reason
    // (tests/undecodable.rs covers the relay around it).
    let got = store
        .claim(&mut conn, &ClaimRequest::new(worker("w"), 10))
        .await
        .unwrap();
    assert!(got.is_empty(), "{got:?}");
    assert_eq!(stored(&db, e.id()).await.status, "failed");
    let letters = store.list_dead_letters(&mut conn, 10, 0).await.unwrap();
    assert_eq!(letters.len(), 1);
    assert!(
        letters[0].error.contains("event_type"),
        "{}",
        letters[0].error
    );
}

#[tokio::test]
async fn an_all_complete_settle_changes_rows_exactly_like_a_mixed_one() {
    let (db, cfg) = TestDb::migrated(false).await;
    let store = PgOutboxStore::new(&cfg).unwrap();
    let mut conn = db.pool.acquire().await.unwrap();
    let (a, b, c) = (
        outbox_at("t", "a", 1),
        outbox_at("t", "b", 2),
        outbox_at("t", "c", 3),
    );
    store
        .insert_many(&mut conn, &[a.clone(), b.clone(), c.clone()])
        .await
        .unwrap();
    // One counted failure each for a and b, so a completion must keep attempts, last_error
    // and the schedule.
    let w = worker("w");
    let got = store
        .claim(&mut conn, &ClaimRequest::new(w.clone(), 10))
        .await
        .unwrap();
    let fails: Vec<_> = got
        .iter()
        .filter(|e| e.id() != c.id())
        .map(|e| settlement(e, fail("boom")))
        .collect();
    let keep_c = got.iter().find(|e| e.id() == c.id()).unwrap();
    let mut all = fails.clone();
    all.push(settlement(keep_c, Settle::Release));
    let r = store.settle(&mut conn, &w, &all).await.unwrap();
    assert_eq!(r.retrying.len(), 2);
    assert_eq!(r.released, vec![c.id()]);
    let got = store
        .claim(&mut conn, &ClaimRequest::new(w.clone(), 10))
        .await
        .unwrap();
    assert_eq!(got.len(), 3);
    let find = |id: Uuid| got.iter().find(|e| e.id() == id).unwrap();
    let before_a = stored(&db, a.id()).await;
    let before_b = stored(&db, b.id()).await;

    // a alone: every settlement completes (the fast path); a stale lease beside it is
    // reported lost.
    let stale = Settlement {
        id: c.id(),
        lease: find(c.id()).common().locked_at.unwrap() - TimeDelta::milliseconds(1),
        action: Settle::Complete,
    };
    let r = store
        .settle(
            &mut conn,
            &w,
            &[settlement(find(a.id()), Settle::Complete), stale],
        )
        .await
        .unwrap();
    assert_eq!(r.completed, vec![a.id()]);
    assert_eq!(r.lease_lost, vec![c.id()]);
    assert!(r.retrying.is_empty() && r.dead_lettered.is_empty() && r.released.is_empty());
    // b with a release beside it: the general statement.
    let r = store
        .settle(
            &mut conn,
            &w,
            &[
                settlement(find(b.id()), Settle::Complete),
                settlement(find(c.id()), Settle::Release),
            ],
        )
        .await
        .unwrap();
    assert_eq!(r.completed, vec![b.id()]);
    assert_eq!(r.released, vec![c.id()]);

    let (after_a, after_b) = (stored(&db, a.id()).await, stored(&db, b.id()).await);
    for (before, after) in [(&before_a, &after_a), (&before_b, &after_b)] {
        assert_eq!(after.status, "completed");
        assert_eq!(after.attempts_made, 1);
        assert_eq!(after.last_error.as_deref(), Some("boom"));
        assert_eq!(after.scheduled_at, before.scheduled_at);
        assert_eq!(after.created_at, before.created_at);
        assert!(after.locked_at.is_none() && after.locked_by.is_none());
        let done = after.completed_at.unwrap();
        assert!(done >= after.created_at && done >= after.scheduled_at);
        assert!(after.updated_at.unwrap() > before.updated_at.unwrap());
    }
    // Settling a completed event again is a lost lease on both paths.
    let again = store
        .settle(&mut conn, &w, &[settlement(find(a.id()), Settle::Complete)])
        .await
        .unwrap();
    assert_eq!(again.lease_lost, vec![a.id()]);
    assert!(again.completed.is_empty());
}

#[tokio::test]
async fn delete_mode_deletes_completions_on_both_settle_paths() {
    let (db, cfg) = TestDb::migrated(false).await;
    let store = PgOutboxStore::new(&cfg.completion(CompletionMode::Delete)).unwrap();
    let mut conn = db.pool.acquire().await.unwrap();
    let events = [
        outbox_at("t", "a", 1),
        outbox_at("t", "b", 2),
        outbox_at("t", "c", 3),
    ];
    store.insert_many(&mut conn, &events).await.unwrap();
    let w = worker("w");
    let got = store
        .claim(&mut conn, &ClaimRequest::new(w.clone(), 10))
        .await
        .unwrap();
    assert_eq!(got.len(), 3);
    // Mixed: one completion (deleted), one counted failure (kept, retrying).
    let r = store
        .settle(
            &mut conn,
            &w,
            &[
                settlement(&got[0], Settle::Complete),
                settlement(&got[1], fail("boom")),
            ],
        )
        .await
        .unwrap();
    assert_eq!(r.completed, vec![got[0].id()]);
    assert_eq!(r.retrying, vec![got[1].id()]);
    // All complete: deleted too.
    let r = store
        .settle(&mut conn, &w, &[settlement(&got[2], Settle::Complete)])
        .await
        .unwrap();
    assert_eq!(r.completed, vec![got[2].id()]);
    let left: Vec<Uuid> = sqlx::query_scalar(AssertSqlSafe(format!(
        "SELECT id FROM \"{}\".outbox_events",
        db.schema
    )))
    .fetch_all(&mut *conn)
    .await
    .unwrap();
    assert_eq!(left, vec![got[1].id()]);
    let s = stored(&db, got[1].id()).await;
    assert_eq!((s.status.as_str(), s.attempts_made), ("pending", 1));
}

/// What one settlement of kind `i % 6` must leave behind, whatever the batch size.
#[derive(Debug, PartialEq)]
struct Outcome {
    reported: &'static str,
    status: String,
    attempts_made: i32,
    last_error: Option<String>,
    locked: bool,
    rescheduled: bool,
    dead_letters: i64,
}

/// Settle `n` freshly claimed events with a mix of every action (and a stale lease) in one
/// call, on `conn`, and return each event's outcome in input order.
async fn mixed_settle(
    db: &TestDb,
    store: &PgOutboxStore,
    conn: &mut sqlx::PgConnection,
    n: usize,
) -> Vec<Outcome> {
    let retry_at = Utc::now() + TimeDelta::minutes(5);
    // A topic of its own, so earlier calls' retrying and released events stay out.
    let topic = format!("t{}", Uuid::new_v4().simple());
    let events: Vec<OutboxEvent> = (0..n)
        .map(|i| {
            let at = Utc::now() - TimeDelta::seconds(10) + TimeDelta::milliseconds(i as i64);
            let b = OutboxEvent::builder("o", Uuid::now_v7(), "e", topic.as_str(), format!("k{i}"))
                .payload(serde_json::json!({ "i": i }))
                .created_at(at)
                .scheduled_at(at);
            // Kind 5 has one attempt only: its counted failure is dead-lettered.
            if i % 6 == 5 { b.max_attempts(1) } else { b }
                .build()
                .unwrap()
        })
        .collect();
    store.insert_many(&mut *conn, &events).await.unwrap();
    let w = worker("w");
    let req = ClaimRequest::new(w.clone(), n as u32).filters(Filters::none().topics([&topic]));
    let got = store.claim(&mut *conn, &req).await.unwrap();
    assert_eq!(got.len(), n);
    let by_id = |id: Uuid| got.iter().find(|e| e.id() == id).unwrap();
    let settlements: Vec<Settlement> = events
        .iter()
        .enumerate()
        .map(|(i, e)| {
            let e = by_id(e.id());
            match i % 6 {
                0 => settlement(e, Settle::Complete),
                1 => settlement(e, fail("counted")),
                2 => settlement(
                    e,
                    Settle::Fail {
                        error: "not counted".into(),
                        counted: false,
                        retry_at: Some(retry_at),
                    },
                ),
                3 => settlement(e, Settle::Release),
                4 => Settlement {
                    id: e.id(),
                    lease: e.common().locked_at.unwrap() - TimeDelta::milliseconds(1),
                    action: Settle::Complete,
                },
                _ => settlement(e, fail("last")),
            }
        })
        .collect();
    let r = store.settle(&mut *conn, &w, &settlements).await.unwrap();
    let mut out = Vec::with_capacity(n);
    for e in &events {
        let id = e.id();
        let reported = [
            ("completed", &r.completed),
            ("retrying", &r.retrying),
            ("released", &r.released),
            ("dead_lettered", &r.dead_lettered),
            ("lease_lost", &r.lease_lost),
        ]
        .into_iter()
        .filter(|(_, ids)| ids.contains(&id))
        .map(|(name, _)| name)
        .collect::<Vec<_>>();
        assert_eq!(reported.len(), 1, "{id} reported {reported:?}");
        let s = stored(db, id).await;
        let dead_letters: i64 = sqlx::query_scalar(AssertSqlSafe(format!(
            "SELECT count(*) FROM \"{}\".outbox_events_dead_letters WHERE event_id = $1",
            db.schema
        )))
        .bind(id)
        .fetch_one(&mut *conn)
        .await
        .unwrap();
        out.push(Outcome {
            reported: reported[0],
            status: s.status,
            attempts_made: s.attempts_made,
            last_error: s.last_error,
            locked: s.locked_at.is_some() || s.locked_by.is_some(),
            // PostgreSQL keeps microseconds: compare at that precision, or an event whose
            // nanoseconds happen to be a whole microsecond looks different from the rest.
            rescheduled: s.scheduled_at.trunc_subsecs(6)
                != e.common().scheduled_at.trunc_subsecs(6),
            dead_letters,
        });
    }
    out
}

/// Whether a statement containing `fragment` is prepared on `conn`.
async fn prepared(conn: &mut sqlx::PgConnection, fragment: &str) -> bool {
    sqlx::query_scalar(
        "SELECT EXISTS (SELECT 1 FROM pg_prepared_statements WHERE strpos(statement, $1) > 0)",
    )
    .persistent(false)
    .bind(fragment)
    .fetch_one(&mut *conn)
    .await
    .unwrap()
}

#[tokio::test]
async fn small_settles_use_the_cached_statement_and_behave_like_large_ones() {
    let (db, cfg) = TestDb::migrated(false).await;
    let store = PgOutboxStore::new(&cfg).unwrap();
    let mut conn = db.pool.acquire().await.unwrap();
    // Exercise the generic plan a cached statement ends up with.
    sqlx::query("SET plan_cache_mode = force_generic_plan")
        .execute(&mut *conn)
        .await
        .unwrap();
    let settle_sql = "$3::text[], $4::text[], $5::bool[]";
    let complete_sql = "SET status = 'completed', completed_at";

    // Large batches first: planned per call, never left prepared.
    let large = mixed_settle(&db, &store, &mut conn, 17).await;
    let larger = mixed_settle(&db, &store, &mut conn, 60).await;
    assert!(!prepared(&mut conn, settle_sql).await);
    // Then small ones, repeated past the point where PostgreSQL switches to a generic plan.
    let mut small = Vec::new();
    for _ in 0..7 {
        small.push(mixed_settle(&db, &store, &mut conn, 6).await);
    }
    assert!(prepared(&mut conn, settle_sql).await);
    let boundary = mixed_settle(&db, &store, &mut conn, 16).await;

    let kind = |i: usize| i % 6;
    let reference: Vec<&Outcome> = (0..6).map(|k| &large[k]).collect();
    assert_eq!(reference[0].reported, "completed");
    assert_eq!(reference[1].reported, "retrying");
    assert_eq!(reference[2].reported, "retrying");
    assert!(reference[2].rescheduled && reference[2].attempts_made == 0);
    assert_eq!(reference[3].reported, "released");
    assert_eq!(reference[4].reported, "lease_lost");
    assert!(reference[4].locked);
    assert_eq!(reference[5].reported, "dead_lettered");
    assert_eq!(
        (reference[5].status.as_str(), reference[5].dead_letters),
        ("failed", 1)
    );
    for (name, run) in std::iter::once(("17", &large))
        .chain(std::iter::once(("60", &larger)))
        .chain(std::iter::once(("16", &boundary)))
        .chain(small.iter().map(|s| ("6", s)))
    {
        for (i, o) in run.iter().enumerate() {
            assert_eq!(o, reference[kind(i)], "batch of {name}, settlement {i}");
        }
    }

    // The all-complete statement: same split, same result.
    let all_complete = |n: usize| {
        let (db, store) = (&db, &store);
        async move {
            let mut conn = db.pool.acquire().await.unwrap();
            let topic = format!("c{}", Uuid::new_v4().simple());
            let events: Vec<_> = (0..n)
                .map(|i| outbox_at(&topic, &format!("c{i}"), i as i64))
                .collect();
            store.insert_many(&mut conn, &events).await.unwrap();
            let w = worker("w");
            let req =
                ClaimRequest::new(w.clone(), n as u32).filters(Filters::none().topics([&topic]));
            let got = store.claim(&mut conn, &req).await.unwrap();
            assert_eq!(got.len(), n);
            let s: Vec<_> = got
                .iter()
                .map(|e| settlement(e, Settle::Complete))
                .collect();
            let r = store.settle(&mut conn, &w, &s).await.unwrap();
            let now_prepared = prepared(&mut conn, complete_sql).await;
            let mut ids: Vec<_> = events.iter().map(|e| e.id()).collect();
            let mut done = r.completed.clone();
            ids.sort();
            done.sort();
            assert_eq!(done, ids);
            assert!(r.lease_lost.is_empty());
            for id in ids {
                assert_eq!(stored(db, id).await.status, "completed");
            }
            now_prepared
        }
    };
    // No connection has run the all-complete statement yet: the large call leaves it
    // unprepared, the small one prepares it.
    assert!(!all_complete(40).await);
    assert!(all_complete(1).await);
}

//! omnibox-postgres against a real PostgreSQL (DATABASE_URL).
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests and benches may panic

mod common;

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use chrono::TimeDelta;
use common::{TestDb, inbox, outbox, outbox_at};
use omnibox_core::domain::lease_expired_error;
use omnibox_core::model::{Event, WorkerId};
use omnibox_core::store::*;
use omnibox_core::wake::{Wakeup, Woken};
use omnibox_postgres::*;
use sqlx::{AssertSqlSafe, Row};
use uuid::Uuid;

fn worker(n: &str) -> WorkerId {
    WorkerId::new(n).unwrap()
}

fn complete(events: &[impl Event]) -> Vec<Settlement> {
    events
        .iter()
        .map(|e| Settlement {
            id: e.id(),
            lease: e.common().locked_at.unwrap(),
            action: Settle::Complete,
        })
        .collect()
}

async fn status_of(db: &TestDb, table: &str, id: Uuid) -> (String, i32, Option<String>) {
    let row = sqlx::query(AssertSqlSafe(format!(
        "SELECT status, attempts_made, last_error FROM \"{}\".\"{table}\" WHERE id = $1",
        db.schema
    )))
    .bind(id)
    .fetch_one(&db.pool)
    .await
    .unwrap();
    (row.get(0), row.get(1), row.get(2))
}

#[tokio::test]
async fn migrate_is_idempotent_and_keeps_its_own_history() {
    let db = TestDb::new().await;
    let cfg = db.config();
    let first = migrate(&db.pool, &cfg).await.unwrap();
    let versions: Vec<_> = first
        .iter()
        .map(|m| (m.table.as_str(), m.version))
        .collect();
    assert_eq!(
        versions,
        [
            ("outbox_events", 1),
            ("outbox_events", 2),
            ("inbox_events", 1),
            ("inbox_events", 2),
            ("outbox_events", 3),
            ("inbox_events", 3),
            ("outbox_events", 4),
            ("inbox_events", 4),
        ]
    );
    assert!(migrate(&db.pool, &cfg).await.unwrap().is_empty());
    let rows: Vec<(String,)> = sqlx::query_as(
        "SELECT table_name::text FROM information_schema.tables WHERE table_schema = $1 ORDER BY 1",
    )
    .bind(&db.schema)
    .fetch_all(&db.pool)
    .await
    .unwrap();
    let names: Vec<_> = rows.into_iter().map(|r| r.0).collect();
    assert_eq!(
        names,
        [
            "inbox_events",
            "inbox_events_dead_letters",
            "omnibox_migrations",
            "outbox_events",
            "outbox_events_dead_letters"
        ]
    );
    assert!(!names.iter().any(|n| n == "_sqlx_migrations"));
}

#[tokio::test]
async fn hostile_names_are_typed_errors_not_sql() {
    let db = TestDb::new().await;
    let cfg = db.config().outbox_table("x; DROP TABLE y");
    assert!(matches!(
        migrate(&db.pool, &cfg).await,
        Err(StoreError::InvalidIdentifier { .. })
    ));
    assert!(matches!(
        PgOutboxStore::new(&cfg),
        Err(StoreError::InvalidIdentifier { .. })
    ));
}

/// `(index name, definition)` of the claim indexes in `schema`.
async fn claim_indexes(pool: &sqlx::PgPool, schema: &str) -> Vec<(String, String)> {
    sqlx::query_as(
        "SELECT indexname::text, indexdef FROM pg_indexes WHERE schemaname = $1 \
         AND (indexname LIKE '%pending_fetch' OR indexname LIKE '%pending_key_order') ORDER BY 1",
    )
    .bind(schema)
    .fetch_all(pool)
    .await
    .unwrap()
}

#[tokio::test]
async fn migrate_upgrades_a_v2_database_to_v3_claim_indexes_under_the_same_names() {
    for partitioned in [false, true] {
        let db = TestDb::new().await;
        let cfg = db.config().partitioned(partitioned);
        // Reproduce a database migrated by the previous release: v1 and v2 only, with
        // their history rows.
        let all = migration_sql(&cfg).unwrap();
        let hist = format!("\"{}\".omnibox_migrations", db.schema);
        sqlx::raw_sql(AssertSqlSafe(format!(
            "CREATE TABLE {hist} (table_name VARCHAR(63) NOT NULL, version INTEGER NOT NULL, \
             description TEXT NOT NULL, applied_at TIMESTAMP WITH TIME ZONE NOT NULL DEFAULT now(), \
             PRIMARY KEY (table_name, version))"
        )))
        .execute(&db.pool)
        .await
        .unwrap();
        for m in all.iter().filter(|m| m.version < 3) {
            sqlx::raw_sql(AssertSqlSafe(m.sql.clone()))
                .execute(&db.pool)
                .await
                .unwrap();
            sqlx::query(AssertSqlSafe(format!(
                "INSERT INTO {hist} (table_name, version, description) VALUES ($1, $2, $3)"
            )))
            .bind(&m.table)
            .bind(m.version)
            .bind(m.description)
            .execute(&db.pool)
            .await
            .unwrap();
        }
        let before = claim_indexes(&db.pool, &db.schema).await;
        assert!(
            before.iter().all(|(_, def)| !def.contains(", id)")),
            "{before:?}"
        );
        // Rows written before the upgrade stay claimable in order through the new indexes.
        let store = PgOutboxStore::new(&cfg).unwrap();
        let mut conn = db.pool.acquire().await.unwrap();
        let events: Vec<_> = (0..3).map(|n| outbox_at("t", "k", n)).collect();
        store.insert_many(&mut conn, &events).await.unwrap();

        let applied = migrate(&db.pool, &cfg).await.unwrap();
        let versions: Vec<_> = applied.iter().map(|m| m.version).collect();
        assert_eq!(versions, [3, 3, 4, 4], "partitioned={partitioned}");
        assert!(migrate(&db.pool, &cfg).await.unwrap().is_empty());

        let after = claim_indexes(&db.pool, &db.schema).await;
        let names = |v: &[(String, String)]| v.iter().map(|i| i.0.clone()).collect::<Vec<_>>();
        assert_eq!(names(&before), names(&after), "same index names");
        assert_eq!(after.len(), 3, "{after:?}");
        for (name, def) in &after {
            let cols = if name.ends_with("pending_key_order") {
                "(topic, partition_key, created_at, id) WHERE ((status)::text = 'pending'::text)"
            } else {
                "(scheduled_at, created_at, id) WHERE (((status)::text = 'pending'::text) \
                 AND (locked_at IS NULL) AND (attempts_made < max_attempts))"
            };
            assert!(def.ends_with(cols), "{name}: {def}");
        }
        let req = ClaimRequest::new(worker("w"), 10);
        let claimed = store.claim(&mut conn, &req).await.unwrap();
        assert_eq!(claimed.len(), 1, "only the head of the key's line");
        assert_eq!(claimed[0].id(), events[0].id());
    }
}

#[test]
fn only_plain_inbox_tables_rule_out_siblings_by_their_unique_index() {
    let plain = PgInboxStore::new(&PgStoreConfig::new()).unwrap();
    let partitioned = PgInboxStore::new(&PgStoreConfig::new().partitioned(true)).unwrap();
    assert!(plain.dedup_key_is_unique());
    assert!(!partitioned.dedup_key_is_unique());
}

#[test]
fn shipped_migration_files_match_what_migrate_applies() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("migrations");
    for (sub, partitioned) in [("", false), ("partitioned", true)] {
        let migrations = migration_sql(&PgStoreConfig::new().partitioned(partitioned)).unwrap();
        for (i, m) in migrations.iter().enumerate() {
            let name = format!("{:04}_{}_v{}.sql", i + 1, m.table, m.version);
            let path = dir.join(sub).join(name);
            let body = format!(
                "-- omnibox: {} (table {}, version {})\n{}",
                m.description, m.table, m.version, m.sql
            );
            if std::env::var_os("OMNIBOX_BLESS_MIGRATIONS").is_some() {
                std::fs::create_dir_all(path.parent().unwrap()).unwrap();
                std::fs::write(&path, &body).unwrap();
            }
            let shipped = std::fs::read_to_string(&path)
                .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            assert_eq!(shipped, body, "{} is out of date", path.display());
        }
    }
}

#[tokio::test]
async fn rollback_removes_business_row_and_event_and_commit_keeps_both() {
    let (db, cfg) = TestDb::migrated(false).await;
    let store = PgOutboxStore::new(&cfg).unwrap();
    let biz = format!("\"{}\".orders", db.schema);
    sqlx::raw_sql(AssertSqlSafe(format!(
        "CREATE TABLE {biz} (id uuid primary key)"
    )))
    .execute(&db.pool)
    .await
    .unwrap();
    for commit in [false, true] {
        let mut tx = db.pool.begin().await.unwrap();
        let id = Uuid::now_v7();
        sqlx::query(AssertSqlSafe(format!("INSERT INTO {biz} VALUES ($1)")))
            .bind(id)
            .execute(&mut *tx)
            .await
            .unwrap();
        let ev = outbox("orders", &id.to_string());
        assert!(!store.enqueue(&mut tx, &ev).await.unwrap().is_duplicate());
        if commit {
            tx.commit().await.unwrap();
        } else {
            tx.rollback().await.unwrap();
        }
        let n: i64 = sqlx::query_scalar(AssertSqlSafe(format!(
            "SELECT (SELECT count(*) FROM {biz} WHERE id = $1) + (SELECT count(*) FROM \"{}\".outbox_events WHERE id = $2)",
            db.schema
        )))
        .bind(id)
        .bind(ev.id())
        .fetch_one(&db.pool)
        .await
        .unwrap();
        assert_eq!(n, if commit { 2 } else { 0 });
    }
}

#[tokio::test]
async fn duplicate_key_is_reported_and_does_not_abort_the_transaction() {
    for partitioned in [false, true] {
        let (db, cfg) = TestDb::migrated(partitioned).await;
        let store = PgOutboxStore::new(&cfg).unwrap();
        let inbox_store = PgInboxStore::new(&cfg).unwrap();
        let mut tx = db.pool.begin().await.unwrap();
        let mk = |key: &str| {
            omnibox_core::model::OutboxEvent::builder("o", Uuid::now_v7(), "t", "topic", "k")
                .payload(serde_json::json!({"a": 1}))
                .idempotency_key(key)
                .build()
                .unwrap()
        };
        let a = mk("key-1");
        let first = store.enqueue(&mut tx, &a).await.unwrap();
        assert!(!first.is_duplicate());
        // Same key, different created_at (another partition in the partitioned layout).
        let b = omnibox_core::model::OutboxEvent::builder("o", Uuid::now_v7(), "t", "topic", "k")
            .payload(serde_json::json!({"a": 2}))
            .idempotency_key("key-1")
            .created_at(chrono::Utc::now() - TimeDelta::days(3))
            .scheduled_at(chrono::Utc::now() - TimeDelta::days(3))
            .build()
            .unwrap();
        match store.enqueue(&mut tx, &b).await.unwrap() {
            Inserted::Duplicate(e) => assert_eq!(e.id(), a.id()),
            other => panic!("expected duplicate, got {other:?}"),
        }
        // Batch: new, in-batch duplicate, existing duplicate; results in input order.
        let c = mk("key-2");
        let c2 = mk("key-2");
        let res = store
            .insert_many(&mut tx, &[c.clone(), c2, a.clone()])
            .await
            .unwrap();
        assert!(matches!(&res[0], Inserted::New(e) if e.id() == c.id()));
        assert!(matches!(&res[1], Inserted::Duplicate(e) if e.id() == c.id()));
        assert!(matches!(&res[2], Inserted::Duplicate(e) if e.id() == a.id()));
        // Inbox dedup on (message_id, consumer_group).
        let m1 = inbox("m-1");
        assert!(
            !inbox_store
                .insert(&mut tx, &m1)
                .await
                .unwrap()
                .is_duplicate()
        );
        let dup = inbox_store.insert(&mut tx, &inbox("m-1")).await.unwrap();
        assert!(matches!(dup, Inserted::Duplicate(e) if e.id() == m1.id()));
        // The transaction is still usable and commits everything.
        sqlx::query("SELECT 1").execute(&mut *tx).await.unwrap();
        tx.commit().await.unwrap();
        let mut conn = db.pool.acquire().await.unwrap();
        assert_eq!(store.backlog(&mut conn).await.unwrap().pending, 2);
    }
}

#[tokio::test]
async fn concurrent_workers_never_hold_the_same_row() {
    let (db, cfg) = TestDb::migrated(false).await;
    let store = PgOutboxStore::new(&cfg).unwrap();
    let events: Vec<_> = (0..300).map(|i| outbox("t", &format!("k{i}"))).collect();
    let mut conn = db.pool.acquire().await.unwrap();
    store.insert_many(&mut conn, &events).await.unwrap();
    drop(conn);
    let seen = Arc::new(std::sync::Mutex::new(Vec::new()));
    let mut tasks = Vec::new();
    for w in 0..6 {
        let (pool, store, seen) = (db.pool.clone(), store.clone(), seen.clone());
        tasks.push(tokio::spawn(async move {
            let me = worker(&format!("w{w}"));
            loop {
                let mut tx = pool.begin().await.unwrap();
                let batch = store
                    .claim(&mut tx, &ClaimRequest::new(me.clone(), 7))
                    .await
                    .unwrap();
                tx.commit().await.unwrap();
                if batch.is_empty() {
                    break;
                }
                seen.lock().unwrap().extend(batch.iter().map(|e| e.id()));
                let mut tx = pool.begin().await.unwrap();
                let r = store.settle(&mut tx, &me, &complete(&batch)).await.unwrap();
                assert_eq!(r.completed.len(), batch.len());
                tx.commit().await.unwrap();
            }
        }));
    }
    for t in tasks {
        tokio::time::timeout(Duration::from_secs(120), t)
            .await
            .unwrap()
            .unwrap();
    }
    let seen = seen.lock().unwrap();
    let unique: HashSet<_> = seen.iter().collect();
    assert_eq!(seen.len(), 300, "every row claimed exactly once");
    assert_eq!(unique.len(), 300);
}

#[tokio::test]
async fn a_worker_whose_connection_dies_loses_its_locks() {
    let (db, cfg) = TestDb::migrated(false).await;
    let store = PgOutboxStore::new(&cfg).unwrap();
    let events: Vec<_> = (0..5).map(|i| outbox("t", &format!("k{i}"))).collect();
    store
        .insert_many(&mut db.pool.acquire().await.unwrap(), &events)
        .await
        .unwrap();
    let mut doomed = db.pool.begin().await.unwrap();
    let pid: i32 = sqlx::query_scalar("SELECT pg_backend_pid()")
        .fetch_one(&mut *doomed)
        .await
        .unwrap();
    let got = store
        .claim(&mut doomed, &ClaimRequest::new(worker("a"), 5))
        .await
        .unwrap();
    assert_eq!(got.len(), 5);
    // While A's transaction is open, B sees nothing claimable.
    let mut tx = db.pool.begin().await.unwrap();
    assert!(
        store
            .claim(&mut tx, &ClaimRequest::new(worker("b"), 5))
            .await
            .unwrap()
            .is_empty()
    );
    tx.rollback().await.unwrap();
    let killed: bool = sqlx::query_scalar("SELECT pg_terminate_backend($1)")
        .bind(pid)
        .fetch_one(&db.pool)
        .await
        .unwrap();
    assert!(killed);
    let err = sqlx::query("SELECT 1").execute(&mut *doomed).await;
    assert!(err.is_err());
    drop(doomed);
    let mut tx = db.pool.begin().await.unwrap();
    let got = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            let got = store
                .claim(&mut tx, &ClaimRequest::new(worker("b"), 5))
                .await
                .unwrap();
            if !got.is_empty() {
                break got;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .unwrap();
    assert_eq!(got.len(), 5);
    assert!(got.iter().all(|e| e.common().attempts_made == 0));
}

#[tokio::test]
async fn stale_leases_are_recovered_and_count_an_attempt() {
    let (db, cfg) = TestDb::migrated(false).await;
    let store = PgOutboxStore::new(&cfg).unwrap();
    let mut conn = db.pool.acquire().await.unwrap();
    let e1 = outbox("t", "k1");
    let e2 = omnibox_core::model::OutboxEvent::builder("o", Uuid::now_v7(), "t", "t", "k2")
        .payload(serde_json::json!({"a": 1}))
        .max_attempts(1)
        .build()
        .unwrap();
    store
        .insert_many(&mut conn, &[e1.clone(), e2.clone()])
        .await
        .unwrap();
    let got = store
        .claim(&mut conn, &ClaimRequest::new(worker("dead"), 10))
        .await
        .unwrap();
    assert_eq!(got.len(), 2);
    tokio::time::sleep(Duration::from_millis(5)).await;
    let r = store
        .release_stale(&mut conn, TimeDelta::milliseconds(1), 100)
        .await
        .unwrap();
    assert_eq!((r.released, r.failed), (1, 1));
    let (st, attempts, err) = status_of(&db, "outbox_events", e1.id()).await;
    assert_eq!((st.as_str(), attempts), ("pending", 1));
    assert_eq!(err.unwrap(), lease_expired_error("dead"));
    assert_eq!(status_of(&db, "outbox_events", e2.id()).await.0, "failed");
    let letters = store.list_dead_letters(&mut conn, 10, 0).await.unwrap();
    assert_eq!(letters.len(), 1);
    assert_eq!(letters[0].event_id, Some(e2.id()));
    // Claim-time takeover of an expired lease counts too, and the new owner gets it.
    let got = store
        .claim(&mut conn, &ClaimRequest::new(worker("a"), 10))
        .await
        .unwrap();
    assert_eq!(got.len(), 1);
    tokio::time::sleep(Duration::from_millis(5)).await;
    let req = ClaimRequest::new(worker("b"), 10).lease_ttl(TimeDelta::milliseconds(1));
    let taken = store.claim(&mut conn, &req).await.unwrap();
    assert_eq!(taken.len(), 1);
    assert_eq!(taken[0].common().attempts_made, 2);
    assert_eq!(taken[0].common().locked_by.as_deref(), Some("b"));
    // The old owner's settlement is fenced off.
    let r = store
        .settle(&mut conn, &worker("a"), &complete(&got))
        .await
        .unwrap();
    assert_eq!(r.lease_lost, vec![e1.id()]);
    let r = store
        .settle(&mut conn, &worker("b"), &complete(&taken))
        .await
        .unwrap();
    assert_eq!(r.completed, vec![e1.id()]);
}

#[tokio::test]
async fn per_key_order_holds_under_concurrent_workers() {
    let (db, cfg) = TestDb::migrated(false).await;
    let store = PgOutboxStore::new(&cfg).unwrap();
    let mut events = Vec::new();
    for i in 0..30 {
        for k in 0..4 {
            events.push(outbox_at("t", &format!("key{k}"), i * 4 + k));
        }
    }
    store
        .insert_many(&mut db.pool.acquire().await.unwrap(), &events)
        .await
        .unwrap();
    let mut tasks = Vec::new();
    for w in 0..4 {
        let (pool, store) = (db.pool.clone(), store.clone());
        tasks.push(tokio::spawn(async move {
            let me = worker(&format!("w{w}"));
            let mut idle = 0;
            while idle < 20 {
                let mut tx = pool.begin().await.unwrap();
                let batch = store
                    .claim(&mut tx, &ClaimRequest::new(me.clone(), 10))
                    .await
                    .unwrap();
                tx.commit().await.unwrap();
                let keys: HashSet<_> = batch.iter().map(|e| e.partition_key.clone()).collect();
                assert_eq!(
                    keys.len(),
                    batch.len(),
                    "at most one event per key in a batch"
                );
                if batch.is_empty() {
                    idle += 1;
                    tokio::time::sleep(Duration::from_millis(5)).await;
                    continue;
                }
                idle = 0;
                let mut tx = pool.begin().await.unwrap();
                store.settle(&mut tx, &me, &complete(&batch)).await.unwrap();
                tx.commit().await.unwrap();
            }
        }));
    }
    for t in tasks {
        tokio::time::timeout(Duration::from_secs(120), t)
            .await
            .unwrap()
            .unwrap();
    }
    let rows = sqlx::query(AssertSqlSafe(format!(
        "SELECT partition_key, completed_at FROM \"{}\".outbox_events WHERE status = 'completed' ORDER BY partition_key, created_at, id",
        db.schema
    )))
    .fetch_all(&db.pool)
    .await
    .unwrap();
    assert_eq!(rows.len(), 120);
    let mut last: HashMap<String, chrono::DateTime<chrono::Utc>> = HashMap::new();
    for r in rows {
        let key: String = r.get(0);
        let at: chrono::DateTime<chrono::Utc> = r.get(1);
        if let Some(prev) = last.insert(key.clone(), at) {
            assert!(at > prev, "key {key} completed out of order");
        }
    }
}

#[tokio::test]
async fn terminal_failures_are_dead_lettered_grouped_replayed_and_discarded() {
    let (db, cfg) = TestDb::migrated(false).await;
    let store = PgOutboxStore::new(&cfg).unwrap();
    let mut conn = db.pool.acquire().await.unwrap();
    let mk = || {
        omnibox_core::model::OutboxEvent::builder(
            "o",
            Uuid::now_v7(),
            "t",
            "t",
            Uuid::now_v7().to_string(),
        )
        .payload(serde_json::json!({"a": 1}))
        .max_attempts(2)
        .build()
        .unwrap()
    };
    let events: Vec<_> = (0..3).map(|_| mk()).collect();
    store.insert_many(&mut conn, &events).await.unwrap();
    let me = worker("w");
    for round in 0..2 {
        let got = store
            .claim(&mut conn, &ClaimRequest::new(me.clone(), 10))
            .await
            .unwrap();
        assert_eq!(got.len(), 3);
        let s: Vec<_> = got
            .iter()
            .enumerate()
            .map(|(i, e)| Settlement {
                id: e.id(),
                lease: e.common().locked_at.unwrap(),
                action: Settle::Fail {
                    error: format!(
                        "broker said no to order {}",
                        1000 + i * (i % 2 + 1) * 7 + round
                    ),
                    counted: true,
                    retry_at: None,
                },
            })
            .collect();
        let r = store.settle(&mut conn, &me, &s).await.unwrap();
        if round == 0 {
            assert_eq!(r.retrying.len(), 3);
        } else {
            assert_eq!(r.dead_lettered.len(), 3);
        }
    }
    let groups = store.dead_letter_groups(&mut conn).await.unwrap();
    assert_eq!(groups.len(), 1, "numbers are masked in the fingerprint");
    assert_eq!(groups[0].count, 3);
    let letters = store.list_dead_letters(&mut conn, 10, 0).await.unwrap();
    let one = letters[0].id;
    let r = store
        .replay_dead_letters(&mut conn, &DeadLetterSelector::Ids(vec![one]))
        .await
        .unwrap();
    assert_eq!((r.replayed, r.skipped), (1, 0));
    let b = store.backlog(&mut conn).await.unwrap();
    assert_eq!((b.pending, b.failed, b.dead_letters), (1, 2, 2));
    let r = store
        .replay_dead_letters(
            &mut conn,
            &DeadLetterSelector::Fingerprint(groups[0].fingerprint.clone()),
        )
        .await
        .unwrap();
    assert_eq!(r.replayed, 2);
    // Discard: fail one terminally again, then discard its letter.
    let got = store
        .claim(&mut conn, &ClaimRequest::new(me.clone(), 1))
        .await
        .unwrap();
    let s = vec![Settlement {
        id: got[0].id(),
        lease: got[0].common().locked_at.unwrap(),
        action: Settle::Fail {
            error: "x".into(),
            counted: true,
            retry_at: None,
        },
    }];
    store.settle(&mut conn, &me, &s).await.unwrap();
    let got = store
        .claim(&mut conn, &ClaimRequest::new(me.clone(), 3))
        .await
        .unwrap();
    let s: Vec<_> = got
        .iter()
        .map(|e| Settlement {
            id: e.id(),
            lease: e.common().locked_at.unwrap(),
            action: Settle::Fail {
                error: "y".into(),
                counted: true,
                retry_at: None,
            },
        })
        .collect();
    store.settle(&mut conn, &me, &s).await.unwrap();
    assert!(store.backlog(&mut conn).await.unwrap().dead_letters >= 1);
    let n = store
        .discard_dead_letters(&mut conn, &DeadLetterSelector::All)
        .await
        .unwrap();
    assert!(n >= 1);
    assert_eq!(store.backlog(&mut conn).await.unwrap().dead_letters, 0);
    // requeue_failed by event id.
    let failed: Uuid = sqlx::query_scalar(AssertSqlSafe(format!(
        "SELECT id FROM \"{}\".outbox_events WHERE status = 'failed' LIMIT 1",
        db.schema
    )))
    .fetch_one(&mut *conn)
    .await
    .unwrap();
    assert!(store.requeue_failed(&mut conn, failed).await.unwrap());
    assert!(!store.requeue_failed(&mut conn, failed).await.unwrap());
}

/// `INSERT` of pending outbox rows `from..=to` into `table`, one per ms in the past, keyed by
/// the SQL expression `key` over the row number `g` (`'k' || g`: a key each).
fn pending_outbox_rows(table: &str, from: i64, to: i64, key: &str) -> String {
    format!(
        "INSERT INTO {table} (id, event_type, payload, status, attempts_made, max_attempts, scheduled_at, created_at, \
         aggregate_type, aggregate_id, topic, partition_key) \
         SELECT gen_random_uuid(), 'e', '{{\"a\":1}}', 'pending', 0, 6, now() - interval '1 hour' + g * interval '1 ms', \
         now() - interval '1 hour' + g * interval '1 ms', 'o', gen_random_uuid(), 't', {key} \
         FROM generate_series({from}, {to}) g"
    )
}

#[tokio::test]
async fn claim_plan_uses_the_pending_index_and_its_cost_stays_flat() {
    let (db, cfg) = TestDb::migrated(false).await;
    let store = PgOutboxStore::new(&cfg).unwrap();
    let table = format!("\"{}\".outbox_events", db.schema);
    let fill = |from: i64, to: i64| pending_outbox_rows(&table, from, to, "'k' || g");
    let explain = |sql: String| {
        let pool = db.pool.clone();
        let table = table.clone();
        async move {
            sqlx::query(AssertSqlSafe(format!("ANALYZE {table}")))
                .execute(&pool)
                .await
                .unwrap();
            let plan: serde_json::Value =
                sqlx::query_scalar(AssertSqlSafe(format!("EXPLAIN (FORMAT JSON) {sql}")))
                    .bind("w")
                    .bind(50_i64)
                    .bind(300_000_000_i64)
                    .bind(Vec::<String>::new())
                    .bind(Vec::<String>::new())
                    .bind(Vec::<String>::new())
                    .fetch_one(&pool)
                    .await
                    .unwrap();
            let cost = plan[0]["Plan"]["Total Cost"].as_f64().unwrap();
            (plan.to_string(), cost)
        }
    };
    // Fill to 1k, 10k, 100k and 1M rows; EXPLAIN the claim (batch 50) at each size.
    let mut costs = Vec::new();
    let mut filled = 0;
    for size in [1_000_i64, 10_000, 100_000, 1_000_000] {
        sqlx::query(AssertSqlSafe(fill(filled + 1, size)))
            .execute(&db.pool)
            .await
            .unwrap();
        filled = size;
        let (plan, cost) = explain(store.claim_sql().to_owned()).await;
        assert!(
            plan.contains("idx_outbox_events_pending_fetch"),
            "{size} rows: the claim does not use the pending index: {plan}"
        );
        // The per-key order check stays a probe per candidate: as an anti join, a plan may
        // hash every pending row of the backlog on each claim.
        assert!(
            !plan.contains("Anti Join"),
            "{size} rows: the per-key order check became a join: {plan}"
        );
        if size >= 100_000 {
            // (a tiny table may be hash-joined; a big one must not be scanned)
            assert!(
                !plan.contains("Seq Scan"),
                "{size} rows: sequential scan in {plan}"
            );
        }
        costs.push((size, cost));
    }
    println!("claim plan cost by table size: {costs:?}");
    let (c1k, c100k, c1m) = (costs[0].1, costs[2].1, costs[3].1);
    // A scan would grow ~1000x from 1k to 1M rows; index probes grow with the tree depth only.
    assert!(c1m < c1k * 8.0, "claim cost not flat: {costs:?}");
    assert!(c1m < c100k * 1.5, "claim cost not flat: {costs:?}");
}

/// Rows (and index entries) the plan's scans of `table` read: per scan node, (rows
/// returned + rows removed by filters) x loops, summed over the tree. Bitmap index scans
/// name only their index, whose name contains the table's.
fn rows_read(node: &serde_json::Value, table: &str) -> f64 {
    let mut total = 0.0;
    let on_table = node["Relation Name"].as_str() == Some(table)
        || (node["Node Type"].as_str() == Some("Bitmap Index Scan")
            && node["Index Name"]
                .as_str()
                .is_some_and(|i| i.contains(table)));
    if on_table {
        let f = |k: &str| node[k].as_f64().unwrap_or(0.0);
        total +=
            (f("Actual Rows") + f("Rows Removed by Filter") + f("Rows Removed by Index Recheck"))
                * f("Actual Loops").max(1.0);
    }
    if let Some(children) = node["Plans"].as_array() {
        total += children.iter().map(|c| rows_read(c, table)).sum::<f64>();
    }
    total
}

/// `PREPARE claim_g` on `conn`, with `plan_cache_mode = force_generic_plan` for the session:
/// the plan a prepared statement may cache after five runs, which knows nothing of the
/// values (it is made at the first `EXECUTE` and kept).
async fn prepare_generic(conn: &mut sqlx::PgConnection, sql: &str, filters: usize) {
    let types = ["text", "bigint", "bigint"]
        .into_iter()
        .chain(std::iter::repeat_n("text[]", filters))
        .collect::<Vec<_>>()
        .join(", ");
    sqlx::raw_sql(AssertSqlSafe(format!(
        "SET plan_cache_mode = force_generic_plan; PREPARE claim_g({types}) AS {sql}"
    )))
    .execute(&mut *conn)
    .await
    .unwrap();
}

/// `EXPLAIN ANALYZE EXECUTE claim_g`, rolled back.
async fn explain_prepared(
    conn: &mut sqlx::PgConnection,
    filters: usize,
    worker: &str,
    limit: i64,
) -> serde_json::Value {
    let empty = vec!["'{}'"; filters].join(", ");
    sqlx::raw_sql("BEGIN").execute(&mut *conn).await.unwrap();
    let plan = sqlx::query_scalar(AssertSqlSafe(format!(
        "EXPLAIN (ANALYZE, FORMAT JSON) EXECUTE claim_g('{worker}', {limit}, 300000000, {empty})"
    )))
    .persistent(false)
    .fetch_one(&mut *conn)
    .await
    .unwrap();
    sqlx::raw_sql("ROLLBACK").execute(&mut *conn).await.unwrap();
    plan
}

/// `EXPLAIN ANALYZE` of a claim by `worker` for `limit` events, rolled back: planned for its
/// parameters (`generic` false) or as a generic plan made now, on a connection of its own.
async fn explain_claim(
    pool: &sqlx::PgPool,
    sql: &str,
    filters: usize,
    worker: &str,
    limit: i64,
    generic: bool,
) -> serde_json::Value {
    if generic {
        let mut conn = pool.acquire().await.unwrap().detach();
        prepare_generic(&mut conn, sql, filters).await;
        let plan = explain_prepared(&mut conn, filters, worker, limit).await;
        sqlx::Connection::close(conn).await.unwrap();
        return plan;
    }
    let mut tx = pool.begin().await.unwrap();
    let mut q = sqlx::query_scalar(AssertSqlSafe(format!(
        "EXPLAIN (ANALYZE, FORMAT JSON) {sql}"
    )))
    .bind(worker.to_owned())
    .bind(limit)
    .bind(300_000_000_i64);
    for _ in 0..filters {
        q = q.bind(Vec::<String>::new());
    }
    let plan = q.fetch_one(&mut *tx).await.unwrap();
    tx.rollback().await.unwrap();
    plan
}

#[tokio::test]
async fn claim_on_a_never_analyzed_table_reads_far_fewer_rows_than_the_backlog() {
    const BACKLOG: i64 = 20_000;
    let (db, cfg) = TestDb::migrated(false).await;
    for outbox in [true, false] {
        let name = if outbox {
            "outbox_events"
        } else {
            "inbox_events"
        };
        let table = format!("\"{}\".{name}", db.schema);
        // Keep autovacuum from analyzing the table behind the test's back.
        sqlx::raw_sql(AssertSqlSafe(format!(
            "ALTER TABLE {table} SET (autovacuum_enabled = false)"
        )))
        .execute(&db.pool)
        .await
        .unwrap();
        let claim_sql = if outbox {
            PgOutboxStore::new(&cfg).unwrap().claim_sql().to_owned()
        } else {
            PgInboxStore::new(&cfg).unwrap().claim_sql().to_owned()
        };
        let filters = if outbox { 3 } else { 2 };
        // A generic plan made and cached while the table is empty (a first deployment):
        // it is kept when the table fills, and a plan for an empty table scans.
        let mut cached = db.pool.acquire().await.unwrap().detach();
        prepare_generic(&mut cached, &claim_sql, filters).await;
        let empty = explain_prepared(&mut cached, filters, "w", 50).await;
        assert_eq!(empty[0]["Plan"]["Actual Rows"].as_f64(), Some(0.0));
        let (kind_cols, kind_vals) = if outbox {
            (
                "aggregate_type, aggregate_id, topic, partition_key",
                "'o', gen_random_uuid(), 't', 'k' || (g % 5000)",
            )
        } else {
            ("message_id, consumer_group, source", "'m' || g, 'g', 's'")
        };
        sqlx::query(AssertSqlSafe(format!(
            "INSERT INTO {table} (id, event_type, payload, status, attempts_made, max_attempts, scheduled_at, created_at, {kind_cols}) \
             SELECT gen_random_uuid(), 'e', '{{\"a\":1}}', 'pending', 0, 6, now() - interval '1 hour' + g * interval '1 ms', \
             now() - interval '1 hour' + g * interval '1 ms', {kind_vals} FROM generate_series(1, {BACKLOG}) g"
        )))
        .execute(&db.pool)
        .await
        .unwrap();
        let analyzed: Option<chrono::DateTime<chrono::Utc>> = sqlx::query_scalar(
            "SELECT GREATEST(last_analyze, last_autoanalyze) FROM pg_stat_user_tables \
             WHERE schemaname = $1 AND relname = $2",
        )
        .bind(&db.schema)
        .bind(name)
        .fetch_one(&db.pool)
        .await
        .unwrap();
        assert!(analyzed.is_none(), "{name} was analyzed");
        // Planned for its parameters, as a generic plan made now, and as the one cached
        // while the table was empty.
        for generic in ["no", "made now", "cached while empty"] {
            let plan = if generic == "cached while empty" {
                explain_prepared(&mut cached, filters, "w", 50).await
            } else {
                explain_claim(&db.pool, &claim_sql, filters, "w", 50, generic != "no").await
            };
            let root = &plan[0]["Plan"];
            let read = rows_read(root, name);
            println!(
                "{name} (generic plan: {generic}): claim read {read} rows of a {BACKLOG}-row never-analyzed backlog"
            );
            assert_eq!(root["Actual Rows"].as_f64(), Some(50.0), "{plan}");
            assert!(
                read < (BACKLOG / 20) as f64,
                "{name} (generic plan: {generic}): the claim read {read} rows of {BACKLOG}: {plan}"
            );
        }
        sqlx::Connection::close(cached).await.unwrap();
    }
}

/// Loops of the scans on `index`: the per-key order probes the claim ran.
fn index_loops(node: &serde_json::Value, index: &str) -> f64 {
    let own = if node["Index Name"].as_str() == Some(index) {
        node["Actual Loops"].as_f64().unwrap_or(0.0)
    } else {
        0.0
    };
    own + node["Plans"]
        .as_array()
        .map_or(0.0, |c| c.iter().map(|n| index_loops(n, index)).sum())
}

/// Few keys, one worker holding every head: a competing claim finds nothing, and must find
/// that out without probing the order line of every pending event (before the leased-key
/// set, 4 workers drained 1k keys 3.5x slower than 1 worker did), with statistics and
/// without them.
#[tokio::test]
async fn a_claim_competing_for_leased_heads_probes_no_order_line() {
    const KEYS: i64 = 1000;
    const BACKLOG: i64 = 20_000;
    let (db, cfg) = TestDb::migrated(false).await;
    let store = PgOutboxStore::new(&cfg).unwrap();
    let table = format!("\"{}\".outbox_events", db.schema);
    sqlx::raw_sql(AssertSqlSafe(format!(
        "ALTER TABLE {table} SET (autovacuum_enabled = false); {}",
        pending_outbox_rows(&table, 1, BACKLOG, &format!("'k' || (g % {KEYS})"))
    )))
    .execute(&db.pool)
    .await
    .unwrap();
    // Worker a leases every head: one per key.
    let mut tx = db.pool.begin().await.unwrap();
    let heads = store
        .claim(&mut tx, &ClaimRequest::new(worker("a"), 5000))
        .await
        .unwrap();
    tx.commit().await.unwrap();
    assert_eq!(heads.len() as i64, KEYS, "one head per key");
    for analyzed in [false, true] {
        if analyzed {
            sqlx::query(AssertSqlSafe(format!("ANALYZE {table}")))
                .execute(&db.pool)
                .await
                .unwrap();
        }
        for generic in [false, true] {
            let plan = explain_claim(&db.pool, store.claim_sql(), 3, "b", 1000, generic).await;
            let root = &plan[0]["Plan"];
            assert_eq!(root["Actual Rows"].as_f64(), Some(0.0), "{plan}");
            let probes = index_loops(root, "idx_outbox_events_pending_key_order");
            let read = rows_read(root, "outbox_events");
            println!(
                "analyzed={analyzed} generic={generic}: {probes} order probes, {read} rows read"
            );
            assert!(
                probes < 100.0,
                "analyzed={analyzed} generic={generic}: {probes} order-line probes for {BACKLOG} pending events: {plan}"
            );
            // The walk of the pending index plus the leased keys; a scan of the table for the
            // leased keys would read the backlog a second time.
            assert!(
                read < 1.5 * BACKLOG as f64,
                "analyzed={analyzed} generic={generic}: read {read} rows: {plan}"
            );
        }
    }
    // Settle one key's head: that key's next event is claimable by b, and only it.
    let mut tx = db.pool.begin().await.unwrap();
    store
        .settle(&mut tx, &worker("a"), &complete(&heads[..1]))
        .await
        .unwrap();
    tx.commit().await.unwrap();
    let mut tx = db.pool.begin().await.unwrap();
    let next = store
        .claim(&mut tx, &ClaimRequest::new(worker("b"), 1000))
        .await
        .unwrap();
    tx.commit().await.unwrap();
    assert_eq!(next.len(), 1);
    assert_eq!(next[0].partition_key, heads[0].partition_key);
}

/// Exclusive claims (the relay's leased path) take turns per table: a second one waits for
/// the first to commit, so it sees the first one's leases; a first one that never commits
/// (a stopped relay) delays the second only for the bounded wait.
#[tokio::test]
async fn exclusive_claims_take_turns_and_the_wait_is_bounded() {
    let (db, cfg) = TestDb::migrated(false).await;
    let store = PgOutboxStore::new(&cfg).unwrap();
    let table = format!("\"{}\".outbox_events", db.schema);
    sqlx::raw_sql(AssertSqlSafe(pending_outbox_rows(
        &table,
        1,
        500,
        "'k' || (g % 100)",
    )))
    .execute(&db.pool)
    .await
    .unwrap();
    let exclusive = |w: &str| ClaimRequest::new(worker(w), 1000).exclusive(true);
    let waiting = || {
        let pool = db.pool.clone();
        async move {
            for _ in 0..500 {
                let n: i64 = sqlx::query_scalar(
                    "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted",
                )
                .fetch_one(&pool)
                .await
                .unwrap();
                if n > 0 {
                    return true;
                }
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
            false
        }
    };
    // a claims every head and has not committed yet.
    let mut a = db.pool.begin().await.unwrap();
    let heads = store.claim(&mut a, &exclusive("a")).await.unwrap();
    assert_eq!(heads.len(), 100);
    let (s, pool, req) = (store.clone(), db.pool.clone(), exclusive("b"));
    let b = tokio::spawn(async move {
        let mut tx = pool.begin().await.unwrap();
        let got = s.claim(&mut tx, &req).await.unwrap();
        tx.commit().await.unwrap();
        got
    });
    assert!(waiting().await, "b does not wait for a's claim to commit");
    assert!(!b.is_finished());
    a.commit().await.unwrap();
    assert!(b.await.unwrap().is_empty(), "every head is a's");
    // A claim without `exclusive` (a caller publishing inside the claim's transaction)
    // never waits.
    let mut held = db.pool.begin().await.unwrap();
    let _ = store.claim(&mut held, &exclusive("c")).await.unwrap();
    let mut plain = db.pool.begin().await.unwrap();
    store
        .claim(&mut plain, &ClaimRequest::new(worker("d"), 10))
        .await
        .unwrap();
    plain.rollback().await.unwrap();
    // The gate's holder never commits: the next exclusive claim still returns.
    let mut late = db.pool.begin().await.unwrap();
    let got = tokio::time::timeout(
        Duration::from_secs(10),
        store.claim(&mut late, &exclusive("e")),
    )
    .await
    .expect("an exclusive claim waits for a stalled holder without bound")
    .unwrap();
    assert!(got.is_empty());
    // The wait that timed out restored the transaction's lock_timeout.
    let lt: String = sqlx::query_scalar("SHOW lock_timeout")
        .fetch_one(&mut *late)
        .await
        .unwrap();
    assert_eq!(lt, "0");
    late.rollback().await.unwrap();
    held.rollback().await.unwrap();
}

#[tokio::test]
async fn notify_wakes_listeners_only_on_commit() {
    let db = TestDb::new().await;
    let channel = format!("ob_{}", Uuid::new_v4().simple());
    let cfg = db.config().notify_channel(channel.clone());
    migrate(&db.pool, &cfg).await.unwrap();
    let store = PgOutboxStore::new(&cfg).unwrap();
    let mut wake = PgWakeup::connect(&db.pool, &cfg).await.unwrap();
    assert!(wake.is_listening());
    let mut tx = db.pool.begin().await.unwrap();
    store.enqueue(&mut tx, &outbox("t", "k")).await.unwrap();
    tx.rollback().await.unwrap();
    assert_eq!(wake.wait(Duration::from_millis(300)).await, Woken::Timeout);
    let mut tx = db.pool.begin().await.unwrap();
    store
        .insert_many(&mut tx, &[outbox("t", "a"), outbox("t", "b")])
        .await
        .unwrap();
    store.enqueue(&mut tx, &outbox("t", "c")).await.unwrap();
    tx.commit().await.unwrap();
    let mut wake2 = PgWakeup::connect(&db.pool, &cfg.clone().pgbouncer(true))
        .await
        .unwrap();
    assert!(!wake2.is_listening(), "PgBouncer mode is poll-only");
    assert_eq!(wake2.wait(Duration::from_millis(10)).await, Woken::Timeout);
    let woke = tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            if wake.wait(Duration::from_millis(300)).await == Woken::Notified {
                break;
            }
        }
    })
    .await;
    assert!(woke.is_ok());
}

#[tokio::test]
async fn pgbouncer_mode_leaves_no_prepared_statements_and_timeout_is_restored() {
    let (db, cfg) = TestDb::migrated(false).await;
    let cfg = cfg
        .pgbouncer(true)
        .claim_timeout(Duration::from_millis(1500));
    let store = PgOutboxStore::new(&cfg).unwrap();
    let mut tx = db.pool.begin().await.unwrap();
    let before: String = sqlx::query_scalar("SELECT current_setting('statement_timeout')")
        .persistent(false)
        .fetch_one(&mut *tx)
        .await
        .unwrap();
    let prepared_before: i64 = sqlx::query_scalar("SELECT count(*) FROM pg_prepared_statements")
        .persistent(false)
        .fetch_one(&mut *tx)
        .await
        .unwrap();
    store
        .insert_many(&mut tx, &[outbox("t", "a"), outbox("t", "b")])
        .await
        .unwrap();
    let got = store
        .claim(&mut tx, &ClaimRequest::new(worker("w"), 5))
        .await
        .unwrap();
    store
        .settle(&mut tx, &worker("w"), &complete(&got))
        .await
        .unwrap();
    let after: String = sqlx::query_scalar("SELECT current_setting('statement_timeout')")
        .persistent(false)
        .fetch_one(&mut *tx)
        .await
        .unwrap();
    let prepared_after: i64 = sqlx::query_scalar("SELECT count(*) FROM pg_prepared_statements")
        .persistent(false)
        .fetch_one(&mut *tx)
        .await
        .unwrap();
    assert_eq!(before, after);
    assert_eq!(prepared_before, prepared_after);
    tx.commit().await.unwrap();
}

#[tokio::test]
async fn claim_timeout_cancels_a_blocked_claim_as_a_timeout() {
    let (db, cfg) = TestDb::migrated(false).await;
    let store = PgOutboxStore::new(&cfg.claim_timeout(Duration::from_millis(200))).unwrap();
    store
        .insert(&mut db.pool.acquire().await.unwrap(), &outbox("t", "k"))
        .await
        .unwrap();
    // An exclusive table lock makes the claim wait; the statement timeout ends it.
    let mut holder = db.pool.begin().await.unwrap();
    sqlx::query(AssertSqlSafe(format!(
        "LOCK TABLE \"{}\".outbox_events IN ACCESS EXCLUSIVE MODE",
        db.schema
    )))
    .execute(&mut *holder)
    .await
    .unwrap();
    let mut tx = db.pool.begin().await.unwrap();
    let err = store
        .claim(&mut tx, &ClaimRequest::new(worker("w"), 5))
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::Timeout { .. }), "{err:?}");
    holder.rollback().await.unwrap();
}

#[tokio::test]
async fn delete_mode_removes_completed_rows() {
    let (db, cfg) = TestDb::migrated(false).await;
    let store = PgOutboxStore::new(&cfg.completion(CompletionMode::Delete)).unwrap();
    let mut conn = db.pool.acquire().await.unwrap();
    store
        .insert_many(&mut conn, &[outbox("t", "a"), outbox("t", "b")])
        .await
        .unwrap();
    let got = store
        .claim(&mut conn, &ClaimRequest::new(worker("w"), 5))
        .await
        .unwrap();
    let r = store
        .settle(&mut conn, &worker("w"), &complete(&got))
        .await
        .unwrap();
    assert_eq!(r.completed.len(), 2);
    let n: i64 = sqlx::query_scalar(AssertSqlSafe(format!(
        "SELECT count(*) FROM \"{}\".outbox_events",
        db.schema
    )))
    .fetch_one(&mut *conn)
    .await
    .unwrap();
    assert_eq!(n, 0);
}

#[tokio::test]
async fn partitions_are_created_ahead_and_expired_ones_dropped() {
    let (db, cfg) = TestDb::migrated(true).await;
    let store = PgOutboxStore::new(&cfg).unwrap();
    let mut conn = db.pool.acquire().await.unwrap();
    let now = chrono::Utc::now();
    let r = partition::maintain(
        &mut conn,
        store.names(),
        partition::Period::Day,
        now - TimeDelta::days(5),
        7,
        TimeDelta::days(2),
    )
    .await
    .unwrap();
    assert_eq!(r.created.len(), 8);
    // An event in an old partition keeps it alive while pending.
    let old = omnibox_core::model::OutboxEvent::builder("o", Uuid::now_v7(), "t", "t", "k")
        .payload(serde_json::json!({"a": 1}))
        .created_at(now - TimeDelta::days(5))
        .scheduled_at(now - TimeDelta::days(5))
        .build()
        .unwrap();
    store.insert(&mut conn, &old).await.unwrap();
    let r = partition::maintain(
        &mut conn,
        store.names(),
        partition::Period::Day,
        now,
        2,
        TimeDelta::days(2),
    )
    .await
    .unwrap();
    assert_eq!(r.kept.len(), 1, "{r:?}");
    assert_eq!(r.dropped.len(), 2, "{r:?}");
    let got = store
        .claim(&mut conn, &ClaimRequest::new(worker("w"), 5))
        .await
        .unwrap();
    assert_eq!(got.len(), 1);
    store
        .settle(&mut conn, &worker("w"), &complete(&got))
        .await
        .unwrap();
    let r = partition::maintain(
        &mut conn,
        store.names(),
        partition::Period::Day,
        now,
        2,
        TimeDelta::days(2),
    )
    .await
    .unwrap();
    assert_eq!(r.dropped.len(), 1, "{r:?}");
    let plain = PgOutboxStore::new(&PgStoreConfig::new().schema(db.schema.clone())).unwrap();
    assert!(matches!(
        partition::maintain(
            &mut conn,
            plain.names(),
            partition::Period::Day,
            now,
            1,
            TimeDelta::days(1)
        )
        .await,
        Err(StoreError::InvalidRequest(_))
    ));
}

/// What `SHOW` reads inside the claim's transaction after a claim.
async fn claim_then_show(
    db: &TestDb,
    store: &PgOutboxStore,
    exclusive: bool,
) -> (usize, String, String) {
    let mut tx = db.pool.begin().await.unwrap();
    let req = ClaimRequest::new(worker("w"), 1).exclusive(exclusive);
    let claimed = store.claim(&mut tx, &req).await.unwrap();
    let row = sqlx::query(
        "SELECT current_setting('plan_cache_mode'), current_setting('synchronous_commit')",
    )
    .fetch_one(&mut *tx)
    .await
    .unwrap();
    tx.rollback().await.unwrap();
    (claimed.len(), row.get(0), row.get(1))
}

#[tokio::test]
async fn exclusive_claims_use_the_generic_plan_and_commit_asynchronously_only_when_asked() {
    let (db, cfg) = TestDb::migrated(false).await;
    let durable = PgOutboxStore::new(&cfg).unwrap();
    let fast = PgOutboxStore::new(&cfg.clone().asynchronous_claims(true)).unwrap();
    let mut conn = db.pool.acquire().await.unwrap();
    for k in ["a", "b"] {
        durable
            .insert(&mut conn, &outbox("orders", k))
            .await
            .unwrap();
    }
    drop(conn);
    // A claim inside a caller's transaction (omni-box's mode) changes no setting: the
    // caller's own statements and its commit follow.
    for store in [&durable, &fast] {
        assert_eq!(
            claim_then_show(&db, store, false).await,
            (1, "auto".to_owned(), "on".to_owned())
        );
    }
    // The relay's claim, which commits at once: the generic plan, and a durable commit
    // unless asynchronous claims were chosen. Each claim comes back full (1 of 2 events,
    // rolled back), so after the first 8 the store stops taking the claim gate, whose
    // statement carries the settings otherwise: both paths are checked.
    for (store, commit) in [(&durable, "on"), (&fast, "off")] {
        for _ in 0..10 {
            assert_eq!(
                claim_then_show(&db, store, true).await,
                (1, "force_generic_plan".to_owned(), commit.to_owned())
            );
        }
    }
}

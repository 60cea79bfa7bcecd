//! The inbox runner against a real PostgreSQL (DATABASE_URL), fed from the in-memory
//! broker. Batches: one transaction for the batch, a handler whose SQL aborts the
//! transaction or that is cut off mid-query rolled back alone, a message delivered twice in
//! one batch handled once, every acknowledgement after the commit. One at a time: two
//! runners racing the same message (a new message is stored completed before its handler
//! runs) handle it once, also when the first handler fails.
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests may panic

mod common;

use std::time::Duration;

use common::TestDb;
use omnibox_core::inbox::{AckStrategy, ConsumeOutcome, InboxRunner};
use omnibox_core::memory::MemoryBroker;
use omnibox_core::model::Headers;
use omnibox_core::{Handler, HandlerError, HandlerOutcome, HandlerResult, InboxEvent};
use omnibox_postgres::{PgDatabase, PgInboxStore};
use sqlx::PgConnection;

const TOPIC: &str = "orders";
const GROUP: &str = "billing";

/// Writes the message id into the business table; `bad-sql` then runs SQL that aborts the
/// transaction, `slow` a query that outlives the process timeout.
#[derive(Clone)]
struct Effects {
    table: String,
    /// `fails-once` fails while this is set (the first call clears it).
    fail_once: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

impl Handler<InboxEvent, PgConnection> for Effects {
    async fn handle(&self, event: &InboxEvent, conn: &mut PgConnection) -> HandlerResult {
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "INSERT INTO {} (message_id) VALUES ($1)",
            self.table
        )))
        .bind(&event.message_id)
        .execute(&mut *conn)
        .await
        .map_err(|e| HandlerError::permanent(e.to_string()))?;
        match event.message_id.as_str() {
            "bad-sql" => {
                sqlx::query("SELECT 1 / 0")
                    .execute(&mut *conn)
                    .await
                    .map_err(|e| HandlerError::permanent(e.to_string()))?;
            }
            "fails-once"
                if self
                    .fail_once
                    .swap(false, std::sync::atomic::Ordering::SeqCst) =>
            {
                tokio::time::sleep(Duration::from_millis(300)).await;
                return Err(HandlerError::permanent("first try fails"));
            }
            "race" | "fails-once" => tokio::time::sleep(Duration::from_millis(300)).await,
            "slow" => {
                sqlx::query("SELECT pg_sleep(2)")
                    .execute(&mut *conn)
                    .await
                    .map_err(|e| HandlerError::permanent(e.to_string()))?;
            }
            _ => {}
        }
        Ok(HandlerOutcome::Completed)
    }
}

fn push(broker: &MemoryBroker, message_id: &str) {
    let mut headers = Headers::new();
    headers.insert("message_id".into(), message_id.into());
    headers.insert("event_type".into(), "order.placed".into());
    broker.push_raw(TOPIC, br#"{"total": 1}"#.to_vec(), headers);
}

struct Setup {
    db: TestDb,
    store: PgInboxStore,
    broker: MemoryBroker,
    effects: String,
    fail_once: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

async fn setup() -> Setup {
    let (db, cfg) = TestDb::migrated(false).await;
    let store = PgInboxStore::new(&cfg).unwrap();
    let effects = format!("{}.effects", db.schema);
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "CREATE TABLE {effects} (message_id text PRIMARY KEY)"
    )))
    .execute(&db.pool)
    .await
    .unwrap();
    Setup {
        db,
        store,
        broker: MemoryBroker::new(),
        effects,
        fail_once: std::sync::Arc::new(std::sync::atomic::AtomicBool::new(true)),
    }
}

impl Setup {
    async fn batch(&self, strategy: AckStrategy) -> Vec<ConsumeOutcome> {
        let mut runner = InboxRunner::builder(
            self.broker.consumer([TOPIC], GROUP),
            PgDatabase::new(self.db.pool.clone()),
            self.store.clone(),
            GROUP,
        )
        .ack_strategy(strategy)
        .handler(self.handler())
        .process_timeout(Duration::from_millis(300))
        .batch_size(50)
        .build()
        .unwrap();
        tokio::time::timeout(Duration::from_secs(30), runner.process_batch())
            .await
            .expect("process_batch hung")
            .unwrap()
    }

    fn handler(&self) -> Effects {
        Effects {
            table: self.effects.clone(),
            fail_once: self.fail_once.clone(),
        }
    }

    async fn effects(&self) -> Vec<String> {
        sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
            "SELECT message_id FROM {} ORDER BY message_id",
            self.effects
        )))
        .fetch_all(&self.db.pool)
        .await
        .unwrap()
    }

    /// `(message_id, status, attempts_made, last_error, locked_by)` of every inbox row.
    async fn rows(&self) -> Vec<(String, String, i32, Option<String>, Option<String>)> {
        sqlx::query_as(sqlx::AssertSqlSafe(format!(
            "SELECT message_id, status::text, attempts_made, last_error, locked_by FROM {} ORDER BY message_id",
            self.store.names().qualified
        )))
        .fetch_all(&self.db.pool)
        .await
        .unwrap()
    }

    /// Distinct completion times: `now()` is the transaction's start, so one value means
    /// one transaction completed every row.
    async fn completion_times(&self) -> i64 {
        sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
            "SELECT count(DISTINCT completed_at) FROM {} WHERE status = 'completed'",
            self.store.names().qualified
        )))
        .fetch_one(&self.db.pool)
        .await
        .unwrap()
    }
}

fn outcome(all: &[ConsumeOutcome], i: usize) -> &ConsumeOutcome {
    all.get(i)
        .unwrap_or_else(|| panic!("no outcome {i}: {all:#?}"))
}

#[tokio::test]
async fn a_batch_commits_once_and_a_handler_whose_sql_fails_is_rolled_back_alone() {
    let s = setup().await;
    for id in ["m1", "bad-sql", "m2", "m1", "m3"] {
        push(&s.broker, id);
    }
    let all = s.batch(AckStrategy::ExactlyOnceInbox).await;
    assert_eq!(all.len(), 5, "{all:#?}");
    for i in [0, 2, 4] {
        let o = outcome(&all, i);
        assert!(o.acked && o.handled && !o.duplicate, "{o:?}");
    }
    let bad = outcome(&all, 1);
    assert!(
        !bad.acked && !bad.handled,
        "handed back for a retry: {bad:?}"
    );
    let again = outcome(&all, 3);
    assert!(
        again.acked && again.duplicate && !again.handled,
        "the second m1 of the batch follows the first: {again:?}"
    );
    assert_eq!(again.event_id, outcome(&all, 0).event_id);
    assert_eq!(s.broker.acked(TOPIC, GROUP), 4);
    assert_eq!(s.broker.nacked(TOPIC, GROUP), 1);

    // The failed handler's own insert is undone; its neighbours' writes committed, once.
    assert_eq!(s.effects().await, ["m1", "m2", "m3"]);
    let rows = s.rows().await;
    assert_eq!(rows.len(), 4, "one row per message: {rows:#?}");
    let bad_row = rows.iter().find(|r| r.0 == "bad-sql").unwrap();
    assert_eq!(bad_row.1, "pending");
    assert_eq!(bad_row.2, 1, "one attempt spent");
    assert!(
        bad_row
            .3
            .as_deref()
            .is_some_and(|e| e.contains("division by zero")),
        "{bad_row:?}"
    );
    assert_eq!(bad_row.4, None, "no lease left behind");
    assert!(
        rows.iter()
            .filter(|r| r.0 != "bad-sql")
            .all(|r| r.1 == "completed" && r.4.is_none()),
        "{rows:#?}"
    );
    assert_eq!(
        s.completion_times().await,
        1,
        "one transaction for the batch"
    );
}

#[tokio::test]
async fn a_handler_cut_off_mid_query_is_rolled_back_alone_and_the_batch_commits() {
    let s = setup().await;
    for id in ["m1", "slow", "m2"] {
        push(&s.broker, id);
    }
    let all = s.batch(AckStrategy::AT_LEAST_ONCE_ON_PERSIST).await;
    assert_eq!(all.len(), 3, "{all:#?}");
    assert!(
        all.iter().all(|o| o.acked),
        "on persist: all acknowledged: {all:#?}"
    );
    assert!(
        outcome(&all, 0).handled && outcome(&all, 2).handled,
        "{all:#?}"
    );
    assert!(!outcome(&all, 1).handled, "{all:#?}");
    assert_eq!(s.effects().await, ["m1", "m2"]);
    let rows = s.rows().await;
    let slow = rows.iter().find(|r| r.0 == "slow").unwrap();
    assert_eq!((slow.1.as_str(), slow.2), ("pending", 1), "{slow:?}");
    assert!(
        slow.3.as_deref().is_some_and(|e| e.contains("timed out")),
        "{slow:?}"
    );
    assert_eq!(s.completion_times().await, 1);
}

#[tokio::test]
async fn a_batch_redelivered_after_its_commit_runs_no_handler_again() {
    let s = setup().await;
    for id in ["m1", "m2", "m3"] {
        push(&s.broker, id);
    }
    let first = s.batch(AckStrategy::ExactlyOnceInbox).await;
    assert!(first.iter().all(|o| o.acked && o.handled), "{first:#?}");
    // The broker redelivers everything (a consumer-group rewind).
    s.broker.rewind(TOPIC, GROUP);
    let second = s.batch(AckStrategy::ExactlyOnceInbox).await;
    assert_eq!(second.len(), 3, "{second:#?}");
    assert!(
        second.iter().all(|o| o.acked && o.duplicate && !o.handled),
        "{second:#?}"
    );
    assert_eq!(s.effects().await, ["m1", "m2", "m3"], "effects once");
}

/// Two runners, each fed the same message by its own broker, handle it at the same time,
/// one at a time (`batch_size` 1). The handler writes the message id under a primary key,
/// so handling it twice would fail; each handler call takes 300 ms, so the second insert
/// of the row waits on the first's uncommitted one.
async fn race(message_id: &str) -> (Setup, Vec<ConsumeOutcome>) {
    let s = setup().await;
    let second = MemoryBroker::new();
    push(&s.broker, message_id);
    push(&second, message_id);
    let runner = |broker: &MemoryBroker, worker: &str| {
        InboxRunner::builder(
            broker.consumer([TOPIC], GROUP),
            PgDatabase::new(s.db.pool.clone()),
            s.store.clone(),
            GROUP,
        )
        .worker_id(omnibox_core::model::WorkerId::new(worker).unwrap())
        .redelivery_delay(Duration::from_millis(10))
        .handler(s.handler())
        .build()
        .unwrap()
    };
    let (mut a, mut b) = (runner(&s.broker, "a"), runner(&second, "b"));
    let (ra, rb) = tokio::time::timeout(Duration::from_secs(30), async {
        tokio::join!(a.process_one(), async {
            tokio::time::sleep(Duration::from_millis(50)).await;
            b.process_one().await
        })
    })
    .await
    .expect("racing runners hung");
    (s, vec![ra.unwrap(), rb.unwrap()])
}

#[tokio::test]
async fn two_runners_racing_one_message_handle_it_once() {
    let (s, outcomes) = race("race").await;
    assert!(outcomes.iter().all(|o| o.acked), "{outcomes:#?}");
    assert_eq!(
        outcomes.iter().filter(|o| o.handled).count(),
        1,
        "one handles: {outcomes:#?}"
    );
    assert!(
        outcomes[1].duplicate,
        "the later one waits, then finds it done: {outcomes:#?}"
    );
    assert_eq!(s.effects().await, ["race"]);
    let rows = s.rows().await;
    assert_eq!(rows.len(), 1, "{rows:#?}");
    assert_eq!(
        (rows[0].1.as_str(), rows[0].2),
        ("completed", 0),
        "{rows:#?}"
    );
}

#[tokio::test]
async fn when_the_first_of_two_racing_runners_fails_the_second_handles_the_message() {
    let (s, outcomes) = race("fails-once").await;
    let [first, second] = outcomes.as_slice() else {
        panic!("{outcomes:#?}")
    };
    assert!(!first.handled, "{first:?}");
    assert!(second.handled && second.acked, "{second:?}");
    // The first records its failure after the second completed the row: nothing to
    // record, and the message is done (acknowledged).
    assert!(first.acked && first.duplicate, "{first:?}");
    assert_eq!(s.effects().await, ["fails-once"]);
    let rows = s.rows().await;
    assert_eq!(rows.len(), 1, "{rows:#?}");
    assert_eq!(rows[0].1, "completed", "{rows:#?}");
}

//! Inbox poison that PostgreSQL refuses (issue 9 §1): data that parses and validates in Rust
//! but that `jsonb` or `text` rejects must end as a dead letter — its body and headers kept
//! exactly — and be acknowledged, under every ack strategy; the message behind it is handled.
//! The same in a batch (`batch_size`): the refused insert sends the batch one message at a
//! time. Against a real PostgreSQL (DATABASE_URL), fed from the in-memory broker.
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests may panic

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use common::TestDb;
use omnibox_core::inbox::{AckStrategy, CommitPolicy, InboxRunner};
use omnibox_core::memory::MemoryBroker;
use omnibox_core::model::Headers;
use omnibox_core::{Handler, HandlerOutcome, HandlerResult, InboxEvent, OutboxEvent, Publisher};
use omnibox_postgres::{PgDatabase, PgInboxStore};
use sqlx::PgConnection;

const TOPIC: &str = "orders";
const GROUP: &str = "loyalty";

/// Counts the messages it handles.
#[derive(Clone, Default)]
struct Count(Arc<AtomicUsize>);

impl Handler<InboxEvent, PgConnection> for Count {
    async fn handle(&self, _event: &InboxEvent, _conn: &mut PgConnection) -> HandlerResult {
        self.0.fetch_add(1, Ordering::SeqCst);
        Ok(HandlerOutcome::Completed)
    }
}

fn event(payload: serde_json::Value) -> OutboxEvent {
    OutboxEvent::builder("order", uuid::Uuid::now_v7(), "order.placed", TOPIC, "k")
        .payload(payload)
        .build()
        .unwrap()
}

async fn poison_then_good(strategy: AckStrategy, partitioned: bool, batched: bool) {
    let (db, cfg) = TestDb::migrated(partitioned).await;
    let store = PgInboxStore::new(&cfg).unwrap();
    let broker = MemoryBroker::new();

    // 1. A JSON string holding the escape `\u0000`: legal JSON, refused by jsonb (22P05).
    let nul_json = event(serde_json::json!({ "note": "a\u{0}b" }));
    broker.publish(&nul_json).await.unwrap();
    // 2. A binary body with raw NUL bytes: malformed JSON, and its dead letter's body cannot
    //    be text (22021).
    let binary = vec![0x00, 0xde, 0xad, 0x00, 0xbe, 0xef];
    let mut binary_headers = Headers::new();
    binary_headers.insert("message_id".into(), "m-binary".into());
    broker.push_raw(TOPIC, binary.clone(), binary_headers);
    // 3. A header value with a NUL: the dead letter's headers cannot be jsonb.
    let mut nul_header = Headers::new();
    nul_header.insert("message_id".into(), "m-header".into());
    nul_header.insert("x-note".into(), "a\u{0}b".into());
    let header_body = br#"{"total": 1}"#.to_vec();
    broker.push_raw(TOPIC, header_body.clone(), nul_header);
    // 4. A good message behind them.
    let good = event(serde_json::json!({ "total": 42 }));
    broker.publish(&good).await.unwrap();

    let handler = Count::default();
    let handled = handler.0.clone();
    let mut runner = InboxRunner::builder(
        broker.consumer([TOPIC], GROUP),
        PgDatabase::new(db.pool.clone()),
        store.clone(),
        GROUP,
    )
    .ack_strategy(strategy)
    .handler(handler)
    .batch_size(if batched { 10 } else { 1 })
    .build()
    .unwrap();
    let mut outcomes = Vec::new();
    for _ in 0..12 {
        if broker.pending(TOPIC, GROUP) == 0 && broker.in_flight(TOPIC, GROUP) == 0 {
            break;
        }
        if batched {
            // All four in one batch: the store refuses the batch's insert, so its messages
            // are handled one at a time and only the refused ones are dead-lettered.
            let out = tokio::time::timeout(Duration::from_secs(10), runner.process_batch())
                .await
                .expect("process_batch hung");
            match out {
                Ok(all) => outcomes.extend(all.into_iter().map(Ok)),
                Err(e) => outcomes.push(Err(e.to_string())),
            }
        } else {
            let out = tokio::time::timeout(Duration::from_secs(10), runner.process_one())
                .await
                .expect("process_one hung");
            outcomes.push(out.map_err(|e| e.to_string()));
        }
    }
    let label = format!("{strategy:?}, partitioned {partitioned}, batched {batched}");
    assert_eq!(
        outcomes.len(),
        4,
        "{label}: one delivery per message, nothing handed back: {outcomes:#?}"
    );
    assert!(
        outcomes.iter().all(|o| o.as_ref().is_ok_and(|o| o.acked)),
        "{label}: {outcomes:#?}"
    );
    assert_eq!(broker.acked(TOPIC, GROUP), 4, "{label}");
    assert_eq!(
        handled.load(Ordering::SeqCst),
        1,
        "{label}: the good message"
    );

    let mut conn = db.pool.acquire().await.unwrap();
    let letters = store.list_dead_letters(&mut conn, 10, 0).await.unwrap();
    assert_eq!(letters.len(), 3, "{label}: {letters:#?}");
    let by_id = |id: &str| {
        letters
            .iter()
            .find(|l| l.message_id.as_deref() == Some(id))
            .unwrap_or_else(|| panic!("{label}: no dead letter for {id}: {letters:#?}"))
    };
    let json_letter = by_id(&nul_json.common.id.to_string());
    assert!(
        json_letter.error.contains("refused") && json_letter.error.contains("22P05"),
        "{label}: {}",
        json_letter.error
    );
    let kept: serde_json::Value = serde_json::from_slice(json_letter.original_body()).unwrap();
    assert_eq!(kept["note"], "a\u{0}b", "{label}: the payload is kept");
    let binary_letter = by_id("m-binary");
    assert_eq!(binary_letter.original_body(), binary.as_slice(), "{label}");
    let header_letter = by_id("m-header");
    assert_eq!(
        header_letter
            .headers
            .as_ref()
            .and_then(|h| h.get("x-note"))
            .map(String::as_str),
        Some("a\u{0}b"),
        "{label}: the header is kept"
    );
    // A message that parsed keeps its payload as the same JSON value (re-serialised, so
    // whitespace may differ); only an unparsable body is kept byte for byte.
    let kept: serde_json::Value = serde_json::from_slice(header_letter.original_body()).unwrap();
    let sent: serde_json::Value = serde_json::from_slice(&header_body).unwrap();
    assert_eq!(kept, sent, "{label}");
    // The good message is the one completed row.
    let completed: i64 = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
        "SELECT count(*) FROM {} WHERE status = 'completed'",
        store.names().qualified
    )))
    .fetch_one(&mut *conn)
    .await
    .unwrap();
    assert_eq!(completed, 1, "{label}");
}

#[tokio::test]
async fn poison_postgres_refuses_is_dead_lettered_and_acked_under_every_strategy() {
    for partitioned in [false, true] {
        for strategy in [
            AckStrategy::AtMostOnce,
            AckStrategy::AtLeastOnce(CommitPolicy::OnPersist),
            AckStrategy::AtLeastOnce(CommitPolicy::OnSuccess),
            AckStrategy::ExactlyOnceInbox,
        ] {
            poison_then_good(strategy, partitioned, false).await;
            poison_then_good(strategy, partitioned, true).await;
        }
    }
}

//! The reference's inbox bugs (§16.4: 5, 6, 7, 8), each pinned by a test, plus the
//! effectively-once guarantee under a redelivery storm.

use super::support::*;
use crate::backoff::Backoff;
use crate::inbox::{AckStrategy, CommitPolicy};
use crate::model::{EventStatus, Headers, WorkerId};
use crate::store::{ClaimEvents, ClaimRequest, Transactions};

/// omni-box acked after rolling the row back: the message was gone from the broker and
/// from the database. Here the row stays, pending with the failure recorded, and a batch
/// inbox processor can claim it.
#[tokio::test(start_paused = true)]
async fn bug5_at_least_once_on_persist_never_loses_a_failed_message() {
    let h = Harness::new();
    h.push("m-1");
    let mut runner = h
        .builder(
            AckStrategy::AtLeastOnce(CommitPolicy::OnPersist),
            "runner-1",
        )
        .backoff(Backoff::immediate())
        .handler(Scripted::new(Script::Fail))
        .build()
        .unwrap();
    let out = tokio::time::timeout(WAIT, runner.process_one())
        .await
        .unwrap()
        .unwrap();
    assert!(out.acked && !out.handled && !out.dead_lettered);
    assert_eq!((h.acked(), h.nacked(), h.pending()), (1, 0, 0));

    let row = h
        .row("m-1")
        .await
        .expect("the failed message is still stored");
    assert_eq!(row.common.status, EventStatus::Pending);
    assert_eq!(row.common.attempts_made, 1);
    assert_eq!(row.common.last_error.as_deref(), Some("boom"));
    assert!(row.common.locked_by.is_none());
    assert_eq!(
        h.effect("m-1").await,
        0,
        "the failed attempt's effect rolled back"
    );

    // A batch processor picks it up.
    let mut tx = h.db.begin().await.unwrap();
    let claimed = h
        .store
        .inner
        .claim(
            &mut tx,
            &ClaimRequest::new(WorkerId::new("batch-1").unwrap(), 10),
        )
        .await
        .unwrap();
    h.db.commit(tx).await.unwrap();
    assert_eq!(claimed.len(), 1);
    assert_eq!(claimed[0].message_id, "m-1");
}

/// omni-box's exactly-once runner rewound a message whose row was FAILED forever, blocking
/// the partition. Here it is acknowledged and the next message is handled.
#[tokio::test(start_paused = true)]
async fn bug6_failed_row_does_not_wedge_the_partition() {
    let h = Harness::new();
    h.seed_failed("m-1").await;
    h.push("m-1");
    h.push("m-2");
    let mut runner = h
        .builder(AckStrategy::ExactlyOnceInbox, "runner-1")
        .handler(Scripted::new(Script::Complete))
        .build()
        .unwrap();
    let first = tokio::time::timeout(WAIT, runner.process_one())
        .await
        .unwrap()
        .unwrap();
    assert!(first.acked && first.dead_lettered && !first.handled);
    let second = tokio::time::timeout(WAIT, runner.process_one())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(second.message_id.as_deref(), Some("m-2"));
    assert!(second.acked && second.handled);
    assert_eq!((h.acked(), h.nacked(), h.pending()), (2, 0, 0));
    assert_eq!(status(&h.row("m-1").await), Some(EventStatus::Failed));
    assert_eq!(status(&h.row("m-2").await), Some(EventStatus::Completed));
    assert_eq!(h.effect("m-1").await, 0);
    assert_eq!(h.effect("m-2").await, 1);
}

/// omni-box's at-most-once runner committed first and then still rewound on a persist
/// failure, re-reading the record in-process. Here nothing is handed back after the ack.
#[tokio::test(start_paused = true)]
async fn bug7_at_most_once_never_rewinds_after_ack() {
    let h = Harness::new();
    h.push("m-1");
    h.push("m-2");
    h.store.fail_next_inserts(1);
    let handler = Scripted::new(Script::Fail);
    let calls = handler.calls.clone();
    let mut runner = h
        .builder(AckStrategy::AtMostOnce, "runner-1")
        .handler(handler)
        .build()
        .unwrap();

    // Storage fails after the acknowledgement: the error is reported, the message is not
    // handed back (at most once: it is lost, by choice).
    let err = tokio::time::timeout(WAIT, runner.process_one())
        .await
        .unwrap();
    assert!(err.is_err());
    assert_eq!((h.acked(), h.nacked()), (1, 0));
    assert!(h.row("m-1").await.is_none());

    // The handler fails after the acknowledgement: recorded on the row, not redelivered.
    let out = tokio::time::timeout(WAIT, runner.process_one())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(out.message_id.as_deref(), Some("m-2"));
    assert!(out.acked && !out.handled);
    assert_eq!((h.acked(), h.nacked(), h.pending()), (2, 0, 0));
    let row = h.row("m-2").await.unwrap();
    assert_eq!(
        (row.common.status, row.common.attempts_made),
        (EventStatus::Pending, 1)
    );
    assert_eq!(calls.load(std::sync::atomic::Ordering::SeqCst), 1);

    // Nothing comes back: the next receive waits (bounded) for a message that never comes.
    let next = tokio::time::timeout(std::time::Duration::from_secs(60), runner.process_one()).await;
    assert!(
        next.is_err(),
        "no message may be redelivered after an at-most-once ack"
    );
}

/// omni-box looped forever on messages failing validation and on handler poison. Here a
/// malformed message is dead-lettered at once, and a message whose handler always fails is
/// dead-lettered after `max_attempts` deliveries — then acknowledged.
#[tokio::test(start_paused = true)]
async fn bug8_poison_message_is_dead_lettered_not_looped() {
    let h = Harness::new();
    h.broker
        .push_raw(TOPIC, "{\"unterminated\": ", Headers::new());
    let mut bad_header = Headers::new();
    bad_header.insert("message_id".into(), "m-invalid".into());
    bad_header.insert("x-blank".into(), "   ".into());
    h.broker.push_raw(TOPIC, r#"{"total": 1}"#, bad_header);
    h.push("m-poison");
    let handler = Scripted::new(Script::Fail);
    let calls = handler.calls.clone();
    let mut runner = h
        .builder(AckStrategy::ExactlyOnceInbox, "runner-1")
        .limits(attempts(3))
        .handler(handler)
        .build()
        .unwrap();

    let mut outcomes = Vec::new();
    for _ in 0..10 {
        if h.pending() == 0 {
            break;
        }
        let out = tokio::time::timeout(WAIT, runner.process_one())
            .await
            .unwrap()
            .unwrap();
        outcomes.push(out);
    }
    assert_eq!(h.pending(), 0, "every message settled: {outcomes:?}");
    // Unparsable + invalid: one delivery each. Poison: three deliveries, two handed back.
    assert_eq!(outcomes.len(), 5, "{outcomes:?}");
    assert_eq!((h.acked(), h.nacked()), (3, 2));
    assert_eq!(calls.load(std::sync::atomic::Ordering::SeqCst), 3);
    assert!(outcomes[0].dead_lettered && outcomes[0].acked && outcomes[0].event_id.is_none());
    assert!(outcomes[1].dead_lettered && outcomes[1].acked);
    let last = outcomes.last().unwrap();
    assert!(last.acked && last.dead_lettered);

    let row = h.row("m-poison").await.unwrap();
    assert_eq!(
        (row.common.status, row.common.attempts_made),
        (EventStatus::Failed, 3)
    );
    let letters = h.dead_letters().await;
    assert_eq!(letters.len(), 3, "{letters:?}");
    assert_eq!(letters[0].event_id, None);
    assert_eq!(letters[0].body, "{\"unterminated\": ");
    assert_eq!(letters[1].message_id.as_deref(), Some("m-invalid"));
    assert!(
        letters[1].error.contains("header value"),
        "{}",
        letters[1].error
    );
    assert_eq!(letters[2].event_id, Some(row.common.id));
    assert_eq!(h.effect("m-poison").await, 0);
}

/// Each message is delivered three times, out of order, to two competing runners, and the
/// first attempt of each fails after writing its effect. The effect is written exactly once
/// per message.
#[tokio::test(start_paused = true)]
async fn exactly_once_effect_survives_redelivery_storm() {
    let h = Harness::new();
    let ids: Vec<String> = (0..5).map(|i| format!("m-{i}")).collect();
    let offsets: Vec<u64> = ids.iter().map(|id| h.push(id)).collect();
    for order in [[3usize, 0, 4, 1, 2], [2, 4, 0, 3, 1]] {
        for i in order {
            h.broker.deliver_again(TOPIC, offsets[i], 1);
        }
    }
    let handler = Scripted::new(Script::FailFirstTime);
    let mut a = h
        .builder(AckStrategy::ExactlyOnceInbox, "runner-a")
        .handler(handler.clone())
        .build()
        .unwrap();
    let mut b = h
        .builder(AckStrategy::ExactlyOnceInbox, "runner-b")
        .handler(handler.clone())
        .build()
        .unwrap();

    let mut handled = 0;
    let mut duplicates = 0;
    for turn in 0..100 {
        if h.pending() == 0 {
            break;
        }
        let runner = if turn % 2 == 0 { &mut a } else { &mut b };
        let out = tokio::time::timeout(WAIT, runner.process_one())
            .await
            .unwrap()
            .unwrap();
        handled += usize::from(out.handled);
        duplicates += usize::from(out.duplicate);
    }
    assert_eq!(h.pending(), 0);
    assert_eq!(handled, 5);
    // 15 deliveries + 5 redeliveries of the failed first attempts = 20; 5 handled, 5 nacked.
    assert_eq!(h.nacked(), 5);
    assert_eq!(duplicates, 10);
    assert_eq!(h.acked(), 15);
    for id in &ids {
        assert_eq!(h.effect(id).await, 1, "{id}: effect written once");
        let row = h.row(id).await.unwrap();
        assert_eq!(
            (row.common.status, row.common.attempts_made),
            (EventStatus::Completed, 1)
        );
    }
    assert!(h.dead_letters().await.is_empty());
}

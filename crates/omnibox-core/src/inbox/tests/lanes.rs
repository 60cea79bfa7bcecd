//! A runner with a concurrency above 1: order per key, hand-backs, shutdown, limits.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::support::*;
use crate::backoff::Backoff;
use crate::error::HandlerError;
use crate::handler::{Handler, HandlerOutcome, HandlerResult};
use crate::inbox::{AckStrategy, MAX_CONCURRENCY};
use crate::memory::MemoryConn;
use crate::model::{EventStatus, InboxEvent};
use crate::shutdown::Shutdown;

/// Logs every call as `(message_id, succeeded)`; fails the first call of the ids in
/// `fail_once`, and takes `work` (virtual time) per call, so deliveries pile up behind it.
#[derive(Clone, Default)]
struct Logged {
    log: Arc<Mutex<Vec<(String, bool)>>>,
    fail_once: Arc<Mutex<Vec<String>>>,
    work: Duration,
}

impl Logged {
    fn calls(&self) -> Vec<(String, bool)> {
        self.log.lock().unwrap().clone()
    }

    /// The successful calls of messages whose id starts with `key`, in call order.
    fn done(&self, key: &str) -> Vec<String> {
        self.calls()
            .into_iter()
            .filter(|(id, ok)| *ok && id.starts_with(key))
            .map(|(id, _)| id)
            .collect()
    }
}

impl Handler<InboxEvent, MemoryConn> for Logged {
    async fn handle(&self, event: &InboxEvent, _conn: &mut MemoryConn) -> HandlerResult {
        tokio::time::sleep(self.work).await;
        let id = event.message_id.clone();
        let fail = {
            let mut f = self.fail_once.lock().unwrap();
            let at = f.iter().position(|x| *x == id);
            at.map(|i| f.remove(i)).is_some()
        };
        self.log.lock().unwrap().push((id, !fail));
        if fail {
            Err(HandlerError::permanent("first try fails"))
        } else {
            Ok(HandlerOutcome::Completed)
        }
    }
}

async fn run_until(
    runner: &mut crate::inbox::InboxRunner<
        crate::memory::MemoryConsumer,
        crate::memory::MemoryDb,
        FlakyStore,
        Logged,
    >,
    shutdown: &Shutdown,
    mut done: impl FnMut() -> bool,
) {
    let stopper = async {
        while !done() {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        shutdown.trigger();
    };
    let (result, ()) =
        tokio::time::timeout(WAIT, async { tokio::join!(runner.run(shutdown), stopper) })
            .await
            .expect("the runner finished in time");
    result.unwrap();
}

#[tokio::test(start_paused = true)]
async fn every_message_is_handled_once_in_its_keys_order() {
    let h = Harness::new();
    let keys = ["a", "b", "c", "d", "e", "f"];
    for seq in 0..5 {
        for k in keys {
            h.push_keyed(k, &format!("{k}-{seq}"));
        }
    }
    let handler = Logged {
        work: Duration::from_millis(5),
        ..Logged::default()
    };
    let mut runner = h
        .builder(AckStrategy::ExactlyOnceInbox, "lanes")
        .concurrency(4)
        .handler(handler.clone())
        .build()
        .unwrap();
    let shutdown = Shutdown::new();
    run_until(&mut runner, &shutdown, || h.acked() == 30).await;
    assert_eq!((h.acked(), h.nacked(), h.pending()), (30, 0, 0));
    assert_eq!(handler.calls().len(), 30, "each message handled once");
    for k in keys {
        let expected: Vec<String> = (0..5).map(|seq| format!("{k}-{seq}")).collect();
        assert_eq!(handler.done(&format!("{k}-")), expected, "order of key {k}");
        for id in &expected {
            assert_eq!(status(&h.row(id).await), Some(EventStatus::Completed));
        }
    }
}

#[tokio::test(start_paused = true)]
async fn what_waits_behind_a_message_handed_back_goes_back_too() {
    let h = Harness::new();
    // Concurrency 2 holds 4: all of them are received while the first is handled.
    for seq in 0..4 {
        h.push_keyed("a", &format!("a-{seq}"));
    }
    let handler = Logged {
        work: Duration::from_millis(50),
        fail_once: Arc::new(Mutex::new(vec!["a-0".to_owned()])),
        ..Logged::default()
    };
    // The failed message comes back at once; what is handed back behind it after 2 s.
    let mut runner = h
        .builder(AckStrategy::ExactlyOnceInbox, "lanes")
        .concurrency(2)
        .backoff(Backoff::immediate())
        .redelivery_delay(Duration::from_secs(2))
        .handler(handler.clone())
        .build()
        .unwrap();
    let shutdown = Shutdown::new();
    run_until(&mut runner, &shutdown, || h.acked() == 4).await;
    let expected = [
        ("a-0", false),
        ("a-0", true),
        ("a-1", true),
        ("a-2", true),
        ("a-3", true),
    ]
    .map(|(id, ok)| (id.to_owned(), ok));
    assert_eq!(
        handler.calls(),
        expected,
        "a-1..a-3 waited behind a-0 and went back unhandled, so none overtook it"
    );
    assert_eq!(h.nacked(), 4, "a-0 and the three behind it went back");
}

#[tokio::test(start_paused = true)]
async fn shutdown_finishes_what_was_received() {
    let h = Harness::new();
    for seq in 0..10 {
        h.push_keyed("k", &format!("k-{seq}"));
    }
    let handler = Logged {
        work: Duration::from_millis(100),
        ..Logged::default()
    };
    let mut runner = h
        .builder(AckStrategy::ExactlyOnceInbox, "lanes")
        .concurrency(3)
        .handler(handler.clone())
        .build()
        .unwrap();
    let shutdown = Shutdown::new();
    // One key, one lane: while the first is handled, five more wait (2 × 3 held). Stop
    // once the first is done (one more may be received in the same tick).
    run_until(&mut runner, &shutdown, || !handler.calls().is_empty()).await;
    let handled = handler.calls().len();
    assert!(
        (6..=7).contains(&handled),
        "held messages finished, no new ones taken: {handled}"
    );
    assert_eq!(
        h.acked() as usize,
        handled,
        "every finished message acknowledged"
    );
    assert_eq!(
        h.pending() + handled,
        10,
        "the rest stays with the broker, none in flight"
    );
}

#[test]
fn concurrency_is_checked() {
    let h = Harness::new();
    for n in [0, MAX_CONCURRENCY + 1] {
        let err = h
            .builder(AckStrategy::ExactlyOnceInbox, "r")
            .concurrency(n)
            .build()
            .unwrap_err();
        assert!(
            err.to_string().contains("concurrency must be 1 to"),
            "{err}"
        );
    }
    let both = h
        .builder(AckStrategy::ExactlyOnceInbox, "r")
        .concurrency(4)
        .batch_size(10)
        .build()
        .unwrap_err();
    assert!(
        both.to_string().contains("cannot both be above 1"),
        "{both}"
    );
}

#[test]
fn keys_spread_over_every_lane() {
    let mut counts: HashMap<usize, usize> = HashMap::new();
    for k in 0..1000 {
        *counts
            .entry(crate::inbox::runner::lanes::lane_of(&format!("key-{k}"), 8))
            .or_default() += 1;
    }
    assert_eq!(counts.len(), 8, "keys spread over every lane");
    assert!(counts.values().all(|&c| c > 60), "roughly even: {counts:?}");
}

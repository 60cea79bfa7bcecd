//! End-to-end inbox pipelines on the in-memory database.

use std::sync::Mutex;

use chrono::{TimeDelta, Utc};
use serde_json::json;

use super::*;
use crate::clock::ManualClock;
use crate::error::{FailureKind, HandlerError};
use crate::handler::{HandlerOutcome, HandlerResult, handler_fn};
use crate::memory::{
    MemoryBroker, MemoryConn, MemoryDb, MemoryInboxStore, MemoryOutboxStore, truncate_micros,
};
use crate::metrics::SkipReason;
use crate::model::{Event, EventStatus, WorkerId};
use crate::pipeline::steps::test_support::{Rec, RecordingMetrics};
use crate::pipeline::{BatchCtx, StepResult};
use crate::publisher::BoxFuture;
use crate::router::Router;
use crate::shutdown::Shutdown;
use crate::store::{InsertEvents, Transactions};

struct Env {
    db: MemoryDb,
    clock: ManualClock,
    store: MemoryInboxStore,
    metrics: Arc<RecordingMetrics>,
    worker: WorkerId,
}

impl Env {
    fn new() -> Self {
        let clock = ManualClock::new(truncate_micros(Utc::now()));
        Self {
            db: MemoryDb::with_clock(Arc::new(clock.clone())),
            clock,
            store: MemoryInboxStore::new(),
            metrics: Arc::new(RecordingMetrics::default()),
            worker: WorkerId::new("inbox-1").unwrap(),
        }
    }

    fn opts(&self) -> InboxOptions<MemoryConn> {
        InboxOptions::new()
            .metrics(self.metrics.clone())
            .clock(Arc::new(self.clock.clone()))
    }

    async fn insert(&self, messages: &[(&str, &str)]) -> Vec<InboxEvent> {
        let base = self.db.now() - TimeDelta::seconds(10);
        let events: Vec<_> = messages
            .iter()
            .enumerate()
            .map(|(i, (id, event_type))| {
                InboxEvent::builder(*id, "billing", "orders", *event_type)
                    .payload(json!({"i": i}))
                    .created_at(base + TimeDelta::milliseconds(i as i64))
                    .build()
                    .unwrap()
            })
            .collect();
        let mut tx = self.db.begin().await.unwrap();
        self.store.insert_many(&mut tx, &events).await.unwrap();
        self.db.commit(tx).await.unwrap();
        events
    }

    async fn row(&self, id: uuid::Uuid) -> InboxEvent {
        let mut conn = self.db.connection();
        self.store.get(&mut conn, id).await.unwrap()
    }

    async fn run(
        &self,
        p: &Processor<MemoryInboxStore>,
        shutdown: &Shutdown,
    ) -> crate::pipeline::BatchResult {
        let mut tx = self.db.begin().await.unwrap();
        let r = p
            .process_batch(&mut tx, &self.worker, 10, shutdown)
            .await
            .unwrap();
        self.db.commit(tx).await.unwrap();
        r
    }
}

/// Writes `seen:<message_id>` in the batch's transaction; skips `ignored`, fails `broken`.
fn recording_handler() -> impl Handler<InboxEvent, MemoryConn> {
    handler_fn(
        |e: &InboxEvent, conn: &mut MemoryConn| -> BoxFuture<'_, HandlerResult> {
            let key = format!("seen:{}", e.message_id);
            let kind = e.common.event_type.clone();
            Box::pin(async move {
                match kind.as_str() {
                    "ignored" => return Ok(HandlerOutcome::skipped("not for billing")),
                    "broken" => return Err(HandlerError::permanent("cannot bill")),
                    _ => {}
                }
                conn.put(key, json!(true)).await;
                Ok(HandlerOutcome::Completed)
            })
        },
    )
}

#[tokio::test]
async fn bug3_skipped_events_are_completed_not_left_locked() {
    let env = Env::new();
    let events = env
        .insert(&[("m1", "placed"), ("m2", "ignored"), ("m3", "broken")])
        .await;
    let p = inbox_processor(env.store.clone(), recording_handler(), env.opts()).unwrap();
    let r = env.run(&p, &Shutdown::new()).await;
    assert_eq!(r.skipped, vec![events[1].id()]);
    assert_eq!(r.failed_counted, vec![events[2].id()]);

    let skipped = env.row(events[1].id()).await;
    assert_eq!(skipped.common.status, EventStatus::Completed);
    assert_eq!(skipped.common.locked_at, None);
    assert_eq!(skipped.common.locked_by, None);
    // Nothing is left to claim but the failed event's retry.
    env.clock.advance(TimeDelta::hours(1));
    let r = env.run(&p, &Shutdown::new()).await;
    assert_eq!(r.claimed, 1);

    assert!(env.metrics.all().contains(&Rec::Skipped {
        event_type: "ignored".into(),
        reason: SkipReason::Handler
    }));
}

#[tokio::test]
async fn handler_writes_commit_with_the_completion_and_roll_back_with_it() {
    let env = Env::new();
    let events = env.insert(&[("m1", "placed")]).await;
    let p = inbox_processor(env.store.clone(), recording_handler(), env.opts()).unwrap();

    let mut tx = env.db.begin().await.unwrap();
    p.process_batch(&mut tx, &env.worker, 10, &Shutdown::new())
        .await
        .unwrap();
    env.db.rollback(tx).await.unwrap();
    assert_eq!(env.db.value("seen:m1").await, None);
    assert_eq!(
        env.row(events[0].id()).await.common.status,
        EventStatus::Pending
    );

    env.run(&p, &Shutdown::new()).await;
    assert_eq!(env.db.value("seen:m1").await, Some(json!(true)));
    assert_eq!(
        env.row(events[0].id()).await.common.status,
        EventStatus::Completed
    );
}

/// Stops each batch after its first event.
struct StopAfterFirst(Mutex<bool>);
impl Step<InboxEvent, MemoryConn> for StopAfterFirst {
    async fn execute(
        &self,
        _e: &InboxEvent,
        _c: &mut BatchCtx<'_, InboxEvent, MemoryConn>,
    ) -> StepResult {
        let mut seen = self.0.lock().unwrap();
        if *seen {
            return StepResult::StopBatch;
        }
        *seen = true;
        StepResult::Continue
    }
}

#[tokio::test]
async fn bug2_stopped_events_are_released() {
    let env = Env::new();
    let events = env
        .insert(&[("m1", "placed"), ("m2", "placed"), ("m3", "placed")])
        .await;
    let p = inbox_processor(
        env.store.clone(),
        recording_handler(),
        env.opts().step_before(StopAfterFirst(Mutex::new(false))),
    )
    .unwrap();
    let r = env.run(&p, &Shutdown::new()).await;
    assert_eq!(r.completed, vec![events[0].id()]);
    assert_eq!(r.released.len(), 2);
    for e in &events[1..] {
        let row = env.row(e.id()).await;
        assert_eq!(row.common.status, EventStatus::Pending);
        assert_eq!(
            row.common.locked_at, None,
            "released at once, not after the lease TTL"
        );
        assert_eq!(row.common.attempts_made, 0);
    }
}

#[tokio::test]
async fn dispatching_processor_routes_through_a_router() {
    let env = Env::new();
    let events = env
        .insert(&[("m1", "order.placed"), ("m2", "order.unknown")])
        .await;
    let mut router = Router::<MemoryConn>::new();
    router
        .route("order.placed", "orders", |e, conn, _state| {
            let key = format!("routed:{}", e.message_id);
            Box::pin(async move {
                conn.put(key, json!(1)).await;
                Ok(HandlerOutcome::Completed)
            })
        })
        .unwrap();
    let p = dispatching_processor(env.store.clone(), router, env.opts()).unwrap();
    assert_eq!(p.job(), "dispatching_processor");
    let r = env.run(&p, &Shutdown::new()).await;
    assert_eq!(r.completed, vec![events[0].id()]);
    assert_eq!(
        r.failed_counted,
        vec![events[1].id()],
        "unmatched events fail visibly by default"
    );
    assert_eq!(env.db.value("routed:m1").await, Some(json!(1)));
}

#[tokio::test]
async fn transient_handler_errors_spend_no_attempt() {
    let env = Env::new();
    let events = env.insert(&[("m1", "placed")]).await;
    let h = handler_fn(
        |_e: &InboxEvent, _c: &mut MemoryConn| -> BoxFuture<'_, HandlerResult> {
            Box::pin(async { Err(HandlerError::transient("downstream busy")) })
        },
    );
    let p = inbox_processor(env.store.clone(), h, env.opts()).unwrap();
    let now = env.db.now();
    let r = env.run(&p, &Shutdown::new()).await;
    assert_eq!(r.failed_transient, vec![events[0].id()]);
    let row = env.row(events[0].id()).await;
    assert_eq!(row.common.attempts_made, 0);
    assert_eq!(row.common.scheduled_at, now + TimeDelta::seconds(1));
    assert!(env.metrics.all().contains(&Rec::Failed {
        event_type: "placed".into(),
        kind: FailureKind::Transient
    }));
}

#[derive(Default)]
struct Collect(Mutex<Vec<String>>);
impl crate::pipeline::steps::DeadLetterHandler<InboxEvent> for Arc<Collect> {
    async fn dead_letter(&self, e: &InboxEvent, error: &str) -> Result<(), crate::BoxError> {
        self.0
            .lock()
            .unwrap()
            .push(format!("{}: {error}", e.message_id));
        Ok(())
    }
}

#[tokio::test]
async fn dead_letter_side_effect_runs_once_the_budget_is_spent() {
    let env = Env::new();
    let events = env.insert(&[("m1", "broken")]).await;
    let seen = Arc::new(Collect::default());
    let p = inbox_processor(
        env.store.clone(),
        recording_handler(),
        env.opts().dead_letter(seen.clone()),
    )
    .unwrap();
    for _ in 0..6 {
        env.run(&p, &Shutdown::new()).await;
        env.clock.advance(TimeDelta::hours(2));
    }
    let row = env.row(events[0].id()).await;
    assert_eq!(row.common.status, EventStatus::Failed);
    assert_eq!(row.common.attempts_made, 6);
    assert_eq!(*seen.0.lock().unwrap(), vec!["m1: cannot bill".to_string()]);
    let mut conn = env.db.connection();
    assert_eq!(
        env.store.dead_letters(&mut conn).await.len(),
        1,
        "the store's own dead letter"
    );
}

/// Writes `wrote:<message_id>` through the connection, then completes, or fails the way
/// the event type says: `broken` (error), `later` (counted retry), `boom` (panic), `hang`
/// (never returns).
fn writing_then_failing_handler() -> impl Handler<InboxEvent, MemoryConn> {
    handler_fn(
        |e: &InboxEvent, conn: &mut MemoryConn| -> BoxFuture<'_, HandlerResult> {
            let key = format!("wrote:{}", e.message_id);
            let kind = e.common.event_type.clone();
            Box::pin(async move {
                conn.put(key, json!(true)).await;
                match kind.as_str() {
                    "broken" => Err(HandlerError::permanent("cannot bill")),
                    "later" => Ok(HandlerOutcome::retry("try later")),
                    "boom" => panic!("kaboom"),
                    "hang" => {
                        tokio::time::sleep(Duration::from_secs(3600)).await;
                        Ok(HandlerOutcome::Completed)
                    }
                    _ => Ok(HandlerOutcome::Completed),
                }
            })
        },
    )
}

/// Runs one batch through `writing_then_failing_handler` and checks that the failed events
/// recorded `error` with one attempt spent and none of their writes, while the completed
/// ones kept theirs.
async fn assert_failed_writes_rolled_back(
    env: &Env,
    events: &[InboxEvent],
    failing: &[usize],
    error: &str,
) {
    let p = inbox_processor(
        env.store.clone(),
        writing_then_failing_handler(),
        env.opts().handler_timeout(Duration::from_secs(2)),
    )
    .unwrap();
    let r = env.run(&p, &Shutdown::new()).await;
    assert!(r.committed());
    for (i, e) in events.iter().enumerate() {
        let row = env.row(e.id()).await;
        let written = env.db.value(&format!("wrote:{}", e.message_id)).await;
        if failing.contains(&i) {
            assert!(r.failed_counted.contains(&e.id()), "{i}: {r:?}");
            assert_eq!(
                written, None,
                "{i}: the failed handler's write was rolled back"
            );
            assert_eq!(row.common.status, EventStatus::Pending);
            assert_eq!(row.common.attempts_made, 1, "{i}: the attempt is counted");
            assert_eq!(row.common.last_error.as_deref(), Some(error));
        } else {
            assert!(r.completed.contains(&e.id()), "{i}: {r:?}");
            assert_eq!(
                written,
                Some(json!(true)),
                "{i}: a successful handler keeps its write"
            );
            assert_eq!(row.common.status, EventStatus::Completed);
        }
    }
}

#[tokio::test]
async fn batch_handler_failure_rolls_back_its_own_writes_only() {
    let env = Env::new();
    let events = env
        .insert(&[("m1", "placed"), ("m2", "broken"), ("m3", "placed")])
        .await;
    assert_failed_writes_rolled_back(&env, &events, &[1], "cannot bill").await;
}

#[tokio::test]
async fn batch_handler_retry_outcome_rolls_back_its_own_writes_only() {
    let env = Env::new();
    let events = env.insert(&[("m1", "later"), ("m2", "placed")]).await;
    assert_failed_writes_rolled_back(&env, &events, &[0], "try later").await;
}

#[tokio::test]
async fn batch_handler_panic_rolls_back_its_own_writes_only() {
    let env = Env::new();
    let events = env
        .insert(&[("m1", "placed"), ("m2", "boom"), ("m3", "placed")])
        .await;
    assert_failed_writes_rolled_back(&env, &events, &[1], "handler panicked: kaboom").await;
}

#[tokio::test(start_paused = true)]
async fn batch_handler_timeout_rolls_back_its_own_writes_only() {
    let env = Env::new();
    let events = env
        .insert(&[("m1", "placed"), ("m2", "hang"), ("m3", "placed")])
        .await;
    let error = "Handler execution timed out after 2s";
    assert_failed_writes_rolled_back(&env, &events, &[1], error).await;
}

#[tokio::test]
async fn batch_handler_retry_after_a_rolled_back_failure_applies_the_effect_once() {
    let env = Env::new();
    let events = env.insert(&[("m1", "placed")]).await;
    let calls = Arc::new(std::sync::atomic::AtomicU32::new(0));
    let seen = calls.clone();
    // Adds 1 to a counter through the connection; the first run then fails.
    let h = handler_fn(
        move |_e: &InboxEvent, conn: &mut MemoryConn| -> BoxFuture<'_, HandlerResult> {
            let first = seen.fetch_add(1, std::sync::atomic::Ordering::SeqCst) == 0;
            Box::pin(async move {
                let n = conn
                    .get("counter")
                    .await
                    .and_then(|v| v.as_u64())
                    .unwrap_or(0);
                conn.put("counter", json!(n + 1)).await;
                if first {
                    return Err(HandlerError::permanent("flaky"));
                }
                Ok(HandlerOutcome::Completed)
            })
        },
    );
    let p = inbox_processor(env.store.clone(), h, env.opts()).unwrap();
    let r = env.run(&p, &Shutdown::new()).await;
    assert_eq!(r.failed_counted, vec![events[0].id()]);
    env.clock.advance(TimeDelta::hours(2));
    let r = env.run(&p, &Shutdown::new()).await;
    assert_eq!(r.completed, vec![events[0].id()]);
    assert_eq!(calls.load(std::sync::atomic::Ordering::SeqCst), 2);
    assert_eq!(
        env.db.value("counter").await,
        Some(json!(1)),
        "the effect happened once although the handler ran twice"
    );
}

#[test]
fn options_are_validated_and_step_order_is_fixed() {
    let store = MemoryOutboxStore::new();
    let bad = outbox_processor(
        store.clone(),
        MemoryBroker::new(),
        OutboxOptions::new().publish_concurrency(0),
    );
    assert!(matches!(bad, Err(Error::Validation(_))));
    let bad = inbox_processor(
        MemoryInboxStore::new(),
        recording_handler(),
        InboxOptions::new().handler_timeout(Duration::ZERO),
    );
    assert!(matches!(bad, Err(Error::Validation(_))));
    let p = outbox_processor(store, MemoryBroker::new(), OutboxOptions::new()).unwrap();
    assert_eq!(p.job(), "outbox_processor");
    let dbg = format!(
        "{:?}",
        OutboxOptions::<MemoryConn>::new().circuit_breaker(CircuitBreakerStep::default())
    );
    assert!(dbg.contains("circuit_breaker: true"), "{dbg}");
}

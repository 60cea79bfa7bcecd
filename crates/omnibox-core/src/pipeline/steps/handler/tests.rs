use std::time::Duration;

use chrono::TimeDelta;

use super::*;
use crate::clock::Clock;
use crate::error::HandlerError;
use crate::handler::{HandlerResult, handler_fn};
use crate::model::InboxEvent;
use crate::pipeline::Verdict;
use crate::pipeline::steps::test_support::{Fixture, drive, failed, inbox, with_attempts};
use crate::publisher::BoxFuture;

type Conn = u32;

fn step_with(
    f: impl for<'a> Fn(&'a InboxEvent, &'a mut Conn) -> BoxFuture<'a, HandlerResult>
    + Send
    + Sync
    + 'static,
) -> HandlerStep<impl Handler<InboxEvent, Conn>> {
    HandlerStep::new(handler_fn(f))
}

async fn run_one<H: Handler<InboxEvent, Conn>, S: HandlerSavepoints<Conn>>(
    step: &HandlerStep<H, S>,
    event: &InboxEvent,
    fx: &Fixture,
) -> (Verdict, Conn) {
    let mut conn: Conn = 0;
    let v = {
        let mut ctx = fx.ctx(Some(&mut conn));
        drive(&[step], std::slice::from_ref(event), &mut ctx).await
    };
    (v[0].clone(), conn)
}

#[tokio::test]
async fn completed_runs_with_the_batch_connection_and_reports_duration() {
    let fx = Fixture::new();
    let step = step_with(|_e, conn| {
        *conn += 1;
        Box::pin(async { Ok(HandlerOutcome::Completed) })
    });
    let e = inbox("m1");
    let (v, conn) = run_one(&step, &e, &fx).await;
    assert_eq!(v, Verdict::Completed);
    assert_eq!(conn, 1, "the handler received the batch's connection");
    assert_eq!(fx.metrics.durations().len(), 1);
}

#[tokio::test]
async fn bug3_skipped_events_are_completed_not_left_locked() {
    let fx = Fixture::new();
    let step = step_with(|_e, _c| Box::pin(async { Ok(HandlerOutcome::skipped("not ours")) }));
    let (v, _) = run_one(&step, &inbox("m1"), &fx).await;
    // A skip is a completion (settled as `Complete`), not a missing verdict.
    assert_eq!(
        v,
        Verdict::Skipped {
            reason: "not ours".into()
        }
    );
}

#[tokio::test]
async fn counted_retry_without_time_uses_backoff_from_previous_attempts() {
    let fx = Fixture::new();
    let now = fx.clock.now();
    let step = step_with(|_e, _c| Box::pin(async { Ok(HandlerOutcome::retry("later")) }));
    let (v, _) = run_one(&step, &inbox("m1"), &fx).await;
    let (err, kind, at) = failed(&v);
    assert_eq!(err, "later");
    assert_eq!(kind, FailureKind::Permanent);
    let at = at.unwrap();
    assert!(at >= now + TimeDelta::seconds(5) && at <= now + TimeDelta::seconds(10));

    // Two attempts already made: ceiling 40 s, equal jitter -> [20 s, 40 s].
    let e = with_attempts(&inbox("m2"), 2, 6);
    let (v, _) = run_one(&step, &e, &fx).await;
    let at = failed(&v).2.unwrap();
    assert!(at >= now + TimeDelta::seconds(20) && at <= now + TimeDelta::seconds(40));
}

#[tokio::test]
async fn uncounted_retry_without_time_retries_in_one_second_and_explicit_time_wins() {
    let fx = Fixture::new();
    let now = fx.clock.now();
    let step = step_with(|_e, _c| {
        Box::pin(async {
            Ok(HandlerOutcome::Retry {
                error: "busy".into(),
                counted: false,
                retry_at: None,
            })
        })
    });
    let (v, _) = run_one(&step, &inbox("m1"), &fx).await;
    assert_eq!(
        failed(&v),
        (
            "busy",
            FailureKind::Transient,
            Some(now + TimeDelta::seconds(1))
        )
    );

    let at = now + TimeDelta::minutes(7);
    let step = step_with(move |_e, _c| {
        Box::pin(async move {
            Ok(HandlerOutcome::Retry {
                error: "at seven".into(),
                counted: true,
                retry_at: Some(at),
            })
        })
    });
    let (v, _) = run_one(&step, &inbox("m2"), &fx).await;
    assert_eq!(failed(&v), ("at seven", FailureKind::Permanent, Some(at)));
}

#[tokio::test]
async fn handler_errors_map_to_transient_or_counted_failures() {
    let fx = Fixture::new();
    let now = fx.clock.now();
    let step =
        step_with(|_e, _c| Box::pin(async { Err(HandlerError::transient("db restarting")) }));
    let (v, _) = run_one(&step, &inbox("m1"), &fx).await;
    assert_eq!(
        failed(&v),
        (
            "db restarting",
            FailureKind::Transient,
            Some(now + TimeDelta::seconds(1))
        )
    );

    let step = step_with(|_e, _c| Box::pin(async { Err(HandlerError::permanent("bad payload")) }));
    let (v, _) = run_one(&step, &inbox("m2"), &fx).await;
    let (err, kind, at) = failed(&v);
    assert_eq!((err, kind), ("bad payload", FailureKind::Permanent));
    assert!(at.unwrap() >= now + TimeDelta::seconds(5));
}

#[tokio::test(start_paused = true)]
async fn timeout_is_a_counted_failure() {
    let fx = Fixture::new();
    let step = step_with(|_e, _c| {
        Box::pin(async {
            tokio::time::sleep(Duration::from_secs(3600)).await;
            Ok(HandlerOutcome::Completed)
        })
    })
    .timeout(Duration::from_secs(2));
    let (v, _) = run_one(&step, &inbox("m1"), &fx).await;
    let (err, kind, at) = failed(&v);
    assert_eq!(err, "Handler execution timed out after 2s");
    assert_eq!(kind, FailureKind::Permanent);
    assert!(at.is_some());
}

#[tokio::test(start_paused = true)]
async fn a_timeout_classified_transient_spends_no_attempt() {
    let fx = Fixture::new();
    let now = fx.clock.now();
    let step = step_with(|_e, _c| {
        Box::pin(async {
            tokio::time::sleep(Duration::from_secs(3600)).await;
            Ok(HandlerOutcome::Completed)
        })
    })
    .timeout(Duration::from_secs(2))
    .timeout_kind(FailureKind::Transient);
    let (v, _) = run_one(&step, &inbox("m1"), &fx).await;
    let (err, kind, at) = failed(&v);
    assert_eq!(err, "Handler execution timed out after 2s");
    assert_eq!(kind, FailureKind::Transient);
    assert_eq!(
        at,
        Some(now + TimeDelta::seconds(1)),
        "the transient retry delay, not the backoff"
    );
}

#[tokio::test]
async fn a_panicking_handler_fails_its_event_and_the_batch_goes_on() {
    let fx = Fixture::new();
    let step = step_with(|e, _c| {
        let boom = e.message_id == "boom";
        Box::pin(async move {
            if boom {
                panic!("kaboom");
            }
            Ok(HandlerOutcome::Completed)
        })
    });
    let events = [inbox("boom"), inbox("fine")];
    let mut conn: Conn = 0;
    let mut ctx = fx.ctx(Some(&mut conn));
    let v = drive(&[&step], &events, &mut ctx).await;
    let (err, kind, _) = failed(&v[0]);
    assert_eq!(err, "handler panicked: kaboom");
    assert_eq!(kind, FailureKind::Permanent);
    assert_eq!(v[1], Verdict::Completed);
}

#[tokio::test]
async fn without_a_connection_the_event_fails_with_an_explanation() {
    let fx = Fixture::new();
    let step = step_with(|_e, _c| Box::pin(async { Ok(HandlerOutcome::Completed) }));
    let mut ctx = fx.ctx::<InboxEvent, Conn>(None);
    let v = drive(&[&step], &[inbox("m1")], &mut ctx).await;
    let (err, kind, _) = failed(&v[0]);
    assert!(err.contains("process_batch"), "{err}");
    assert_eq!(kind, FailureKind::Permanent);
}

/// A slow step placed after the handler, as the reference's MetricsStep was.
struct SlowAfter;
impl Step<InboxEvent, Conn> for SlowAfter {
    async fn execute(
        &self,
        _e: &InboxEvent,
        _ctx: &mut BatchCtx<'_, InboxEvent, Conn>,
    ) -> StepResult {
        tokio::time::sleep(Duration::from_secs(100)).await;
        StepResult::Continue
    }
}

#[tokio::test(start_paused = true)]
async fn bug4_duration_measures_the_handler() {
    let fx = Fixture::new();
    let step = step_with(|_e, _c| {
        Box::pin(async {
            tokio::time::sleep(Duration::from_secs(3)).await;
            Ok(HandlerOutcome::Completed)
        })
    });
    let mut conn: Conn = 0;
    let mut ctx = fx.ctx(Some(&mut conn));
    drive(&[&step, &SlowAfter], &[inbox("m1"), inbox("m2")], &mut ctx).await;
    let d = fx.metrics.durations();
    assert_eq!(d.len(), 2);
    for d in d {
        // Paused time: exactly the handler's 3 s, none of the 100 s spent after it.
        assert!(
            d >= Duration::from_secs(3) && d < Duration::from_secs(4),
            "{d:?}"
        );
    }
}

/// Savepoints over the `u32` test connection: a savepoint remembers the value, rollback
/// restores it, release forgets it; each operation can be made to fail.
#[derive(Default)]
struct FakeSavepoints {
    stack: std::sync::Mutex<Vec<Conn>>,
    log: std::sync::Mutex<Vec<&'static str>>,
    fail_savepoint: bool,
    fail_release: bool,
    fail_rollback: bool,
}

impl FakeSavepoints {
    fn log(&self) -> Vec<&'static str> {
        self.log.lock().unwrap().clone()
    }

    fn op(&self, name: &'static str, fail: bool) -> Result<(), StoreError> {
        self.log.lock().unwrap().push(name);
        if fail {
            return Err(StoreError::Connection {
                message: format!("{name} refused"),
                source: None,
            });
        }
        Ok(())
    }
}

impl HandlerSavepoints<Conn> for FakeSavepoints {
    async fn savepoint(&self, conn: &mut Conn) -> Result<(), StoreError> {
        self.op("savepoint", self.fail_savepoint)?;
        self.stack.lock().unwrap().push(*conn);
        Ok(())
    }
    async fn rollback_to_savepoint(&self, conn: &mut Conn) -> Result<(), StoreError> {
        self.op("rollback", self.fail_rollback)?;
        *conn = *self.stack.lock().unwrap().last().unwrap();
        Ok(())
    }
    async fn release_savepoint(&self, _conn: &mut Conn) -> Result<(), StoreError> {
        self.op("release", self.fail_release)?;
        self.stack.lock().unwrap().pop().unwrap();
        Ok(())
    }
}

/// Adds 1 to the connection, then does what the message id says.
fn writing_then(
    savepoints: FakeSavepoints,
) -> HandlerStep<impl Handler<InboxEvent, Conn>, FakeSavepoints> {
    step_with(|e, conn| {
        *conn += 1;
        let what = e.message_id.clone();
        Box::pin(async move {
            match what.as_str() {
                "fail" => Err(HandlerError::permanent("cannot bill")),
                "retry" => Ok(HandlerOutcome::retry("later")),
                "panic" => panic!("kaboom"),
                "hang" => {
                    tokio::time::sleep(Duration::from_secs(3600)).await;
                    Ok(HandlerOutcome::Completed)
                }
                "skip" => Ok(HandlerOutcome::skipped("not ours")),
                _ => Ok(HandlerOutcome::Completed),
            }
        })
    })
    .timeout(Duration::from_secs(2))
    .savepoints(savepoints)
}

#[tokio::test(start_paused = true)]
async fn with_savepoints_every_failure_rolls_back_the_handlers_writes_and_success_keeps_them() {
    let fx = Fixture::new();
    let step = writing_then(FakeSavepoints::default());
    let events = [
        inbox("ok"),
        inbox("fail"),
        inbox("retry"),
        inbox("panic"),
        inbox("hang"),
        inbox("skip"),
    ];
    let mut conn: Conn = 0;
    let v = {
        let mut ctx = fx.ctx(Some(&mut conn));
        drive(&[&step], &events, &mut ctx).await
    };
    assert_eq!(v[0], Verdict::Completed);
    for (i, expected) in [
        (1, "cannot bill"),
        (2, "later"),
        (3, "handler panicked: kaboom"),
        (4, "Handler execution timed out after 2s"),
    ] {
        let (err, kind, _) = failed(&v[i]);
        assert_eq!((err, kind), (expected, FailureKind::Permanent));
    }
    assert!(matches!(v[5], Verdict::Skipped { .. }));
    // Only the completed and the skipped handler's writes survive.
    assert_eq!(conn, 2);
    let sp = &step.savepoints;
    assert_eq!(
        sp.log(),
        [
            "savepoint",
            "release", // ok
            "savepoint",
            "rollback",
            "release", // fail
            "savepoint",
            "rollback",
            "release", // retry
            "savepoint",
            "rollback",
            "release", // panic
            "savepoint",
            "rollback",
            "release", // hang
            "savepoint",
            "release", // skip
        ]
    );
    assert!(
        sp.stack.lock().unwrap().is_empty(),
        "no savepoint is left open"
    );
}

#[tokio::test]
async fn savepoint_failure_is_transient_and_the_handler_does_not_run() {
    let fx = Fixture::new();
    let step = writing_then(FakeSavepoints {
        fail_savepoint: true,
        ..Default::default()
    });
    let now = fx.clock.now();
    let (v, conn) = run_one(&step, &inbox("ok"), &fx).await;
    let (err, kind, at) = failed(&v);
    assert!(err.contains("savepoint refused"), "{err}");
    assert_eq!(kind, FailureKind::Transient, "no attempt is spent");
    assert_eq!(at, Some(now + TimeDelta::seconds(1)));
    assert_eq!(conn, 0, "the handler did not run");
    assert_eq!(step.savepoints.log(), ["savepoint"]);
    assert!(fx.metrics.durations().is_empty());
}

#[tokio::test]
async fn release_failure_after_success_rolls_back_and_counts_the_attempt() {
    let fx = Fixture::new();
    let step = writing_then(FakeSavepoints {
        fail_release: true,
        ..Default::default()
    });
    let (v, conn) = run_one(&step, &inbox("ok"), &fx).await;
    let (err, kind, _) = failed(&v);
    assert!(err.contains("release refused"), "{err}");
    assert_eq!(kind, FailureKind::Permanent);
    assert_eq!(conn, 0, "the writes were rolled back");
    assert_eq!(
        step.savepoints.log(),
        ["savepoint", "release", "rollback"],
        "a failed release is not retried: the rolled-back savepoint stays until the transaction ends"
    );
}

#[tokio::test]
async fn rollback_failure_stops_the_batch_with_a_transient_failure() {
    let fx = Fixture::new();
    let step = writing_then(FakeSavepoints {
        fail_rollback: true,
        ..Default::default()
    });
    let events = [inbox("fail"), inbox("ok")];
    let mut conn: Conn = 0;
    let v = {
        let mut ctx = fx.ctx(Some(&mut conn));
        drive(&[&step], &events, &mut ctx).await
    };
    let (err, kind, _) = failed(&v[0]);
    assert!(err.contains("could not be rolled back"), "{err}");
    assert!(err.contains("rollback refused"), "{err}");
    assert_eq!(kind, FailureKind::Transient);
    assert_eq!(v[1], Verdict::Released, "the batch stopped");
    assert_eq!(step.savepoints.log(), ["savepoint", "rollback"]);
}

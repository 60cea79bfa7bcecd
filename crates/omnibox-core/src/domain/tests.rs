//! Every transition of [`Domain`] and its refusals, the backoff bands, and property tests:
//! no sequence of operations breaks an event's invariants.

use std::time::Duration;

use chrono::TimeZone;
use proptest::prelude::*;
use serde_json::json;

use super::*;
use crate::backoff::{Backoff, Jitter};
use crate::model::limits::{LAST_ERROR_MAX_BYTES, TRUNCATION_SUFFIX};
use crate::model::{InboxEvent, OutboxEvent};

fn t0() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 1, 1, 12, 0, 0).unwrap()
}

fn secs(s: i64) -> TimeDelta {
    TimeDelta::seconds(s)
}

fn outbox(max_attempts: u32) -> OutboxEvent {
    OutboxEvent::builder("order", uuid::Uuid::now_v7(), "order.placed", "orders", "k")
        .payload(json!({"n": 1}))
        .created_at(t0())
        .max_attempts(max_attempts)
        .build()
        .unwrap()
}

fn w(id: &str) -> WorkerId {
    WorkerId::new(id).unwrap()
}

fn d() -> Domain {
    Domain::default()
}

fn locked(max_attempts: u32) -> OutboxEvent {
    d().lock(&outbox(max_attempts), &w("w1"), t0()).unwrap()
}

fn completed() -> OutboxEvent {
    d().complete(&locked(3), &w("w1"), t0() + secs(1)).unwrap()
}

fn failed() -> OutboxEvent {
    d().fail(&locked(1), &w("w1"), "boom", true, None).unwrap()
}

// ---- lock / refresh / unlock ---------------------------------------------------------

#[test]
fn lock_sets_owner_and_lease_start() {
    let e = locked(3);
    assert_eq!(e.common.locked_by.as_deref(), Some("w1"));
    assert_eq!(e.common.locked_at, Some(t0()));
    assert_eq!(e.common.status, EventStatus::Pending);
    assert!(e.common.is_locked());
}

#[test]
fn lock_refuses_non_pending_and_locked_events() {
    for e in [completed(), failed()] {
        assert!(matches!(
            d().lock(&e, &w("w1"), t0()),
            Err(DomainError::InvalidState { expected, .. }) if expected == [EventStatus::Pending]
        ));
    }
    let e = locked(3);
    assert_eq!(
        d().lock(&e, &w("w2"), t0()),
        Err(DomainError::AlreadyLocked {
            id: e.common.id,
            locked_by: "w1".into()
        })
    );
    // Even the owner cannot lock twice: refresh is the way to extend a lease.
    assert!(matches!(
        d().lock(&e, &w("w1"), t0()),
        Err(DomainError::AlreadyLocked { .. })
    ));
}

#[test]
fn refresh_moves_the_lease_for_the_owner_only() {
    let e = locked(3);
    let r = d().refresh(&e, &w("w1"), t0() + secs(30)).unwrap();
    assert_eq!(r.common.locked_at, Some(t0() + secs(30)));
    assert_eq!(
        d().refresh(&e, &w("w2"), t0()),
        Err(DomainError::LockedByAnother {
            id: e.common.id,
            locked_by: "w1".into(),
            worker: "w2".into()
        })
    );
    let unlocked = outbox(3);
    assert_eq!(
        d().refresh(&unlocked, &w("w1"), t0()),
        Err(DomainError::NotLocked {
            id: unlocked.common.id
        })
    );
    assert!(matches!(
        d().refresh(&completed(), &w("w1"), t0()),
        Err(DomainError::InvalidState { .. })
    ));
}

#[test]
fn unlock_gives_the_lease_back_without_an_attempt() {
    let e = d().unlock(&locked(3), &w("w1")).unwrap();
    assert!(!e.common.is_locked());
    assert_eq!(e.common.locked_by, None);
    assert_eq!(e.common.attempts_made, 0);
    assert!(matches!(
        d().unlock(&locked(3), &w("w2")),
        Err(DomainError::LockedByAnother { .. })
    ));
    assert!(matches!(
        d().unlock(&outbox(3), &w("w1")),
        Err(DomainError::NotLocked { .. })
    ));
    assert!(matches!(
        d().unlock(&failed(), &w("w1")),
        Err(DomainError::InvalidState { .. })
    ));
}

#[test]
fn assert_locked_by_distinguishes_not_locked_and_other_owner() {
    let dm = d();
    assert!(dm.assert_locked_by(&locked(3), &w("w1")).is_ok());
    assert!(matches!(
        dm.assert_locked_by(&locked(3), &w("w9")),
        Err(DomainError::LockedByAnother { .. })
    ));
    assert!(matches!(
        dm.assert_locked_by(&outbox(3), &w("w1")),
        Err(DomainError::NotLocked { .. })
    ));
}

#[test]
fn lease_staleness_is_strictly_greater_than_the_ttl() {
    let e = locked(3);
    let dm = d();
    assert!(!dm.is_lease_stale(&e, t0() + DEFAULT_LEASE_TTL, DEFAULT_LEASE_TTL));
    assert!(dm.is_lease_stale(
        &e,
        t0() + DEFAULT_LEASE_TTL + TimeDelta::microseconds(1),
        DEFAULT_LEASE_TTL
    ));
    assert!(!dm.is_lease_stale(&outbox(3), t0() + secs(10_000), DEFAULT_LEASE_TTL));
    assert_eq!(DEFAULT_LEASE_TTL, secs(300));
}

#[test]
fn lease_expired_error_names_the_previous_owner() {
    assert_eq!(
        lease_expired_error("relay-1"),
        "lease expired: worker `relay-1` did not finish in time"
    );
}

// ---- complete ------------------------------------------------------------------------

#[test]
fn complete_sets_completion_and_clears_the_lease() {
    let e = locked(3);
    let e = d().fail(&e, &w("w1"), "first", true, None).unwrap();
    let e = d().lock(&e, &w("w1"), t0() + secs(5)).unwrap();
    let done = d().complete(&e, &w("w1"), t0() + secs(6)).unwrap();
    assert_eq!(done.common.status, EventStatus::Completed);
    assert_eq!(done.common.completed_at, Some(t0() + secs(6)));
    assert!(!done.common.is_locked());
    // Attempts are kept: they count failures, not runs.
    assert_eq!(done.common.attempts_made, 1);
    assert_eq!(done.common.attempts_left(), 0);
    assert!(!done.common.can_retry());
}

#[test]
fn complete_refusals() {
    let e = locked(3);
    let dm = d();
    assert!(matches!(
        dm.complete(&e, &w("w2"), t0()),
        Err(DomainError::LockedByAnother { .. })
    ));
    assert!(matches!(
        dm.complete(&outbox(3), &w("w1"), t0()),
        Err(DomainError::NotLocked { .. })
    ));
    assert!(matches!(
        dm.complete(&completed(), &w("w1"), t0() + secs(9)),
        Err(DomainError::InvalidState { .. })
    ));
    assert!(matches!(
        dm.complete(&failed(), &w("w1"), t0() + secs(9)),
        Err(DomainError::InvalidState { .. })
    ));
    // Before creation: no skew allowed for the completion time.
    assert_eq!(
        dm.complete(&e, &w("w1"), t0() - TimeDelta::microseconds(1)),
        Err(DomainError::InvalidTime {
            id: e.common.id,
            reason: "completed_at is before created_at or scheduled_at"
        })
    );
    // Before the schedule (a retry time in the future).
    let later = dm
        .fail(&e, &w("w1"), "x", false, Some(t0() + secs(60)))
        .unwrap();
    let later = dm.lock(&later, &w("w1"), t0() + secs(1)).unwrap();
    assert!(matches!(
        dm.complete(&later, &w("w1"), t0() + secs(59)),
        Err(DomainError::InvalidTime { .. })
    ));
    assert!(dm.complete(&later, &w("w1"), t0() + secs(60)).is_ok());
}

// ---- fail ----------------------------------------------------------------------------

#[test]
fn counted_failure_spends_an_attempt_and_schedules_the_retry() {
    let e = locked(3);
    let f = d()
        .fail(&e, &w("w1"), "  boom  ", true, Some(t0() + secs(10)))
        .unwrap();
    assert_eq!(f.common.attempts_made, 1);
    assert_eq!(f.common.status, EventStatus::Pending);
    assert_eq!(f.common.last_error.as_deref(), Some("boom"));
    assert_eq!(f.common.scheduled_at, t0() + secs(10));
    assert!(!f.common.is_locked());
    assert_eq!(f.common.attempts_left(), 2);
}

#[test]
fn uncounted_failure_keeps_the_budget() {
    let f = d()
        .fail(&locked(3), &w("w1"), "broker down", false, None)
        .unwrap();
    assert_eq!(f.common.attempts_made, 0);
    assert_eq!(f.common.status, EventStatus::Pending);
    // Without a retry time the schedule stays.
    assert_eq!(f.common.scheduled_at, t0());
}

#[test]
fn the_last_counted_attempt_makes_the_event_failed() {
    let dm = d();
    let mut e = outbox(2);
    for i in 0..2 {
        e = dm.lock(&e, &w("w1"), t0() + secs(i)).unwrap();
        e = dm
            .fail(&e, &w("w1"), "boom", true, Some(t0() + secs(100)))
            .unwrap();
    }
    assert_eq!(e.common.status, EventStatus::Failed);
    assert_eq!(e.common.attempts_made, 2);
    // The retry time is applied even to the terminal failure, as in the reference.
    assert_eq!(e.common.scheduled_at, t0() + secs(100));
    assert_eq!(e.common.attempts_left(), 0);
    assert!(!e.common.can_retry());
}

#[test]
fn fail_refusals() {
    let dm = d();
    assert!(matches!(
        dm.fail(&locked(3), &w("w2"), "x", true, None),
        Err(DomainError::LockedByAnother { .. })
    ));
    assert!(matches!(
        dm.fail(&outbox(3), &w("w1"), "x", true, None),
        Err(DomainError::NotLocked { .. })
    ));
    assert!(matches!(
        dm.fail(&failed(), &w("w1"), "x", true, None),
        Err(DomainError::InvalidState { .. })
    ));
    assert!(matches!(
        dm.fail(&completed(), &w("w1"), "x", false, None),
        Err(DomainError::InvalidState { .. })
    ));
}

#[test]
fn apply_failure_refuses_a_spent_budget() {
    let dm = d();
    let f = failed();
    assert_eq!(
        dm.apply_failure(&f, "again", true, None),
        Err(DomainError::AttemptsExhausted {
            id: f.common.id,
            max_attempts: 1
        })
    );
    // Stale-lease recovery uses apply_failure directly: it counts without an owner check.
    let e = locked(2);
    let r = dm
        .apply_failure(&e, &lease_expired_error("w1"), true, None)
        .unwrap();
    assert_eq!(r.common.attempts_made, 1);
    assert!(!r.common.is_locked());
}

#[test]
fn failure_messages_are_truncated_to_the_byte_limit() {
    let long = "é".repeat(3000);
    let f = d().fail(&locked(3), &w("w1"), &long, true, None).unwrap();
    let err = f.common.last_error.clone().unwrap();
    assert!(err.len() <= LAST_ERROR_MAX_BYTES, "{}", err.len());
    assert!(err.ends_with(TRUNCATION_SUFFIX));
    let f = d().fail(&locked(3), &w("w1"), "   ", true, None).unwrap();
    assert_eq!(f.common.last_error.as_deref(), Some("unknown error"));
}

/// Reference bug 11: a retry (or requeue) far in the future produced rows that later failed
/// validation and broke every fetch returning them. Retry times are clamped instead.
#[test]
fn reference_bug_11_far_retry_times_are_clamped() {
    let dm = d();
    let max = dm.limits().schedule_max_future;
    let far = t0() + TimeDelta::days(5000);
    let f = dm.fail(&locked(3), &w("w1"), "x", true, Some(far)).unwrap();
    assert_eq!(f.common.scheduled_at, t0() + max);
    assert!(f.common.check_invariants(dm.limits()).is_ok());
    // A retry time before creation is raised to the creation time.
    let f = dm
        .fail(&locked(3), &w("w1"), "x", true, Some(t0() - secs(3600)))
        .unwrap();
    assert_eq!(f.common.scheduled_at, t0());
    // The clamp itself.
    assert_eq!(dm.clamp_schedule(t0(), t0() + secs(5)), t0() + secs(5));
    assert_eq!(dm.clamp_schedule(t0(), t0() + max), t0() + max);
    assert_eq!(dm.clamp_schedule(t0(), t0() + max + secs(1)), t0() + max);
    assert_eq!(dm.clamp_schedule(t0(), t0() - secs(1)), t0());
    // Requeue years after creation stays valid too.
    let r = dm.requeue(&failed(), t0() + TimeDelta::days(800)).unwrap();
    assert_eq!(r.common.scheduled_at, t0() + max);
    assert!(r.common.check_invariants(dm.limits()).is_ok());
}

// ---- force unlock / requeue ----------------------------------------------------------

#[test]
fn force_unlock_clears_anyones_lease_and_records_the_reason() {
    let e = d().force_unlock(&locked(3), "  stuck worker ").unwrap();
    assert!(!e.common.is_locked());
    assert_eq!(
        e.common.last_error.as_deref(),
        Some("Administrative force unlock: stuck worker")
    );
    assert_eq!(e.common.attempts_made, 0);
    assert!(matches!(
        d().force_unlock(&outbox(3), "x"),
        Err(DomainError::NotLocked { .. })
    ));
}

#[test]
fn force_unlock_reason_limits() {
    let ok = "r".repeat(255);
    assert!(d().force_unlock(&locked(3), &ok).is_ok());
    assert_eq!(
        d().force_unlock(&locked(3), &"r".repeat(256)),
        Err(DomainError::Validation(ValidationError::TooLong {
            field: "reason",
            max: 255,
            actual: 256
        }))
    );
    assert_eq!(
        d().force_unlock(&locked(3), " \t "),
        Err(DomainError::Validation(ValidationError::Blank {
            field: "reason"
        }))
    );
    // Characters, not bytes.
    assert!(d().force_unlock(&locked(3), &"é".repeat(255)).is_ok());
}

#[test]
fn requeue_revives_a_failed_event_with_a_fresh_budget() {
    let r = d().requeue(&failed(), t0() + secs(3600)).unwrap();
    assert_eq!(r.common.status, EventStatus::Pending);
    assert_eq!(r.common.attempts_made, 0);
    assert_eq!(r.common.last_error, None);
    assert_eq!(r.common.scheduled_at, t0() + secs(3600));
    assert_eq!(r.common.attempts_left(), 1);
    for e in [outbox(3), locked(3), completed()] {
        assert!(matches!(
            d().requeue(&e, t0()),
            Err(DomainError::InvalidState { expected, .. }) if expected == [EventStatus::Failed]
        ));
    }
}

#[test]
fn domain_refuses_invalid_limits() {
    assert!(Domain::new(Limits::default().max_attempts(0)).is_err());
    assert!(Domain::new(Limits::default().schedule_max_future(Duration::ZERO)).is_err());
    assert!(Domain::new(Limits::default().payload_max_bytes(0)).is_err());
    assert!(Domain::new(Limits::default()).is_ok());
}

#[test]
fn transitions_work_on_inbox_events_too() {
    let e = InboxEvent::builder("m", "g", "orders", "t")
        .payload(json!({"a": 1}))
        .created_at(t0())
        .build()
        .unwrap();
    let dm = d();
    let e = dm.lock(&e, &w("c1"), t0()).unwrap();
    let e = dm.complete(&e, &w("c1"), t0() + secs(1)).unwrap();
    assert_eq!(e.common.status, EventStatus::Completed);
    assert_eq!(e.message_id, "m");
}

// ---- backoff bands ---------------------------------------------------------------------

#[test]
fn backoff_bands_per_jitter_mode() {
    let base = Duration::from_secs(10);
    let cap = Duration::from_secs(3600);
    let none = Backoff::new(base, cap, Jitter::None).unwrap();
    let full = Backoff::new(base, cap, Jitter::Full).unwrap();
    let equal = Backoff::new(base, cap, Jitter::Equal).unwrap();
    for attempts in 0..12 {
        let hi = none.ceiling(attempts);
        assert_eq!(none.delay(attempts), hi);
        for _ in 0..100 {
            let f = full.delay(attempts);
            assert!(f <= hi, "full {f:?} > {hi:?}");
            let e = equal.delay(attempts);
            assert!(
                e >= hi / 2 && e <= hi,
                "equal {e:?} not in [{:?}, {hi:?}]",
                hi / 2
            );
        }
    }
    assert_eq!(none.ceiling(0), Duration::from_secs(10));
    assert_eq!(none.ceiling(1), Duration::from_secs(20));
    assert_eq!(none.ceiling(8), Duration::from_secs(2560));
    assert_eq!(none.ceiling(9), cap);
    assert_eq!(none.ceiling(u32::MAX), cap);
    assert!(Backoff::new(base, Duration::ZERO, Jitter::Full).is_err());
}

// ---- property tests ----------------------------------------------------------------------

#[derive(Debug, Clone)]
enum Op {
    Lock(usize),
    Refresh(usize),
    Unlock(usize),
    Complete(usize),
    Fail {
        worker: usize,
        counted: bool,
        retry_in: Option<i64>,
    },
    ForceUnlock(usize),
    Requeue,
}

const WORKERS: [&str; 3] = ["w-a", "w-b", "w-c"];

fn op() -> impl Strategy<Value = Op> {
    let worker = 0..WORKERS.len();
    prop_oneof![
        worker.clone().prop_map(Op::Lock),
        worker.clone().prop_map(Op::Refresh),
        worker.clone().prop_map(Op::Unlock),
        worker.clone().prop_map(Op::Complete),
        (
            worker,
            any::<bool>(),
            // From an hour before creation to two years after: both clamps are exercised.
            proptest::option::of(-3_600i64..(2 * 365 * 86_400)),
        )
            .prop_map(|(worker, counted, retry_in)| Op::Fail {
                worker,
                counted,
                retry_in
            }),
        (0usize..300).prop_map(Op::ForceUnlock),
        Just(Op::Requeue),
    ]
}

fn check<E: Event>(e: &E, limits: &Limits) -> Result<(), TestCaseError> {
    let c = e.common();
    prop_assert!(c.attempts_made <= c.max_attempts);
    prop_assert_eq!(c.status == EventStatus::Completed, c.completed_at.is_some());
    prop_assert_eq!(c.locked_at.is_some(), c.locked_by.is_some());
    if c.is_locked() {
        prop_assert_eq!(c.status, EventStatus::Pending);
    }
    if c.status == EventStatus::Failed {
        prop_assert_eq!(c.attempts_made, c.max_attempts);
    }
    if c.status == EventStatus::Pending {
        prop_assert!(c.attempts_made < c.max_attempts);
    }
    prop_assert!(
        c.check_invariants(limits).is_ok(),
        "{:?}",
        c.check_invariants(limits)
    );
    Ok(())
}

/// Apply `ops` to `start`, one second apart (plus `gaps`), checking every produced event and
/// that transitions whose preconditions hold do succeed.
fn run_ops<E: Event>(start: E, ops: &[(Op, i64)]) -> Result<(), TestCaseError> {
    let dm = d();
    let limits = dm.limits().clone();
    let mut e = start;
    let mut now = e.common().created_at;
    check(&e, &limits)?;
    for (op, gap) in ops {
        now += secs(*gap);
        let c = e.common().clone();
        let pending = c.status == EventStatus::Pending;
        let owner = |i: usize| c.locked_by.as_deref() == Some(WORKERS[i]);
        let result = match op {
            Op::Lock(i) => {
                let r = dm.lock(&e, &w(WORKERS[*i]), now);
                prop_assert_eq!(r.is_ok(), pending && !c.is_locked(), "lock {:?}", r);
                r
            }
            Op::Refresh(i) => {
                let r = dm.refresh(&e, &w(WORKERS[*i]), now);
                prop_assert_eq!(r.is_ok(), pending && owner(*i), "refresh {:?}", r);
                r
            }
            Op::Unlock(i) => {
                let r = dm.unlock(&e, &w(WORKERS[*i]));
                prop_assert_eq!(r.is_ok(), pending && owner(*i), "unlock {:?}", r);
                r
            }
            Op::Complete(i) => {
                let r = dm.complete(&e, &w(WORKERS[*i]), now);
                let timely = now >= c.created_at && now >= c.scheduled_at;
                prop_assert_eq!(
                    r.is_ok(),
                    pending && owner(*i) && timely,
                    "complete {:?}",
                    r
                );
                r
            }
            Op::Fail {
                worker,
                counted,
                retry_in,
            } => {
                let retry = retry_in.map(|s| now + secs(s));
                let r = dm.fail(&e, &w(WORKERS[*worker]), "boom", *counted, retry);
                prop_assert_eq!(r.is_ok(), pending && owner(*worker), "fail {:?}", r);
                if let Ok(next) = &r {
                    let n = next.common();
                    prop_assert_eq!(n.attempts_made, c.attempts_made + u32::from(*counted));
                    if let Some(at) = retry {
                        prop_assert_eq!(n.scheduled_at, dm.clamp_schedule(c.created_at, at));
                    }
                }
                r
            }
            Op::ForceUnlock(len) => {
                let reason = "r".repeat(*len);
                let r = dm.force_unlock(&e, &reason);
                prop_assert_eq!(
                    r.is_ok(),
                    c.is_locked() && (1..=255).contains(len),
                    "force {:?}",
                    r
                );
                r
            }
            Op::Requeue => {
                let r = dm.requeue(&e, now);
                prop_assert_eq!(
                    r.is_ok(),
                    c.status == EventStatus::Failed,
                    "requeue {:?}",
                    r
                );
                r
            }
        };
        if let Ok(next) = result {
            prop_assert_eq!(next.id(), e.id());
            prop_assert_eq!(next.common().created_at, c.created_at);
            prop_assert_eq!(&next.common().payload, &c.payload);
            e = next;
        }
        check(&e, &limits)?;
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn no_operation_sequence_breaks_outbox_invariants(
        max_attempts in 1u32..5,
        ops in proptest::collection::vec((op(), 0i64..400), 1..60),
    ) {
        run_ops(outbox(max_attempts), &ops)?;
    }

    #[test]
    fn no_operation_sequence_breaks_inbox_invariants(
        max_attempts in 1u32..5,
        ops in proptest::collection::vec((op(), 0i64..400), 1..60),
    ) {
        let e = InboxEvent::builder("m", "g", "orders", "t")
            .payload(json!({"a": [1, 2]}))
            .created_at(t0())
            .max_attempts(max_attempts)
            .build()
            .unwrap();
        run_ops(e, &ops)?;
    }

    #[test]
    fn clamped_schedules_always_validate(offset in -10_000_000_000i64..10_000_000_000) {
        let dm = d();
        let at = t0() + TimeDelta::milliseconds(offset);
        let s = dm.clamp_schedule(t0(), at);
        prop_assert!(s >= t0());
        prop_assert!(s - t0() <= dm.limits().schedule_max_future);
        if at >= t0() && at - t0() <= dm.limits().schedule_max_future {
            prop_assert_eq!(s, at);
        }
    }
}

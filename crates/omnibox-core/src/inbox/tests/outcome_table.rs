//! The strategy × situation table of the module docs, checked cell by cell.

use super::support::*;
use crate::inbox::{AckStrategy, CommitPolicy, ConsumeOutcome};
use crate::model::{EventStatus, Limits};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Situation {
    NoHandler,
    HandlerOk,
    HandlerSkip,
    HandlerError,
    HandlerErrorLastAttempt,
    HandlerRetryUncounted,
    HandlerTimeout,
    /// The handler runs past the process timeout, classified transient by the runner.
    HandlerTimeoutTransient,
    HandlerPanic,
    Duplicate,
    RowFailed,
    RowLeasedElsewhere,
    PersistFailure,
    Malformed,
    MalformedDeadLetterFails,
}

/// The row of the message after the call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Row {
    Absent,
    /// Pending, unlocked, with this many attempts spent.
    Pending(u32),
    /// Pending and leased by the other worker.
    LeasedElsewhere,
    Completed,
    Failed,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Expect {
    /// Acknowledged (else: handed back).
    acked: bool,
    /// `process_one` returned an error.
    error: bool,
    row: Row,
    dead_letters: usize,
    /// The handler's business effect committed.
    effect: bool,
    /// Outcome flag `handled` (only checked when no error).
    handled: bool,
    /// Outcome flag `duplicate`.
    duplicate: bool,
    /// Outcome flag `dead_lettered`.
    dead_lettered: bool,
}

const fn ack(row: Row) -> Expect {
    Expect {
        acked: true,
        error: false,
        row,
        dead_letters: 0,
        effect: false,
        handled: false,
        duplicate: false,
        dead_lettered: false,
    }
}

const fn nack(row: Row) -> Expect {
    Expect {
        acked: false,
        ..ack(row)
    }
}

impl Expect {
    const fn err(self) -> Self {
        Self {
            error: true,
            ..self
        }
    }
    const fn handled(self) -> Self {
        Self {
            handled: true,
            ..self
        }
    }
    const fn effect(self) -> Self {
        Self {
            effect: true,
            ..self
        }
    }
    const fn duplicate(self) -> Self {
        Self {
            duplicate: true,
            ..self
        }
    }
    const fn dead(self) -> Self {
        Self {
            dead_letters: 1,
            dead_lettered: true,
            ..self
        }
    }
}

const STRATEGIES: [AckStrategy; 4] = [
    AckStrategy::AtMostOnce,
    AckStrategy::AtLeastOnce(CommitPolicy::OnPersist),
    AckStrategy::AtLeastOnce(CommitPolicy::OnSuccess),
    AckStrategy::ExactlyOnceInbox,
];

use Row::*;
use Situation::*;

/// Columns: AtMostOnce, AtLeastOnce(OnPersist), AtLeastOnce(OnSuccess), ExactlyOnceInbox.
/// (At most once always acknowledges first; "acked" there is the early acknowledgement.)
#[rustfmt::skip]
const TABLE: &[(Situation, [Expect; 4])] = &[
    (NoHandler,               [ack(Pending(0)), ack(Pending(0)), ack(Pending(0)), ack(Pending(0))]),
    (HandlerOk,               [ack(Completed).handled().effect(), ack(Completed).handled().effect(), ack(Completed).handled().effect(), ack(Completed).handled().effect()]),
    (HandlerSkip,             [ack(Completed).handled(), ack(Completed).handled(), ack(Completed).handled(), ack(Completed).handled()]),
    (HandlerError,            [ack(Pending(1)), ack(Pending(1)), nack(Pending(1)), nack(Pending(1))]),
    (HandlerErrorLastAttempt, [ack(Failed).dead(), ack(Failed).dead(), ack(Failed).dead(), ack(Failed).dead()]),
    (HandlerRetryUncounted,   [ack(Pending(0)), ack(Pending(0)), nack(Pending(0)), nack(Pending(0))]),
    (HandlerTimeout,          [ack(Pending(1)), ack(Pending(1)), nack(Pending(1)), nack(Pending(1))]),
    (HandlerTimeoutTransient, [ack(Pending(0)), ack(Pending(0)), nack(Pending(0)), nack(Pending(0))]),
    (HandlerPanic,            [ack(Pending(1)), ack(Pending(1)), nack(Pending(1)), nack(Pending(1))]),
    (Duplicate,               [ack(Completed).duplicate(), ack(Completed).duplicate(), ack(Completed).duplicate(), ack(Completed).duplicate()]),
    (RowFailed,               [ack(Failed).dead(), ack(Failed).dead(), ack(Failed).dead(), ack(Failed).dead()]),
    (RowLeasedElsewhere,      [ack(LeasedElsewhere), ack(LeasedElsewhere), nack(LeasedElsewhere), nack(LeasedElsewhere)]),
    (PersistFailure,          [ack(Absent).err(), nack(Absent).err(), nack(Absent).err(), nack(Absent).err()]),
    (Malformed,               [ack(Absent).dead(), ack(Absent).dead(), ack(Absent).dead(), ack(Absent).dead()]),
    (MalformedDeadLetterFails,[ack(Absent).err(), nack(Absent).err(), nack(Absent).err(), nack(Absent).err()]),
];

const MSG: &str = "m-1";

fn script(s: Situation) -> Option<Script> {
    match s {
        NoHandler => None,
        HandlerOk
        | Duplicate
        | RowFailed
        | RowLeasedElsewhere
        | PersistFailure
        | Malformed
        | MalformedDeadLetterFails => Some(Script::Complete),
        HandlerSkip => Some(Script::Skip),
        HandlerError | HandlerErrorLastAttempt => Some(Script::Fail),
        HandlerRetryUncounted => Some(Script::RetryUncounted),
        HandlerTimeout | HandlerTimeoutTransient => Some(Script::Hang),
        HandlerPanic => Some(Script::Panic),
    }
}

async fn observe(situation: Situation, strategy: AckStrategy) -> Expect {
    let h = Harness::new();
    match situation {
        Duplicate => h.seed_completed(MSG).await,
        RowFailed => h.seed_failed(MSG).await,
        RowLeasedElsewhere => h.seed_leased(MSG).await,
        PersistFailure => h.store.fail_next_inserts(1),
        MalformedDeadLetterFails => h.store.fail_next_dead_letters(1),
        _ => {}
    }
    if matches!(situation, Malformed | MalformedDeadLetterFails) {
        h.broker.push_raw(TOPIC, "{not json", Default::default());
    } else {
        h.push(MSG);
    }
    let limits = if situation == HandlerErrorLastAttempt {
        attempts(1)
    } else {
        Limits::default()
    };
    let mut builder = h.builder(strategy, "runner-1").limits(limits);
    if situation == HandlerTimeoutTransient {
        builder = builder.process_timeout_kind(crate::FailureKind::Transient);
    }
    let result: Result<ConsumeOutcome, crate::Error> = match script(situation) {
        None => {
            let mut r = builder.build().unwrap();
            tokio::time::timeout(WAIT, r.process_one()).await.unwrap()
        }
        Some(s) => {
            let mut r = builder.handler(Scripted::new(s)).build().unwrap();
            tokio::time::timeout(WAIT, r.process_one()).await.unwrap()
        }
    };
    let row = h.row(MSG).await;
    let row = match &row {
        None => Absent,
        Some(r) => match r.common.status {
            EventStatus::Completed => Completed,
            EventStatus::Failed => Failed,
            EventStatus::Pending => match r.common.locked_by.as_deref() {
                None => Pending(r.common.attempts_made),
                Some("other-worker") => LeasedElsewhere,
                Some(other) => panic!("row left locked by {other}: {r:?}"),
            },
        },
    };
    assert_eq!(h.acked() + h.nacked(), 1, "exactly one ack or nack");
    let outcome = result.as_ref().ok();
    Expect {
        acked: h.acked() == 1,
        error: result.is_err(),
        row,
        dead_letters: h.dead_letters().await.len(),
        effect: h.effect(MSG).await == 1,
        handled: outcome.is_some_and(|o| o.handled),
        duplicate: outcome.is_some_and(|o| o.duplicate),
        dead_lettered: outcome.is_some_and(|o| o.dead_lettered),
    }
}

#[tokio::test(start_paused = true)]
async fn outcome_table() {
    let mut mismatches = Vec::new();
    for (situation, expected) in TABLE {
        for (strategy, want) in STRATEGIES.iter().zip(expected) {
            let mut got = observe(*situation, *strategy).await;
            if want.error {
                // The outcome is not returned with an error: its flags are not observable.
                got.dead_lettered = want.dead_lettered;
            }
            if got != *want {
                mismatches.push(format!(
                    "{situation:?} × {strategy}:\n  want {want:?}\n  got  {got:?}"
                ));
            }
        }
    }
    assert_eq!(TABLE.len(), 15, "every situation is in the table");
    assert!(mismatches.is_empty(), "{}", mismatches.join("\n"));
}

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

/// The two healthy messages around the situation's message in a batch.
const COMPANIONS: [&str; 2] = ["companion-before", "companion-after"];

/// Run the situation alone (`process_one`), or in a batch between two healthy messages
/// (`process_batch`), and read back what happened to its message. In a batch, the
/// companions are checked too: they complete and are acknowledged whatever their
/// neighbour does, except when storing fails (the whole batch is handed back).
async fn observe(situation: Situation, strategy: AckStrategy, batched: bool) -> Expect {
    let h = Harness::new();
    if batched {
        // A unique dedup key: the batch path (otherwise a batch runs one at a time).
        h.store.set_dedup_key_unique(true);
        h.push(COMPANIONS[0]);
    }
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
    if batched {
        h.push(COMPANIONS[1]);
    }
    let limits = if situation == HandlerErrorLastAttempt {
        attempts(1)
    } else {
        Limits::default()
    };
    let mut builder = h.builder(strategy, "runner-1").limits(limits);
    if batched {
        builder = builder.batch_size(10);
    }
    if situation == HandlerTimeoutTransient {
        builder = builder.process_timeout_kind(crate::FailureKind::Transient);
    }
    let result: Result<ConsumeOutcome, crate::Error> = match (script(situation), batched) {
        (None, false) => {
            let mut r = builder.build().unwrap();
            tokio::time::timeout(WAIT, r.process_one()).await.unwrap()
        }
        (Some(s), false) => {
            let mut r = builder.handler(Scripted::new(s)).build().unwrap();
            tokio::time::timeout(WAIT, r.process_one()).await.unwrap()
        }
        (None, true) => {
            let mut r = builder.build().unwrap();
            let all = tokio::time::timeout(WAIT, r.process_batch()).await.unwrap();
            situation_outcome(all)
        }
        (Some(s), true) => {
            let mut r = builder.handler(Scripted::new(s)).build().unwrap();
            let all = tokio::time::timeout(WAIT, r.process_batch()).await.unwrap();
            situation_outcome(all)
        }
    };
    let mut companions_acked = 0;
    if batched {
        let batch_lost = situation == PersistFailure;
        for c in COMPANIONS {
            let row = h.row(c).await;
            let (want, effect) = match (batch_lost, script(situation)) {
                (true, _) => (None, 0),
                (false, None) => (Some(EventStatus::Pending), 0),
                (false, Some(_)) => (Some(EventStatus::Completed), 1),
            };
            assert_eq!(
                status(&row),
                want,
                "{situation:?} × {strategy}: companion {c}"
            );
            assert_eq!(
                h.effect(c).await,
                effect,
                "{situation:?} × {strategy}: companion {c} effect"
            );
        }
        if !batch_lost || strategy == AckStrategy::AtMostOnce {
            companions_acked = 2;
        }
    }
    let deliveries = if batched { 3 } else { 1 };
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
    assert_eq!(
        h.acked() + h.nacked(),
        deliveries,
        "{situation:?} × {strategy}: exactly one ack or nack per delivery"
    );
    let outcome = result.as_ref().ok();
    Expect {
        acked: h.acked() - companions_acked == 1,
        error: result.is_err(),
        row,
        dead_letters: h.dead_letters().await.len(),
        effect: h.effect(MSG).await == 1,
        handled: outcome.is_some_and(|o| o.handled),
        duplicate: outcome.is_some_and(|o| o.duplicate),
        dead_lettered: outcome.is_some_and(|o| o.dead_lettered),
    }
}

/// The situation's outcome out of a batch's (its message is the second delivery, or the
/// first when the malformed message was handled apart).
fn situation_outcome(
    all: Result<Vec<ConsumeOutcome>, crate::Error>,
) -> Result<ConsumeOutcome, crate::Error> {
    let all = all?;
    all.iter()
        .find(|o| {
            !o.message_id
                .as_deref()
                .is_some_and(|m| m.starts_with(COMPANION))
        })
        .cloned()
        .ok_or_else(|| crate::Error::Config(format!("no outcome for {MSG}: {all:?}")))
}

#[tokio::test(start_paused = true)]
async fn outcome_table() {
    check_table(false).await;
}

/// The same table, each message handled in a batch between two healthy ones: a batch
/// acknowledges every message exactly as one at a time would.
#[tokio::test(start_paused = true)]
async fn outcome_table_in_a_batch() {
    check_table(true).await;
}

async fn check_table(batched: bool) {
    let mut mismatches = Vec::new();
    for (situation, expected) in TABLE {
        for (strategy, want) in STRATEGIES.iter().zip(expected) {
            let mut got = observe(*situation, *strategy, batched).await;
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

//! The inbox consumer runner: consume broker messages, store each under
//! `(message_id, consumer_group)`, handle it in the same transaction, and acknowledge per
//! strategy.
//!
//! [`InboxRunner`] takes one [`Delivery`](crate::consumer::Delivery) at a time (or several,
//! see [Batches](#batches) and [Concurrency](#concurrency)):
//!
//! 1. **Build** an [`InboxEvent`](crate::InboxEvent) from the message and the runner's
//!    consumer group. A malformed delivery, or a message that fails validation, is written as
//!    a [`DeadLetter`](crate::store::DeadLetter) in its own transaction and then acknowledged —
//!    it would fail identically on every redelivery (omni-box looped on it). If that
//!    write fails the message is handed back, so nothing is lost.
//! 2. **Store** it with dedup (`insert`). A row that already *completed* is a duplicate:
//!    acknowledge without handling. A row that already *failed* (budget spent, dead-lettered)
//!    is acknowledged too — omni-box rewound it forever and wedged the partition.
//! 3. **Lock** the row (`try_lock`, ignoring its retry schedule: the message is here now).
//!    Another worker's live lease: that worker finishes, so the message is handed back with a
//!    delay (or acknowledged where a durable row is enough, see the table); the redelivery
//!    then finds the row completed. An expired lease is taken over (spending one attempt, as
//!    every lease takeover does).
//! 4. **Handle** it in the same transaction, bounded by the process timeout, panics caught,
//!    and **complete** the row (a skip completes it too); commit, then acknowledge.
//! 5. On a **handler failure** (error, timeout, panic, `Retry`): roll back, then in a new
//!    transaction store the row again if absent and record the failure on it (counted unless
//!    the error is transient or the retry uncounted; the retry time comes from the handler or
//!    the backoff). A failure that spends the last attempt makes the row `failed` and writes
//!    its dead letter (the store does both in `settle`); the message is then acknowledged.
//!    If recording fails, the message is handed back.
//!
//! A message seen for the first time takes one statement besides the handler's: with a
//! handler to run, its row is inserted already *completed*, then the handler runs in the same
//! transaction. Until the commit the row is that transaction's alone (a concurrent delivery
//! of the same message waits on the unique dedup index, then finds it completed), so it
//! needs no lease and success no second write; a failure rolls the row back with the
//! handler's writes (step 5). A row stored by an earlier delivery is leased and settled as
//! above.
//!
//! ## Batches
//!
//! With [`InboxRunnerBuilder::batch_size`] above 1, [`InboxRunner::run`] handles the
//! messages the consumer holds (up to the size, waiting at most the
//! [`batch_linger`](InboxRunnerBuilder::batch_linger) for more) in **one transaction**:
//! one insert for all rows (new rows leased by it), each handler in its own savepoint
//! (a failure rolls back only its writes and is recorded on its row in the same
//! transaction), one settle for all rows, one commit — then each message is acknowledged
//! or handed back as the table below says. A message delivered twice within one batch is
//! handled once. Data the store refuses sends the batch one message at a time (only that
//! message is dead-lettered); any other storage failure hands the whole batch back. Each
//! savepoint is a PostgreSQL subtransaction: past 64 in one transaction, other sessions'
//! snapshots get slower (subtransaction cache overflow), so keep batches near 50–100. See
//! [`InboxRunner::handle_batch`].
//!
//! ## Concurrency
//!
//! With [`InboxRunnerBuilder::concurrency`] `n` above 1, [`InboxRunner::run`] handles up to
//! `n` messages at once, each in its own transaction, without giving up the broker's order:
//! every delivery carries an [`order_key`](crate::consumer::Delivery::order_key) (Kafka
//! topic and partition, RabbitMQ routing key, NATS subject), deliveries are spread over
//! `n` lanes by that key, and a lane handles one delivery at a time in arrival order. So
//! two messages of one partition (routing key, subject) never overlap and are handled in
//! the order received, while different keys proceed side by side. At most `2 × n`
//! deliveries are held; a hot key fills its lane and receiving waits for it (memory stays
//! bounded). When a message is handed back, the messages of its key already received
//! behind it are handed back unhandled, so none overtakes it: on Kafka, whose hand-back
//! rewinds the partition, order survives failures exactly as one at a time. RabbitMQ and
//! NATS redeliver a handed-back message after others, as they do without lanes. A shutdown
//! stops receiving and finishes what is held. This replaces omni-box's `concurrency_limit`
//! (a semaphore around `process_one`, which ordered nothing). RabbitMQ through the default
//! exchange routes by queue name, so all of a queue is one key there: route by partition
//! key (`RoutingMode::TopicAsExchange`) for lanes to help.
//!
//! Storage failures never acknowledge a message that was not acknowledged already: the
//! message is handed back and `process_one` returns the error, so [`InboxRunner::run`] backs
//! off. Every acknowledgement goes through the delivery's handle; a failed ack or nack is
//! counted as [`Metric::AckFailed`](crate::metrics::Metric::AckFailed) and returned.
//!
//! ## Strategy × situation
//!
//! "ack" = acknowledged, "nack" = handed back for redelivery, "DL" = dead letter written.
//! "row" is the inbox row afterwards. Pinned by the `outcome_table` test.
//!
//! | situation | `AtMostOnce` | `AtLeastOnce(OnPersist)` | `AtLeastOnce(OnSuccess)` | `ExactlyOnceInbox` (default) |
//! |---|---|---|---|---|
//! | malformed / invalid message | ack first; DL | DL, ack | DL, ack | DL, ack |
//! | … and the DL write fails | ack first; error | nack; error | nack; error | nack; error |
//! | no handler | ack first; row pending | row pending, ack | row pending, ack | row pending, ack |
//! | handler completes | ack first; row completed | row completed, ack | row completed, ack | row completed, ack |
//! | handler skips | ack first; row completed | row completed, ack | row completed, ack | row completed, ack |
//! | handler error / timeout / panic | ack first; row pending, 1 attempt spent | row pending, 1 attempt spent, ack | row pending, 1 attempt spent, nack | row pending, 1 attempt spent, nack |
//! | … that spent the last attempt | ack first; row failed, DL | row failed, DL, ack | row failed, DL, ack | row failed, DL, ack |
//! | handler `Retry { counted: false }` | ack first; row pending, no attempt spent | row pending, ack | row pending, nack | row pending, nack |
//! | row already completed (duplicate) | ack first; handler not run | ack | ack | ack |
//! | row already failed | ack first | ack | ack | ack |
//! | row leased by another worker (live lease) | ack first; row untouched | ack (row is durable) | nack after a delay | nack after a delay |
//! | storage fails | ack first; message lost, error | nack; error | nack; error | nack; error |
//!
//! Notes:
//! - `AtMostOnce` acknowledges before anything else and never hands a message back
//!   afterwards (omni-box rewound after its early commit). Handler failures are still
//!   recorded on the row, so a batch inbox processor may retry them.
//! - `AtLeastOnce(OnPersist)` acknowledges only once the row is durable — completed, or
//!   pending with the failure recorded for a batch inbox processor to retry. omni-box acked
//!   after rolling the row back, losing the message.
//! - `AtLeastOnce(OnSuccess)` and `ExactlyOnceInbox` take the same steps here: every
//!   strategy dedups through the inbox row, so a redelivery of a completed message never
//!   runs the handler again. Both acknowledge only after the handler's transaction committed,
//!   and a poison message ends as a dead letter after `max_attempts` deliveries instead of
//!   looping.
//! - Effects the handler writes **through the connection it is given** commit exactly when
//!   the row completes (effectively once); effects elsewhere are at-least-once. Delivery
//!   itself is never exactly-once. The batch inbox processor
//!   ([`inbox_processor`](crate::processors::inbox_processor)), whose handlers share one
//!   transaction, keeps the same guarantee by running each handler in a savepoint that a
//!   failure rolls back (see [`HandlerStep`](crate::pipeline::steps::HandlerStep)).
//!
//! ```
//! use omnibox_core::inbox::{AckStrategy, CommitPolicy};
//! assert_eq!(AckStrategy::default(), AckStrategy::ExactlyOnceInbox);
//! assert!(AckStrategy::AtLeastOnce(CommitPolicy::OnPersist).acks_when_persisted());
//! assert!(!AckStrategy::AtLeastOnce(CommitPolicy::OnSuccess).acks_when_persisted());
//! ```

mod attempt;
mod builder;
mod outcome;
mod runner;
mod strategy;
pub(crate) mod worker;

pub use builder::{
    DEFAULT_IDLE_BACKOFF_MAX, DEFAULT_IDLE_BACKOFF_MIN, DEFAULT_PROCESS_TIMEOUT,
    DEFAULT_REDELIVERY_DELAY, InboxRunnerBuilder, MAX_BATCH_SIZE, MAX_CONCURRENCY, NoHandler,
};
pub use outcome::ConsumeOutcome;
pub use runner::InboxRunner;
pub use strategy::{AckStrategy, CommitPolicy};

#[cfg(test)]
mod tests;

//! The ack strategies' outcome table (the strategy × situation table of
//! `omnibox_core::inbox`, checked cell by cell on the in-memory adapters in core) run
//! against PostgreSQL and each real broker: RabbitMQ, NATS JetStream and Kafka (mock
//! cluster). Every cell gets a fresh queue / subject / topic, consumer and consumer group.
//!
//! Per cell: what the runner told the broker (ack or nack, seen through a spy around the
//! real acknowledgement handle), what the broker then did (a nacked message is delivered
//! again; an acknowledged one is not, within a window), the inbox row in PostgreSQL, the
//! dead letters, and whether the handler's effect committed. Storage failures are real: the
//! runner's database is a pool to a port nobody listens on.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::TimeDelta;
use common::{Pg, rabbit};
use omnibox_core::backoff::{Backoff, Jitter};
use omnibox_core::consumer::{AckHandle, Consumer, Delivery, Redelivery};
use omnibox_core::inbox::{AckStrategy, CommitPolicy, ConsumeOutcome, InboxRunner};
use omnibox_core::model::Limits;
use omnibox_core::store::Transactions;
use omnibox_core::store::{InsertEvents, LockEvent, LockOutcome, Settle, SettleEvents, Settlement};
use omnibox_core::{
    ConsumeError, FailureKind, Handler, HandlerError, HandlerOutcome, HandlerResult, InboxEvent,
    OutboxEvent, Publisher, WorkerId,
};
use omnibox_postgres::PgDatabase;
use sqlx::{AssertSqlSafe, PgConnection, Row as _};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Situation {
    NoHandler,
    HandlerOk,
    HandlerSkip,
    HandlerError,
    HandlerErrorLastAttempt,
    HandlerRetryUncounted,
    HandlerTimeout,
    HandlerTimeoutTransient,
    HandlerPanic,
    Duplicate,
    RowFailed,
    RowLeasedElsewhere,
    /// The database is unreachable.
    PersistFailure,
    Malformed,
    /// A malformed message while the database is unreachable.
    MalformedDeadLetterFails,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Row {
    Absent,
    Pending(u32),
    LeasedElsewhere,
    Completed,
    Failed,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Expect {
    acked: bool,
    error: bool,
    row: Row,
    dead_letters: i64,
    effect: bool,
    handled: bool,
    duplicate: bool,
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

/// The table of `omnibox_core::inbox` (columns: at-most-once, at-least-once on-persist,
/// at-least-once on-success, exactly-once-inbox). At most once acknowledges first.
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

/// How long an acknowledged message must stay away to count as acknowledged at the broker.
/// (A handed-back message comes back within the runner's backoff, 20–100 ms here.)
const QUIET: Duration = Duration::from_millis(400);
/// How long a handed-back message may take to come back.
const COME_BACK: Duration = Duration::from_secs(10);
/// The handler timeout of the `Hang` cells.
const PROCESS_TIMEOUT: Duration = Duration::from_millis(300);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Script {
    Complete,
    Skip,
    Fail,
    RetryUncounted,
    Hang,
    Panic,
}

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

/// Writes the effect (one `effects` row per message) in the runner's transaction, then
/// follows its script.
struct Scripted {
    script: Script,
    schema: String,
}

impl Handler<InboxEvent, PgConnection> for Scripted {
    async fn handle(&self, event: &InboxEvent, conn: &mut PgConnection) -> HandlerResult {
        if self.script != Script::Skip {
            sqlx::query(AssertSqlSafe(format!(
                "INSERT INTO {}.effects (message_id, n) VALUES ($1, 1)
                 ON CONFLICT (message_id) DO UPDATE SET n = effects.n + 1",
                self.schema
            )))
            .bind(&event.message_id)
            .execute(conn)
            .await
            .map_err(|e| HandlerError::from(omnibox_postgres::classify("effect", e)))?;
        }
        match self.script {
            Script::Complete => Ok(HandlerOutcome::Completed),
            Script::Skip => Ok(HandlerOutcome::skipped("not for us")),
            Script::Fail => Err(HandlerError::permanent("boom")),
            Script::RetryUncounted => Ok(HandlerOutcome::Retry {
                error: "not yet".into(),
                counted: false,
                retry_at: None,
            }),
            Script::Hang => {
                tokio::time::sleep(Duration::from_secs(3600)).await;
                Ok(HandlerOutcome::Completed)
            }
            Script::Panic => panic!("scripted panic"),
        }
    }
}

/// What the runner told the broker.
type Calls = Arc<Mutex<Vec<&'static str>>>;

/// A consumer whose acknowledgement handles record their calls before passing them on
/// to the real broker. The inner consumer is shared so the test can receive from it after
/// the runner is done (to see whether a message comes back).
struct Spy<C> {
    inner: Arc<tokio::sync::Mutex<C>>,
    calls: Calls,
}

struct SpyAck<A> {
    inner: A,
    calls: Calls,
}

impl<A: AckHandle> AckHandle for SpyAck<A> {
    async fn ack(self) -> Result<(), ConsumeError> {
        self.calls.lock().unwrap().push("ack");
        self.inner.ack().await
    }

    async fn nack(self, redelivery: Redelivery) -> Result<(), ConsumeError> {
        self.calls.lock().unwrap().push("nack");
        self.inner.nack(redelivery).await
    }
}

impl<C: Consumer> Consumer for Spy<C> {
    type Ack = SpyAck<C::Ack>;

    async fn start(&mut self) -> Result<(), ConsumeError> {
        self.inner.lock().await.start().await
    }

    async fn receive(&mut self) -> Result<Delivery<Self::Ack>, ConsumeError> {
        let d = self.inner.lock().await.receive().await?;
        Ok(d.map_ack(|inner| SpyAck {
            inner,
            calls: self.calls.clone(),
        }))
    }

    async fn stop(&mut self) -> Result<(), ConsumeError> {
        self.inner.lock().await.stop().await
    }
}

/// One cell's broker resources.
struct Cell<C> {
    /// Fresh per cell (RabbitMQ, NATS) or one for the whole table (Kafka, where joining a
    /// group takes seconds: every cell's message follows the last one on one partition).
    consumer: Arc<tokio::sync::Mutex<C>>,
    /// The consumer group (also the inbox rows' group).
    group: String,
    /// The topic / queue / subject the cell publishes to.
    topic: String,
}

/// A broker under test.
trait Bus {
    type C: Consumer + Sync + 'static;
    /// `messaging.system`-style name, for messages.
    const NAME: &'static str;
    /// Fresh resources for cell `n`.
    async fn cell(&self, n: usize) -> Cell<Self::C>;
    /// Publish a well-formed event (through the library's publisher).
    async fn publish(&self, event: &OutboxEvent);
    /// Publish bytes that are not an envelope.
    async fn publish_raw(&self, topic: &str, body: &[u8]);
}

fn unreachable_db() -> PgDatabase {
    // Port 9 (discard) on loopback: nothing listens, connecting fails at once.
    let pool = sqlx::postgres::PgPoolOptions::new()
        .acquire_timeout(Duration::from_millis(300))
        .connect_lazy("postgres://postgres@127.0.0.1:9/postgres")
        .unwrap();
    PgDatabase::new(pool)
}

async fn seed(pg: &Pg, message_id: &str, group: &str, topic: &str, situation: Situation) {
    let (max_attempts, action, worker) = match situation {
        Duplicate => (6, Some(Settle::Complete), "seeder"),
        RowFailed => (
            1,
            Some(Settle::Fail {
                error: "earlier failure".into(),
                counted: true,
                retry_at: None,
            }),
            "seeder",
        ),
        RowLeasedElsewhere => (6, None, "other-worker"),
        _ => return,
    };
    let db = PgDatabase::new(pg.pool.clone());
    let worker = WorkerId::new(worker).unwrap();
    let event = InboxEvent::builder(message_id, group, topic, "order.placed")
        .payload(serde_json::json!({ "seeded": true }))
        .max_attempts(max_attempts)
        .build()
        .unwrap();
    let mut tx = db.begin().await.unwrap();
    let row = pg.inbox.insert(&mut tx, &event).await.unwrap();
    let id = row.event().common.id;
    let LockOutcome::Locked(locked) = pg
        .inbox
        .try_lock(&mut tx, id, &worker, TimeDelta::seconds(300), true)
        .await
        .unwrap()
    else {
        panic!("seed row not lockable");
    };
    if let Some(action) = action {
        pg.inbox
            .settle(
                &mut tx,
                &worker,
                &[Settlement {
                    id,
                    lease: locked.common.locked_at.unwrap(),
                    action,
                }],
            )
            .await
            .unwrap();
    }
    db.commit(tx).await.unwrap();
}

async fn dead_letters(pg: &Pg) -> i64 {
    sqlx::query_scalar(AssertSqlSafe(format!(
        "SELECT count(*) FROM {}",
        pg.inbox.names().dead_letters
    )))
    .fetch_one(&pg.pool)
    .await
    .unwrap()
}

async fn row_of(pg: &Pg, message_id: &str, group: &str) -> Result<Row, String> {
    let row = sqlx::query(AssertSqlSafe(format!(
        "SELECT status, attempts_made, locked_by FROM {} WHERE message_id = $1 AND consumer_group = $2",
        pg.inbox.names().qualified
    )))
    .bind(message_id)
    .bind(group)
    .fetch_optional(&pg.pool)
    .await
    .unwrap();
    let Some(row) = row else { return Ok(Absent) };
    let status: String = row.get(0);
    let attempts: i32 = row.get(1);
    let locked_by: Option<String> = row.get(2);
    Ok(match (status.as_str(), locked_by.as_deref()) {
        ("completed", _) => Completed,
        ("failed", _) => Failed,
        ("pending", None) => Pending(attempts as u32),
        ("pending", Some("other-worker")) => LeasedElsewhere,
        (s, l) => return Err(format!("row {s}, left locked by {l:?}")),
    })
}

/// Run one cell; `Err` describes a disagreement the table cannot express.
async fn observe<B: Bus>(
    bus: &B,
    pg: &Pg,
    n: usize,
    situation: Situation,
    strategy: AckStrategy,
) -> Result<Expect, String> {
    let cell = bus.cell(n).await;
    let event = OutboxEvent::builder(
        "order",
        uuid::Uuid::now_v7(),
        "order.placed",
        cell.topic.as_str(),
        "k1",
    )
    .payload(serde_json::json!({ "n": n }))
    .build()
    .unwrap();
    let message_id = event.common.id.to_string();
    seed(pg, &message_id, &cell.group, &cell.topic, situation).await;
    let dead_before = dead_letters(pg).await;
    if matches!(situation, Malformed | MalformedDeadLetterFails) {
        bus.publish_raw(&cell.topic, b"{not json").await;
    } else {
        bus.publish(&event).await;
    }

    let inner = cell.consumer;
    let calls = Calls::default();
    let spy = Spy {
        inner: inner.clone(),
        calls: calls.clone(),
    };
    let db = if matches!(situation, PersistFailure | MalformedDeadLetterFails) {
        unreachable_db()
    } else {
        PgDatabase::new(pg.pool.clone())
    };
    let limits = if situation == HandlerErrorLastAttempt {
        Limits::default().max_attempts(1)
    } else {
        Limits::default()
    };
    let mut builder = InboxRunner::builder(spy, db, pg.inbox.clone(), cell.group.as_str())
        .worker_id(WorkerId::new("runner-1").unwrap())
        .ack_strategy(strategy)
        .limits(limits)
        .process_timeout(PROCESS_TIMEOUT)
        .backoff(
            Backoff::new(
                Duration::from_millis(20),
                Duration::from_millis(100),
                Jitter::None,
            )
            .unwrap(),
        );
    if situation == HandlerTimeoutTransient {
        builder = builder.process_timeout_kind(FailureKind::Transient);
    }
    let process = async {
        match script(situation) {
            None => {
                let mut r = builder.build().unwrap();
                r.process_one().await
            }
            Some(s) => {
                let mut r = builder
                    .handler(Scripted {
                        script: s,
                        schema: pg.schema.clone(),
                    })
                    .build()
                    .unwrap();
                r.process_one().await
            }
        }
    };
    let result: Result<ConsumeOutcome, omnibox_core::Error> =
        tokio::time::timeout(Duration::from_secs(30), process)
            .await
            .map_err(|_| "process_one did not return within 30 s".to_owned())?;

    let said: Vec<&str> = calls.lock().unwrap().clone();
    let acked = match said.as_slice() {
        ["ack"] => true,
        ["nack"] => false,
        other => return Err(format!("the runner told the broker {other:?}")),
    };
    // What the broker did with it: a handed-back message comes again, an acknowledged one
    // does not.
    let mut consumer = inner.lock().await;
    let again =
        tokio::time::timeout(if acked { QUIET } else { COME_BACK }, consumer.receive()).await;
    match (acked, again) {
        (true, Ok(Ok(d))) => {
            return Err(format!(
                "acknowledged, but {} delivered it again: {:?}",
                B::NAME,
                d.message.map(|m| m.message_id)
            ));
        }
        (false, Err(_)) => {
            return Err(format!(
                "handed back, but {} did not deliver it again within {COME_BACK:?}",
                B::NAME
            ));
        }
        (false, Ok(Err(e))) => return Err(format!("receiving the redelivery: {e}")),
        (false, Ok(Ok(d))) => {
            if let Ok(m) = &d.message
                && m.message_id != message_id
            {
                return Err(format!("redelivered {} instead", m.message_id));
            }
            // Settle it so nothing is left over (best effort; the cell's resources are
            // discarded anyway).
            let _ = d.ack.ack().await;
        }
        (true, _) => {}
    }
    drop(consumer);
    let effect: Option<i32> = sqlx::query_scalar(AssertSqlSafe(format!(
        "SELECT n FROM {}.effects WHERE message_id = $1",
        pg.schema
    )))
    .bind(&message_id)
    .fetch_optional(&pg.pool)
    .await
    .unwrap();
    let outcome = result.as_ref().ok();
    let mut got = Expect {
        acked,
        error: result.is_err(),
        row: row_of(pg, &message_id, &cell.group).await?,
        dead_letters: dead_letters(pg).await - dead_before
            + i64::from(matches!(situation, RowFailed)),
        effect: effect == Some(1),
        handled: outcome.is_some_and(|o| o.handled),
        duplicate: outcome.is_some_and(|o| o.duplicate),
        dead_lettered: outcome.is_some_and(|o| o.dead_lettered),
    };
    if got.error {
        // With an error no outcome is returned: its flags are not observable.
        got.dead_lettered = false;
    }
    let cleanup = Arc::try_unwrap(inner)
        .ok()
        .map(tokio::sync::Mutex::into_inner);
    drop_consumer(cleanup).await;
    Ok(got)
}

/// Drop a consumer off the runtime (a Kafka consumer blocks while it leaves its group).
async fn drop_consumer<T: Send + 'static>(holder: T) {
    common::kafka::close(holder).await;
}

async fn run_table<B: Bus>(bus: &B, pg: &Pg) {
    let mut mismatches = Vec::new();
    let mut n = 0;
    for (situation, expected) in TABLE {
        for (strategy, want) in STRATEGIES.iter().zip(expected) {
            n += 1;
            let mut want = *want;
            if want.error {
                want.dead_lettered = false;
            }
            match observe(bus, pg, n, *situation, *strategy).await {
                Ok(got) if got == want => {}
                Ok(got) => mismatches.push(format!(
                    "{situation:?} × {strategy}:\n  want {want:?}\n  got  {got:?}"
                )),
                Err(e) => mismatches.push(format!("{situation:?} × {strategy}: {e}")),
            }
        }
    }
    assert_eq!(n, 60, "15 situations × 4 strategies");
    assert!(
        mismatches.is_empty(),
        "{}: {} of {n} cells differ from the table:\n{}",
        B::NAME,
        mismatches.len(),
        mismatches.join("\n")
    );
}

struct Rabbit {
    url: String,
    admin: omnibox_rabbitmq::lapin::Connection,
    publisher: omnibox_rabbitmq::RabbitPublisher,
    prefix: String,
}

impl Bus for Rabbit {
    type C = omnibox_rabbitmq::RabbitConsumer;
    const NAME: &'static str = "RabbitMQ";

    async fn cell(&self, n: usize) -> Cell<Self::C> {
        let queue = format!("{}_{n}", self.prefix);
        rabbit::declare(&self.admin, &queue).await;
        Cell {
            consumer: Arc::new(tokio::sync::Mutex::new(
                omnibox_rabbitmq::RabbitConsumer::new(rabbit::connect(&self.url).await, &queue),
            )),
            group: format!("g{n}"),
            topic: queue,
        }
    }

    async fn publish(&self, event: &OutboxEvent) {
        self.publisher.publish(event).await.unwrap();
    }

    async fn publish_raw(&self, topic: &str, body: &[u8]) {
        use omnibox_rabbitmq::lapin::BasicProperties;
        use omnibox_rabbitmq::lapin::options::{BasicPublishOptions, ConfirmSelectOptions};
        let ch = self.admin.create_channel().await.unwrap();
        ch.confirm_select(ConfirmSelectOptions::default())
            .await
            .unwrap();
        ch.basic_publish(
            "".into(),
            topic.into(),
            BasicPublishOptions::default(),
            body,
            BasicProperties::default()
                .with_message_id(format!("raw-{topic}").into())
                .with_delivery_mode(2),
        )
        .await
        .unwrap()
        .await
        .unwrap();
        let _ = ch.close(200, "OK".into()).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_outcome_table_holds_on_rabbitmq() {
    common::init_tracing();
    let url = rabbit::url().await;
    let pg = Pg::new(&common::database_url().await, "acks_rabbit").await;
    let bus = Rabbit {
        admin: rabbit::connect(&url).await,
        publisher: omnibox_rabbitmq::RabbitPublisher::new(rabbit::connect(&url).await),
        prefix: omnibox_testing::unique_name("acks"),
        url,
    };
    run_table(&bus, &pg).await;
    for n in 1..=60 {
        rabbit::delete(&bus.admin, &format!("{}_{n}", bus.prefix)).await;
    }
    pg.drop_schema().await;
}

struct Nats {
    js: omnibox_nats::async_nats::jetstream::Context,
    stream: String,
    publisher: omnibox_nats::NatsPublisher,
}

impl Bus for Nats {
    type C = omnibox_nats::NatsConsumer;
    const NAME: &'static str = "NATS";

    async fn cell(&self, n: usize) -> Cell<Self::C> {
        let subject = format!("{}.c{n}", self.stream);
        Cell {
            consumer: Arc::new(tokio::sync::Mutex::new(
                omnibox_nats::NatsConsumer::new(
                    self.js.clone(),
                    self.stream.clone(),
                    format!("c{n}"),
                )
                .with_options(
                    omnibox_nats::ConsumerOptions::default().filter_subject(subject.clone()),
                ),
            )),
            group: format!("g{n}"),
            topic: subject,
        }
    }

    async fn publish(&self, event: &OutboxEvent) {
        self.publisher.publish(event).await.unwrap();
    }

    async fn publish_raw(&self, topic: &str, body: &[u8]) {
        self.js
            .publish(topic.to_owned(), body.to_vec().into())
            .await
            .unwrap()
            .await
            .unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_outcome_table_holds_on_nats() {
    use omnibox_nats::async_nats::{self, jetstream};
    common::init_tracing();
    let url = omnibox_testing::nats_url()
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let pg = Pg::new(&common::database_url().await, "acks_nats").await;
    let js = jetstream::new(async_nats::connect(url.as_str()).await.unwrap());
    let stream = omnibox_testing::unique_name("acks");
    js.create_stream(jetstream::stream::Config {
        name: stream.clone(),
        subjects: vec![format!("{stream}.*")],
        ..Default::default()
    })
    .await
    .unwrap();
    let bus = Nats {
        publisher: omnibox_nats::NatsPublisher::new(js.clone()),
        js: js.clone(),
        stream: stream.clone(),
    };
    run_table(&bus, &pg).await;
    js.delete_stream(&stream).await.unwrap();
    pg.drop_schema().await;
}

struct Kafka {
    kafka: common::kafka::Kafka,
    publisher: omnibox_kafka::KafkaPublisher,
    raw: omnibox_kafka::rdkafka::producer::FutureProducer,
    topic: String,
    consumer: Arc<tokio::sync::Mutex<omnibox_kafka::KafkaConsumer>>,
}

impl Bus for Kafka {
    type C = omnibox_kafka::KafkaConsumer;
    const NAME: &'static str = "Kafka";

    async fn cell(&self, n: usize) -> Cell<Self::C> {
        Cell {
            consumer: self.consumer.clone(),
            group: format!("g{n}"),
            topic: self.topic.clone(),
        }
    }

    async fn publish(&self, event: &OutboxEvent) {
        self.publisher.publish(event).await.unwrap();
    }

    async fn publish_raw(&self, topic: &str, body: &[u8]) {
        use omnibox_kafka::rdkafka::producer::FutureRecord;
        self.raw
            .send(
                FutureRecord::<(), [u8]>::to(topic).payload(body),
                Duration::from_secs(10),
            )
            .await
            .map_err(|(e, _)| e)
            .unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_outcome_table_holds_on_kafka() {
    use omnibox_kafka::rdkafka::ClientConfig;
    common::init_tracing();
    let kafka = common::kafka::Kafka::resolve().await;
    let pg = Pg::new(&common::database_url().await, "acks_kafka").await;
    let mut config = ClientConfig::new();
    config.set("bootstrap.servers", &kafka.bootstrap);
    let topic = kafka.topic("acks");
    let consumer = Arc::new(tokio::sync::Mutex::new(kafka.consumer(&topic)));
    let bus = Kafka {
        publisher: omnibox_kafka::KafkaPublisher::from_config(&config).unwrap(),
        raw: config.create().unwrap(),
        consumer: consumer.clone(),
        topic,
        kafka,
    };
    run_table(&bus, &pg).await;
    let Kafka { kafka, .. } = bus;
    common::kafka::close(consumer).await;
    drop(kafka);
    pg.drop_schema().await;
}

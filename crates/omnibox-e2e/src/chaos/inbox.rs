//! An inbox process: one [`InboxWorker`] per lane (RabbitMQ queue, NATS filtered consumer)
//! or one Kafka consumer in the group, exactly-once-inbox, with a handler that checks
//! per-key order and records each effect in the inbox transaction.

use std::time::Duration;

use omnibox_core::backoff::{Backoff, Jitter};
use omnibox_core::consumer::Consumer;
use omnibox_core::inbox::{AckStrategy, InboxRunner};
use omnibox_core::worker::{InboxWorker, Stopped};
use omnibox_core::{Handler, HandlerError, HandlerOutcome, HandlerResult, InboxEvent, Shutdown};
use omnibox_core::{WorkerId, consumer};
use omnibox_postgres::{PgDatabase, PgInboxStore, classify};
use sqlx::{AssertSqlSafe, PgConnection, PgPool, Row};
use tokio::task::JoinHandle;

use super::world::{self, POISON};
use super::{Broker, RigEnv};

/// The consumer group of every inbox process.
pub const GROUP: &str = "chaos";
/// How long NATS waits for an acknowledgement before redelivering.
pub const NATS_ACK_WAIT: Duration = Duration::from_secs(5);

/// `CHAOS_SABOTAGE=skip-effects` makes the handler drop the effect of each key's second step
/// (the rig's own test: the ledger must then fail the run).
pub const SABOTAGE: &str = "CHAOS_SABOTAGE";

/// The NATS durable consumer of `lane`.
pub fn nats_durable(lane: usize) -> String {
    format!("lane{lane}")
}

/// Run until SIGTERM.
pub async fn run(env: RigEnv) -> Result<(), String> {
    let pool = env.pool(2 + env.lanes as u32).await?;
    let (_, inbox) = world::stores(&env.schema, env.partitioned)?;
    let shutdown = Shutdown::new();
    super::on_signals(shutdown.clone())?;
    let mut workers = Vec::new();
    match env.broker {
        Broker::Rabbitmq => {
            use omnibox_rabbitmq::{ConsumerOptions, RabbitConnector, RabbitConsumer, lapin};
            let connector = RabbitConnector::from_uri(
                env.broker_url.clone(),
                lapin::ConnectionProperties::default()
                    .with_connection_name(env.name.clone().into()),
            );
            for lane in 0..env.lanes {
                // Prefetch 1: with more, a message handed back for a retry is overtaken
                // by the ones already delivered behind it, and per-key order is lost.
                let consumer = RabbitConsumer::new(connector.clone(), env.topic(lane))
                    .with_options(ConsumerOptions::default().prefetch(1));
                workers.push(start(&env, &pool, &inbox, &shutdown, lane, consumer)?);
            }
        }
        Broker::Nats => {
            let client = super::relay::nats_client(&env).await?;
            let js = omnibox_nats::async_nats::jetstream::new(client);
            for lane in 0..env.lanes {
                let consumer = omnibox_nats::NatsConsumer::new(
                    js.clone(),
                    env.base.clone(),
                    nats_durable(lane),
                )
                .with_options(
                    omnibox_nats::ConsumerOptions::default()
                        .filter_subject(env.topic(lane))
                        .max_ack_pending(1)
                        .ack_wait(NATS_ACK_WAIT),
                );
                workers.push(start(&env, &pool, &inbox, &shutdown, lane, consumer)?);
            }
        }
        Broker::Kafka => {
            use omnibox_kafka::rdkafka::ClientConfig;
            let consumer = omnibox_kafka::KafkaConsumer::from_config(
                ClientConfig::new()
                    .set("bootstrap.servers", &env.broker_url)
                    .set("group.id", GROUP)
                    .set("client.id", &env.name)
                    .set("enable.auto.commit", "false")
                    .set("auto.offset.reset", "earliest")
                    .set("session.timeout.ms", "6000")
                    .set("heartbeat.interval.ms", "500"),
                [env.base.clone()],
            )
            .map_err(|e| format!("Kafka consumer: {e}"))?;
            workers.push(start(&env, &pool, &inbox, &shutdown, 0, consumer)?);
        }
    }
    println!("ready");
    for w in workers {
        let stopped = w.await.map_err(|e| e.to_string())?;
        eprintln!("inbox worker stopped: {stopped:?}");
    }
    Ok(())
}

fn start<C>(
    env: &RigEnv,
    pool: &PgPool,
    inbox: &PgInboxStore,
    shutdown: &Shutdown,
    lane: usize,
    consumer: C,
) -> Result<JoinHandle<Stopped>, String>
where
    C: Consumer + Sync + 'static,
    <C as Consumer>::Ack: consumer::AckHandle,
{
    let worker = WorkerId::new(format!("{}-lane{lane}", env.name)).map_err(|e| e.to_string())?;
    let runner = InboxRunner::builder(
        consumer,
        PgDatabase::new(pool.clone()),
        inbox.clone(),
        GROUP,
    )
    .worker_id(worker)
    .ack_strategy(AckStrategy::ExactlyOnceInbox)
    .lease_ttl(env.lease)
    .backoff(
        Backoff::new(
            Duration::from_millis(50),
            Duration::from_millis(500),
            Jitter::None,
        )
        .map_err(|e| e.to_string())?,
    )
    .idle_backoff(Duration::from_millis(10), Duration::from_millis(200))
    .handler(CheckOrder {
        schema: env.schema.clone(),
        worker: env.name.clone(),
        sabotage: std::env::var(SABOTAGE).is_ok_and(|v| v == "skip-effects"),
    })
    .build()
    .map_err(|e| e.to_string())?;
    let mut worker = InboxWorker::builder(runner)
        .build()
        .map_err(|e| e.to_string())?;
    let shutdown = shutdown.clone();
    Ok(tokio::spawn(async move { worker.run(&shutdown).await }))
}

/// The business handler: refuses poison; otherwise locks the key's state row, records a
/// violation when the sequence number is not the next one, and writes the effect — all in
/// the inbox transaction, so an effect exists if and only if its inbox row committed.
#[derive(Debug, Clone)]
pub struct CheckOrder {
    schema: String,
    worker: String,
    sabotage: bool,
}

impl Handler<InboxEvent, PgConnection> for CheckOrder {
    async fn handle(&self, event: &InboxEvent, conn: &mut PgConnection) -> HandlerResult {
        if event.common.event_type == POISON {
            return Err(HandlerError::permanent(
                "poison: the chaos handler refuses it",
            ));
        }
        let payload = &event.common.payload;
        let (Some(key), Some(seq)) = (
            payload.get("key").and_then(|v| v.as_str()),
            payload.get("seq").and_then(|v| v.as_i64()),
        ) else {
            return Err(HandlerError::permanent("payload without key and seq"));
        };
        if self.sabotage && seq == 2 {
            return Ok(HandlerOutcome::Completed);
        }
        let s = &self.schema;
        let db = |e| HandlerError::from(classify("chaos handler", e));
        sqlx::query(AssertSqlSafe(format!(
            "INSERT INTO {s}.key_state (key, last_seq) VALUES ($1, 0) ON CONFLICT (key) DO NOTHING"
        )))
        .bind(key)
        .execute(&mut *conn)
        .await
        .map_err(db)?;
        let last: i64 = sqlx::query(AssertSqlSafe(format!(
            "SELECT last_seq FROM {s}.key_state WHERE key = $1 FOR UPDATE"
        )))
        .bind(key)
        .fetch_one(&mut *conn)
        .await
        .map_err(db)?
        .get(0);
        if seq != last + 1 {
            sqlx::query(AssertSqlSafe(format!(
                "INSERT INTO {s}.violations (key, expected, got, message_id, worker) \
                 VALUES ($1, $2, $3, $4, $5)"
            )))
            .bind(key)
            .bind(last + 1)
            .bind(seq)
            .bind(&event.message_id)
            .bind(&self.worker)
            .execute(&mut *conn)
            .await
            .map_err(db)?;
        }
        sqlx::query(AssertSqlSafe(format!(
            "UPDATE {s}.key_state SET last_seq = GREATEST(last_seq, $2) WHERE key = $1"
        )))
        .bind(key)
        .bind(seq)
        .execute(&mut *conn)
        .await
        .map_err(db)?;
        sqlx::query(AssertSqlSafe(format!(
            "INSERT INTO {s}.effects (message_id, key, seq, worker) VALUES ($1, $2, $3, $4)"
        )))
        .bind(&event.message_id)
        .bind(key)
        .bind(seq)
        .bind(&self.worker)
        .execute(&mut *conn)
        .await
        .map_err(db)?;
        Ok(HandlerOutcome::Completed)
    }
}

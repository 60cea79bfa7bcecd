//! A tour of omnibox on the in-memory adapters (no services needed):
//! enqueue an event with a business change, relay it through a pipeline with a custom step,
//! and consume it into the inbox exactly once despite a redelivery.
//!
//! Run: `cargo run -p omnibox-examples --example tour`

use omnibox::inbox::{AckStrategy, InboxRunner};
use omnibox::memory::{MemoryBroker, MemoryConn, MemoryDb, MemoryInboxStore, MemoryOutboxStore};
use omnibox::pipeline::{BatchCtx, Step, StepResult};
use omnibox::relay::OutboxRelay;
use omnibox::store::{InsertEvents, Transactions};
use omnibox::{
    Event, HandlerOutcome, HandlerResult, InboxEvent, Message, MessageHandler, OutboxEvent,
    Shutdown, WorkerId, typed,
};
use omnibox_examples::OrderPlaced;
use serde_json::json;

/// A custom step: events of a blocked type are completed as skipped and never published.
struct BlockType(&'static str);

impl<C: Send> Step<OutboxEvent, C> for BlockType {
    async fn execute(
        &self,
        event: &OutboxEvent,
        ctx: &mut BatchCtx<'_, OutboxEvent, C>,
    ) -> StepResult {
        if event.common.event_type == self.0 {
            ctx.skip(event.id(), "blocked type");
            return StepResult::SkipEvent;
        }
        StepResult::Continue
    }
}

/// An internal audit event: the custom step keeps it off the broker.
#[derive(serde::Serialize, serde::Deserialize)]
struct OrderAudit {
    order: uuid::Uuid,
}

impl Message for OrderAudit {
    const EVENT_TYPE: &'static str = "order.audit";
    const AGGREGATE_TYPE: &'static str = "order";
    const TOPIC: &'static str = "orders";
    fn aggregate_id(&self) -> uuid::Uuid {
        self.order
    }
}

/// The consumer's handler, given the decoded `OrderPlaced`: its write commits in the same
/// transaction as the inbox row.
struct CreditLoyaltyPoints;

impl MessageHandler<OrderPlaced, MemoryConn> for CreditLoyaltyPoints {
    async fn handle(
        &self,
        order: OrderPlaced,
        _: &InboxEvent,
        conn: &mut MemoryConn,
    ) -> HandlerResult {
        let key = format!("points:{}", order.customer);
        let points = conn.get(&key).await.and_then(|v| v.as_u64()).unwrap_or(0);
        conn.put(key, json!(points + 10)).await;
        Ok(HandlerOutcome::Completed)
    }
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let producer_db = MemoryDb::new();
    let outbox = MemoryOutboxStore::default();
    let broker = MemoryBroker::new();

    // 1. The business transaction writes the order and its event together.
    let order_id = uuid::Uuid::now_v7();
    let placed = OutboxEvent::message(&OrderPlaced {
        order: order_id,
        customer: "customer-7".into(),
        total: 42,
    })
    .idempotency_key(format!("{order_id}:placed"))
    .build()?;
    let internal = OutboxEvent::message(&OrderAudit { order: order_id }).build()?;
    let mut tx = producer_db.begin().await?;
    tx.put(format!("order:{order_id}"), json!({"total": 42}))
        .await;
    outbox.insert_many(&mut tx, &[placed, internal]).await?;
    producer_db.commit(tx).await?;
    println!("1. order and 2 outbox events committed in one transaction");

    // 2. The relay claims, runs the pipeline (custom step first), publishes, settles.
    let relay = OutboxRelay::builder(outbox.clone(), broker.clone())
        .step_before(BlockType("order.audit"))
        .build()?;
    let worker = WorkerId::generate("relay")?;
    let batch = relay
        .publish_batch(&producer_db, &worker, &Shutdown::new())
        .await?;
    println!(
        "2. relay: claimed {}, published {}, skipped by the custom step {}",
        batch.claimed,
        batch.completed.len() - batch.skipped.len(),
        batch.skipped.len()
    );

    // 3. The consumer side stores each message under (message_id, group) and handles it once,
    //    even though the broker delivers it twice.
    broker.deliver_again("orders", 0, 1);
    let consumer_db = MemoryDb::new();
    let mut runner = InboxRunner::builder(
        broker.consumer(["orders"], "loyalty"),
        consumer_db.clone(),
        MemoryInboxStore::default(),
        "loyalty",
    )
    .ack_strategy(AckStrategy::ExactlyOnceInbox)
    .handler(typed::<OrderPlaced, _>(CreditLoyaltyPoints))
    .build()?;
    for delivery in 1..=2 {
        let outcome = runner.process_one().await?;
        println!(
            "3. delivery {delivery}: handled={} duplicate={} acked={}",
            outcome.handled, outcome.duplicate, outcome.acked
        );
    }
    println!(
        "4. loyalty points for customer-7: {}",
        consumer_db
            .value("points:customer-7")
            .await
            .unwrap_or(json!(0))
    );
    Ok(())
}

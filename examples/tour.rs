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
    Event, Handler, HandlerOutcome, HandlerResult, InboxEvent, OutboxEvent, Shutdown, WorkerId,
};
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

/// The consumer's handler: its write commits in the same transaction as the inbox row.
struct CreditLoyaltyPoints;

impl Handler<InboxEvent, MemoryConn> for CreditLoyaltyPoints {
    async fn handle(&self, event: &InboxEvent, conn: &mut MemoryConn) -> HandlerResult {
        let customer = event.common.payload["customer"]
            .as_str()
            .unwrap_or("?")
            .to_owned();
        let key = format!("points:{customer}");
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
    let placed = OutboxEvent::builder("order", order_id, "order.placed", "orders", "customer-7")
        .payload(json!({"order": order_id, "customer": "customer-7", "total": 42}))
        .idempotency_key(format!("{order_id}:placed"))
        .build()?;
    let internal = OutboxEvent::builder("order", order_id, "order.audit", "orders", "customer-8")
        .payload(json!({"order": order_id}))
        .build()?;
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
    .handler(CreditLoyaltyPoints)
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

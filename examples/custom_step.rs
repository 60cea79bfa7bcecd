//! A custom pipeline step, written in a few lines and plugged into the relay.
//!
//! Two steps run before the publish step:
//! - `TenantFilter`: events of tenants that are not enabled are completed as skipped and
//!   never published;
//! - `BatchCap`: at most N events are published per batch; `StopBatch` releases the rest
//!   untouched (no attempt spent) for the next batch — a crude rate limit.
//!
//! Run: `cargo run -p omnibox-examples --example custom_step` (DATABASE_URL, AMQP_URL).

use std::time::Duration;

use omnibox::pipeline::{BatchCtx, Step, StepResult};
use omnibox::postgres::PgDatabase;
use omnibox::rabbitmq::lapin::Connection;
use omnibox::rabbitmq::{PublisherOptions, RabbitPublisher, RoutingMode};
use omnibox::relay::OutboxRelay;
use omnibox::{Event, OutboxEvent, Shutdown, WorkerId};
use omnibox_examples::{Demo, OrderPlaced, Result, rabbit, unique_name};

/// Completes (as skipped) every event whose `tenant` header is not enabled.
struct TenantFilter(&'static [&'static str]);

impl<C: Send> Step<OutboxEvent, C> for TenantFilter {
    async fn execute(&self, e: &OutboxEvent, ctx: &mut BatchCtx<'_, OutboxEvent, C>) -> StepResult {
        let tenant = e.common.headers.as_ref().and_then(|h| h.get("tenant"));
        if tenant.is_some_and(|t| self.0.contains(&t.as_str())) {
            return StepResult::Continue;
        }
        ctx.skip(e.id(), "tenant not enabled");
        StepResult::SkipEvent
    }
}

/// Lets at most `self.0` events through per batch; the rest are released for later.
struct BatchCap(usize);

/// Per-batch state lives in the context (steps are shared by concurrent batches).
struct Passed(usize);

impl<C: Send> Step<OutboxEvent, C> for BatchCap {
    async fn on_batch_start(&self, _: &[OutboxEvent], ctx: &mut BatchCtx<'_, OutboxEvent, C>) {
        ctx.insert_extension(Passed(0));
    }

    async fn execute(&self, _: &OutboxEvent, ctx: &mut BatchCtx<'_, OutboxEvent, C>) -> StepResult {
        match ctx.extension_mut::<Passed>() {
            Some(p) if p.0 >= self.0 => StepResult::StopBatch,
            Some(p) => {
                p.0 += 1;
                StepResult::Continue
            }
            None => StepResult::Continue,
        }
    }
}

#[tokio::main]
async fn main() -> Result {
    let demo = Demo::connect("custom_step", |c| c).await?;
    let conn = match rabbit::connect().await {
        Ok(c) => c,
        Err(e) => {
            demo.cleanup().await;
            return Err(e);
        }
    };
    let queue = unique_name("custom_step_orders");
    let result = run(&demo, &conn, &queue).await;
    rabbit::delete_queue(&conn, &queue).await;
    demo.cleanup().await;
    let _ = conn.close(200, "bye".into()).await;
    if result.is_ok() {
        println!("custom_step example finished");
    }
    result
}

async fn run(demo: &Demo, conn: &Connection, queue: &str) -> Result {
    rabbit::declare_queue(conn, queue).await?;
    let tenants = [
        "acme", "globex", "acme", "initech", "acme", "globex", "acme",
    ];
    let mut tx = demo.pool.begin().await?;
    for (i, tenant) in tenants.iter().enumerate() {
        let order = uuid::Uuid::now_v7();
        let placed = OrderPlaced {
            order,
            customer: format!("c{i}"),
            total: 5,
        };
        let event = OutboxEvent::message(&placed)
            .topic(queue)
            .header("tenant", *tenant)
            .build()?;
        demo.outbox.enqueue(&mut tx, &event).await?;
    }
    tx.commit().await?;
    println!(
        "1. enqueued {} events for tenants {tenants:?}",
        tenants.len()
    );

    let publisher = RabbitPublisher::new(rabbit::connect().await?).with_options(
        PublisherOptions::default().routing(RoutingMode::FixedExchange(String::new())),
    );
    let relay = OutboxRelay::builder(demo.outbox.clone(), publisher)
        .step_before(TenantFilter(&["acme", "globex"]))
        .step_before(BatchCap(2))
        .publish_timeout(Duration::from_secs(5))
        .lease_ttl(Duration::from_secs(60))
        .build()?;
    println!("2. relay with steps TenantFilter([acme, globex]) → BatchCap(2) → publish");
    let db = PgDatabase::new(demo.pool.clone());
    let worker = WorkerId::generate("relay")?;
    for batch in 1..=10 {
        let r = relay.publish_batch(&db, &worker, &Shutdown::new()).await?;
        if r.claimed == 0 {
            println!("3. batch {batch}: nothing left to claim");
            break;
        }
        println!(
            "   batch {batch}: claimed {}, published {}, skipped by TenantFilter {}, released by BatchCap {}",
            r.claimed,
            r.completed.len() - r.skipped.len(),
            r.skipped.len(),
            r.released.len()
        );
    }
    let ready = rabbit::ready(conn, queue).await?;
    let completed = demo.count("outbox_events", "status = 'completed'").await?;
    println!(
        "4. queue {queue} holds {ready} messages (acme + globex); {completed} outbox rows completed; attempts spent by released events: {}",
        demo.count("outbox_events", "attempts_made > 0").await?
    );
    if ready != 6 || completed != tenants.len() as i64 {
        return Err(
            format!("expected 6 published and 7 completed, got {ready} / {completed}").into(),
        );
    }
    Ok(())
}

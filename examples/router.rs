//! The router as the inbox handler: handlers keyed by `(event_type, source)`, typed shared
//! state handed to each, and a policy for events no route matches.
//!
//! Three event types arrive on one queue: `order.placed` credits points,
//! `order.cancelled` takes them back (both through the inbox transaction, with the
//! points-per-euro rate from the shared state), and `order.audited` has no route: the
//! `Skip` policy completes it untouched (the default policy, `Fail`, would retry it and
//! dead-letter it, so a forgotten route is visible).
//!
//! Run: `cargo run -p omnibox-examples --example router` (DATABASE_URL, AMQP_URL).

use std::time::Duration;

use omnibox::inbox::{AckStrategy, InboxRunner};
use omnibox::postgres::PgDatabase;
use omnibox::postgres::sqlx::PgConnection;
use omnibox::rabbitmq::lapin::Connection;
use omnibox::rabbitmq::{PublisherOptions, RabbitConsumer, RabbitPublisher, RoutingMode};
use omnibox::relay::OutboxRelay;
use omnibox::router::{RouteHandler, Router, UnmatchedPolicy};
use omnibox::{
    HandlerOutcome, HandlerResult, InboxEvent, Message, OutboxEvent, Shutdown, WorkerId,
};
use omnibox_examples::{Demo, OrderPlaced, Result, credit, rabbit, unique_name, within};

/// `order.cancelled`: the order it cancels.
#[derive(Debug, serde::Serialize, serde::Deserialize)]
struct OrderCancelled {
    order: uuid::Uuid,
    customer: String,
    total: i32,
}

impl Message for OrderCancelled {
    const EVENT_TYPE: &'static str = "order.cancelled";
    const AGGREGATE_TYPE: &'static str = "order";
    const TOPIC: &'static str = "orders";
    fn aggregate_id(&self) -> uuid::Uuid {
        self.order
    }
    // One customer's events stay in order (placed, cancelled, audited).
    fn partition_key(&self) -> String {
        self.customer.clone()
    }
}

/// `order.audited`: no route handles it (the `Skip` policy completes it).
#[derive(Debug, serde::Serialize, serde::Deserialize)]
struct OrderAudited {
    order: uuid::Uuid,
    customer: String,
}

impl Message for OrderAudited {
    const EVENT_TYPE: &'static str = "order.audited";
    const AGGREGATE_TYPE: &'static str = "order";
    const TOPIC: &'static str = "orders";
    fn aggregate_id(&self) -> uuid::Uuid {
        self.order
    }
    fn partition_key(&self) -> String {
        self.customer.clone()
    }
}

/// The router's shared state: every handler gets `&Loyalty`.
struct Loyalty {
    schema: String,
    points_per_euro: i64,
}

/// `order.placed`: credit `total × points_per_euro`.
struct Credit;

impl RouteHandler<PgConnection, Loyalty> for Credit {
    async fn handle(&self, e: &InboxEvent, conn: &mut PgConnection, st: &Loyalty) -> HandlerResult {
        let order: OrderPlaced = e.message()?;
        let points = credit(&st.schema, &e.message_id, &order, conn, st.points_per_euro).await?;
        println!("   [order.placed]    credited {points} points");
        Ok(HandlerOutcome::Completed)
    }
}

#[tokio::main]
async fn main() -> Result {
    let demo = Demo::connect("router_example", |c| c).await?;
    let conn = match rabbit::connect().await {
        Ok(c) => c,
        Err(e) => {
            demo.cleanup().await;
            return Err(e);
        }
    };
    let queue = unique_name("router_orders");
    let result = run(&demo, &conn, &queue).await;
    rabbit::delete_queue(&conn, &queue).await;
    demo.cleanup().await;
    let _ = conn.close(200, "bye".into()).await;
    if result.is_ok() {
        println!("router example finished");
    }
    result
}

async fn run(demo: &Demo, conn: &Connection, queue: &str) -> Result {
    rabbit::declare_queue(conn, queue).await?;
    // 1. Three events of three types, relayed to the queue in one batch.
    let mut tx = demo.pool.begin().await?;
    let customer = "customer-7".to_owned();
    let events = [
        OutboxEvent::message(&OrderPlaced {
            order: uuid::Uuid::now_v7(),
            customer: customer.clone(),
            total: 30,
        }),
        OutboxEvent::message(&OrderCancelled {
            order: uuid::Uuid::now_v7(),
            customer: customer.clone(),
            total: 10,
        }),
        OutboxEvent::message(&OrderAudited {
            order: uuid::Uuid::now_v7(),
            customer,
        }),
    ];
    for event in events {
        demo.outbox
            .enqueue(&mut tx, &event.topic(queue).build()?)
            .await?;
    }
    tx.commit().await?;
    let publisher = RabbitPublisher::new(rabbit::connect().await?).with_options(
        PublisherOptions::default().routing(RoutingMode::FixedExchange(String::new())),
    );
    let relay = OutboxRelay::builder(demo.outbox.clone(), publisher)
        .publish_timeout(Duration::from_secs(5))
        .lease_ttl(Duration::from_secs(60))
        .build()?;
    let db = PgDatabase::new(demo.pool.clone());
    let worker = WorkerId::generate("relay")?;
    let mut published = 0;
    // One event per (topic, partition key) per claim: three batches keep their order.
    while published < 3 {
        let r = relay.publish_batch(&db, &worker, &Shutdown::new()).await?;
        if r.claimed == 0 {
            return Err("the relay found nothing to publish".into());
        }
        published += r.completed.len();
    }
    println!("1. relayed order.placed, order.cancelled, order.audited to queue {queue}");

    // 2. The router: typed state, two routes, Skip for the rest.
    let mut router = Router::<PgConnection, Loyalty>::with_state(Loyalty {
        schema: demo.schema.clone(),
        points_per_euro: 2,
    })
    .unmatched(UnmatchedPolicy::Skip);
    router.register("order.placed", queue, Credit)?.route(
        "order.cancelled",
        queue,
        |e, conn, st| {
            Box::pin(async move {
                // The cancellation carries the order it cancels; a negative rate writes
                // the debit.
                let c: OrderCancelled = e.message()?;
                let order = OrderPlaced {
                    order: c.order,
                    customer: c.customer,
                    total: c.total,
                };
                let points =
                    credit(&st.schema, &e.message_id, &order, conn, -st.points_per_euro).await?;
                println!("   [order.cancelled] took back {} points", -points);
                Ok(HandlerOutcome::Completed)
            })
        },
    )?;
    println!("2. router: {:?}", router.routes().collect::<Vec<_>>());

    // 3. The router is the inbox handler.
    let mut runner = InboxRunner::builder(
        RabbitConsumer::new(rabbit::connect().await?, queue),
        db,
        demo.inbox.clone(),
        "loyalty",
    )
    .ack_strategy(AckStrategy::ExactlyOnceInbox)
    .handler(router)
    .build()?;
    println!("3. consuming:");
    for _ in 0..3 {
        let outcome = within("a message", runner.process_one()).await??;
        println!(
            "   message {}: handled={} acked={}",
            outcome.message_id.unwrap_or_default(),
            outcome.handled,
            outcome.acked
        );
    }
    within("stopping the consumer", runner.stop()).await??;
    let balance: i32 = demo.credits().await?.iter().map(|c| c.1).sum();
    let skipped = demo
        .count(
            "inbox_events",
            "status = 'completed' AND event_type = 'order.audited'",
        )
        .await?;
    println!(
        "4. customer-7 balance: {balance} points (30×2 − 10×2); order.audited completed untouched: {skipped}"
    );
    if balance != 40 || skipped != 1 {
        return Err(format!("expected balance 40 and 1 skipped, got {balance} / {skipped}").into());
    }
    Ok(())
}

//! Quickstart: PostgreSQL outbox → RabbitMQ → PostgreSQL inbox, end to end.
//!
//! 1. migrate the omnibox tables into a fresh schema;
//! 2. start a relay worker woken by LISTEN/NOTIFY and an `InboxWorker` (ExactlyOnceInbox)
//!    whose handler writes a business row in the inbox transaction;
//! 3. place an order: the order row and its event commit in ONE transaction; a second
//!    order whose transaction rolls back leaves no event;
//! 4. watch the event being relayed and handled;
//! 5. inject a redelivery (publish the same event again, as a relay that crashed after the
//!    broker's confirm would) and see the effect happen once;
//! 6. shut down gracefully, drop the schema and the queue.
//!
//! Run: `cargo run -p omnibox-examples --example quickstart`
//! (DATABASE_URL and AMQP_URL default to the local services).

use std::time::{Duration, Instant};

use omnibox::inbox::{AckStrategy, InboxRunner};
use omnibox::postgres::{PgDatabase, PgWakeup};
use omnibox::rabbitmq::lapin::Connection;
use omnibox::rabbitmq::{PublisherOptions, RabbitConsumer, RabbitPublisher, RoutingMode};
use omnibox::relay::OutboxRelay;
use omnibox::{CancellationToken, Publisher};
use omnibox_examples::{CreditLoyaltyPoints, Demo, Narrator, Result, rabbit, unique_name};

/// Relay poll interval: long on purpose, so a prompt relay shows the LISTEN wake-up.
const POLL: Duration = Duration::from_secs(5);

#[tokio::main]
async fn main() -> Result {
    // A unique schema, with a NOTIFY channel so committed events wake the relay at once.
    let channel = unique_name("quickstart_wake");
    let demo = Demo::connect("quickstart", |c| c.notify_channel(channel.as_str())).await?;
    let conn = match rabbit::connect().await {
        Ok(c) => c,
        Err(e) => {
            demo.cleanup().await;
            return Err(e);
        }
    };
    let queue = unique_name("quickstart_orders");
    let result = run(&demo, &conn, &queue).await;
    rabbit::delete_queue(&conn, &queue).await;
    demo.cleanup().await;
    let _ = conn.close(200, "bye".into()).await;
    if result.is_ok() {
        println!(
            "quickstart finished: the effect was applied once despite the redelivery (effectively once)"
        );
    }
    result
}

fn publisher(conn: Connection) -> RabbitPublisher {
    // The default exchange routes by queue name: the event's topic names the queue.
    RabbitPublisher::new(conn).with_options(
        PublisherOptions::default().routing(RoutingMode::FixedExchange(String::new())),
    )
}

async fn run(demo: &Demo, conn: &Connection, queue: &str) -> Result {
    rabbit::declare_queue(conn, queue).await?;
    println!(
        "1. migrated schema {} and declared queue {queue}",
        demo.schema
    );

    // 2. Workers: the relay (claim → publish with confirms → settle) and the inbox.
    let db = PgDatabase::new(demo.pool.clone());
    let wakeup = PgWakeup::connect(&demo.pool, &demo.config).await?;
    let listening = wakeup.is_listening();
    let mut relay_worker =
        OutboxRelay::builder(demo.outbox.clone(), publisher(rabbit::connect().await?))
            .job_name("quickstart_relay")
            .publish_timeout(Duration::from_secs(5))
            .lease_ttl(Duration::from_secs(60))
            .worker(db.clone()) // worker id generated unique per process
            .poll_interval(POLL)
            .wakeup(wakeup)
            .build()?;

    let narrator = Narrator::new();
    let mut inbox_worker = InboxRunner::builder(
        RabbitConsumer::new(rabbit::connect().await?, queue),
        db,
        demo.inbox.clone(),
        "loyalty",
    )
    .ack_strategy(AckStrategy::ExactlyOnceInbox)
    .handler(CreditLoyaltyPoints {
        schema: demo.schema.clone(),
    })
    .job_name("loyalty_inbox")
    .metrics(narrator.clone())
    .idle_backoff(Duration::from_millis(10), Duration::from_millis(200))
    .worker()
    .build()?;

    // One token for the whole application (signal handlers, an HTTP server, …).
    let token = CancellationToken::new();
    let relay_task = {
        let token = token.clone();
        tokio::spawn(async move { relay_worker.run(token).await })
    };
    let inbox_task = {
        let token = token.clone();
        tokio::spawn(async move { inbox_worker.run(token).await })
    };
    println!(
        "2. relay worker started (LISTEN wake-up: {listening}, poll every {}s); inbox worker started (ack strategy {})",
        POLL.as_secs(),
        AckStrategy::ExactlyOnceInbox
    );
    // Let the relay's first (empty) claim pass, so it is waiting on LISTEN.
    tokio::time::sleep(Duration::from_millis(300)).await;

    // 3. The business transactions.
    let committed_at = Instant::now();
    let event = demo.place_order(queue, "customer-7", 42, true).await?;
    println!(
        "3. order for customer-7 and its event {} committed in one transaction",
        event.common.id
    );
    demo.place_order(queue, "customer-8", 99, false).await?;
    println!(
        "   order for customer-8 rolled back: outbox rows = {} (only the committed order's event)",
        demo.count("outbox_events", "").await?
    );

    // 4. Relayed (woken by NOTIFY, not by the 5 s poll) and handled.
    omnibox_examples::wait_until("the event is published and completed", async || {
        Ok(demo.count("outbox_events", "status = 'completed'").await? == 1)
    })
    .await?;
    println!(
        "4. relay published it {} ms after the commit (woken by NOTIFY)",
        committed_at.elapsed().as_millis()
    );
    omnibox_examples::wait_until("the inbox handled the message", async || {
        Ok(demo.count("loyalty_credits", "").await? == 1)
    })
    .await?;
    println!(
        "   inbox stored message {} for group `loyalty` and credited the points in the same transaction",
        event.common.id
    );

    // 5. A redelivery: the same event reaches the broker a second time.
    publisher(rabbit::connect().await?).publish(&event).await?;
    println!(
        "5. injected a redelivery: published event {} again",
        event.common.id
    );
    omnibox_examples::wait_until("the duplicate is recognised", async || {
        Ok(narrator.duplicates() == 1)
    })
    .await?;
    let credits = demo.credits().await?;
    for (customer, points, times) in &credits {
        println!("   loyalty credit: {customer} +{points} points, handler ran {times} time(s)");
    }
    let inbox_rows = demo.count("inbox_events", "status = 'completed'").await?;
    println!(
        "   inbox rows: {inbox_rows}; queue messages left: {}",
        rabbit::ready(conn, queue).await?
    );
    if credits.len() != 1 || credits[0].2 != 1 || inbox_rows != 1 {
        return Err(format!("expected one effect applied once, got {credits:?}").into());
    }

    // 6. Graceful shutdown: stop claiming and receiving, finish what is in flight.
    token.cancel();
    let summary = omnibox_examples::within("relay stop", relay_task).await??;
    let stopped = omnibox_examples::within("inbox stop", inbox_task).await??;
    println!(
        "6. shut down: relay {:?} (published {}, failed {}), inbox {stopped:?}",
        summary.stopped, summary.published, summary.failed
    );
    Ok(())
}

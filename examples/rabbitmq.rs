//! RabbitMQ: relay outbox events through a topic exchange (`RoutingMode::TopicAsExchange`:
//! exchange = the event's topic, routing key = its partition key; the default routing is the
//! default exchange, where the topic names a queue) and consume them from a bound queue into
//! the PostgreSQL inbox.
//!
//! Run: `cargo run -p omnibox-examples --example rabbitmq` (DATABASE_URL, AMQP_URL).

use omnibox::rabbitmq::lapin::options::{
    ExchangeDeclareOptions, ExchangeDeleteOptions, QueueBindOptions,
};
use omnibox::rabbitmq::lapin::types::FieldTable;
use omnibox::rabbitmq::lapin::{Connection, ExchangeKind};
use omnibox::rabbitmq::{
    ConsumerOptions, PublisherOptions, RabbitConsumer, RabbitPublisher, RoutingMode,
};
use omnibox_examples::{Demo, Result, rabbit, relay_and_consume, unique_name};

#[tokio::main]
async fn main() -> Result {
    let demo = Demo::connect("rabbitmq_example", |c| c).await?;
    let conn = match rabbit::connect().await {
        Ok(c) => c,
        Err(e) => {
            demo.cleanup().await;
            return Err(e);
        }
    };
    let exchange = unique_name("orders");
    let queue = unique_name("loyalty");
    let result = run(&demo, &conn, &exchange, &queue).await;
    rabbit::delete_queue(&conn, &queue).await;
    match delete_exchange(&conn, &exchange).await {
        Ok(()) => println!("[cleanup] exchange {exchange} deleted"),
        Err(e) => eprintln!("[cleanup] deleting exchange {exchange} failed: {e}"),
    }
    demo.cleanup().await;
    let _ = conn.close(200, "bye".into()).await;
    if result.is_ok() {
        println!("rabbitmq example finished");
    }
    result
}

async fn run(demo: &Demo, conn: &Connection, exchange: &str, queue: &str) -> Result {
    // The topology is the application's: a topic exchange named after the outbox topic,
    // and the consumer's queue bound to every routing key.
    let ch = conn.create_channel().await?;
    ch.exchange_declare(
        exchange.into(),
        ExchangeKind::Topic,
        ExchangeDeclareOptions {
            durable: true,
            ..Default::default()
        },
        FieldTable::default(),
    )
    .await?;
    rabbit::declare_queue(conn, queue).await?;
    ch.queue_bind(
        queue.into(),
        exchange.into(),
        "#".into(),
        QueueBindOptions::default(),
        FieldTable::default(),
    )
    .await?;
    ch.close(200, "OK".into()).await?;
    println!("0. exchange {exchange} (topic) bound to queue {queue} with `#`");

    // Publisher confirms: publish returns only after the broker took the message. Both
    // reconnect (with backoff) when the broker closes their connection.
    let publisher = RabbitPublisher::new(rabbit::connector("omnibox-example-relay"))
        .with_options(PublisherOptions::default().routing(RoutingMode::TopicAsExchange));
    let consumer = RabbitConsumer::new(rabbit::connector("omnibox-example-inbox"), queue)
        .with_options(ConsumerOptions::default().prefetch(16));
    let inbox = relay_and_consume(demo, exchange, publisher, consumer, 6).await?;
    drop(inbox);
    Ok(())
}

async fn delete_exchange(conn: &Connection, exchange: &str) -> Result {
    let ch = conn.create_channel().await?;
    ch.exchange_delete(exchange.into(), ExchangeDeleteOptions::default())
        .await?;
    ch.close(200, "OK".into()).await?;
    Ok(())
}

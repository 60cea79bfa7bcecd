//! Kafka: relay outbox events to a topic (key = partition key, so one customer's events
//! stay ordered) and consume them into the PostgreSQL inbox, acknowledging by committing
//! offsets.
//!
//! With `KAFKA_BOOTSTRAP_SERVERS` set it talks to that cluster; otherwise it starts
//! librdkafka's in-process mock cluster (real TCP listeners, no Kafka install needed).
//! Joining the consumer group takes a few seconds on the mock cluster.
//!
//! Run: `cargo run -p omnibox-examples --example kafka` (DATABASE_URL, KAFKA_BOOTSTRAP_SERVERS).

use omnibox::kafka::rdkafka::ClientConfig;
use omnibox::kafka::rdkafka::mocking::MockCluster;
use omnibox::kafka::{KafkaConsumer, KafkaPublisher};
use omnibox_examples::{Demo, Result, kafka_bootstrap, relay_and_consume, unique_name};

#[tokio::main]
async fn main() -> Result {
    let topic = unique_name("orders");
    let (mock, bootstrap) = match kafka_bootstrap() {
        Some(b) => {
            println!("0. Kafka at {b} (KAFKA_BOOTSTRAP_SERVERS); topic {topic} is auto-created");
            (None, b)
        }
        None => {
            let mock = MockCluster::new(1)?;
            mock.create_topic(&topic, 1, 1)?;
            let b = mock.bootstrap_servers();
            println!("0. embedded mock Kafka cluster at {b}; topic {topic} created");
            (Some(mock), b)
        }
    };
    let demo = Demo::connect("kafka_example", |c| c).await?;
    let result = run(&demo, &topic, &bootstrap).await;
    demo.cleanup().await;
    drop(mock);
    if result.is_ok() {
        println!("kafka example finished");
    }
    result
}

async fn run(demo: &Demo, topic: &str, bootstrap: &str) -> Result {
    // Idempotent, acks=all, keys placed as the Java client places them (murmur2).
    let publisher = KafkaPublisher::from_config(
        ClientConfig::new()
            .set("bootstrap.servers", bootstrap)
            .set("message.timeout.ms", "4000"),
    )?;
    let consumer = KafkaConsumer::from_config(
        ClientConfig::new()
            .set("bootstrap.servers", bootstrap)
            .set("group.id", unique_name("loyalty"))
            .set("enable.auto.commit", "false")
            .set("auto.offset.reset", "earliest")
            .set("session.timeout.ms", "6000")
            .set("heartbeat.interval.ms", "500"),
        [topic.to_owned()],
    )?;
    let inbox = relay_and_consume(demo, topic, publisher, consumer, 6).await?;
    // Closing a Kafka consumer blocks while it leaves the group: do it off the runtime.
    let (tx, rx) = tokio::sync::oneshot::channel();
    std::thread::spawn(move || {
        drop(inbox);
        let _ = tx.send(());
    });
    omnibox_examples::within("closing the Kafka consumer", rx).await??;
    println!("6. Kafka consumer closed (left the group)");
    Ok(())
}

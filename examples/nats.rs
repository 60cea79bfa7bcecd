//! NATS JetStream: relay outbox events to a stream (subject = the event's topic,
//! `Nats-Msg-Id` = event id, so the stream's duplicate window drops re-publishes) and
//! consume them through a durable pull consumer into the PostgreSQL inbox.
//!
//! Run: `cargo run -p omnibox-examples --example nats` (DATABASE_URL, NATS_URL).

use std::time::Duration;

use omnibox::nats::async_nats::{self, jetstream};
use omnibox::nats::{ConsumerOptions, NatsConsumer, NatsPublisher};
use omnibox_examples::{Demo, Result, nats_url, relay_and_consume, unique_name};

#[tokio::main]
async fn main() -> Result {
    let url = nats_url();
    let client = async_nats::connect(url.as_str())
        .await
        .map_err(|e| format!("connect to NATS at {url} (set NATS_URL): {e}"))?;
    let js = jetstream::new(client);
    let stream = unique_name("ORDERS");
    let subject = format!("{stream}.orders");
    // Streams are the application's: one per run, with a duplicate window for re-publishes.
    js.create_stream(jetstream::stream::Config {
        name: stream.clone(),
        subjects: vec![subject.clone()],
        duplicate_window: Duration::from_secs(120),
        ..Default::default()
    })
    .await?;
    println!("0. JetStream stream {stream} on subject {subject}");
    let demo = match Demo::connect("nats_example", |c| c).await {
        Ok(d) => d,
        Err(e) => {
            let _ = js.delete_stream(&stream).await;
            return Err(e);
        }
    };
    let publisher = NatsPublisher::new(js.clone());
    let consumer = NatsConsumer::new(js.clone(), stream.clone(), "loyalty")
        .with_options(ConsumerOptions::default().ack_wait(Duration::from_secs(10)));
    let result = relay_and_consume(&demo, &subject, publisher, consumer, 6)
        .await
        .map(drop);
    match js.delete_stream(&stream).await {
        Ok(_) => println!("[cleanup] stream {stream} deleted"),
        Err(e) => eprintln!("[cleanup] deleting stream {stream} failed: {e}"),
    }
    demo.cleanup().await;
    if result.is_ok() {
        println!("nats example finished");
    }
    result
}

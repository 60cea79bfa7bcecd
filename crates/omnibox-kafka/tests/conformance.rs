//! The shared publisher and consumer conformance suites of `omnibox-testing`, run against
//! Kafka (`KAFKA_BOOTSTRAP_SERVERS`, else librdkafka's in-process mock cluster).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{Kafka, bounded, produce_raw};
use omnibox_core::consumer::{Consumer, Delivery};
use omnibox_core::error::ConsumeError;
use omnibox_kafka::{KafkaAck, KafkaConsumer, KafkaPublisher};
use omnibox_testing::{ConsumerChecks, RawMessage, consumer_conformance, publisher_conformance};
use tokio::sync::oneshot;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kafka_publisher_passes_publisher_conformance() {
    let kafka = Kafka::resolve().await;
    let topic = kafka.topic("conf_pub", 1).await;
    let publisher = KafkaPublisher::new(kafka.producer());
    let kafka = &kafka;
    publisher_conformance(
        &publisher,
        &topic,
        move |topic: String, n: usize| async move {
            kafka
                .read_back(&topic, n)
                .await
                .into_iter()
                .map(|r| RawMessage::new(r.value.clone().unwrap_or_default(), r.string_headers()))
                .collect()
        },
    )
    .await;
}

/// Closing threads of dropped consumers, so the test can wait (bounded) for all of them.
#[derive(Clone, Default)]
struct Closings(Arc<Mutex<Vec<oneshot::Receiver<()>>>>);

impl Closings {
    async fn wait_all(&self) {
        let pending = std::mem::take(&mut *self.0.lock().unwrap());
        for rx in pending {
            bounded("consumer close", rx).await.unwrap();
        }
    }
}

/// A [`KafkaConsumer`] whose drop closes the client on its own thread: closing leaves the
/// group and blocks, which must not stall the async runtime the suite runs on.
struct ClosedOffThread {
    inner: Option<KafkaConsumer>,
    closings: Closings,
}

impl ClosedOffThread {
    fn inner(&mut self) -> &mut KafkaConsumer {
        self.inner.as_mut().expect("present until dropped")
    }
}

impl Drop for ClosedOffThread {
    fn drop(&mut self) {
        if let Some(consumer) = self.inner.take() {
            let (tx, rx) = oneshot::channel();
            self.closings.0.lock().unwrap().push(rx);
            std::thread::spawn(move || {
                drop(consumer);
                let _ = tx.send(());
            });
        }
    }
}

impl Consumer for ClosedOffThread {
    type Ack = KafkaAck;

    async fn start(&mut self) -> Result<(), ConsumeError> {
        self.inner().start().await
    }

    async fn receive(&mut self) -> Result<Delivery<KafkaAck>, ConsumeError> {
        self.inner().receive().await
    }

    async fn stop(&mut self) -> Result<(), ConsumeError> {
        self.inner().stop().await
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kafka_consumer_passes_consumer_conformance() {
    let kafka = Kafka::resolve().await;
    let topic = kafka.topic("conf_con", 1).await;
    let group = common::unique("conf_group");
    let producer = kafka.producer();
    let closings = Closings::default();
    let (kafka, topic, group, producer) = (&kafka, topic.as_str(), group.as_str(), &producer);
    let make_closings = closings.clone();
    consumer_conformance(
        move || {
            let closings = make_closings.clone();
            async move {
                ClosedOffThread {
                    inner: Some(kafka.consumer(group, topic)),
                    closings,
                }
            }
        },
        move |m: RawMessage| async move {
            let headers: Vec<(&str, Option<&[u8]>)> = m
                .headers
                .iter()
                .map(|(k, v)| (k.as_str(), Some(v.as_bytes())))
                .collect();
            produce_raw(producer, topic, Some(&m.body), &headers).await;
        },
        // A consumer-group join on the mock cluster waits its 3 s initial rebalance delay;
        // a rejoin after a member left took ~5 s here (bounded by `session.timeout.ms`,
        // 6 s). The quiet period must outlast a join, or the "acknowledged messages are not
        // redelivered" check would pass before the consumer could have received anything.
        ConsumerChecks::default()
            .receive_timeout(Duration::from_secs(30))
            .quiet(Duration::from_secs(12)),
    )
    .await;
    closings.wait_all().await;
}

//! A delayed nack on Kafka (issue 9 §6): the inbox runner nacks a failed record with its
//! retry backoff (`Redelivery::After`); the record must not come back before that, nothing
//! behind it on its partition may overtake it, and other partitions keep flowing. Against a
//! real Kafka protocol endpoint (mock cluster or `KAFKA_BOOTSTRAP_SERVERS`).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::{Duration, Instant};

use common::{Kafka, bounded, close, produce_to};
use omnibox_core::consumer::{AckHandle, Consumer, Delivery, Redelivery};
use omnibox_kafka::{KafkaAck, KafkaConsumer};

const BACKOFF: Duration = Duration::from_secs(2);

async fn next(consumer: &mut KafkaConsumer) -> Delivery<KafkaAck> {
    bounded("receive", consumer.receive()).await.unwrap()
}

fn n_of(d: &Delivery<KafkaAck>) -> i64 {
    d.message.as_ref().unwrap().payload["n"].as_i64().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_record_waits_for_its_backoff_and_the_partition_keeps_its_order() {
    let kafka = Kafka::resolve().await;
    let topic = kafka.topic("backoff", 2).await;
    let group = common::unique("g");
    let producer = kafka.producer();
    for n in 0..3 {
        produce_to(&producer, &topic, 0, format!(r#"{{"n":{n}}}"#).as_bytes()).await;
    }
    let mut c = kafka.consumer(&group, &topic);
    let first = next(&mut c).await;
    assert_eq!((first.ack.partition(), n_of(&first)), (0, 0));
    // The downstream is out: the record is handed back with the runner's backoff.
    let nacked_at = Instant::now();
    bounded("nack", first.ack.nack(Redelivery::After(BACKOFF)))
        .await
        .unwrap();
    // While partition 0 waits, partition 1 flows.
    produce_to(&producer, &topic, 1, br#"{"n":100}"#).await;
    let other = next(&mut c).await;
    assert_eq!(
        (other.ack.partition(), n_of(&other)),
        (1, 100),
        "a record of partition 0 came back during its backoff"
    );
    assert!(
        nacked_at.elapsed() < BACKOFF,
        "the other partition was held up"
    );
    bounded("ack other", other.ack.ack()).await.unwrap();
    // Then partition 0 resumes at the failed record, not before its backoff.
    let again = next(&mut c).await;
    let waited = nacked_at.elapsed();
    assert_eq!((again.ack.partition(), n_of(&again)), (0, 0));
    assert!(
        waited >= BACKOFF,
        "redelivered after {waited:?}, before the {BACKOFF:?} backoff"
    );
    eprintln!("redelivered after {waited:?} (backoff {BACKOFF:?})");
    bounded("ack 0", again.ack.ack()).await.unwrap();
    let rest = [next(&mut c).await, next(&mut c).await];
    assert_eq!(rest.iter().map(n_of).collect::<Vec<_>>(), vec![1, 2]);
    for d in rest {
        bounded("ack", d.ack.ack()).await.unwrap();
    }
    bounded("stop", c.stop()).await.unwrap();
    close(c).await;
}

/// An immediate nack is redelivered at once; each delayed nack of the same record waits its
/// own delay (a longer one after a shorter one is not cut short by the earlier resume).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_immediate_nack_is_not_delayed_and_each_delayed_nack_waits_its_own_delay() {
    let kafka = Kafka::resolve().await;
    let topic = kafka.topic("backoff-imm", 1).await;
    let group = common::unique("g");
    let producer = kafka.producer();
    produce_to(&producer, &topic, 0, br#"{"n":0}"#).await;
    let mut c = kafka.consumer(&group, &topic);
    let d = next(&mut c).await;
    let t = Instant::now();
    bounded("nack now", d.ack.nack(Redelivery::Immediate))
        .await
        .unwrap();
    let again = next(&mut c).await;
    assert_eq!(n_of(&again), 0);
    assert!(
        t.elapsed() < BACKOFF,
        "an immediate nack waited {:?}",
        t.elapsed()
    );
    let t = Instant::now();
    bounded(
        "short",
        again
            .ack
            .nack(Redelivery::After(Duration::from_millis(300))),
    )
    .await
    .unwrap();
    let third = next(&mut c).await;
    assert!(t.elapsed() >= Duration::from_millis(300));
    let t = Instant::now();
    bounded("long", third.ack.nack(Redelivery::After(BACKOFF)))
        .await
        .unwrap();
    let fourth = next(&mut c).await;
    assert!(
        t.elapsed() >= BACKOFF,
        "resumed after {:?}: an older pause's resume ended a newer one",
        t.elapsed()
    );
    bounded("ack", fourth.ack.ack()).await.unwrap();
    bounded("stop", c.stop()).await.unwrap();
    close(c).await;
}

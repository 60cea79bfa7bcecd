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

/// An outage of the store behind the consumer: for a while every record of every
/// partition is handed back with a short delay (as the inbox runner does while PostgreSQL
/// restarts), then records are acknowledged. Every record must still arrive: no partition
/// may stay paused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_an_outage_of_delayed_nacks_on_every_partition_every_record_arrives() {
    const PARTITIONS: i32 = 4;
    const PER: i64 = 20;
    let kafka = Kafka::resolve().await;
    let topic = kafka.topic("backoff-outage", PARTITIONS).await;
    let group = common::unique("g");
    let producer = kafka.producer();
    for p in 0..PARTITIONS {
        for n in 0..PER {
            let n = i64::from(p) * 1000 + n;
            produce_to(&producer, &topic, p, format!(r#"{{"n":{n}}}"#).as_bytes()).await;
        }
    }
    let mut c = kafka.consumer(&group, &topic);
    let mut outage: Option<Instant> = None;
    let mut acked = std::collections::BTreeSet::new();
    let mut nacks = 0;
    while acked.len() < (PARTITIONS as i64 * PER) as usize {
        let d = tokio::time::timeout(Duration::from_secs(20), c.receive())
            .await
            .unwrap_or_else(|_| {
                panic!(
                    "stalled: {} of {} records acknowledged after {nacks} delayed nacks",
                    acked.len(),
                    PARTITIONS as i64 * PER
                )
            })
            .unwrap();
        let n = n_of(&d);
        let outage = *outage.get_or_insert_with(Instant::now);
        if outage.elapsed() < Duration::from_secs(2) {
            nacks += 1;
            let delay = Duration::from_millis(20 + (n as u64 * 7) % 180);
            bounded("nack", d.ack.nack(Redelivery::After(delay)))
                .await
                .unwrap();
        } else {
            bounded("ack", d.ack.ack()).await.unwrap();
            acked.insert(n);
        }
    }
    eprintln!("{nacks} delayed nacks, then every record");
    bounded("stop", c.stop()).await.unwrap();
    close(c).await;
}

/// A delayed nack pauses the partition; a rebalance during the delay (a member joins and
/// leaves) must not leave it paused for good. librdkafka keeps an application pause across
/// revoke and assign; before the fix the consumer forgot its pause on the rebalance, the
/// scheduled resume was skipped, and the partition never delivered again (found by the
/// chaos rig: 3 of 4 partitions stalled after a PostgreSQL restart).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rebalance_during_a_delayed_nack_does_not_leave_the_partition_paused() {
    let kafka = Kafka::resolve().await;
    let topic = kafka.topic("backoff-rebalance", 1).await;
    let group = common::unique("g");
    let producer = kafka.producer();
    produce_to(&producer, &topic, 0, br#"{"n":7}"#).await;
    let mut c1 = kafka.consumer(&group, &topic);
    let first = next(&mut c1).await;
    bounded(
        "nack",
        first.ack.nack(Redelivery::After(Duration::from_secs(30))),
    )
    .await
    .unwrap();
    // c1 keeps polling (serving its rebalance callbacks) while a second member joins the
    // group, serves a few polls and leaves without acknowledging anything.
    let (tx, rx) = tokio::sync::oneshot::channel();
    let c1_task = tokio::spawn(async move {
        let d = tokio::time::timeout(Duration::from_secs(45), c1.receive()).await;
        let _ = tx.send(());
        (c1, d)
    });
    let mut c2 = kafka.consumer(&group, &topic);
    let joined = Instant::now();
    while joined.elapsed() < Duration::from_secs(8) {
        if let Ok(Ok(d)) = tokio::time::timeout(Duration::from_millis(200), c2.receive()).await {
            // Not acknowledged: the record stays uncommitted for c1.
            drop(d);
        }
    }
    bounded("stop c2", c2.stop()).await.unwrap();
    close(c2).await;
    let started = Instant::now();
    let (mut c1, again) = c1_task.await.unwrap();
    drop(rx);
    let again = again
        .unwrap_or_else(|_| panic!("the partition stayed paused after the rebalance"))
        .unwrap();
    eprintln!(
        "redelivered {:?} after the second member left",
        started.elapsed()
    );
    assert_eq!(n_of(&again), 7);
    // The group may still be settling after the member left: a commit refused with
    // RebalanceInProgress is transient (the runner retries it with the next commit).
    if let Err(e) = bounded("ack", again.ack.ack()).await {
        assert_eq!(e.kind, omnibox_core::FailureKind::Transient, "{e}");
    }
    let _ = bounded("stop", c1.stop()).await;
    close(c1).await;
}

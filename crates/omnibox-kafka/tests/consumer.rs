//! KafkaConsumer against a real Kafka protocol endpoint (mock cluster or
//! `KAFKA_BOOTSTRAP_SERVERS`).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Instant;

use common::{Kafka, bounded, close, produce_raw, produce_to};
use omnibox_core::consumer::{AckHandle, Consumer, Delivery, Redelivery};
use omnibox_core::error::EnvelopeError;
use omnibox_kafka::{KafkaAck, KafkaConsumer};

async fn next(consumer: &mut KafkaConsumer) -> Delivery<KafkaAck> {
    bounded("receive", consumer.receive()).await.unwrap()
}

fn body(n: usize) -> Vec<u8> {
    format!(r#"{{"n":{n}}}"#).into_bytes()
}

async fn produce_numbered(kafka: &Kafka, topic: &str, count: usize) {
    let producer = kafka.producer();
    for n in 0..count {
        produce_raw(
            &producer,
            topic,
            Some(&body(n)),
            &[("event_type", Some(b"numbered"))],
        )
        .await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn commit_stops_at_the_first_unacknowledged_offset() {
    let kafka = Kafka::resolve().await;
    let topic = kafka.topic("con-contiguity", 1).await;
    let group = common::unique("g");
    produce_numbered(&kafka, &topic, 4).await;

    let mut a = kafka.consumer(&group, &topic);
    bounded("start", a.start()).await.unwrap();
    let joined = Instant::now();
    let d0 = next(&mut a).await;
    eprintln!("first delivery after {:?}", joined.elapsed());
    let d1 = next(&mut a).await;
    let d2 = next(&mut a).await;
    assert_eq!(
        [d0.ack.offset(), d1.ack.offset(), d2.ack.offset()],
        [0, 1, 2]
    );
    let m0 = d0.message.as_ref().unwrap();
    assert_eq!(m0.message_id, format!("{topic}:0:0"));
    assert_eq!(m0.source, topic);
    assert_eq!(m0.event_type, "numbered");
    bounded("ack 0", d0.ack.ack()).await.unwrap();
    bounded("ack 2", d2.ack.ack()).await.unwrap();
    let stopped = Instant::now();
    bounded("stop", a.stop()).await.unwrap();
    eprintln!("stop took {:?}", stopped.elapsed());
    // Acknowledged after the stop: ignored, the record is redelivered.
    bounded("late ack 1", d1.ack.ack()).await.unwrap();
    let closed = Instant::now();
    close(a).await;
    eprintln!("close took {:?}", closed.elapsed());

    let mut b = kafka.consumer(&group, &topic);
    let rejoined = Instant::now();
    let again = next(&mut b).await;
    eprintln!(
        "second member's first delivery after {:?}",
        rejoined.elapsed()
    );
    assert_eq!(
        again.ack.offset(),
        1,
        "resumes at the first unacknowledged record"
    );
    assert_eq!(next(&mut b).await.ack.offset(), 2);
    bounded("stop b", b.stop()).await.unwrap();
    close(b).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nack_rewinds_and_redelivers() {
    let kafka = Kafka::resolve().await;
    let topic = kafka.topic("con-nack", 1).await;
    let group = common::unique("g");
    produce_numbered(&kafka, &topic, 3).await;

    let mut a = kafka.consumer(&group, &topic);
    let d0 = next(&mut a).await;
    let d1 = next(&mut a).await;
    let d2 = next(&mut a).await;
    bounded("ack 0", d0.ack.ack()).await.unwrap();
    bounded("nack 1", d1.ack.nack(Redelivery::Immediate))
        .await
        .unwrap();
    // The handle of a record after the rewind point is now a no-op.
    bounded("stale ack 2", d2.ack.ack()).await.unwrap();
    let r1 = next(&mut a).await;
    let r2 = next(&mut a).await;
    assert_eq!((r1.ack.offset(), r2.ack.offset()), (1, 2));
    assert_eq!(r1.message.as_ref().unwrap().payload["n"], 1);
    bounded("ack r1", r1.ack.ack()).await.unwrap();
    bounded("stop", a.stop()).await.unwrap();
    close(a).await;

    // Offset 2 was acknowledged only through the stale handle: it comes back.
    let mut b = kafka.consumer(&group, &topic);
    assert_eq!(next(&mut b).await.ack.offset(), 2);
    bounded("stop b", b.stop()).await.unwrap();
    close(b).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bug8_malformed_records_arrive_with_a_handle_and_acking_them_advances() {
    // Reference bug 8: undecodable records were read past silently, invalid ones looped.
    let kafka = Kafka::resolve().await;
    let topic = kafka.topic("con-malformed", 1).await;
    let group = common::unique("g");
    let producer = kafka.producer();
    produce_raw(&producer, &topic, None, &[("event_id", Some(b"e-0"))]).await;
    produce_raw(&producer, &topic, Some(b"{not json"), &[]).await;
    produce_raw(&producer, &topic, Some(b"[1,2]"), &[]).await;

    let mut a = kafka.consumer(&group, &topic);
    let d0 = next(&mut a).await;
    let m0 = d0.message.as_ref().unwrap_err();
    assert_eq!(m0.error, EnvelopeError::EmptyBody);
    assert_eq!(m0.message_id.as_deref(), Some("e-0"));
    assert_eq!(m0.source, topic);
    let d1 = next(&mut a).await;
    let m1 = d1.message.as_ref().unwrap_err();
    assert!(matches!(m1.error, EnvelopeError::InvalidJson(_)), "{m1:?}");
    assert_eq!(m1.body, b"{not json");
    assert_eq!(m1.message_id, Some(format!("{topic}:0:1")));
    let d2 = next(&mut a).await;
    assert!(matches!(
        d2.message.as_ref().unwrap_err().error,
        EnvelopeError::NotAnObject { .. }
    ));
    for d in [d0, d1, d2] {
        bounded("ack", d.ack.ack()).await.unwrap();
    }
    bounded("stop", a.stop()).await.unwrap();
    close(a).await;

    produce_raw(&producer, &topic, Some(&body(3)), &[]).await;
    let mut b = kafka.consumer(&group, &topic);
    let d = next(&mut b).await;
    assert_eq!(
        d.ack.offset(),
        3,
        "acknowledged malformed records are not redelivered"
    );
    bounded("stop b", b.stop()).await.unwrap();
    close(b).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn headers_are_decoded_lossily_and_null_values_dropped() {
    let kafka = Kafka::resolve().await;
    let topic = kafka.topic("con-headers", 1).await;
    let producer = kafka.producer();
    let envelope = br#"{"schema_version":"1.0.0","event_type":"from.body","payload":{"x":1},"trace_id":"t-body"}"#;
    produce_raw(
        &producer,
        &topic,
        Some(envelope),
        &[
            ("message_id", Some(b"m-1")),
            ("nothing", None),
            ("bytes", Some(b"ok \xff")),
            ("source", Some(b"billing")),
        ],
    )
    .await;
    let mut a = kafka.consumer(&common::unique("g"), &topic);
    let d = next(&mut a).await;
    let m = d.message.as_ref().unwrap();
    assert_eq!(m.message_id, "m-1");
    assert_eq!(m.source, "billing");
    assert_eq!(m.event_type, "from.body");
    assert_eq!(m.trace_id.as_deref(), Some("t-body"));
    assert_eq!(m.payload["x"], 1);
    assert!(!m.headers.contains_key("nothing"));
    assert_eq!(m.headers["bytes"], "ok \u{FFFD}");
    bounded("ack", d.ack.ack()).await.unwrap();
    bounded("stop", a.stop()).await.unwrap();
    close(a).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auto_commit_is_refused() {
    let kafka = Kafka::resolve().await;
    let mut config = kafka.consumer_config("g");
    config.set("enable.auto.commit", "true");
    let err = KafkaConsumer::from_config(&config, ["t"]).unwrap_err();
    assert!(err.message.contains("enable.auto.commit"), "{err}");
    let mut config = kafka.config();
    let err =
        KafkaConsumer::from_config(config.set("enable.auto.commit", "false"), ["t"]).unwrap_err();
    assert!(err.message.contains("group.id"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rebalance_forgets_revoked_partitions_and_late_acks_are_ignored() {
    let kafka = Kafka::resolve().await;
    let topic = kafka.topic("con-rebalance", 2).await;
    let group = common::unique("g");
    let producer = kafka.producer();
    produce_to(&producer, &topic, 0, &body(0)).await;
    produce_to(&producer, &topic, 1, &body(1)).await;

    let mut a = kafka.consumer(&group, &topic);
    let first = next(&mut a).await;
    let second = next(&mut a).await;
    let mut held = vec![first, second];
    held.sort_by_key(|d| d.ack.partition());
    assert_eq!(
        held.iter().map(|d| d.ack.partition()).collect::<Vec<_>>(),
        [0, 1]
    );

    // A second member joins; A keeps polling so it serves the revoke and rejoins.
    let mut b = kafka.consumer(&group, &topic);
    let started = Instant::now();
    let b_task = tokio::spawn(async move {
        let d = bounded("b receive", b.receive()).await.unwrap();
        (b, d)
    });
    let mut a_again = Vec::new();
    while !b_task.is_finished() {
        assert!(
            started.elapsed() < common::LIMIT,
            "rebalance did not finish"
        );
        if let Ok(d) =
            tokio::time::timeout(std::time::Duration::from_millis(200), a.receive()).await
        {
            a_again.push(d.unwrap());
        }
    }
    let (mut b, b_delivery) = b_task.await.unwrap();
    eprintln!(
        "rebalance handed a partition to the new member after {:?}",
        started.elapsed()
    );
    let moved = b_delivery.ack.partition();
    assert_eq!(
        b_delivery.ack.offset(),
        0,
        "the unacknowledged record is read again"
    );
    assert!(a_again.iter().all(|d| d.ack.partition() != moved));

    // A's handle for the partition it lost: acknowledging it is a no-op, not a commit.
    let stale = held.remove(usize::try_from(moved).unwrap());
    bounded("late ack", stale.ack.ack()).await.unwrap();
    drop(b_delivery);
    bounded("stop b", b.stop()).await.unwrap();
    close(b).await;
    bounded("stop a", a.stop()).await.unwrap();
    close(a).await;

    let mut c = kafka.consumer(&group, &topic);
    let mut seen = Vec::new();
    while !seen.iter().any(|(p, _)| *p == moved) {
        let d = next(&mut c).await;
        seen.push((d.ack.partition(), d.ack.offset()));
    }
    assert!(
        seen.contains(&(moved, 0)),
        "late ack must not commit: {seen:?}"
    );
    bounded("stop c", c.stop()).await.unwrap();
    close(c).await;
}

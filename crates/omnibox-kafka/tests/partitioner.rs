//! Kafka key placement (issue 9, "Also"): the publisher places each key on the partition the
//! Java client's default partitioner (and kafka-python's) picks: `murmur2(key) & 0x7fffffff
//! % partitions`. Against a real Kafka protocol endpoint (mock cluster or
//! `KAFKA_BOOTSTRAP_SERVERS`).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::HashMap;

use common::{Kafka, bounded};
use omnibox_core::{OutboxEvent, Publisher};
use omnibox_kafka::KafkaPublisher;
use omnibox_kafka::rdkafka::consumer::{Consumer, StreamConsumer};
use omnibox_kafka::rdkafka::{Message, Offset, TopicPartitionList};

const PARTITIONS: i32 = 6;

/// Kafka's `Utils.murmur2` (seed 0x9747b28c), written from the Java source.
fn murmur2(data: &[u8]) -> u32 {
    const M: u32 = 0x5bd1_e995;
    const R: u32 = 24;
    let len = data.len();
    let mut h: u32 = 0x9747_b28c ^ (len as u32);
    let mut chunks = data.chunks_exact(4);
    for c in &mut chunks {
        let mut k = u32::from_le_bytes([c[0], c[1], c[2], c[3]]);
        k = k.wrapping_mul(M);
        k ^= k >> R;
        k = k.wrapping_mul(M);
        h = h.wrapping_mul(M);
        h ^= k;
    }
    let rest = chunks.remainder();
    if rest.len() >= 3 {
        h ^= u32::from(rest[2]) << 16;
    }
    if rest.len() >= 2 {
        h ^= u32::from(rest[1]) << 8;
    }
    if !rest.is_empty() {
        h ^= u32::from(rest[0]);
        h = h.wrapping_mul(M);
    }
    h ^= h >> 13;
    h = h.wrapping_mul(M);
    h ^= h >> 15;
    h
}

fn java_partition(key: &str) -> i32 {
    ((murmur2(key.as_bytes()) & 0x7fff_ffff) % PARTITIONS as u32) as i32
}

#[test]
fn murmur2_matches_the_python_and_java_clients() {
    // From kafka-python 2.x, `kafka.partitioner.default.murmur2` (the Java client's
    // `Utils.murmur2`; "21" and "foobar" are also in the Java client's own tests as
    // -973932308 and -790332482).
    for (key, hash, partition_of_6) in [
        ("", 275_646_681_u32, 3),
        ("a", 2_731_586_172, 4),
        ("customer-7", 3_011_136_759, 1),
        ("order-42", 501_153_024, 0),
        ("21", 3_321_034_988, 0),
        ("foobar", 3_504_634_814, 0),
        ("k0", 3_590_428_993, 5),
        ("k1", 1_684_045_097, 5),
        ("k2", 380_483_553, 3),
        ("k3", 1_676_809_936, 4),
    ] {
        assert_eq!(murmur2(key.as_bytes()), hash, "{key:?}");
        assert_eq!(java_partition(key), partition_of_6, "{key:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn from_config_places_keys_as_the_java_client_does() {
    let kafka = Kafka::resolve().await;
    let topic = kafka.topic("placement", PARTITIONS).await;
    let publisher = KafkaPublisher::from_config(&kafka.producer_config()).unwrap();
    let keys: Vec<String> = (0..60).map(|i| format!("customer-{i}")).collect();
    for key in &keys {
        let event = OutboxEvent::builder("c", uuid::Uuid::now_v7(), "c.seen", topic.as_str(), key)
            .payload(serde_json::json!({ "seen": true }))
            .build()
            .unwrap();
        bounded("publish", publisher.publish(&event)).await.unwrap();
    }
    let reader: StreamConsumer = kafka
        .config()
        .set("group.id", common::unique("reader"))
        .set("enable.auto.commit", "false")
        .create()
        .unwrap();
    let mut tpl = TopicPartitionList::new();
    for p in 0..PARTITIONS {
        tpl.add_partition_offset(&topic, p, Offset::Beginning)
            .unwrap();
    }
    reader.assign(&tpl).unwrap();
    let mut placed: HashMap<String, i32> = HashMap::new();
    while placed.len() < keys.len() {
        let m = bounded("read back", reader.recv()).await.unwrap();
        let key = String::from_utf8(m.key().unwrap().to_vec()).unwrap();
        placed.insert(key, m.partition());
    }
    let misplaced: Vec<_> = keys
        .iter()
        .filter(|k| placed[*k] != java_partition(k))
        .collect();
    assert!(
        misplaced.is_empty(),
        "{} of {} keys not on the Java client's partition: {misplaced:?}",
        misplaced.len(),
        keys.len()
    );
}

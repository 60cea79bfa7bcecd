//! Test support: a Kafka to talk to (`KAFKA_BOOTSTRAP_SERVERS`, else librdkafka's in-process
//! mock cluster, which speaks the real protocol over TCP), topics, clients.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::future::Future;
use std::time::Duration;

use omnibox_kafka::KafkaConsumer;
use omnibox_kafka::rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use omnibox_kafka::rdkafka::client::DefaultClientContext;
use omnibox_kafka::rdkafka::config::ClientConfig;
use omnibox_kafka::rdkafka::consumer::{Consumer, StreamConsumer};
use omnibox_kafka::rdkafka::message::{Header, Headers, Message, OwnedHeaders};
use omnibox_kafka::rdkafka::mocking::MockCluster;
use omnibox_kafka::rdkafka::producer::{DefaultProducerContext, FutureProducer, FutureRecord};
use omnibox_kafka::rdkafka::{Offset, TopicPartitionList};
use omnibox_testing::ServiceError;

/// Every wait in these tests is bounded by this.
pub const LIMIT: Duration = Duration::from_secs(30);

/// Run `f` under [`LIMIT`].
pub async fn bounded<T>(what: &str, f: impl Future<Output = T>) -> T {
    tokio::time::timeout(LIMIT, f)
        .await
        .unwrap_or_else(|_| panic!("timed out after {LIMIT:?}: {what}"))
}

pub struct Kafka {
    pub bootstrap: String,
    mock: Option<MockCluster<'static, DefaultProducerContext>>,
}

impl Kafka {
    /// `KAFKA_BOOTSTRAP_SERVERS` (or a testcontainers Kafka) through
    /// [`omnibox_testing::kafka_bootstrap`]; without either, librdkafka's in-process mock
    /// cluster. Any other resolution error fails the test loudly.
    pub async fn resolve() -> Self {
        match omnibox_testing::kafka_bootstrap().await {
            Ok(bootstrap) => Kafka {
                bootstrap,
                mock: None,
            },
            Err(ServiceError::UseKafkaMockCluster { .. }) => Self::mock_cluster(),
            Err(e) => panic!("{e}"),
        }
    }

    /// Always a fresh in-process mock cluster, whatever the environment says: for tests
    /// that inject broker faults through the mock API.
    pub fn mock_cluster() -> Self {
        let mock = MockCluster::new(1).expect("start librdkafka's mock cluster");
        Kafka {
            bootstrap: mock.bootstrap_servers(),
            mock: Some(mock),
        }
    }

    pub fn mock(&self) -> Option<&MockCluster<'static, DefaultProducerContext>> {
        self.mock.as_ref()
    }

    /// A fresh topic with a unique name.
    pub async fn topic(&self, prefix: &str, partitions: i32) -> String {
        let name = unique(prefix);
        match &self.mock {
            Some(mock) => mock.create_topic(&name, partitions, 1).unwrap(),
            None => {
                let admin: AdminClient<DefaultClientContext> = self.config().create().unwrap();
                let results = bounded(
                    "create topic",
                    admin.create_topics(
                        &[NewTopic::new(&name, partitions, TopicReplication::Fixed(1))],
                        &AdminOptions::new().operation_timeout(Some(Duration::from_secs(10))),
                    ),
                )
                .await
                .unwrap();
                for r in results {
                    r.unwrap();
                }
            }
        }
        name
    }

    pub fn config(&self) -> ClientConfig {
        let mut c = ClientConfig::new();
        c.set("bootstrap.servers", &self.bootstrap);
        c
    }

    pub fn producer_config(&self) -> ClientConfig {
        let mut c = self.config();
        c.set("enable.idempotence", "true")
            .set("acks", "all")
            .set("message.timeout.ms", "10000");
        c
    }

    pub fn producer(&self) -> FutureProducer {
        self.producer_config().create().unwrap()
    }

    pub fn consumer_config(&self, group: &str) -> ClientConfig {
        let mut c = self.config();
        c.set("group.id", group)
            .set("enable.auto.commit", "false")
            .set("auto.offset.reset", "earliest")
            // The mock's initial rebalance delay is 3 s and rdkafka does not expose the
            // setter: the session timeout must stay above it.
            .set("session.timeout.ms", "6000")
            .set("heartbeat.interval.ms", "500");
        c
    }

    pub fn consumer(&self, group: &str, topic: &str) -> KafkaConsumer {
        KafkaConsumer::from_config(&self.consumer_config(group), [topic]).unwrap()
    }

    /// Read `n` records of partition 0 from the beginning with a plain, group-less client.
    pub async fn read_back(&self, topic: &str, n: usize) -> Vec<Record> {
        let reader: StreamConsumer = self
            .config()
            .set("group.id", unique("reader"))
            .set("enable.auto.commit", "false")
            .create()
            .unwrap();
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition_offset(topic, 0, Offset::Beginning)
            .unwrap();
        reader.assign(&tpl).unwrap();
        let mut out = Vec::new();
        while out.len() < n {
            let m = bounded("read back", reader.recv()).await.unwrap();
            out.push(Record {
                offset: m.offset(),
                key: m.key().map(<[u8]>::to_vec),
                value: m.payload().map(<[u8]>::to_vec),
                headers: m
                    .headers()
                    .map(|h| {
                        h.iter()
                            .map(|h| (h.key.to_owned(), h.value.map(<[u8]>::to_vec)))
                            .collect()
                    })
                    .unwrap_or_default(),
            });
        }
        out
    }
}

/// A unique topic / group name.
pub fn unique(prefix: &str) -> String {
    omnibox_testing::unique_name(prefix)
}

/// Drop a consumer on a detached thread (closing it blocks while it leaves the group) and
/// wait, bounded, until it is gone.
pub async fn close(consumer: KafkaConsumer) {
    let (tx, rx) = tokio::sync::oneshot::channel();
    std::thread::spawn(move || {
        drop(consumer);
        let _ = tx.send(());
    });
    bounded("consumer close", rx).await.unwrap();
}

/// A record as read back.
#[derive(Debug)]
pub struct Record {
    pub offset: i64,
    pub key: Option<Vec<u8>>,
    pub value: Option<Vec<u8>>,
    pub headers: Vec<(String, Option<Vec<u8>>)>,
}

impl Record {
    /// Headers with values as UTF-8 strings.
    pub fn string_headers(&self) -> BTreeMap<String, String> {
        self.headers
            .iter()
            .map(|(k, v)| {
                (
                    k.clone(),
                    String::from_utf8(v.clone().expect("header value")).unwrap(),
                )
            })
            .collect()
    }
}

/// Produce `value` to one partition.
pub async fn produce_to(producer: &FutureProducer, topic: &str, partition: i32, value: &[u8]) {
    let record: FutureRecord<'_, [u8], [u8]> = FutureRecord::to(topic)
        .partition(partition)
        .key(b"k".as_slice())
        .payload(value);
    bounded("produce", producer.send(record, Duration::from_secs(5)))
        .await
        .map_err(|(e, _)| e)
        .unwrap();
}

/// Produce a raw record (key, value, headers) and wait for its delivery report.
pub async fn produce_raw(
    producer: &FutureProducer,
    topic: &str,
    value: Option<&[u8]>,
    headers: &[(&str, Option<&[u8]>)],
) -> i64 {
    let mut h = OwnedHeaders::new();
    for (key, value) in headers {
        h = h.insert(Header { key, value: *value });
    }
    let mut record: FutureRecord<'_, [u8], [u8]> =
        FutureRecord::to(topic).key(b"k".as_slice()).headers(h);
    if let Some(v) = value {
        record = record.payload(v);
    }
    let delivery = bounded("produce", producer.send(record, Duration::from_secs(5)))
        .await
        .map_err(|(e, _)| e)
        .unwrap();
    delivery.offset
}

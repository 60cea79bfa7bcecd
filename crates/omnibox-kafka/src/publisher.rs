//! [`KafkaPublisher`]: a core [`Publisher`] over a caller-owned `FutureProducer`.

use std::time::Duration;

use omnibox_core::envelope::{Converter, EnvelopeConverter, metadata_headers};
use omnibox_core::{OutboxEvent, PublishError, Publisher};
use rdkafka::error::KafkaError;
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::util::Timeout;
use rdkafka::{ClientConfig, ClientContext};

use crate::error::publish_error;

/// Publishes outbox events as Kafka records and resolves after the delivery report.
///
/// Key = partition key, value = the converter's body, headers =
/// [`metadata_headers`]. See the [crate docs](crate) for the recommended producer settings
/// (`enable.idempotence=true`, `acks=all`, a bounded `message.timeout.ms`).
pub struct KafkaPublisher<
    C = EnvelopeConverter,
    X: ClientContext + 'static = rdkafka::client::DefaultClientContext,
> {
    producer: FutureProducer<X>,
    converter: C,
    queue_timeout: Duration,
}

impl<C, X: ClientContext + 'static> std::fmt::Debug for KafkaPublisher<C, X> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KafkaPublisher")
            .field("queue_timeout", &self.queue_timeout)
            .finish_non_exhaustive()
    }
}

/// The partitioner the Java client (and kafka-python, and Kafka Streams) uses by default for
/// keyed records: murmur2 of the key. librdkafka's own default, `consistent_random`, hashes
/// with CRC32 and puts a key on a different partition, so in a fleet where services on both
/// clients publish one topic — or where a Python omni-box relay hands over to this one — a
/// key's events would land on two partitions and could be consumed out of order.
pub const JAVA_COMPATIBLE_PARTITIONER: &str = "murmur2_random";

/// `config` with the settings a relay's producer needs, where the caller has not set them:
/// `partitioner` = [`JAVA_COMPATIBLE_PARTITIONER`], `enable.idempotence=true`, `acks=all`.
/// Anything already set is kept.
pub fn producer_config(config: &ClientConfig) -> ClientConfig {
    let mut config = config.clone();
    for (key, value) in [
        ("partitioner", JAVA_COMPATIBLE_PARTITIONER),
        ("enable.idempotence", "true"),
        ("acks", "all"),
    ] {
        if config.get(key).is_none() {
            config.set(key, value);
        }
    }
    config
}

impl KafkaPublisher<EnvelopeConverter> {
    /// A publisher with its own producer, created from `config` completed by
    /// [`producer_config`] (keys placed as the Java client places them, idempotent, `acks=all`).
    pub fn from_config(config: &ClientConfig) -> Result<Self, KafkaError> {
        Ok(Self::new(producer_config(config).create()?))
    }
}

impl<X: ClientContext + 'static> KafkaPublisher<EnvelopeConverter, X> {
    /// Publish through `producer` with the default envelope body. The producer's settings
    /// are yours: set `partitioner` to [`JAVA_COMPATIBLE_PARTITIONER`] to place keys as the
    /// Java and Python clients do (or build it with [`producer_config`] /
    /// [`KafkaPublisher::from_config`]).
    pub fn new(producer: FutureProducer<X>) -> Self {
        Self {
            producer,
            converter: EnvelopeConverter::default(),
            queue_timeout: Duration::from_secs(5),
        }
    }
}

impl<C: Converter, X: ClientContext + 'static> KafkaPublisher<C, X> {
    /// Use another body format (raw payload, schema-versioned, your own).
    pub fn with_converter<C2: Converter>(self, converter: C2) -> KafkaPublisher<C2, X> {
        KafkaPublisher {
            producer: self.producer,
            converter,
            queue_timeout: self.queue_timeout,
        }
    }

    /// How long a publish waits for room in librdkafka's local queue before failing with a
    /// transient `QueueFull` (default 5 s).
    pub fn with_queue_timeout(mut self, timeout: Duration) -> Self {
        self.queue_timeout = timeout;
        self
    }

    /// The producer.
    pub fn producer(&self) -> &FutureProducer<X> {
        &self.producer
    }
}

impl<C: Converter, X: ClientContext + 'static> Publisher for KafkaPublisher<C, X> {
    async fn publish(&self, event: &OutboxEvent) -> Result<(), PublishError> {
        let body = self.converter.encode(event);
        let headers =
            metadata_headers(event)
                .iter()
                .fold(OwnedHeaders::new(), |acc, (key, value)| {
                    acc.insert(Header {
                        key,
                        value: Some(value.as_bytes()),
                    })
                });
        let record = FutureRecord::to(&event.topic)
            .key(event.partition_key.as_bytes())
            .payload(&body)
            .headers(headers);
        match self
            .producer
            .send(record, Timeout::After(self.queue_timeout))
            .await
        {
            Ok(_) => Ok(()),
            Err((error, _)) => Err(publish_error(&event.topic, error)),
        }
    }
}

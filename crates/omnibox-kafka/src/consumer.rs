//! [`KafkaConsumer`]: a core [`Consumer`] over a caller-built `StreamConsumer`, with one
//! acknowledgement handle per record.

use std::sync::Arc;
use std::time::Duration;

use omnibox_core::consumer::{AckHandle, Consumer, Delivery, Redelivery};
use omnibox_core::envelope::{MessageOrigin, parse_message};
use omnibox_core::model::Headers;
use omnibox_core::{ConsumeError, FailureKind};
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{CommitMode, Consumer as _, StreamConsumer};
use rdkafka::message::{Headers as _, Message};
use rdkafka::{Offset, TopicPartitionList};

use crate::context::{KafkaConsumerContext, lock};
use crate::error::consume_error;
use crate::offsets::Tp;

/// The `StreamConsumer` type a [`KafkaConsumer`] wraps.
pub type TrackedStreamConsumer = StreamConsumer<KafkaConsumerContext>;

/// Consumes Kafka records as inbox messages.
///
/// Build the `StreamConsumer` yourself with a [`KafkaConsumerContext`], a `group.id` and
/// **`enable.auto.commit=false`** (or use [`KafkaConsumer::from_config`], which checks it):
/// offsets are committed only by acknowledgements, and only up to the highest *contiguous*
/// acknowledged offset of each partition, so an unacknowledged record is never skipped.
///
/// - [`AckHandle::ack`] commits (synchronously, on a blocking thread) when the contiguous
///   acknowledged prefix of the partition grew; acknowledgements that queue up behind a
///   commit in flight are folded into the next one.
/// - [`AckHandle::nack`] seeks the partition back to the record: it and every record after
///   it are read again, and handles for those later records become no-ops. Kafka has no
///   per-record delay: for [`Redelivery::After`] the partition is also **paused** and
///   resumed when the delay has passed, so the inbox's retry backoff holds and nothing
///   behind the record overtakes it, while other partitions keep flowing. The delay is a
///   lower bound (the record returns with the next fetch after the resume).
/// - A record that does not parse arrives as `Err(MalformedMessage)` with a handle: dead-letter
///   it and acknowledge it to move past it.
/// - On a rebalance, what is acknowledged contiguously for a revoked partition is committed,
///   and handles for its records become no-ops; the new owner reads them again.
///
/// Delivery is at-least-once: a record can be delivered again after a rebalance, a restart
/// or a nack.
pub struct KafkaConsumer {
    consumer: Arc<TrackedStreamConsumer>,
    topics: Vec<String>,
    state: State,
    seek_timeout: Duration,
    stop_timeout: Duration,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    New,
    Started,
    Stopped,
}

impl std::fmt::Debug for KafkaConsumer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KafkaConsumer")
            .field("topics", &self.topics)
            .field("state", &self.state)
            .finish_non_exhaustive()
    }
}

impl KafkaConsumer {
    /// Wrap a consumer built with a [`KafkaConsumerContext`] and `enable.auto.commit=false`;
    /// [`Consumer::start`] subscribes it to `topics`.
    pub fn new<S: Into<String>>(
        consumer: TrackedStreamConsumer,
        topics: impl IntoIterator<Item = S>,
    ) -> Self {
        Self {
            consumer: Arc::new(consumer),
            topics: topics.into_iter().map(Into::into).collect(),
            state: State::New,
            seek_timeout: Duration::from_secs(10),
            stop_timeout: Duration::from_secs(2),
        }
    }

    /// Build the consumer from `config`: refuses `enable.auto.commit=true` and a missing
    /// `group.id`, and sets `enable.auto.commit=false` when it is not set.
    pub fn from_config<S: Into<String>>(
        config: &ClientConfig,
        topics: impl IntoIterator<Item = S>,
    ) -> Result<Self, ConsumeError> {
        let mut config = config.clone();
        match config.get("enable.auto.commit").map(str::trim) {
            None => {
                config.set("enable.auto.commit", "false");
            }
            Some(v) if v.eq_ignore_ascii_case("false") => {}
            Some(v) => {
                return Err(ConsumeError::permanent(format!(
                    "enable.auto.commit must be false (offsets are committed by acknowledgements), got `{v}`"
                )));
            }
        }
        if config.get("group.id").is_none_or(|g| g.trim().is_empty()) {
            return Err(ConsumeError::permanent(
                "group.id must be set: offsets are committed for a consumer group",
            ));
        }
        let consumer: TrackedStreamConsumer = config
            .create_with_context(KafkaConsumerContext::new())
            .map_err(|e| consume_error("consumer creation", e))?;
        Ok(Self::new(consumer, topics))
    }

    /// How long a nack waits for the seek (default 10 s).
    pub fn with_seek_timeout(mut self, timeout: Duration) -> Self {
        self.seek_timeout = timeout;
        self
    }

    /// How long [`Consumer::stop`] keeps polling so the group learns that this member gave
    /// its partitions back (default 2 s).
    pub fn with_stop_timeout(mut self, timeout: Duration) -> Self {
        self.stop_timeout = timeout;
        self
    }

    /// The wrapped client (for metadata, metrics, pausing). Do not commit or seek through
    /// it: that bypasses the acknowledgement tracking.
    pub fn client(&self) -> &TrackedStreamConsumer {
        &self.consumer
    }

    fn subscribe(&self) -> Result<(), ConsumeError> {
        let topics: Vec<&str> = self.topics.iter().map(String::as_str).collect();
        if topics.is_empty() {
            return Err(ConsumeError::permanent("no topics to subscribe to"));
        }
        self.consumer
            .subscribe(&topics)
            .map_err(|e| consume_error("subscribe", e))
    }
}

fn decode_headers(message: &impl Message) -> Headers {
    let mut out = Headers::new();
    if let Some(headers) = message.headers() {
        for header in headers.iter() {
            if let Some(value) = header.value {
                out.insert(
                    header.key.to_owned(),
                    String::from_utf8_lossy(value).into_owned(),
                );
            }
        }
    }
    out
}

async fn blocking<T: Send + 'static>(
    what: &'static str,
    f: impl FnOnce() -> Result<T, ConsumeError> + Send + 'static,
) -> Result<T, ConsumeError> {
    tokio::task::spawn_blocking(f).await.map_err(|e| {
        ConsumeError::transient(format!("Kafka {what} task failed: {e}")).with_source(e)
    })?
}

impl Consumer for KafkaConsumer {
    type Ack = KafkaAck;

    async fn start(&mut self) -> Result<(), ConsumeError> {
        if self.state != State::Started {
            self.subscribe()?;
            self.state = State::Started;
        }
        Ok(())
    }

    async fn receive(&mut self) -> Result<Delivery<KafkaAck>, ConsumeError> {
        match self.state {
            State::New => self.start().await?,
            State::Started => {}
            State::Stopped => {
                return Err(ConsumeError::permanent(
                    "the Kafka consumer is stopped; call start() again",
                ));
            }
        }
        let (message, tp, offset, token) = loop {
            let message = self
                .consumer
                .recv()
                .await
                .map_err(|e| consume_error("receive", e))?;
            let tp: Tp = (message.topic().to_owned(), message.partition());
            let offset = message.offset();
            let mut tracker = lock(&self.consumer.context().tracker);
            // A receive racing a nack (a runner handling several at once) can return a
            // record fetched before the nack's seek; it is read again after the rewound
            // one, so handing it out now would let it overtake that one.
            if tracker.fetched_before_rewind(&tp, offset) {
                tracing::debug!(topic = %tp.0, partition = tp.1, offset,
                    "record fetched before a rewind dropped; it is read again");
                continue;
            }
            let token = tracker.delivered(&tp, offset);
            drop(tracker);
            break (message, tp, offset, token);
        };
        let headers = decode_headers(&message);
        let body = message.payload().unwrap_or_default();
        let origin = MessageOrigin {
            source: tp.0.clone(),
            fallback_id: format!("{}:{}:{offset}", tp.0, tp.1),
        };
        let parsed = parse_message(body, headers, origin);
        drop(message);
        let order_key = format!("{}:{}", tp.0, tp.1);
        let ack = KafkaAck {
            consumer: Arc::clone(&self.consumer),
            tp,
            offset,
            token,
            seek_timeout: self.seek_timeout,
        };
        Ok(Delivery::new(parsed, ack).with_order_key(order_key))
    }

    async fn stop(&mut self) -> Result<(), ConsumeError> {
        if self.state != State::Started {
            self.state = State::Stopped;
            return Ok(());
        }
        self.state = State::Stopped;
        let consumer = Arc::clone(&self.consumer);
        let committed = blocking("commit", move || {
            let result = consumer
                .context()
                .commit_tracked(&*consumer, CommitMode::Sync, |_| true);
            lock(&consumer.context().tracker).clear();
            result.map_err(|e| consume_error("commit on stop", e))
        })
        .await;
        self.consumer.unsubscribe();
        // Serve the revoke so the group hands the partitions on without waiting for the
        // session to time out. Records read meanwhile are dropped uncommitted (redelivered).
        let deadline = tokio::time::Instant::now() + self.stop_timeout;
        while tokio::time::Instant::now() < deadline {
            let assigned = self
                .consumer
                .assignment()
                .map(|a| a.count())
                .unwrap_or_default();
            if assigned == 0 {
                break;
            }
            let _ = tokio::time::timeout(Duration::from_millis(50), self.consumer.recv()).await;
        }
        lock(&self.consumer.context().tracker).clear();
        committed.map(|_| ())
    }
}

/// The acknowledgement handle of one Kafka record.
pub struct KafkaAck {
    consumer: Arc<TrackedStreamConsumer>,
    tp: Tp,
    offset: i64,
    token: u64,
    seek_timeout: Duration,
}

impl std::fmt::Debug for KafkaAck {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KafkaAck")
            .field("topic", &self.tp.0)
            .field("partition", &self.tp.1)
            .field("offset", &self.offset)
            .finish_non_exhaustive()
    }
}

impl KafkaAck {
    /// The record's topic.
    pub fn topic(&self) -> &str {
        &self.tp.0
    }

    /// The record's partition.
    pub fn partition(&self) -> i32 {
        self.tp.1
    }

    /// The record's offset.
    pub fn offset(&self) -> i64 {
        self.offset
    }
}

impl AckHandle for KafkaAck {
    async fn ack(self) -> Result<(), ConsumeError> {
        let Self {
            consumer,
            tp,
            offset,
            token,
            ..
        } = self;
        blocking("commit", move || {
            let context = consumer.context();
            if !lock(&context.tracker).ack(&tp, offset, token) {
                tracing::debug!(topic = %tp.0, partition = tp.1, offset, "stale ack ignored");
                return Ok(());
            }
            match context.commit_tracked(&*consumer, CommitMode::Sync, |p| *p == tp) {
                Ok(_) => Ok(()),
                // Revoked meanwhile: the new owner re-reads the record (at-least-once).
                Err(_) if !lock(&context.tracker).tracks(&tp) => Ok(()),
                Err(e) => Err(consume_error("commit", e)),
            }
        })
        .await
    }

    async fn nack(self, redelivery: Redelivery) -> Result<(), ConsumeError> {
        let Self {
            consumer,
            tp,
            offset,
            token,
            seek_timeout,
        } = self;
        let delay = match redelivery {
            Redelivery::After(d) if !d.is_zero() => Some(d),
            _ => None,
        };
        let resume = (Arc::clone(&consumer), tp.clone());
        let paused = blocking("seek", move || {
            let context = consumer.context();
            let mut tracker = lock(&context.tracker);
            let Some(rewound) = tracker.rewind(&tp, offset, token) else {
                tracing::debug!(topic = %tp.0, partition = tp.1, offset, "stale nack ignored");
                return Ok(None);
            };
            // Seek while holding the tracker, so no record read after the seek is mistaken
            // for one read before it.
            let mut tpl = TopicPartitionList::with_capacity(1);
            let seek = tpl
                .add_partition_offset(&tp.0, tp.1, Offset::Offset(offset))
                .and_then(|()| consumer.seek_partitions(tpl, seek_timeout));
            let error = match seek {
                Ok(result) => result
                    .elements()
                    .first()
                    .and_then(|e| e.error().err())
                    .map(|e| consume_error("seek", e)),
                Err(e) => Some(consume_error("seek", e)),
            };
            match error {
                // Paused while the tracker is held, so the record is not read again before
                // its delay (`pause.rs`).
                None => Ok(delay.and_then(|d| crate::pause::pause(&consumer, &tp).map(|g| (g, d)))),
                Some(e) => {
                    tracker.undo_rewind(rewound);
                    if e.kind == FailureKind::Permanent {
                        tracing::warn!(error = %e, "seek failed; the record is redelivered after a restart or rebalance");
                    }
                    Err(e)
                }
            }
        })
        .await?;
        if let Some((generation, delay)) = paused {
            crate::pause::resume_after(resume.0, resume.1, generation, delay);
        }
        Ok(())
    }
}

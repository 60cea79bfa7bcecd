//! The in-memory broker: topics as append-only logs, consumer groups with a shared cursor,
//! acknowledgements, redelivery and failure injection for tests.

use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::sync::{Arc, Mutex, MutexGuard};

use serde_json::Value;
use tokio::sync::Notify;
use tokio::time::Instant;

use super::consumer::MemoryConsumer;
use crate::envelope::{Converter, EnvelopeConverter, metadata_headers};
use crate::error::{FailureKind, PublishError};
use crate::model::{Headers, OutboxEvent};
use crate::publisher::Publisher;

/// A message as the broker stores it.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct PublishedMessage {
    /// Topic.
    pub topic: String,
    /// Position in the topic (0-based).
    pub offset: u64,
    /// Message key (the event's `partition_key`; `None` for raw pushes).
    pub key: Option<String>,
    /// Body bytes.
    pub body: Vec<u8>,
    /// Headers.
    pub headers: Headers,
}

impl PublishedMessage {
    /// The body parsed as JSON.
    pub fn json(&self) -> Result<Value, serde_json::Error> {
        serde_json::from_slice(&self.body)
    }
}

#[derive(Debug, Clone, Copy)]
pub(crate) struct Redeliver {
    pub(crate) offset: usize,
    pub(crate) ready_at: Instant,
}

#[derive(Debug, Clone, Copy)]
pub(crate) struct InFlight {
    pub(crate) offset: usize,
    pub(crate) consumer: u64,
}

#[derive(Debug, Default)]
pub(crate) struct GroupState {
    pub(crate) cursor: usize,
    pub(crate) redeliver: VecDeque<Redeliver>,
    pub(crate) in_flight: HashMap<u64, InFlight>,
    pub(crate) acked: u64,
    pub(crate) nacked: u64,
    pub(crate) delivered: u64,
}

#[derive(Debug, Default)]
pub(crate) struct BrokerState {
    pub(crate) topics: HashMap<String, Vec<PublishedMessage>>,
    pub(crate) groups: HashMap<(String, String), GroupState>,
    failures: VecDeque<FailureKind>,
    pub(crate) next_id: u64,
}

impl BrokerState {
    pub(crate) fn group(&mut self, topic: &str, group: &str) -> &mut GroupState {
        self.groups
            .entry((topic.to_owned(), group.to_owned()))
            .or_default()
    }

    fn append(&mut self, topic: &str, key: Option<String>, body: Vec<u8>, headers: Headers) -> u64 {
        let log = self.topics.entry(topic.to_owned()).or_default();
        let offset = log.len() as u64;
        log.push(PublishedMessage {
            topic: topic.to_owned(),
            offset,
            key,
            body,
            headers,
        });
        offset
    }
}

pub(crate) struct BrokerInner {
    pub(crate) state: Mutex<BrokerState>,
    pub(crate) notify: Notify,
    converter: Arc<dyn Converter>,
}

impl BrokerInner {
    pub(crate) fn lock(&self) -> MutexGuard<'_, BrokerState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// An in-memory broker implementing [`Publisher`] and handing out consumers.
///
/// Each topic is an append-only log. Consumers of one group share a cursor (competing
/// consumers); every group sees every message from the start of the topic. A delivery is
/// settled by its ack handle: `ack` settles it, `nack` hands it back for redelivery to the
/// group; deliveries still unacknowledged when their consumer stops or is dropped are
/// redelivered. Cloning is cheap and shares the broker.
///
/// ```
/// use omnibox_core::consumer::{AckHandle, Consumer};
/// use omnibox_core::memory::MemoryBroker;
/// use omnibox_core::model::OutboxEvent;
/// use omnibox_core::Publisher;
///
/// # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
/// let broker = MemoryBroker::new();
/// let event = OutboxEvent::builder("order", uuid::Uuid::now_v7(), "order.placed", "orders", "o-1")
///     .payload(serde_json::json!({"total": 42}))
///     .build()
///     .unwrap();
/// broker.publish(&event).await.unwrap();
///
/// let mut consumer = broker.consumer(["orders"], "billing");
/// let delivery = consumer.receive().await.unwrap();
/// let message = delivery.message.as_ref().unwrap();
/// assert_eq!(message.message_id, event.common.id.to_string());
/// delivery.ack.ack().await.unwrap();
/// assert_eq!(broker.acked("orders", "billing"), 1);
/// # });
/// ```
#[derive(Clone)]
pub struct MemoryBroker {
    pub(crate) inner: Arc<BrokerInner>,
}

impl fmt::Debug for MemoryBroker {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MemoryBroker").finish_non_exhaustive()
    }
}

impl Default for MemoryBroker {
    fn default() -> Self {
        Self::new()
    }
}

impl MemoryBroker {
    /// A broker encoding bodies with the [`EnvelopeConverter`].
    pub fn new() -> Self {
        Self::with_converter(EnvelopeConverter::default())
    }

    /// A broker encoding bodies with `converter`.
    pub fn with_converter(converter: impl Converter + 'static) -> Self {
        Self {
            inner: Arc::new(BrokerInner {
                state: Mutex::new(BrokerState::default()),
                notify: Notify::new(),
                converter: Arc::new(converter),
            }),
        }
    }

    /// A consumer of `topics` in consumer group `group`.
    pub fn consumer<I, S>(&self, topics: I, group: impl Into<String>) -> MemoryConsumer
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        MemoryConsumer::new(
            self.clone(),
            topics.into_iter().map(Into::into).collect(),
            group.into(),
        )
    }

    /// Make the next `n` publishes fail with `kind` (nothing is stored for them).
    pub fn fail_next_publishes(&self, n: usize, kind: FailureKind) {
        let mut s = self.inner.lock();
        s.failures.extend(std::iter::repeat_n(kind, n));
    }

    /// Append raw bytes (e.g. a malformed message) to `topic`; returns its offset.
    pub fn push_raw(&self, topic: &str, body: impl Into<Vec<u8>>, headers: Headers) -> u64 {
        self.push(topic, None, body.into(), headers)
    }

    /// Append raw bytes under a message key (the key a published event's `partition_key`
    /// gets: its deliveries are ordered by topic and key); returns the offset.
    pub fn push_keyed(
        &self,
        topic: &str,
        key: &str,
        body: impl Into<Vec<u8>>,
        headers: Headers,
    ) -> u64 {
        self.push(topic, Some(key.to_owned()), body.into(), headers)
    }

    /// Append a message and wake the consumers waiting for one.
    fn push(&self, topic: &str, key: Option<String>, body: Vec<u8>, headers: Headers) -> u64 {
        let offset = self.inner.lock().append(topic, key, body, headers);
        self.inner.notify.notify_waiters();
        offset
    }

    /// Append `times` more copies of the message at `offset` of `topic` (same body and
    /// headers, hence the same message id): a redelivery storm for every group. Returns the
    /// new offsets; none when there is no such message.
    pub fn deliver_again(&self, topic: &str, offset: u64, times: usize) -> Vec<u64> {
        let mut s = self.inner.lock();
        let Some(msg) = s
            .topics
            .get(topic)
            .and_then(|log| log.get(offset as usize))
            .cloned()
        else {
            return Vec::new();
        };
        let out = (0..times)
            .map(|_| {
                s.append(
                    topic,
                    msg.key.clone(),
                    msg.body.clone(),
                    msg.headers.clone(),
                )
            })
            .collect();
        drop(s);
        self.inner.notify.notify_waiters();
        out
    }

    /// Move `group`'s cursor on `topic` back to the start: every message is delivered again.
    pub fn rewind(&self, topic: &str, group: &str) {
        self.inner.lock().group(topic, group).cursor = 0;
        self.inner.notify.notify_waiters();
    }

    /// Messages published to `topic`, in order.
    pub fn published(&self, topic: &str) -> Vec<PublishedMessage> {
        self.inner
            .lock()
            .topics
            .get(topic)
            .cloned()
            .unwrap_or_default()
    }

    /// Deliveries `group` acknowledged on `topic`.
    pub fn acked(&self, topic: &str, group: &str) -> u64 {
        self.with_group(topic, group, |g| g.acked)
    }

    /// Negative acknowledgements `group` sent on `topic`.
    pub fn nacked(&self, topic: &str, group: &str) -> u64 {
        self.with_group(topic, group, |g| g.nacked)
    }

    /// Deliveries made to `group` on `topic` (redeliveries included).
    pub fn delivered(&self, topic: &str, group: &str) -> u64 {
        self.with_group(topic, group, |g| g.delivered)
    }

    /// Deliveries to `group` on `topic` awaiting an ack or nack.
    pub fn in_flight(&self, topic: &str, group: &str) -> usize {
        self.with_group(topic, group, |g| g.in_flight.len() as u64) as usize
    }

    /// Messages `group` has still to settle on `topic`: not yet delivered, waiting for
    /// redelivery, or in flight.
    pub fn pending(&self, topic: &str, group: &str) -> usize {
        let mut s = self.inner.lock();
        let len = s.topics.get(topic).map_or(0, Vec::len);
        let g = s.group(topic, group);
        len.saturating_sub(g.cursor) + g.redeliver.len() + g.in_flight.len()
    }

    fn with_group(&self, topic: &str, group: &str, f: impl FnOnce(&GroupState) -> u64) -> u64 {
        let s = self.inner.lock();
        s.groups
            .get(&(topic.to_owned(), group.to_owned()))
            .map_or(0, f)
    }
}

impl Publisher for MemoryBroker {
    async fn publish(&self, event: &OutboxEvent) -> Result<(), PublishError> {
        let body = self.inner.converter.encode(event);
        let headers = metadata_headers(event);
        {
            let mut s = self.inner.lock();
            if let Some(kind) = s.failures.pop_front() {
                let message = format!("injected {} failure", kind.as_str());
                return Err(match kind {
                    FailureKind::Transient => PublishError::transient(message),
                    FailureKind::Permanent => PublishError::permanent(message),
                });
            }
            s.append(
                &event.topic,
                Some(event.partition_key.clone()),
                body,
                headers,
            );
        }
        self.inner.notify.notify_waiters();
        Ok(())
    }
}

//! Consumers of the in-memory broker and their acknowledgement handles.

use std::sync::Arc;

use tokio::time::Instant;

use super::broker::{BrokerInner, InFlight, MemoryBroker, Redeliver};
use crate::consumer::{AckHandle, Consumer, Delivery, Redelivery};
use crate::envelope::{MessageOrigin, parse_message};
use crate::error::ConsumeError;

/// A consumer of one or more topics of a [`MemoryBroker`] in one consumer group.
///
/// Deliveries are parsed with [`parse_message`] (origin source = topic, fallback id =
/// `topic:offset`), so a malformed message arrives as `Err(MalformedMessage)` with its body.
/// `receive` starts the consumer if needed; after [`Consumer::stop`] it fails until
/// [`Consumer::start`] is called again. Dropping the consumer stops it.
#[derive(Debug)]
pub struct MemoryConsumer {
    broker: MemoryBroker,
    topics: Vec<String>,
    group: String,
    id: u64,
    stopped: bool,
    next_topic: usize,
}

enum Next {
    Got(Box<Delivery<MemoryAck>>),
    Wait(Option<Instant>),
}

impl MemoryConsumer {
    pub(crate) fn new(broker: MemoryBroker, topics: Vec<String>, group: String) -> Self {
        let id = {
            let mut s = broker.inner.lock();
            s.next_id += 1;
            s.next_id
        };
        Self {
            broker,
            topics,
            group,
            id,
            stopped: false,
            next_topic: 0,
        }
    }

    /// The consumer group.
    pub fn group(&self) -> &str {
        &self.group
    }

    /// The topics.
    pub fn topics(&self) -> &[String] {
        &self.topics
    }

    fn try_next(&mut self) -> Next {
        let now = Instant::now();
        let mut wake: Option<Instant> = None;
        let n = self.topics.len();
        let taken = {
            let mut s = self.broker.inner.lock();
            let mut found = None;
            for i in 0..n {
                let topic = &self.topics[(self.next_topic + i) % n];
                let len = s.topics.get(topic.as_str()).map_or(0, Vec::len);
                let g = s.group(topic, &self.group);
                let ready = g.redeliver.iter().position(|r| r.ready_at <= now);
                let offset = match ready {
                    Some(pos) => g.redeliver.remove(pos).map(|r| r.offset),
                    None if g.cursor < len => {
                        g.cursor += 1;
                        Some(g.cursor - 1)
                    }
                    None => {
                        if let Some(t) = g.redeliver.iter().map(|r| r.ready_at).min() {
                            wake = Some(wake.map_or(t, |w| w.min(t)));
                        }
                        None
                    }
                };
                if let Some(offset) = offset {
                    g.delivered += 1;
                    s.next_id += 1;
                    let delivery = s.next_id;
                    s.group(topic, &self.group).in_flight.insert(
                        delivery,
                        InFlight {
                            offset,
                            consumer: self.id,
                        },
                    );
                    let msg = s
                        .topics
                        .get(topic.as_str())
                        .and_then(|log| log.get(offset))
                        .cloned();
                    found = msg.map(|m| (topic.clone(), offset, delivery, m));
                    self.next_topic = (self.next_topic + i + 1) % n;
                    break;
                }
            }
            found
        };
        match taken {
            Some((topic, offset, delivery, msg)) => {
                let origin = MessageOrigin {
                    source: topic.clone(),
                    fallback_id: format!("{topic}:{offset}"),
                };
                let message = parse_message(&msg.body, msg.headers, origin);
                let order_key = match &msg.key {
                    Some(key) => format!("{topic}\u{0}{key}"),
                    None => topic.clone(),
                };
                let ack = MemoryAck {
                    inner: self.broker.inner.clone(),
                    topic,
                    group: self.group.clone(),
                    delivery,
                };
                Next::Got(Box::new(
                    Delivery::new(message, ack).with_order_key(order_key),
                ))
            }
            None => Next::Wait(wake),
        }
    }

    /// Hand every unacknowledged delivery of this consumer back to its group.
    fn release_in_flight(&self) {
        let now = Instant::now();
        {
            let mut s = self.broker.inner.lock();
            for topic in &self.topics {
                let g = s.group(topic, &self.group);
                let mine: Vec<u64> = g
                    .in_flight
                    .iter()
                    .filter(|(_, f)| f.consumer == self.id)
                    .map(|(d, _)| *d)
                    .collect();
                let mut mine: Vec<(u64, InFlight)> = mine
                    .into_iter()
                    .filter_map(|d| g.in_flight.remove(&d).map(|f| (d, f)))
                    .collect();
                mine.sort_by_key(|(d, _)| *d);
                for (_, f) in mine {
                    g.redeliver.push_back(Redeliver {
                        offset: f.offset,
                        ready_at: now,
                    });
                }
            }
        }
        self.broker.inner.notify.notify_waiters();
    }
}

impl Consumer for MemoryConsumer {
    type Ack = MemoryAck;

    async fn start(&mut self) -> Result<(), ConsumeError> {
        if self.topics.is_empty() {
            return Err(ConsumeError::permanent(
                "a consumer needs at least one topic",
            ));
        }
        self.stopped = false;
        let mut s = self.broker.inner.lock();
        for topic in &self.topics {
            s.group(topic, &self.group);
        }
        Ok(())
    }

    async fn receive(&mut self) -> Result<Delivery<MemoryAck>, ConsumeError> {
        if self.stopped {
            return Err(ConsumeError::permanent(
                "the consumer is stopped; call start() first",
            ));
        }
        if self.topics.is_empty() {
            return Err(ConsumeError::permanent(
                "a consumer needs at least one topic",
            ));
        }
        let inner = self.broker.inner.clone();
        loop {
            let notified = inner.notify.notified();
            let mut notified = std::pin::pin!(notified);
            notified.as_mut().enable();
            match self.try_next() {
                Next::Got(d) => return Ok(*d),
                Next::Wait(Some(at)) => {
                    tokio::select! {
                        () = notified => {}
                        () = tokio::time::sleep_until(at) => {}
                    }
                }
                Next::Wait(None) => notified.await,
            }
        }
    }

    async fn stop(&mut self) -> Result<(), ConsumeError> {
        if !self.stopped {
            self.stopped = true;
            self.release_in_flight();
        }
        Ok(())
    }
}

impl Drop for MemoryConsumer {
    fn drop(&mut self) {
        if !self.stopped {
            self.release_in_flight();
        }
    }
}

/// Acknowledges one delivery of a [`MemoryConsumer`]. Fails when the delivery is no longer
/// held (its consumer stopped and it went back to the group).
pub struct MemoryAck {
    inner: Arc<BrokerInner>,
    topic: String,
    group: String,
    delivery: u64,
}

impl std::fmt::Debug for MemoryAck {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemoryAck")
            .field("topic", &self.topic)
            .field("group", &self.group)
            .field("delivery", &self.delivery)
            .finish()
    }
}

impl MemoryAck {
    fn settle(self, redeliver_at: Option<Instant>) -> Result<(), ConsumeError> {
        {
            let mut s = self.inner.lock();
            let g = s.group(&self.topic, &self.group);
            let Some(f) = g.in_flight.remove(&self.delivery) else {
                return Err(ConsumeError::transient(
                    "delivery no longer held: its consumer stopped and it was handed back",
                ));
            };
            match redeliver_at {
                None => g.acked += 1,
                Some(ready_at) => {
                    g.nacked += 1;
                    g.redeliver.push_back(Redeliver {
                        offset: f.offset,
                        ready_at,
                    });
                }
            }
        }
        if redeliver_at.is_some() {
            self.inner.notify.notify_waiters();
        }
        Ok(())
    }
}

impl AckHandle for MemoryAck {
    async fn ack(self) -> Result<(), ConsumeError> {
        self.settle(None)
    }

    async fn nack(self, redelivery: Redelivery) -> Result<(), ConsumeError> {
        let now = Instant::now();
        let at = match redelivery {
            Redelivery::Immediate => now,
            Redelivery::After(d) => now + d,
        };
        self.settle(Some(at))
    }
}

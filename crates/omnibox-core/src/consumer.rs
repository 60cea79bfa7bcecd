//! The broker consumer capability: messages with acknowledgement handles.

use std::future::Future;
use std::time::Duration;

use crate::error::{ConsumeError, EnvelopeError};
use crate::model::{Headers, Payload};

/// A broker message parsed into inbox fields (see [`crate::envelope::parse_message`]).
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct IncomingMessage {
    /// Dedup key (with the consumer group).
    pub message_id: String,
    /// Where it came from (topic / queue / subject unless a `source` header says otherwise).
    pub source: String,
    /// Event type.
    pub event_type: String,
    /// The payload (envelope unwrapped).
    pub payload: Payload,
    /// All headers, decoded.
    pub headers: Headers,
    /// Trace id.
    pub trace_id: Option<String>,
    /// Correlation id.
    pub correlation_id: Option<String>,
    /// Causation id.
    pub causation_id: Option<String>,
    /// Schema version.
    pub schema_version: Option<String>,
}

impl IncomingMessage {
    /// A message with the required fields and nothing else.
    pub fn new(
        message_id: impl Into<String>,
        source: impl Into<String>,
        event_type: impl Into<String>,
        payload: Payload,
    ) -> Self {
        Self {
            message_id: message_id.into(),
            source: source.into(),
            event_type: event_type.into(),
            payload,
            headers: Headers::new(),
            trace_id: None,
            correlation_id: None,
            causation_id: None,
            schema_version: None,
        }
    }
}

/// A message that could not be parsed: enough to dead-letter and acknowledge it.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct MalformedMessage {
    /// The message id, when the headers or broker gave one.
    pub message_id: Option<String>,
    /// Topic / queue / subject.
    pub source: String,
    /// The raw body.
    pub body: Vec<u8>,
    /// Decoded headers.
    pub headers: Headers,
    /// What is wrong.
    pub error: EnvelopeError,
}

impl MalformedMessage {
    /// Describe a malformed message.
    pub fn new(
        message_id: Option<String>,
        source: impl Into<String>,
        body: Vec<u8>,
        headers: Headers,
        error: EnvelopeError,
    ) -> Self {
        Self {
            message_id,
            source: source.into(),
            body,
            headers,
            error,
        }
    }
}

/// When a negatively acknowledged message comes back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Redelivery {
    /// As soon as possible.
    Immediate,
    /// After a delay (where the broker supports it; otherwise as soon as possible).
    After(Duration),
}

/// Acknowledges one delivery.
pub trait AckHandle: Send + 'static {
    /// Settle the message: it will not be delivered again to this consumer group.
    fn ack(self) -> impl Future<Output = Result<(), ConsumeError>> + Send;
    /// Hand it back for redelivery (Kafka: rewind; RabbitMQ: nack with requeue; NATS: nak).
    fn nack(self, redelivery: Redelivery) -> impl Future<Output = Result<(), ConsumeError>> + Send;
}

/// One received message and its handle.
#[derive(Debug)]
#[non_exhaustive]
pub struct Delivery<A> {
    /// The parsed message, or why it could not be parsed.
    pub message: Result<IncomingMessage, MalformedMessage>,
    /// Acknowledge through this.
    pub ack: A,
    /// The broker's unit of order: deliveries with equal keys are handled one after
    /// another, in the order received, when a runner handles several at once
    /// ([`InboxRunnerBuilder::concurrency`](crate::inbox::InboxRunnerBuilder::concurrency)).
    /// Kafka: topic and partition; RabbitMQ: queue and routing key; NATS: subject;
    /// the in-memory broker: topic and message key. `None` orders the delivery with the
    /// others of its source (topic / queue / subject).
    pub order_key: Option<String>,
}

impl<A> Delivery<A> {
    /// A delivery without an order key (ordered with the others of its source).
    pub fn new(message: Result<IncomingMessage, MalformedMessage>, ack: A) -> Self {
        Self {
            message,
            ack,
            order_key: None,
        }
    }

    /// Set the order key (see [`Delivery::order_key`]).
    #[must_use]
    pub fn with_order_key(mut self, key: impl Into<String>) -> Self {
        self.order_key = Some(key.into());
        self
    }

    /// The same delivery with its handle wrapped (for consumers that wrap another).
    pub fn map_ack<B>(self, wrap: impl FnOnce(A) -> B) -> Delivery<B> {
        Delivery {
            message: self.message,
            ack: wrap(self.ack),
            order_key: self.order_key,
        }
    }

    /// The key deliveries are ordered by: the order key, else the message's source.
    pub fn ordering(&self) -> &str {
        match (&self.order_key, &self.message) {
            (Some(key), _) => key,
            (None, Ok(m)) => &m.source,
            (None, Err(m)) => &m.source,
        }
    }
}

/// Receives broker messages one at a time.
pub trait Consumer: Send {
    /// The acknowledgement handle.
    type Ack: AckHandle;

    /// Subscribe / connect; idempotent.
    fn start(&mut self) -> impl Future<Output = Result<(), ConsumeError>> + Send;

    /// Wait for the next message.
    fn receive(&mut self)
    -> impl Future<Output = Result<Delivery<Self::Ack>, ConsumeError>> + Send;

    /// Stop consuming; unacknowledged messages are redelivered later. Idempotent.
    fn stop(&mut self) -> impl Future<Output = Result<(), ConsumeError>> + Send;
}

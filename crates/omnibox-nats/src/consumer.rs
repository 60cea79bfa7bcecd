//! Consuming a JetStream stream through a durable pull consumer with explicit acks.

use std::time::Duration;

use async_nats::jetstream::consumer::pull::{Config, Stream as MessageStream};
use async_nats::jetstream::consumer::{AckPolicy, DeliverPolicy};
use async_nats::jetstream::message::Acker;
use async_nats::jetstream::{AckKind, Context};
use futures_util::StreamExt;
use omnibox_core::consumer::{AckHandle, Consumer, Delivery, MalformedMessage, Redelivery};
use omnibox_core::envelope::{MessageOrigin, has_id_header, parse_message};
use omnibox_core::model::Headers;
use omnibox_core::{ConsumeError, EnvelopeError};

use crate::error::{ack_error, consumer_error, get_stream_error, messages_error, stream_error};

/// Settings of the durable pull consumer (created when missing).
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct ConsumerOptions {
    /// Only messages whose subject matches (default empty: the whole stream).
    pub filter_subject: String,
    /// How long the server waits for an ack before redelivering (default 30 s).
    pub ack_wait: Duration,
    /// Most deliveries of one message (default `-1`: unlimited; the inbox dead-letters).
    pub max_deliver: i64,
    /// Most unacknowledged messages in flight (default 1000).
    pub max_ack_pending: i64,
    /// Where a new consumer starts (default: all messages in the stream).
    pub deliver_policy: DeliverPolicy,
}

impl Default for ConsumerOptions {
    fn default() -> Self {
        Self {
            filter_subject: String::new(),
            ack_wait: Duration::from_secs(30),
            max_deliver: -1,
            max_ack_pending: 1000,
            deliver_policy: DeliverPolicy::All,
        }
    }
}

impl ConsumerOptions {
    /// Set the filter subject.
    #[must_use]
    pub fn filter_subject(mut self, subject: impl Into<String>) -> Self {
        self.filter_subject = subject.into();
        self
    }
    /// Set the ack wait.
    #[must_use]
    pub fn ack_wait(mut self, ack_wait: Duration) -> Self {
        self.ack_wait = ack_wait;
        self
    }
    /// Set the delivery limit.
    #[must_use]
    pub fn max_deliver(mut self, max_deliver: i64) -> Self {
        self.max_deliver = max_deliver;
        self
    }
    /// Set the in-flight limit.
    #[must_use]
    pub fn max_ack_pending(mut self, max_ack_pending: i64) -> Self {
        self.max_ack_pending = max_ack_pending;
        self
    }
    /// Set where a new consumer starts.
    #[must_use]
    pub fn deliver_policy(mut self, policy: DeliverPolicy) -> Self {
        self.deliver_policy = policy;
        self
    }

    fn config(&self, durable: &str) -> Config {
        Config {
            durable_name: Some(durable.to_owned()),
            ack_policy: AckPolicy::Explicit,
            ack_wait: self.ack_wait,
            max_deliver: self.max_deliver,
            max_ack_pending: self.max_ack_pending,
            filter_subject: self.filter_subject.clone(),
            deliver_policy: self.deliver_policy,
            ..Config::default()
        }
    }
}

/// Reads a stream through a durable pull consumer (explicit ack), creating it when missing
/// (an existing consumer of that name is used as it is).
///
/// Each message is parsed with [`parse_message`]: origin source = the subject, fallback
/// message id = `"<stream>:<stream sequence>"`. Malformed messages arrive as
/// `Err(MalformedMessage)` with a working [`NatsAck`]. An unacknowledged message comes back
/// after `ack_wait`.
pub struct NatsConsumer {
    context: Context,
    stream: String,
    durable: String,
    options: ConsumerOptions,
    messages: Option<MessageStream>,
}

impl std::fmt::Debug for NatsConsumer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NatsConsumer")
            .field("stream", &self.stream)
            .field("durable", &self.durable)
            .field("options", &self.options)
            .field("started", &self.messages.is_some())
            .finish()
    }
}

impl NatsConsumer {
    /// A consumer of `stream` under the durable name `durable`.
    pub fn new(context: Context, stream: impl Into<String>, durable: impl Into<String>) -> Self {
        Self {
            context,
            stream: stream.into(),
            durable: durable.into(),
            options: ConsumerOptions::default(),
            messages: None,
        }
    }

    /// Replace the options (they apply when the consumer is created).
    #[must_use]
    pub fn with_options(mut self, options: ConsumerOptions) -> Self {
        self.options = options;
        self
    }

    async fn subscribe(&self) -> Result<MessageStream, ConsumeError> {
        let stream = self
            .context
            .get_stream(&self.stream)
            .await
            .map_err(|e| get_stream_error(&self.stream, e))?;
        let consumer = stream
            .get_or_create_consumer(&self.durable, self.options.config(&self.durable))
            .await
            .map_err(|e| consumer_error(&self.durable, e))?;
        consumer
            .messages()
            .await
            .map_err(|e| stream_error(&self.durable, e))
    }
}

fn decode_headers(map: Option<&async_nats::HeaderMap>) -> Headers {
    let mut headers = Headers::new();
    if let Some(map) = map {
        for (name, values) in map.iter() {
            if let Some(v) = values.last().map(|v| v.as_str()).filter(|v| !v.is_empty()) {
                headers.insert(name.to_string(), v.to_owned());
            }
        }
    }
    headers
}

impl Consumer for NatsConsumer {
    type Ack = NatsAck;

    async fn start(&mut self) -> Result<(), ConsumeError> {
        if self.messages.is_none() {
            self.messages = Some(self.subscribe().await?);
        }
        Ok(())
    }

    async fn receive(&mut self) -> Result<Delivery<NatsAck>, ConsumeError> {
        self.start().await?;
        let next = match self.messages.as_mut() {
            Some(messages) => messages.next().await,
            None => return Err(ConsumeError::transient("NATS consumer is not started")),
        };
        let msg = match next {
            Some(Ok(msg)) => msg,
            Some(Err(e)) => {
                let err = messages_error(&self.durable, e);
                if err.kind == omnibox_core::FailureKind::Permanent {
                    self.messages = None;
                }
                return Err(err);
            }
            None => {
                self.messages = None;
                return Err(ConsumeError::transient(format!(
                    "NATS JetStream message stream of `{}` ended",
                    self.durable
                )));
            }
        };
        // The stream sequence is a stable id; without it (not a JetStream message) only an id
        // header can identify the message — a subject is shared by every message on it.
        let (fallback_id, delivered) = match msg.info() {
            Ok(info) => (
                Some(format!("{}:{}", info.stream, info.stream_sequence)),
                info.delivered,
            ),
            Err(_) => (None, 1),
        };
        let (msg, acker) = msg.split();
        let headers = decode_headers(msg.headers.as_ref());
        let source = msg.subject.to_string();
        let subject = source.clone();
        let message = match fallback_id {
            Some(fallback_id) => parse_message(
                &msg.payload,
                headers,
                MessageOrigin {
                    source,
                    fallback_id,
                },
            ),
            None if has_id_header(&headers) => parse_message(
                &msg.payload,
                headers,
                MessageOrigin {
                    source,
                    fallback_id: String::new(),
                },
            ),
            None => Err(MalformedMessage::new(
                None,
                source,
                msg.payload.to_vec(),
                headers,
                EnvelopeError::MissingMessageId,
            )),
        };
        Ok(Delivery::new(message, NatsAck { acker, delivered }).with_order_key(subject))
    }

    /// Stops pulling; unacknowledged messages come back after `ack_wait`. The durable
    /// consumer stays on the server (delete it with the client when it is no longer used).
    async fn stop(&mut self) -> Result<(), ConsumeError> {
        self.messages = None;
        Ok(())
    }
}

/// Acknowledges one JetStream message. Every call waits for the server's confirmation of
/// the acknowledgement (`double_ack`).
pub struct NatsAck {
    acker: Acker,
    delivered: i64,
}

impl std::fmt::Debug for NatsAck {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NatsAck")
            .field("delivered", &self.delivered)
            .finish_non_exhaustive()
    }
}

impl NatsAck {
    /// How many times this message has been delivered (1 on first delivery).
    pub fn delivered(&self) -> i64 {
        self.delivered
    }

    /// Whether this is a redelivery.
    pub fn redelivered(&self) -> bool {
        self.delivered > 1
    }

    /// Stop redelivering without processing (`+TERM`).
    pub async fn term(self) -> Result<(), ConsumeError> {
        self.acker
            .double_ack_with(AckKind::Term)
            .await
            .map_err(|e| ack_error("term", e))
    }

    /// Work is ongoing: restart the `ack_wait` timer (`+WPI`). The handle stays usable.
    pub async fn in_progress(&self) -> Result<(), ConsumeError> {
        self.acker
            .ack_with(AckKind::Progress)
            .await
            .map_err(|e| ack_error("in-progress", e))
    }
}

impl AckHandle for NatsAck {
    async fn ack(self) -> Result<(), ConsumeError> {
        self.acker
            .double_ack()
            .await
            .map_err(|e| ack_error("ack", e))
    }

    /// `-NAK`, with the delay for `After(d)` (the server redelivers after `d`).
    async fn nack(self, redelivery: Redelivery) -> Result<(), ConsumeError> {
        let delay = match redelivery {
            Redelivery::Immediate => None,
            Redelivery::After(d) => Some(d),
        };
        self.acker
            .double_ack_with(AckKind::Nak(delay))
            .await
            .map_err(|e| ack_error("nak", e))
    }
}

//! Consuming from a queue with manual acknowledgements.

use futures_util::StreamExt;
use lapin::options::{BasicAckOptions, BasicConsumeOptions, BasicNackOptions, BasicQosOptions};
use lapin::types::{FieldTable, ShortString};
use lapin::{Acker, Channel};
use omnibox_core::consumer::{AckHandle, Consumer, Delivery, MalformedMessage, Redelivery};
use omnibox_core::envelope::{MessageOrigin, has_id_header, parse_message};
use omnibox_core::{ConsumeError, EnvelopeError};

use crate::connector::RabbitConnector;
use crate::error::{connect_consume_error, consume_error};
use crate::headers::from_field_table;

/// Consumer settings.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct ConsumerOptions {
    /// Unacknowledged messages the broker may hand out at once (`basic.qos`, default 16).
    pub prefetch: u16,
    /// Consumer tag (default empty: the broker picks one).
    pub consumer_tag: String,
    /// Ask for exclusive access to the queue (default `false`).
    pub exclusive: bool,
}

impl Default for ConsumerOptions {
    fn default() -> Self {
        Self {
            prefetch: 16,
            consumer_tag: String::new(),
            exclusive: false,
        }
    }
}

impl ConsumerOptions {
    /// Set the prefetch count.
    #[must_use]
    pub fn prefetch(mut self, prefetch: u16) -> Self {
        self.prefetch = prefetch;
        self
    }
    /// Set the consumer tag.
    #[must_use]
    pub fn consumer_tag(mut self, tag: impl Into<String>) -> Self {
        self.consumer_tag = tag.into();
        self
    }
    /// Ask for exclusive access.
    #[must_use]
    pub fn exclusive(mut self, exclusive: bool) -> Self {
        self.exclusive = exclusive;
        self
    }
}

/// Consumes one queue with manual acknowledgements on its own channel.
///
/// Each message is parsed with [`parse_message`]: origin source = the queue name, fallback
/// message id = the AMQP `message_id` property, else `"<queue>:<delivery tag>"` (a delivery
/// tag is not stable across redeliveries, so publishers should set `message_id` or an
/// `event_id` header; omnibox's publisher sets both). Malformed messages arrive as
/// `Err(MalformedMessage)` with a working [`RabbitAck`].
///
/// `stop` closes the channel; the broker requeues every unacknowledged message.
///
/// When the channel or the connection is lost, `receive` returns one transient error and
/// the next `receive` subscribes again, on a new connection when the [`RabbitConnector`]
/// has a factory. Deliveries not acknowledged on the lost channel are redelivered by the
/// broker (with `redelivered` set); acknowledging them on their old channel fails
/// (transient) and changes nothing.
pub struct RabbitConsumer {
    connector: RabbitConnector,
    queue: String,
    options: ConsumerOptions,
    state: Option<(Channel, lapin::Consumer)>,
}

impl std::fmt::Debug for RabbitConsumer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RabbitConsumer")
            .field("queue", &self.queue)
            .field("options", &self.options)
            .field("started", &self.state.is_some())
            .finish()
    }
}

impl RabbitConsumer {
    /// A consumer of `queue` on the connections of `connector`: a [`RabbitConnector`]
    /// (reconnects), or a fixed `Connection` / `Arc<Connection>` (never replaced once lost).
    pub fn new(connector: impl Into<RabbitConnector>, queue: impl Into<String>) -> Self {
        Self {
            connector: connector.into(),
            queue: queue.into(),
            options: ConsumerOptions::default(),
            state: None,
        }
    }

    /// Replace the options.
    #[must_use]
    pub fn with_options(mut self, options: ConsumerOptions) -> Self {
        self.options = options;
        self
    }

    /// The connector.
    pub fn connector(&self) -> &RabbitConnector {
        &self.connector
    }

    /// The queue.
    pub fn queue(&self) -> &str {
        &self.queue
    }

    async fn subscribe(&self) -> Result<(Channel, lapin::Consumer), ConsumeError> {
        let queue = ShortString::try_new(self.queue.as_str()).map_err(|e| {
            ConsumeError::permanent(format!("queue name `{}` is too long", self.queue))
                .with_source(e)
        })?;
        let tag = ShortString::try_new(self.options.consumer_tag.as_str())
            .map_err(|e| ConsumeError::permanent("consumer tag is too long").with_source(e))?;
        let connection = self
            .connector
            .connection()
            .await
            .map_err(connect_consume_error)?;
        let channel = connection
            .create_channel()
            .await
            .map_err(|e| consume_error("open channel", e))?;
        channel
            .basic_qos(self.options.prefetch, BasicQosOptions::default())
            .await
            .map_err(|e| consume_error("basic.qos", e))?;
        let options = BasicConsumeOptions {
            no_ack: false,
            exclusive: self.options.exclusive,
            ..BasicConsumeOptions::default()
        };
        let consumer = channel
            .basic_consume(queue, tag, options, FieldTable::default())
            .await
            .map_err(|e| consume_error(&format!("basic.consume on `{}`", self.queue), e))?;
        Ok((channel, consumer))
    }

    fn delivery(&self, d: lapin::message::Delivery) -> Delivery<RabbitAck> {
        let headers = from_field_table(d.properties.headers().as_ref());
        let property_id = d
            .properties
            .message_id()
            .as_ref()
            .map(|id| id.as_str().to_owned())
            .filter(|id| !id.trim().is_empty());
        // A delivery tag is not a message id: tags restart on every channel, so using one
        // would make different messages look like duplicates (and a redelivery look new).
        // A message with no stable id cannot be deduplicated: it is malformed.
        let message = match property_id {
            Some(fallback_id) => parse_message(
                &d.data,
                headers,
                MessageOrigin {
                    source: self.queue.clone(),
                    fallback_id,
                },
            ),
            None if has_id_header(&headers) => parse_message(
                &d.data,
                headers,
                MessageOrigin {
                    source: self.queue.clone(),
                    fallback_id: String::new(),
                },
            ),
            None => Err(MalformedMessage::new(
                None,
                self.queue.clone(),
                d.data.clone(),
                headers,
                EnvelopeError::MissingMessageId,
            )),
        };
        let ack = RabbitAck {
            acker: d.acker,
            delivery_tag: d.delivery_tag,
            redelivered: d.redelivered,
        };
        // One consumer reads one queue: its routing keys are the units of order.
        Delivery::new(message, ack).with_order_key(d.routing_key.as_str())
    }
}

impl Consumer for RabbitConsumer {
    type Ack = RabbitAck;

    async fn start(&mut self) -> Result<(), ConsumeError> {
        if self.state.is_none() {
            self.state = Some(self.subscribe().await?);
        }
        Ok(())
    }

    async fn receive(&mut self) -> Result<Delivery<RabbitAck>, ConsumeError> {
        self.start().await?;
        let next = match self.state.as_mut() {
            Some((_, consumer)) => consumer.next().await,
            None => return Err(ConsumeError::transient("RabbitMQ consumer is not started")),
        };
        match next {
            Some(Ok(d)) => Ok(self.delivery(d)),
            Some(Err(e)) => {
                self.state = None;
                Err(consume_error(&format!("receive from `{}`", self.queue), e))
            }
            None => {
                self.state = None;
                Err(ConsumeError::transient(format!(
                    "RabbitMQ cancelled the consumer of `{}`",
                    self.queue
                )))
            }
        }
    }

    async fn stop(&mut self) -> Result<(), ConsumeError> {
        if let Some((channel, _consumer)) = self.state.take()
            && channel.status().connected()
        {
            channel
                .close(200, "OK".into())
                .await
                .map_err(|e| consume_error("close channel", e))?;
        }
        Ok(())
    }
}

/// Acknowledges one RabbitMQ delivery (manual ack on the consumer's channel).
#[derive(Debug, Clone)]
pub struct RabbitAck {
    acker: Acker,
    delivery_tag: u64,
    redelivered: bool,
}

impl RabbitAck {
    /// The broker's `redelivered` flag: the message was delivered before and not acknowledged.
    pub fn redelivered(&self) -> bool {
        self.redelivered
    }

    /// The channel-scoped delivery tag.
    pub fn delivery_tag(&self) -> u64 {
        self.delivery_tag
    }

    /// Negative acknowledgement without requeue: the broker drops the message, or routes it
    /// to the queue's dead-letter exchange when one is configured.
    pub async fn reject(self) -> Result<(), ConsumeError> {
        self.acker
            .nack(BasicNackOptions {
                multiple: false,
                requeue: false,
            })
            .await
            .map(drop)
            .map_err(|e| consume_error("basic.nack (no requeue)", e))
    }

    async fn requeue(acker: Acker) -> Result<(), ConsumeError> {
        acker
            .nack(BasicNackOptions {
                multiple: false,
                requeue: true,
            })
            .await
            .map(drop)
            .map_err(|e| consume_error("basic.nack (requeue)", e))
    }
}

impl AckHandle for RabbitAck {
    async fn ack(self) -> Result<(), ConsumeError> {
        self.acker
            .ack(BasicAckOptions::default())
            .await
            .map(drop)
            .map_err(|e| consume_error("basic.ack", e))
    }

    /// `Immediate`: `basic.nack` with requeue now.
    ///
    /// `After(d)`: RabbitMQ has no delayed requeue, so the delay is applied on the client:
    /// a task sleeps `d` and then nacks with requeue; this call returns once the task is
    /// scheduled. Until then the message stays unacknowledged and counts against the
    /// prefetch window; if the channel closes first, the broker requeues it at once. Outside
    /// a Tokio runtime the message is requeued at once (logged as a warning).
    async fn nack(self, redelivery: Redelivery) -> Result<(), ConsumeError> {
        match redelivery {
            Redelivery::Immediate => Self::requeue(self.acker).await,
            Redelivery::After(delay) => match tokio::runtime::Handle::try_current() {
                Ok(rt) => {
                    let acker = self.acker;
                    rt.spawn(async move {
                        tokio::time::sleep(delay).await;
                        if let Err(e) = Self::requeue(acker).await {
                            tracing::warn!(error = %e, "delayed RabbitMQ nack failed; the broker requeues the message when the channel closes");
                        }
                    });
                    Ok(())
                }
                Err(_) => {
                    tracing::warn!(
                        ?delay,
                        "no Tokio runtime for a delayed RabbitMQ nack; requeueing now"
                    );
                    Self::requeue(self.acker).await
                }
            },
        }
    }
}

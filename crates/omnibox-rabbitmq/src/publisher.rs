//! Publishing outbox events on a confirm-mode channel.

use std::sync::Arc;
use std::time::Duration;

use lapin::options::{BasicPublishOptions, ConfirmSelectOptions};
use lapin::types::ShortString;
use lapin::{BasicProperties, Channel, Confirmation};
use omnibox_core::envelope::{Converter, EnvelopeConverter, metadata_headers};
use omnibox_core::{FailureKind, OutboxEvent, PublishError, Publisher};
use tokio::sync::Mutex;

use crate::connector::RabbitConnector;
use crate::error::{
    closes_channel, confirm_timeout, connect_publish_error, publish_error, returned,
};
use crate::headers::to_field_table;

/// Where an event goes: which exchange, with which routing key.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum RoutingMode {
    /// Exchange = the event's topic, routing key = its partition key. Declare an exchange
    /// per topic and bind queues to it (e.g. a `direct` or `topic` exchange, or `fanout`).
    TopicAsExchange,
    /// One fixed exchange, routing key = the event's topic. `FixedExchange(String::new())`
    /// is RabbitMQ's default exchange: the topic names the destination queue. That is the
    /// default of [`PublisherOptions`], so a declared queue named like the topic is all a
    /// first publish needs.
    FixedExchange(String),
}

/// Publisher settings.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct PublisherOptions {
    /// Exchange and routing key selection (default `RoutingMode::FixedExchange("")`: the
    /// default exchange, the topic names the queue). An exchange that does not exist, or a
    /// message no queue is bound for, is a permanent error (it spends an attempt): declare
    /// the topology before the relay publishes.
    pub routing: RoutingMode,
    /// Publish with `mandatory`, so an unroutable message comes back (`basic.return`) and
    /// is reported as a permanent error instead of being dropped silently (default `true`).
    pub mandatory: bool,
    /// `delivery_mode = 2` (persistent) (default `true`).
    pub persistent: bool,
    /// How long to wait for the publisher confirm (default 30 s); a timeout is transient.
    pub confirm_timeout: Duration,
    /// `content_type` property (default `application/json`).
    pub content_type: String,
}

impl Default for PublisherOptions {
    fn default() -> Self {
        Self {
            routing: RoutingMode::FixedExchange(String::new()),
            mandatory: true,
            persistent: true,
            confirm_timeout: Duration::from_secs(30),
            content_type: "application/json".into(),
        }
    }
}

impl PublisherOptions {
    /// Set the routing mode.
    #[must_use]
    pub fn routing(mut self, routing: RoutingMode) -> Self {
        self.routing = routing;
        self
    }
    /// Set `mandatory`.
    #[must_use]
    pub fn mandatory(mut self, mandatory: bool) -> Self {
        self.mandatory = mandatory;
        self
    }
    /// Set persistence.
    #[must_use]
    pub fn persistent(mut self, persistent: bool) -> Self {
        self.persistent = persistent;
        self
    }
    /// Set the confirm timeout.
    #[must_use]
    pub fn confirm_timeout(mut self, timeout: Duration) -> Self {
        self.confirm_timeout = timeout;
        self
    }
    /// Set the content type.
    #[must_use]
    pub fn content_type(mut self, content_type: impl Into<String>) -> Self {
        self.content_type = content_type.into();
        self
    }
}

/// Publishes outbox events to RabbitMQ and returns only after the broker's publisher
/// confirm.
///
/// - body: the converter's JSON (default [`EnvelopeConverter`]);
/// - headers: [`metadata_headers`] as an AMQP field table of long strings;
/// - properties: `message_id` = event id, `delivery_mode` = 2, `content_type`;
/// - exchange / routing key: see [`RoutingMode`].
///
/// The publisher opens its own confirm-mode channel on the connection its
/// [`RabbitConnector`] hands out and opens a new one when the broker closed it. Built from a
/// connector with a factory ([`RabbitConnector::from_uri`], [`RabbitConnector::from_factory`])
/// it also survives a lost connection (closed by the broker, broker restart, missed
/// heartbeats): publishes in flight on the lost connection fail as transient (never
/// reported published: their confirm never came), and the next publish opens a new
/// connection. Errors are classified in [`crate::error`].
///
/// Several publishes in flight share the channel; when the broker closes it because of one
/// message (unknown exchange, message too large), every in-flight confirm fails with that
/// error. A message that failed that way is published once more, alone, on a private
/// channel, so the error lands on the message that caused it and its neighbours succeed.
/// A neighbour that the broker had stored without confirming is then stored twice:
/// delivery is at least once.
///
/// ```no_run
/// # async fn demo(event: omnibox_core::OutboxEvent) -> Result<(), Box<dyn std::error::Error>> {
/// use omnibox_core::Publisher;
/// use omnibox_rabbitmq::{RabbitPublisher, PublisherOptions, RoutingMode, lapin};
///
/// use omnibox_rabbitmq::RabbitConnector;
///
/// let connector = RabbitConnector::from_uri(
///     "amqp://guest:guest@127.0.0.1:5672/%2f",
///     lapin::ConnectionProperties::default(),
/// );
/// let publisher = RabbitPublisher::new(connector)
///     .with_options(PublisherOptions::default().routing(RoutingMode::FixedExchange("events".into())));
/// publisher.publish(&event).await?; // returns after the confirm
/// # Ok(()) }
/// ```
pub struct RabbitPublisher {
    connector: RabbitConnector,
    channel: Mutex<Option<Channel>>,
    converter: Arc<dyn Converter>,
    options: PublisherOptions,
}

impl std::fmt::Debug for RabbitPublisher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RabbitPublisher")
            .field("options", &self.options)
            .finish_non_exhaustive()
    }
}

struct Outgoing {
    exchange: ShortString,
    routing_key: ShortString,
    body: Vec<u8>,
    properties: BasicProperties,
}

struct Failure {
    error: PublishError,
    channel_closed: bool,
}

impl Failure {
    fn lapin(context: &str, err: lapin::Error) -> Self {
        Self {
            channel_closed: closes_channel(&err),
            error: publish_error(context, err),
        }
    }
    fn plain(error: PublishError) -> Self {
        Self {
            error,
            channel_closed: false,
        }
    }
}

impl RabbitPublisher {
    /// A publisher on the connections of `connector`: a [`RabbitConnector`] (reconnects),
    /// or a fixed `Connection` / `Arc<Connection>` (never replaced once lost).
    pub fn new(connector: impl Into<RabbitConnector>) -> Self {
        Self {
            connector: connector.into(),
            channel: Mutex::new(None),
            converter: Arc::new(EnvelopeConverter::default()),
            options: PublisherOptions::default(),
        }
    }

    /// Replace the options.
    #[must_use]
    pub fn with_options(mut self, options: PublisherOptions) -> Self {
        self.options = options;
        self
    }

    /// Replace the body converter.
    #[must_use]
    pub fn with_converter(mut self, converter: impl Converter + 'static) -> Self {
        self.converter = Arc::new(converter);
        self
    }

    /// The options.
    pub fn options(&self) -> &PublisherOptions {
        &self.options
    }

    fn outgoing(&self, event: &OutboxEvent) -> Result<Outgoing, PublishError> {
        let (exchange, routing_key) = match &self.options.routing {
            RoutingMode::TopicAsExchange => (event.topic.as_str(), event.partition_key.as_str()),
            RoutingMode::FixedExchange(exchange) => (exchange.as_str(), event.topic.as_str()),
        };
        let short = |what: &str, s: &str| {
            ShortString::try_new(s).map_err(|e| {
                PublishError::permanent(format!(
                    "{what} `{s}` is longer than an AMQP short string (255 bytes)"
                ))
                .with_source(e)
            })
        };
        let mut properties = BasicProperties::default()
            .with_message_id(short("event id", &event.common.id.to_string())?)
            .with_content_type(short("content type", &self.options.content_type)?)
            .with_headers(to_field_table(&metadata_headers(event))?);
        if self.options.persistent {
            properties = properties.with_delivery_mode(2);
        }
        Ok(Outgoing {
            exchange: short("exchange", exchange)?,
            routing_key: short("routing key", routing_key)?,
            body: self.converter.encode(event),
            properties,
        })
    }

    /// The connector.
    pub fn connector(&self) -> &RabbitConnector {
        &self.connector
    }

    async fn open_channel(&self) -> Result<Channel, PublishError> {
        let connection = self
            .connector
            .connection()
            .await
            .map_err(connect_publish_error)?;
        let channel = connection
            .create_channel()
            .await
            .map_err(|e| publish_error("open channel", e))?;
        channel
            .confirm_select(ConfirmSelectOptions::default())
            .await
            .map_err(|e| publish_error("confirm.select", e))?;
        Ok(channel)
    }

    async fn shared_channel(&self) -> Result<Channel, PublishError> {
        let mut slot = self.channel.lock().await;
        if let Some(ch) = slot.as_ref().filter(|ch| ch.status().connected()) {
            return Ok(ch.clone());
        }
        let ch = self.open_channel().await?;
        *slot = Some(ch.clone());
        Ok(ch)
    }

    async fn publish_on(&self, channel: &Channel, msg: &Outgoing) -> Result<(), Failure> {
        let options = BasicPublishOptions {
            mandatory: self.options.mandatory,
            immediate: false,
        };
        let confirm = async {
            channel
                .basic_publish(
                    msg.exchange.clone(),
                    msg.routing_key.clone(),
                    options,
                    &msg.body,
                    msg.properties.clone(),
                )
                .await
                .map_err(|e| Failure::lapin("basic.publish", e))?
                .await
                .map_err(|e| Failure::lapin("publisher confirm", e))
        };
        let timeout = self.options.confirm_timeout;
        let confirmation = tokio::time::timeout(timeout, confirm)
            .await
            .map_err(|_| Failure::plain(confirm_timeout(timeout)))??;
        match confirmation {
            Confirmation::Ack(None) | Confirmation::NotRequested => Ok(()),
            Confirmation::Ack(Some(ret)) | Confirmation::Nack(Some(ret)) => {
                Err(Failure::plain(returned(
                    ret.reply_code,
                    ret.reply_text.as_str(),
                    msg.exchange.as_str(),
                    msg.routing_key.as_str(),
                )))
            }
            Confirmation::Nack(None) => Err(Failure::plain(PublishError::permanent(format!(
                "RabbitMQ refused the message (basic.nack): exchange `{}`, routing key `{}`",
                msg.exchange, msg.routing_key
            )))),
        }
    }

    async fn publish_alone(&self, msg: &Outgoing) -> Result<(), PublishError> {
        let channel = self.open_channel().await?;
        let result = self.publish_on(&channel, msg).await.map_err(|f| f.error);
        if channel.status().connected() {
            // Best effort: the channel is private and dropped right after.
            let _ = channel.close(200, "OK".into()).await;
        }
        result
    }
}

impl Publisher for RabbitPublisher {
    async fn publish(&self, event: &OutboxEvent) -> Result<(), PublishError> {
        let msg = self.outgoing(event)?;
        let channel = self.shared_channel().await?;
        match self.publish_on(&channel, &msg).await {
            Ok(()) => Ok(()),
            Err(Failure {
                error,
                channel_closed: true,
            }) if error.kind == FailureKind::Permanent => {
                tracing::debug!(
                    event_id = %event.common.id,
                    error = %error,
                    "RabbitMQ closed the publish channel; publishing once more alone to attribute the error"
                );
                self.publish_alone(&msg).await
            }
            Err(f) => Err(f.error),
        }
    }
}

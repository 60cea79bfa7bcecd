//! `[rabbitmq]`: connection, publisher and consumer options.

use std::fmt;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::redact;

/// Where the RabbitMQ publisher sends an event.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum RoutingSetting {
    /// RabbitMQ's default exchange, routing key = topic = queue name (default).
    #[default]
    DefaultExchange,
    /// `exchange`, routing key = topic.
    FixedExchange,
    /// Exchange = topic, routing key = partition key.
    TopicAsExchange,
}

/// `[rabbitmq]`. An `amqps://` URL connects over TLS.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
#[non_exhaustive]
pub struct RabbitSettings {
    /// `amqp://user:password@host:5672/%2f` (no default). `Debug` masks the password.
    pub url: Option<String>,
    /// Routing of published events.
    pub routing: RoutingSetting,
    /// The exchange of `routing = "fixed_exchange"`.
    pub exchange: String,
    /// Publish with `mandatory` (unroutable → permanent error) (default `true`).
    pub mandatory: bool,
    /// Persistent messages (default `true`).
    pub persistent: bool,
    /// Wait for the publisher confirm at most this long (default 30 s).
    #[serde(with = "humantime_serde")]
    pub confirm_timeout: Duration,
    /// `content_type` property (default `application/json`).
    pub content_type: String,
    /// `[rabbitmq.consumer]`.
    pub consumer: RabbitConsumerSettings,
}

/// `[rabbitmq.consumer]`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
#[non_exhaustive]
pub struct RabbitConsumerSettings {
    /// Queue to consume (no default).
    pub queue: Option<String>,
    /// `basic.qos` prefetch (default 16).
    pub prefetch: u16,
    /// Consumer tag (default empty: the broker picks one).
    pub consumer_tag: String,
    /// Exclusive consumer (default `false`).
    pub exclusive: bool,
}

impl Default for RabbitSettings {
    fn default() -> Self {
        Self {
            url: None,
            routing: RoutingSetting::DefaultExchange,
            exchange: String::new(),
            mandatory: true,
            persistent: true,
            confirm_timeout: Duration::from_secs(30),
            content_type: "application/json".into(),
            consumer: RabbitConsumerSettings::default(),
        }
    }
}

impl Default for RabbitConsumerSettings {
    fn default() -> Self {
        Self {
            queue: None,
            prefetch: 16,
            consumer_tag: String::new(),
            exclusive: false,
        }
    }
}

impl fmt::Debug for RabbitSettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RabbitSettings")
            .field("url", &self.url.as_deref().map(redact))
            .field("routing", &self.routing)
            .field("exchange", &self.exchange)
            .field("mandatory", &self.mandatory)
            .field("persistent", &self.persistent)
            .field("confirm_timeout", &self.confirm_timeout)
            .field("content_type", &self.content_type)
            .field("consumer", &self.consumer)
            .finish()
    }
}

#[cfg(feature = "rabbitmq")]
mod convert {
    use omnibox_rabbitmq::{ConsumerOptions, PublisherOptions, RoutingMode};

    use super::{RabbitConsumerSettings, RabbitSettings, RoutingSetting};

    impl RabbitSettings {
        /// The publisher options.
        pub fn publisher_options(&self) -> PublisherOptions {
            let routing = match self.routing {
                RoutingSetting::DefaultExchange => RoutingMode::FixedExchange(String::new()),
                RoutingSetting::FixedExchange => RoutingMode::FixedExchange(self.exchange.clone()),
                RoutingSetting::TopicAsExchange => RoutingMode::TopicAsExchange,
            };
            PublisherOptions::default()
                .routing(routing)
                .mandatory(self.mandatory)
                .persistent(self.persistent)
                .confirm_timeout(self.confirm_timeout)
                .content_type(self.content_type.clone())
        }
    }

    impl RabbitConsumerSettings {
        /// The consumer options.
        pub fn consumer_options(&self) -> ConsumerOptions {
            ConsumerOptions::default()
                .prefetch(self.prefetch)
                .consumer_tag(self.consumer_tag.clone())
                .exclusive(self.exclusive)
        }
    }
}

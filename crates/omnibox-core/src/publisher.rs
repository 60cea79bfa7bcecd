//! The broker publisher capability.

use std::future::Future;
use std::pin::Pin;

use crate::error::PublishError;
use crate::model::OutboxEvent;

/// A boxed, sendable future.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Publishes outbox events to a broker.
///
/// `publish` resolves only after the broker acknowledged the message (Kafka delivery
/// report, RabbitMQ publisher confirm, JetStream publish ack). Errors say whether they are
/// transient (not counted) or permanent (counted).
///
/// A custom publisher takes a few lines:
///
/// ```
/// use omnibox_core::{OutboxEvent, PublishError, Publisher};
///
/// struct Stdout;
/// impl Publisher for Stdout {
///     async fn publish(&self, event: &OutboxEvent) -> Result<(), PublishError> {
///         println!("{} -> {}", event.common.event_type, event.topic);
///         Ok(())
///     }
/// }
/// ```
pub trait Publisher: Send + Sync {
    /// Publish one event and wait for the broker's acknowledgement.
    fn publish(&self, event: &OutboxEvent)
    -> impl Future<Output = Result<(), PublishError>> + Send;

    /// Publish several events concurrently; one outcome per event, in input order, so one
    /// failure does not punish its neighbours.
    fn publish_batch<'a>(
        &'a self,
        events: &'a [OutboxEvent],
    ) -> impl Future<Output = Vec<Result<(), PublishError>>> + Send + 'a {
        futures_util::future::join_all(events.iter().map(|e| self.publish(e)))
    }
}

/// Object-safe twin of [`Publisher`] (for a publisher chosen at run time). Every
/// `Publisher` is a `DynPublisher`; `Box<dyn DynPublisher>` is a `Publisher` again.
pub trait DynPublisher: Send + Sync {
    /// See [`Publisher::publish`].
    fn publish_boxed<'a>(
        &'a self,
        event: &'a OutboxEvent,
    ) -> BoxFuture<'a, Result<(), PublishError>>;
}

impl<P: Publisher> DynPublisher for P {
    fn publish_boxed<'a>(
        &'a self,
        event: &'a OutboxEvent,
    ) -> BoxFuture<'a, Result<(), PublishError>> {
        Box::pin(self.publish(event))
    }
}

impl Publisher for Box<dyn DynPublisher> {
    async fn publish(&self, event: &OutboxEvent) -> Result<(), PublishError> {
        self.as_ref().publish_boxed(event).await
    }
}

impl<P: Publisher> Publisher for std::sync::Arc<P> {
    fn publish(
        &self,
        event: &OutboxEvent,
    ) -> impl Future<Output = Result<(), PublishError>> + Send {
        self.as_ref().publish(event)
    }
}

//! Typed events: a message type that carries its event type, aggregate, topic and
//! partition key, so writers and handlers name a Rust type instead of four strings.
//!
//! ```
//! use omnibox_core::message::{Message, MessageHandler, typed};
//! use omnibox_core::{HandlerOutcome, HandlerResult, InboxEvent, OutboxEvent};
//! use serde::{Deserialize, Serialize};
//! use uuid::Uuid;
//!
//! #[derive(Debug, Serialize, Deserialize)]
//! struct OrderPlaced {
//!     order: Uuid,
//!     customer: String,
//!     total: i64,
//! }
//!
//! impl Message for OrderPlaced {
//!     const EVENT_TYPE: &'static str = "order.placed";
//!     const AGGREGATE_TYPE: &'static str = "order";
//!     const TOPIC: &'static str = "orders";
//!     fn aggregate_id(&self) -> Uuid {
//!         self.order
//!     }
//!     // Per-customer order at the broker (default: per aggregate).
//!     fn partition_key(&self) -> String {
//!         self.customer.clone()
//!     }
//! }
//!
//! // Writing: the event of a typed message (enqueue it in the business transaction).
//! let placed = OrderPlaced { order: Uuid::now_v7(), customer: "c-7".into(), total: 42 };
//! let event = OutboxEvent::message(&placed).build().unwrap();
//! assert_eq!((event.common.event_type.as_str(), event.topic.as_str()), ("order.placed", "orders"));
//! assert_eq!(event.partition_key, "c-7");
//!
//! // Handling: the payload arrives decoded.
//! struct CreditPoints;
//! impl MessageHandler<OrderPlaced, ()> for CreditPoints {
//!     async fn handle(&self, order: OrderPlaced, _event: &InboxEvent, _conn: &mut ()) -> HandlerResult {
//!         assert_eq!(order.total, 42);
//!         Ok(HandlerOutcome::Completed)
//!     }
//! }
//! let handler = typed::<OrderPlaced, _>(CreditPoints); // a Handler<InboxEvent, ()>
//! # let _ = handler;
//! ```
//!
//! A payload that does not decode into the type is a counted failure
//! ([`HandlerError::permanent`](crate::HandlerError::permanent)): it spends an attempt and,
//! once the budget is spent, ends as a dead letter with the serde error as its reason. An
//! event of another type given to a typed handler is skipped (completed without handling,
//! with the reason); route types with the router's
//! [`register_message`](crate::router::Router::register_message).

use std::marker::PhantomData;

use serde::Serialize;
use serde::de::DeserializeOwned;
use uuid::Uuid;

use crate::error::HandlerError;
use crate::handler::{Handler, HandlerOutcome, HandlerResult};
use crate::model::{InboxEvent, OutboxEvent, OutboxEventBuilder};

/// A typed event: its payload is `Self` (serialised with serde), its metadata constants.
pub trait Message: Serialize + DeserializeOwned + Send + Sync {
    /// `event_type` of every event of this type (e.g. `"order.placed"`).
    const EVENT_TYPE: &'static str;
    /// `aggregate_type` (e.g. `"order"`).
    const AGGREGATE_TYPE: &'static str;
    /// The topic (Kafka topic, RabbitMQ queue or routing key, NATS subject). A writer can
    /// override it per event with [`OutboxEventBuilder::topic`].
    const TOPIC: &'static str;

    /// The aggregate this event is about.
    fn aggregate_id(&self) -> Uuid;

    /// Events with the same key are published in order (default: the aggregate id).
    fn partition_key(&self) -> String {
        self.aggregate_id().to_string()
    }
}

impl OutboxEvent {
    /// The builder of a typed message's event: event type, aggregate, topic, partition key
    /// and payload from `message`. Add headers, an idempotency key or a schedule as usual.
    pub fn message<M: Message>(message: &M) -> OutboxEventBuilder {
        OutboxEvent::builder(
            M::AGGREGATE_TYPE,
            message.aggregate_id(),
            M::EVENT_TYPE,
            M::TOPIC,
            message.partition_key(),
        )
        .payload(message)
    }
}

impl InboxEvent {
    /// Decode the payload as `M`, checking the event type first.
    pub fn message<M: Message>(&self) -> Result<M, HandlerError> {
        if self.common.event_type != M::EVENT_TYPE {
            return Err(HandlerError::permanent(format!(
                "event type `{}` is not `{}`",
                self.common.event_type,
                M::EVENT_TYPE
            )));
        }
        self.payload_as::<M>().map_err(|e| {
            HandlerError::permanent(format!(
                "payload does not decode as `{}` ({}): {e}",
                M::EVENT_TYPE,
                std::any::type_name::<M>()
            ))
        })
    }
}

/// Handles one message type, given decoded.
pub trait MessageHandler<M: Message, C>: Send + Sync {
    /// Handle `message` (decoded from `event`'s payload) in `conn`'s transaction.
    fn handle(
        &self,
        message: M,
        event: &InboxEvent,
        conn: &mut C,
    ) -> impl Future<Output = HandlerResult> + Send;
}

/// A [`MessageHandler`] as a plain [`Handler`]: see [`typed`].
pub struct Typed<M, H> {
    handler: H,
    _message: PhantomData<fn() -> M>,
}

impl<M, H: std::fmt::Debug> std::fmt::Debug for Typed<M, H> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Typed")
            .field("message", &std::any::type_name::<M>())
            .field("handler", &self.handler)
            .finish()
    }
}

/// Wrap a [`MessageHandler`] of `M` into a [`Handler`] of inbox events: the payload is
/// decoded before the call; a decode error is a counted failure; another event type is
/// skipped.
pub fn typed<M: Message, H>(handler: H) -> Typed<M, H> {
    Typed {
        handler,
        _message: PhantomData,
    }
}

impl<M, C, H> Handler<InboxEvent, C> for Typed<M, H>
where
    M: Message,
    C: Send,
    H: MessageHandler<M, C>,
{
    async fn handle(&self, event: &InboxEvent, conn: &mut C) -> HandlerResult {
        if event.common.event_type != M::EVENT_TYPE {
            return Ok(HandlerOutcome::skipped(format!(
                "not a `{}` event (got `{}`)",
                M::EVENT_TYPE,
                event.common.event_type
            )));
        }
        let message = event.message::<M>()?;
        self.handler.handle(message, event, conn).await
    }
}

#[cfg(test)]
mod tests {
    use serde::Deserialize;

    use super::*;
    use crate::FailureKind;

    #[derive(Debug, Serialize, Deserialize, PartialEq)]
    struct Paid {
        order: Uuid,
        cents: i64,
    }

    impl Message for Paid {
        const EVENT_TYPE: &'static str = "order.paid";
        const AGGREGATE_TYPE: &'static str = "order";
        const TOPIC: &'static str = "payments";
        fn aggregate_id(&self) -> Uuid {
            self.order
        }
    }

    struct Sum(std::sync::Mutex<i64>);

    impl MessageHandler<Paid, ()> for Sum {
        async fn handle(&self, paid: Paid, _event: &InboxEvent, _conn: &mut ()) -> HandlerResult {
            *self.0.lock().unwrap() += paid.cents;
            Ok(HandlerOutcome::Completed)
        }
    }

    fn inbox(event_type: &str, payload: serde_json::Value) -> InboxEvent {
        InboxEvent::builder("m-1", "billing", "payments", event_type)
            .payload(payload)
            .build()
            .unwrap()
    }

    #[test]
    fn a_message_builds_its_event_with_its_metadata_and_payload() {
        let paid = Paid {
            order: Uuid::now_v7(),
            cents: 250,
        };
        let e = OutboxEvent::message(&paid).build().unwrap();
        assert_eq!(e.common.event_type, "order.paid");
        assert_eq!(e.aggregate_type, "order");
        assert_eq!(e.aggregate_id, paid.order);
        assert_eq!(e.topic, "payments");
        assert_eq!(e.partition_key, paid.order.to_string());
        assert_eq!(
            serde_json::Value::Object(e.common.payload.clone()),
            serde_json::json!({ "order": paid.order, "cents": 250 })
        );
    }

    #[tokio::test]
    async fn a_typed_handler_decodes_refuses_bad_payloads_and_skips_other_types() {
        let h = typed::<Paid, _>(Sum(std::sync::Mutex::new(0)));
        let order = Uuid::now_v7();
        let ok = inbox(
            "order.paid",
            serde_json::json!({ "order": order, "cents": 7 }),
        );
        assert_eq!(
            h.handle(&ok, &mut ()).await.unwrap(),
            HandlerOutcome::Completed
        );
        assert_eq!(*h.handler.0.lock().unwrap(), 7);

        let bad = inbox(
            "order.paid",
            serde_json::json!({ "order": order, "cents": "seven" }),
        );
        let e = h.handle(&bad, &mut ()).await.unwrap_err();
        assert_eq!(e.kind, FailureKind::Permanent, "a counted failure");
        assert!(
            e.to_string().contains("does not decode as `order.paid`"),
            "{e}"
        );

        let other = inbox("order.shipped", serde_json::json!({ "order": order }));
        assert!(matches!(
            h.handle(&other, &mut ()).await.unwrap(),
            HandlerOutcome::Skipped { .. }
        ));
        assert_eq!(
            *h.handler.0.lock().unwrap(),
            7,
            "nothing ran for the others"
        );
        assert_eq!(ok.message::<Paid>().unwrap().cents, 7);
        assert!(other.message::<Paid>().is_err());
    }
}

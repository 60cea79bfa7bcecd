//! How an omnibox event appears in a span, following the OpenTelemetry messaging semantic
//! conventions: the relay *sends* outbox events (producer spans), an inbox job *processes*
//! inbox events (consumer spans).

use omnibox_core::model::{Event, InboxEvent, OutboxEvent};
use opentelemetry::KeyValue;
use opentelemetry::trace::SpanKind;

use crate::propagation::extract_optional;

/// `messaging.system`.
pub const MESSAGING_SYSTEM: &str = "messaging.system";
/// `messaging.operation.type`.
pub const MESSAGING_OPERATION_TYPE: &str = "messaging.operation.type";
/// `messaging.operation.name`.
pub const MESSAGING_OPERATION_NAME: &str = "messaging.operation.name";
/// `messaging.destination.name`.
pub const MESSAGING_DESTINATION_NAME: &str = "messaging.destination.name";
/// `messaging.message.id`.
pub const MESSAGING_MESSAGE_ID: &str = "messaging.message.id";
/// `messaging.consumer.group.name`.
pub const MESSAGING_CONSUMER_GROUP_NAME: &str = "messaging.consumer.group.name";
/// `messaging.batch.message_count`.
pub const MESSAGING_BATCH_MESSAGE_COUNT: &str = "messaging.batch.message_count";
/// `error.type`.
pub const ERROR_TYPE: &str = "error.type";
/// omnibox's event type.
pub const OMNIBOX_EVENT_TYPE: &str = "omnibox.event.type";
/// omnibox's event row id.
pub const OMNIBOX_EVENT_ID: &str = "omnibox.event.id";
/// The attempt being made (1-based).
pub const OMNIBOX_ATTEMPT: &str = "omnibox.attempt";
/// What the pipeline decided: `completed`, `skipped`, `failed`, `released`.
pub const OMNIBOX_OUTCOME: &str = "omnibox.outcome";
/// The job name.
pub const OMNIBOX_JOB: &str = "omnibox.job";

mod sealed {
    pub trait Sealed {}
    impl Sealed for omnibox_core::OutboxEvent {}
    impl Sealed for omnibox_core::InboxEvent {}
}

/// An event kind that can be traced: [`OutboxEvent`] (a producer `send` span) and
/// [`InboxEvent`] (a consumer `process` span). Sealed.
pub trait MessagingEvent: Event + sealed::Sealed {
    /// `send` or `process`.
    fn operation(&self) -> &'static str;
    /// Producer or consumer.
    fn span_kind(&self) -> SpanKind;
    /// The broker message id (outbox: the event id, sent as the `event_id` header).
    fn messaging_message_id(&self) -> String;
    /// Attributes beyond the common ones.
    fn extra_attributes(&self, _attrs: &mut Vec<KeyValue>) {}

    /// `"<operation> <destination>"`, e.g. `send orders`.
    fn span_name(&self) -> String {
        format!("{} {}", self.operation(), self.route())
    }

    /// The producer's context stored with the event (`traceparent` header), if any.
    fn remote_parent(&self) -> opentelemetry::Context {
        extract_optional(self.common().headers.as_ref())
    }

    /// The attributes of this event's span (no payload, no header values).
    fn attributes(&self, system: &str) -> Vec<KeyValue> {
        let c = self.common();
        let mut attrs = vec![
            KeyValue::new(MESSAGING_SYSTEM, system.to_owned()),
            KeyValue::new(MESSAGING_OPERATION_TYPE, self.operation()),
            KeyValue::new(MESSAGING_OPERATION_NAME, self.operation()),
            KeyValue::new(MESSAGING_DESTINATION_NAME, self.route().to_owned()),
            KeyValue::new(MESSAGING_MESSAGE_ID, self.messaging_message_id()),
            KeyValue::new(OMNIBOX_EVENT_TYPE, c.event_type.clone()),
            KeyValue::new(OMNIBOX_EVENT_ID, c.id.to_string()),
            KeyValue::new(OMNIBOX_ATTEMPT, i64::from(c.attempts_made) + 1),
        ];
        self.extra_attributes(&mut attrs);
        attrs
    }
}

impl MessagingEvent for OutboxEvent {
    fn operation(&self) -> &'static str {
        "send"
    }
    fn span_kind(&self) -> SpanKind {
        SpanKind::Producer
    }
    fn messaging_message_id(&self) -> String {
        self.common.id.to_string()
    }
}

impl MessagingEvent for InboxEvent {
    fn operation(&self) -> &'static str {
        "process"
    }
    fn span_kind(&self) -> SpanKind {
        SpanKind::Consumer
    }
    fn messaging_message_id(&self) -> String {
        self.message_id.clone()
    }
    fn extra_attributes(&self, attrs: &mut Vec<KeyValue>) {
        attrs.push(KeyValue::new(
            MESSAGING_CONSUMER_GROUP_NAME,
            self.consumer_group.clone(),
        ));
    }
}

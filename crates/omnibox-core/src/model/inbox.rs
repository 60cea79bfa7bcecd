//! Inbox events: broker messages stored under `(message_id, consumer_group)`.

use std::ops::Deref;

use chrono::{DateTime, Utc};
use serde::Serialize;
use uuid::Uuid;

use super::limits::{Limits, NAME_MAX};
use super::outbox::{FieldsBuilder, builder_setters};
use super::{Event, EventCommon, EventKind, validate};
use crate::error::ValidationError;

/// The plain data of an inbox event.
#[derive(Debug, Clone, PartialEq, Serialize, serde::Deserialize)]
#[non_exhaustive]
pub struct InboxRecord {
    /// Shared columns.
    #[serde(flatten)]
    pub common: EventCommon,
    /// The broker message id (dedup key with the group), ≤255.
    pub message_id: String,
    /// The consuming group (dedup key with the message id), ≤255.
    pub consumer_group: String,
    /// Where the message came from (by default the topic / queue / subject), ≤255.
    pub source: String,
}

impl InboxRecord {
    /// Assemble a record from its parts.
    pub fn new(
        common: EventCommon,
        message_id: String,
        consumer_group: String,
        source: String,
    ) -> Self {
        Self {
            common,
            message_id,
            consumer_group,
            source,
        }
    }
}

/// A validated inbox event (read fields through `Deref`).
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(transparent)]
pub struct InboxEvent(InboxRecord);

impl Deref for InboxEvent {
    type Target = InboxRecord;
    fn deref(&self) -> &InboxRecord {
        &self.0
    }
}

impl InboxEvent {
    /// Start building an inbox event.
    ///
    /// ```
    /// use omnibox_core::model::InboxEvent;
    /// let e = InboxEvent::builder("msg-1", "billing", "orders", "order.placed")
    ///     .payload(serde_json::json!({"total": 42}))
    ///     .build()
    ///     .unwrap();
    /// assert_eq!(e.consumer_group, "billing");
    /// ```
    pub fn builder(
        message_id: impl Into<String>,
        consumer_group: impl Into<String>,
        source: impl Into<String>,
        event_type: impl Into<String>,
    ) -> InboxEventBuilder {
        InboxEventBuilder {
            message_id: message_id.into(),
            consumer_group: consumer_group.into(),
            source: source.into(),
            fields: FieldsBuilder::new(event_type.into()),
        }
    }

    /// Validate a record.
    pub fn from_record(
        mut record: InboxRecord,
        limits: &Limits,
        trusted_payload: bool,
    ) -> Result<Self, ValidationError> {
        record.common.check_fields(limits, trusted_payload)?;
        record.message_id = validate::required("message_id", &record.message_id, NAME_MAX)?;
        record.consumer_group =
            validate::required("consumer_group", &record.consumer_group, NAME_MAX)?;
        record.source = validate::required("source", &record.source, NAME_MAX)?;
        record.common.check_invariants(limits)?;
        Ok(Self(record))
    }

    /// The plain record.
    pub fn into_record(self) -> InboxRecord {
        self.0
    }

    /// The plain record, borrowed.
    pub fn record(&self) -> &InboxRecord {
        &self.0
    }

    /// A header value.
    pub fn header(&self, key: &str) -> Option<&str> {
        self.0.common.headers.as_ref()?.get(key).map(String::as_str)
    }

    /// Deserialise the payload into a type.
    pub fn payload_as<T: serde::de::DeserializeOwned>(&self) -> Result<T, serde_json::Error> {
        T::deserialize(serde_json::Value::Object(self.0.common.payload.clone()))
    }
}

impl Event for InboxEvent {
    const KIND: EventKind = EventKind::Inbox;

    fn common(&self) -> &EventCommon {
        &self.0.common
    }

    fn with_common(&self, common: EventCommon, limits: &Limits) -> Result<Self, ValidationError> {
        let mut record = self.0.clone();
        record.common = common;
        record.common.check_invariants(limits)?;
        Ok(Self(record))
    }

    fn ordering_key(&self) -> Option<(&str, &str)> {
        None
    }

    fn route(&self) -> &str {
        &self.0.source
    }

    fn message_id(&self) -> Option<&str> {
        Some(&self.0.message_id)
    }

    fn consumer_group(&self) -> Option<&str> {
        Some(&self.0.consumer_group)
    }
}

/// Builder for [`InboxEvent`].
#[derive(Debug, Clone)]
#[must_use]
pub struct InboxEventBuilder {
    message_id: String,
    consumer_group: String,
    source: String,
    fields: FieldsBuilder,
}

impl InboxEventBuilder {
    builder_setters!();

    /// Build with default limits.
    pub fn build(self) -> Result<InboxEvent, ValidationError> {
        self.build_with(&Limits::default())
    }

    /// Build with the given limits.
    pub fn build_with(self, limits: &Limits) -> Result<InboxEvent, ValidationError> {
        let common = self.fields.build(limits)?;
        InboxEvent::from_record(
            InboxRecord::new(common, self.message_id, self.consumer_group, self.source),
            limits,
            true,
        )
    }
}

//! Outbox events: what a service writes in its business transaction.

use std::ops::Deref;

use chrono::{DateTime, Utc};
use serde::Serialize;
use uuid::Uuid;

use super::limits::{AGGREGATE_TYPE_MAX, Limits, NAME_MAX};
use super::{Event, EventCommon, EventKind, Headers, validate};
use crate::error::ValidationError;

/// The plain data of an outbox event. Build an [`OutboxEvent`] from it with
/// [`OutboxEvent::from_record`], which checks every rule.
#[derive(Debug, Clone, PartialEq, Serialize, serde::Deserialize)]
#[non_exhaustive]
pub struct OutboxRecord {
    /// Shared columns.
    #[serde(flatten)]
    pub common: EventCommon,
    /// Aggregate type, ≤50.
    pub aggregate_type: String,
    /// Aggregate id.
    pub aggregate_id: Uuid,
    /// Destination topic (Kafka topic, RabbitMQ exchange/routing key, NATS subject), ≤255.
    pub topic: String,
    /// Ordering key: events of one `(topic, partition_key)` are published in order, ≤255.
    pub partition_key: String,
}

impl OutboxRecord {
    /// Assemble a record from its parts (as a store does when reading a row).
    pub fn new(
        common: EventCommon,
        aggregate_type: String,
        aggregate_id: Uuid,
        topic: String,
        partition_key: String,
    ) -> Self {
        Self {
            common,
            aggregate_type,
            aggregate_id,
            topic,
            partition_key,
        }
    }
}

/// A validated outbox event. Read its fields through `Deref` (`event.topic`,
/// `event.common.id`); change it only through the domain transitions, which re-check
/// every invariant.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(transparent)]
pub struct OutboxEvent(OutboxRecord);

impl Deref for OutboxEvent {
    type Target = OutboxRecord;
    fn deref(&self) -> &OutboxRecord {
        &self.0
    }
}

impl OutboxEvent {
    /// Start building a new event.
    ///
    /// ```
    /// use omnibox_core::model::OutboxEvent;
    /// use serde_json::json;
    ///
    /// let event = OutboxEvent::builder("order", uuid::Uuid::now_v7(), "order.placed", "orders", "customer-7")
    ///     .payload(json!({"total": 42}))
    ///     .idempotency_key("order-1-placed")
    ///     .header("tenant", "acme")
    ///     .build()
    ///     .unwrap();
    /// assert_eq!(event.topic, "orders");
    /// assert_eq!(event.common.attempts_made, 0);
    /// ```
    pub fn builder(
        aggregate_type: impl Into<String>,
        aggregate_id: Uuid,
        event_type: impl Into<String>,
        topic: impl Into<String>,
        partition_key: impl Into<String>,
    ) -> OutboxEventBuilder {
        OutboxEventBuilder {
            aggregate_type: aggregate_type.into(),
            aggregate_id,
            topic: topic.into(),
            partition_key: partition_key.into(),
            fields: FieldsBuilder::new(event_type.into()),
        }
    }

    /// Validate a record. `trusted_payload` skips the payload size check (rows from storage).
    pub fn from_record(
        mut record: OutboxRecord,
        limits: &Limits,
        trusted_payload: bool,
    ) -> Result<Self, ValidationError> {
        record.common.check_fields(limits, trusted_payload)?;
        record.aggregate_type =
            validate::required("aggregate_type", &record.aggregate_type, AGGREGATE_TYPE_MAX)?;
        record.topic = validate::required("topic", &record.topic, NAME_MAX)?;
        record.partition_key =
            validate::required("partition_key", &record.partition_key, NAME_MAX)?;
        record.common.check_invariants(limits)?;
        Ok(Self(record))
    }

    /// The plain record.
    pub fn into_record(self) -> OutboxRecord {
        self.0
    }

    /// The plain record, borrowed.
    pub fn record(&self) -> &OutboxRecord {
        &self.0
    }
}

impl Event for OutboxEvent {
    const KIND: EventKind = EventKind::Outbox;

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
        Some((&self.0.topic, &self.0.partition_key))
    }

    fn route(&self) -> &str {
        &self.0.topic
    }

    fn aggregate_type(&self) -> Option<&str> {
        Some(&self.0.aggregate_type)
    }
}

/// Optional fields shared by the outbox and inbox builders.
#[derive(Debug, Clone)]
pub(crate) struct FieldsBuilder {
    pub(crate) event_type: String,
    pub(crate) payload: Result<serde_json::Value, String>,
    pub(crate) headers: Headers,
    pub(crate) trace_id: Option<String>,
    pub(crate) idempotency_key: Option<String>,
    pub(crate) correlation_id: Option<String>,
    pub(crate) causation_id: Option<String>,
    pub(crate) schema_version: Option<String>,
    pub(crate) scheduled_at: Option<DateTime<Utc>>,
    pub(crate) created_at: Option<DateTime<Utc>>,
    pub(crate) max_attempts: Option<u32>,
    pub(crate) id: Option<Uuid>,
}

impl FieldsBuilder {
    pub(crate) fn new(event_type: String) -> Self {
        Self {
            event_type,
            payload: Ok(serde_json::Value::Null),
            headers: Headers::new(),
            trace_id: None,
            idempotency_key: None,
            correlation_id: None,
            causation_id: None,
            schema_version: None,
            scheduled_at: None,
            created_at: None,
            max_attempts: None,
            id: None,
        }
    }

    pub(crate) fn build(self, limits: &Limits) -> Result<EventCommon, ValidationError> {
        let payload = self
            .payload
            .map_err(ValidationError::PayloadNotSerializable)?;
        let payload = validate::payload(payload, limits)?;
        let now = self.created_at.unwrap_or_else(Utc::now);
        let mut c = EventCommon::new(
            self.event_type,
            payload,
            now,
            self.max_attempts.unwrap_or(limits.max_attempts),
        );
        if let Some(id) = self.id {
            c.id = id;
        }
        c.headers = Some(self.headers);
        c.trace_id = self.trace_id;
        c.idempotency_key = self.idempotency_key;
        c.correlation_id = self.correlation_id;
        c.causation_id = self.causation_id;
        c.schema_version = self.schema_version;
        if let Some(at) = self.scheduled_at {
            c.scheduled_at = at;
        }
        c.check_fields(limits, true)?;
        c.check_invariants(limits)?;
        Ok(c)
    }
}

macro_rules! builder_setters {
    () => {
        /// Set the payload from any serialisable value; it must serialise to a non-empty object.
        pub fn payload(mut self, payload: impl serde::Serialize) -> Self {
            self.fields.payload = serde_json::to_value(payload).map_err(|e| e.to_string());
            self
        }
        /// Add a header.
        pub fn header(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
            self.fields.headers.insert(key.into(), value.into());
            self
        }
        /// Add headers.
        pub fn headers(mut self, headers: impl IntoIterator<Item = (String, String)>) -> Self {
            self.fields.headers.extend(headers);
            self
        }
        /// Set the trace id.
        pub fn trace_id(mut self, v: impl Into<String>) -> Self {
            self.fields.trace_id = Some(v.into());
            self
        }
        /// Set the correlation id.
        pub fn correlation_id(mut self, v: impl Into<String>) -> Self {
            self.fields.correlation_id = Some(v.into());
            self
        }
        /// Set the causation id.
        pub fn causation_id(mut self, v: impl Into<String>) -> Self {
            self.fields.causation_id = Some(v.into());
            self
        }
        /// Set the payload schema version.
        pub fn schema_version(mut self, v: impl Into<String>) -> Self {
            self.fields.schema_version = Some(v.into());
            self
        }
        /// Do not process before this time (within the limits' window).
        pub fn scheduled_at(mut self, at: DateTime<Utc>) -> Self {
            self.fields.scheduled_at = Some(at);
            self
        }
        /// Override the creation time (default: now).
        pub fn created_at(mut self, at: DateTime<Utc>) -> Self {
            self.fields.created_at = Some(at);
            self
        }
        /// Override the attempt budget (default: the limits').
        pub fn max_attempts(mut self, n: u32) -> Self {
            self.fields.max_attempts = Some(n);
            self
        }
        /// Override the id (default: a new UUIDv7).
        pub fn id(mut self, id: Uuid) -> Self {
            self.fields.id = Some(id);
            self
        }
    };
}
pub(crate) use builder_setters;

/// Builder for [`OutboxEvent`].
#[derive(Debug, Clone)]
#[must_use]
pub struct OutboxEventBuilder {
    aggregate_type: String,
    aggregate_id: Uuid,
    topic: String,
    partition_key: String,
    fields: FieldsBuilder,
}

impl OutboxEventBuilder {
    builder_setters!();

    /// Set the idempotency key: a second event with the same key is a duplicate.
    pub fn idempotency_key(mut self, v: impl Into<String>) -> Self {
        self.fields.idempotency_key = Some(v.into());
        self
    }

    /// Replace the topic (e.g. a typed message's [`Message::TOPIC`] with a per-environment
    /// name).
    ///
    /// [`Message::TOPIC`]: crate::message::Message::TOPIC
    pub fn topic(mut self, topic: impl Into<String>) -> Self {
        self.topic = topic.into();
        self
    }

    /// Build with default limits.
    pub fn build(self) -> Result<OutboxEvent, ValidationError> {
        self.build_with(&Limits::default())
    }

    /// Build with the given limits.
    pub fn build_with(self, limits: &Limits) -> Result<OutboxEvent, ValidationError> {
        let common = self.fields.build(limits)?;
        OutboxEvent::from_record(
            OutboxRecord::new(
                common,
                self.aggregate_type,
                self.aggregate_id,
                self.topic,
                self.partition_key,
            ),
            limits,
            true,
        )
    }
}

//! Wire format: converters that turn an outbox event into a message body and headers, and
//! the parser that turns a received message back into inbox fields (as omni-box 0.3.1 writes and reads them).
//!
//! Bodies are compact JSON in omni-box's field order, so Python and Rust services read each
//! other's messages.

use chrono::{DateTime, Timelike, Utc};
use serde_json::{Map, Value};

use crate::consumer::{IncomingMessage, MalformedMessage};
use crate::error::EnvelopeError;
use crate::model::validate::json_type;
use crate::model::{Headers, OutboxEvent};

/// Header carrying the event id.
pub const HEADER_EVENT_ID: &str = "event_id";
/// Header carrying the event type.
pub const HEADER_EVENT_TYPE: &str = "event_type";
/// Header carrying the message id (preferred over `event_id` by the parser).
pub const HEADER_MESSAGE_ID: &str = "message_id";
/// Header carrying the schema version.
pub const HEADER_SCHEMA_VERSION: &str = "schema_version";
/// Header carrying the trace id.
pub const HEADER_TRACE_ID: &str = "trace_id";
/// Header carrying the correlation id.
pub const HEADER_CORRELATION_ID: &str = "correlation_id";
/// Header carrying the causation id.
pub const HEADER_CAUSATION_ID: &str = "causation_id";
/// W3C trace-context header.
pub const HEADER_TRACEPARENT: &str = "traceparent";

/// Turns an outbox event into a JSON message body.
pub trait Converter: Send + Sync {
    /// The body as a JSON value.
    fn body(&self, event: &OutboxEvent) -> Value;

    /// The body as compact JSON bytes.
    fn encode(&self, event: &OutboxEvent) -> Vec<u8> {
        // Serialising a `Value` cannot fail: keys are strings and numbers are finite.
        serde_json::to_vec(&self.body(event)).unwrap_or_default()
    }
}

/// The payload itself.
#[derive(Debug, Clone, Copy, Default)]
pub struct RawConverter;

impl Converter for RawConverter {
    fn body(&self, event: &OutboxEvent) -> Value {
        Value::Object(event.common.payload.clone())
    }
}

/// `{"schema_version": <version or null>, "payload": <payload>}`.
#[derive(Debug, Clone, Copy, Default)]
pub struct SchemaVersionedConverter;

impl Converter for SchemaVersionedConverter {
    fn body(&self, event: &OutboxEvent) -> Value {
        let mut m = Map::new();
        m.insert(
            "schema_version".into(),
            event
                .common
                .schema_version
                .clone()
                .map_or(Value::Null, Value::String),
        );
        m.insert(
            "payload".into(),
            Value::Object(event.common.payload.clone()),
        );
        Value::Object(m)
    }
}

/// The full envelope: `schema_version`, `event_type`, `aggregate_type`, `aggregate_id`,
/// `payload`, `timestamp`, then `trace_id`, `correlation_id`, `causation_id` when set.
#[derive(Debug, Clone)]
pub struct EnvelopeConverter {
    default_schema_version: String,
}

impl Default for EnvelopeConverter {
    fn default() -> Self {
        Self {
            default_schema_version: "1.0.0".into(),
        }
    }
}

impl EnvelopeConverter {
    /// An envelope converter using `version` when an event has no schema version.
    pub fn with_default_schema_version(version: impl Into<String>) -> Self {
        Self {
            default_schema_version: version.into(),
        }
    }
}

/// Python's `datetime.isoformat()` for a UTC time: microseconds only when non-zero,
/// offset `+00:00`.
pub fn python_isoformat(t: DateTime<Utc>) -> String {
    let micros = t.nanosecond() / 1000 % 1_000_000;
    if micros == 0 {
        format!("{}+00:00", t.format("%Y-%m-%dT%H:%M:%S"))
    } else {
        format!("{}.{micros:06}+00:00", t.format("%Y-%m-%dT%H:%M:%S"))
    }
}

impl Converter for EnvelopeConverter {
    fn body(&self, event: &OutboxEvent) -> Value {
        let c = &event.common;
        let mut m = Map::new();
        m.insert(
            "schema_version".into(),
            Value::String(
                c.schema_version
                    .clone()
                    .unwrap_or_else(|| self.default_schema_version.clone()),
            ),
        );
        m.insert("event_type".into(), Value::String(c.event_type.clone()));
        m.insert(
            "aggregate_type".into(),
            Value::String(event.aggregate_type.clone()),
        );
        m.insert(
            "aggregate_id".into(),
            Value::String(event.aggregate_id.to_string()),
        );
        m.insert("payload".into(), Value::Object(c.payload.clone()));
        m.insert(
            "timestamp".into(),
            Value::String(python_isoformat(c.created_at)),
        );
        for (k, v) in [
            ("trace_id", &c.trace_id),
            ("correlation_id", &c.correlation_id),
            ("causation_id", &c.causation_id),
        ] {
            if let Some(v) = v {
                m.insert(k.into(), Value::String(v.clone()));
            }
        }
        Value::Object(m)
    }
}

/// The headers a publisher sends: the event's own headers, then `event_id`, `event_type`
/// and, when set, `schema_version`, `trace_id`, `correlation_id`, `causation_id`
/// (overwriting same-named user headers, as omni-box does). A `traceparent` header stored
/// with the event travels as is.
pub fn metadata_headers(event: &OutboxEvent) -> Headers {
    let c = &event.common;
    let mut h = c.headers.clone().unwrap_or_default();
    h.insert(HEADER_EVENT_ID.into(), c.id.to_string());
    h.insert(HEADER_EVENT_TYPE.into(), c.event_type.clone());
    for (k, v) in [
        (HEADER_SCHEMA_VERSION, &c.schema_version),
        (HEADER_TRACE_ID, &c.trace_id),
        (HEADER_CORRELATION_ID, &c.correlation_id),
        (HEADER_CAUSATION_ID, &c.causation_id),
    ] {
        if let Some(v) = v.as_deref().filter(|v| !v.is_empty()) {
            h.insert(k.into(), v.to_owned());
        }
    }
    h
}

/// `true` when the headers carry a non-blank `message_id` or `event_id`.
pub fn has_id_header(headers: &Headers) -> bool {
    [HEADER_MESSAGE_ID, HEADER_EVENT_ID]
        .iter()
        .any(|k| headers.get(*k).is_some_and(|v| !v.trim().is_empty()))
}

/// Where a received message came from, as the broker adapter knows it.
#[derive(Debug, Clone)]
pub struct MessageOrigin {
    /// Topic / queue / subject (default `source` and `event_type`).
    pub source: String,
    /// The broker's own id for the message (`topic:partition:offset`, stream sequence...),
    /// used when no `message_id` / `event_id` header is present.
    pub fallback_id: String,
}

/// Parse a received message (omni-box's `DefaultEnvelopeParser` plus the consumer's field
/// resolution):
/// - `message_id`: header `message_id`, else `event_id`, else the origin's fallback id;
/// - `source`: header `source`, else `source_service`, else the origin's source;
/// - `event_type`: header `event_type`, else the body's `event_type` string, else the source;
/// - a body object with a `payload` key is an envelope: the inner payload is the payload and
///   `schema_version`, `trace_id`, `correlation_id`, `causation_id` come from the headers,
///   falling back to the body's fields; any other object is the payload itself.
///
/// Malformed input (empty body, invalid JSON, non-object payload, non-string metadata) is
/// returned as a [`MalformedMessage`] carrying the body, so the caller can dead-letter and
/// acknowledge it instead of looping.
#[allow(clippy::result_large_err)] // the error carries the body so it can be dead-lettered
pub fn parse_message(
    body: &[u8],
    headers: Headers,
    origin: MessageOrigin,
) -> Result<IncomingMessage, MalformedMessage> {
    let header = |k: &str| headers.get(k).filter(|v| !v.trim().is_empty()).cloned();
    let message_id = header(HEADER_MESSAGE_ID).or_else(|| header(HEADER_EVENT_ID));
    let malformed = |error: EnvelopeError, headers: &Headers| {
        MalformedMessage::new(
            message_id
                .clone()
                .or_else(|| Some(origin.fallback_id.clone())),
            origin.source.clone(),
            body.to_vec(),
            headers.clone(),
            error,
        )
    };
    match parse_body(body, &headers) {
        Ok((payload, meta, body_event_type)) => {
            let source = header("source")
                .or_else(|| header("source_service"))
                .unwrap_or_else(|| origin.source.clone());
            let event_type = header(HEADER_EVENT_TYPE)
                .or(body_event_type)
                .unwrap_or_else(|| origin.source.clone());
            let mut msg = IncomingMessage::new(
                message_id
                    .clone()
                    .unwrap_or_else(|| origin.fallback_id.clone()),
                source,
                event_type,
                payload,
            );
            [
                msg.schema_version,
                msg.trace_id,
                msg.correlation_id,
                msg.causation_id,
            ] = meta;
            msg.headers = headers;
            Ok(msg)
        }
        Err(e) => Err(malformed(e, &headers)),
    }
}

type Parsed = (Map<String, Value>, [Option<String>; 4], Option<String>);

fn parse_body(body: &[u8], headers: &Headers) -> Result<Parsed, EnvelopeError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Err(EnvelopeError::EmptyBody);
    }
    let value: Value =
        serde_json::from_slice(body).map_err(|e| EnvelopeError::InvalidJson(e.to_string()))?;
    let Value::Object(mut obj) = value else {
        return Err(EnvelopeError::NotAnObject {
            found: json_type(&value),
        });
    };
    let body_event_type = match obj.get("event_type") {
        Some(Value::String(s)) if !s.trim().is_empty() => Some(s.clone()),
        _ => None,
    };
    let keys = [
        HEADER_SCHEMA_VERSION,
        HEADER_TRACE_ID,
        HEADER_CORRELATION_ID,
        HEADER_CAUSATION_ID,
    ];
    let from_header = |k: &str| headers.get(k).filter(|v| !v.trim().is_empty()).cloned();
    let mut meta: [Option<String>; 4] = keys.map(from_header);
    let payload = if let Some(inner) = obj.remove("payload") {
        for (slot, key) in meta.iter_mut().zip(keys) {
            if slot.is_none() {
                *slot = match obj.get(key) {
                    None | Some(Value::Null) => None,
                    Some(Value::String(s)) if s.trim().is_empty() => None,
                    Some(Value::String(s)) => Some(s.clone()),
                    Some(_) => return Err(EnvelopeError::FieldNotString { field: key }),
                };
            }
        }
        match inner {
            Value::Object(p) => p,
            other => {
                return Err(EnvelopeError::NotAnObject {
                    found: json_type(&other),
                });
            }
        }
    } else {
        obj
    };
    Ok((payload, meta, body_event_type))
}

#[cfg(test)]
mod tests;
